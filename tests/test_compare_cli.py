"""`vtc compare` end to end on a tiny LLaVA saved to disk (safetensors) with its processor."""

from __future__ import annotations

import pytest
from PIL import Image
from tiny_models import tiny_llava, tiny_llava_processor

from vtc.cli import main


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llava")
    tiny_llava().save_pretrained(folder)
    tiny_llava_processor().save_pretrained(folder)
    image = folder / "scene.png"
    Image.new("RGB", (160, 120), (200, 40, 40)).save(image)
    return folder, image


def table_rows(out: str) -> dict[str, list[str]]:
    lines = out.strip().splitlines()[2:]
    return {line.split()[0]: [c for c in line.split("  ") if c.strip()] for line in lines}


def test_compare_prints_tokens_time_and_answer(saved, capsys):
    folder, image = saved
    argv = ["compare", str(image), "--question", "w1 w2 w3", "--methods", "divprune,pool:0.25,prumerge:adaptive"]
    assert main([*argv, "--ratio", "0.1", "--model", str(folder), "--max-new-tokens", "3"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert list(rows) == ["none", "divprune", "pool", "prumerge"]
    assert rows["none"][1].strip() == "64 -> 64"
    assert rows["divprune"][1].strip() == "64 -> 6"
    assert rows["pool"][1].strip() == "64 -> 16"
    kept = int(rows["prumerge"][1].split("->")[1])
    assert 1 <= kept < 64
    assert all(float(r[2]) > 0 for r in rows.values())


def test_compare_errors(saved, capsys):
    folder, image = saved
    assert main(["compare", str(image), "--question", "q", "--methods", "nope", "--model", str(folder)]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
    assert main(["compare", str(folder / "missing.png"), "--question", "q", "--methods", "pool", "--model", "x"]) == 2
    assert "image: no such file" in capsys.readouterr().err
    assert main(["compare", str(image), "--question", "q", "--methods", "pool", "--model", str(folder / "none")]) == 2
    assert "model: could not load" in capsys.readouterr().err
