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
    assert list(rows) == ["none", "divprune:0.1", "pool:0.25", "prumerge:adaptive"]
    assert rows["none"][1].strip() == "64 -> 64"
    assert rows["divprune:0.1"][1].strip() == "64 -> 6"
    assert rows["pool:0.25"][1].strip() == "64 -> 16"
    kept = int(rows["prumerge:adaptive"][1].split("->")[1])
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


def test_compare_checks_every_method_on_the_model_before_running(saved, capsys, monkeypatch):
    """One line per method that cannot run on this model (a 3-block tower, a 2-layer LLM); nothing runs."""
    from vtc.models import run as run_module

    folder, image = saved
    ran = []
    monkeypatch.setattr(run_module, "run", lambda *a, **k: ran.append(a))
    methods = "divprune,hiprune,pyramiddrop:count=8,nope:0.1"
    argv = ["compare", str(image), "--question", "q", "--methods", methods, "--model", str(folder)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "nope:0.1: unknown method 'nope'" in err and "hiprune:" not in err  # names first, before loading
    assert main([*argv[:5], "divprune,hiprune,pyramiddrop:count=8", *argv[6:]]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "vtc: error: nothing was run:" in err
    assert any("hiprune:0.25: hiprune: reads encoder layer(s) [8], but the llava vision tower has 3" in e for e in err)
    assert any("pyramiddrop:count=8: pyramiddrop: layer(s) (8, 16, 24) must leave a decoder layer" in e for e in err)
    assert any("pyramiddrop:count=8: pyramiddrop: inside the LLM its budget is a ratio" in e for e in err)
    assert not any("divprune" in e for e in err) and ran == []


@pytest.fixture(scope="module")
def saved_video_model(tmp_path_factory):
    """A random-init model in the embedded vtc-tiny-qwen2vl layout, saved with its processor, and a clip."""
    pytest.importorskip("av")
    from vtc.data.shapes import make_video, write_video
    from vtc.tiny.model import TinyProcessor, build_tokenizer, new_model

    folder = tmp_path_factory.mktemp("tiny-qwen2vl")
    tokenizer = build_tokenizer()
    new_model("qwen2_vl", tokenizer).save_pretrained(folder)
    TinyProcessor(tokenizer, "qwen2_vl").save_pretrained(folder)
    clip = folder / "clip.mp4"
    write_video(clip, make_video(0, 0, frames=8).frames)
    return folder, clip


def test_compare_on_a_video(saved_video_model, capsys):
    folder, clip = saved_video_model
    argv = ["compare", str(clip), "--question", "how many shapes entered ?", "--methods", "divprune,pool:0.25"]
    assert main([*argv, "--ratio", "0.1", "--model", str(folder), "--max-new-tokens", "2", "--frames", "8"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert list(rows) == ["none", "divprune:0.1", "pool:0.25"]
    # 8 frames at 112 px: 4 temporal patches x 7 x 7 tokens
    assert rows["none"][1].strip() == "196 -> 196"
    assert rows["divprune:0.1"][1].strip() == "196 -> 20"
    # pool picks the grid closest to the budget; the method on bare tokens of the same grid says which
    import torch

    import vtc

    tokens = vtc.VisualTokens(torch.randn(1, 196, 8), grid=torch.tensor([[4, 7, 7]]))
    assert rows["pool:0.25"][1].strip() == f"196 -> {vtc.build('pool', ratio=0.25)(tokens).features.shape[1]}"


def test_compare_rejects_bad_videos(saved, saved_video_model, tmp_path, capsys):
    folder, clip = saved_video_model
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    assert main(["compare", str(broken), "--question", "q", "--methods", "pool", "--model", str(folder)]) == 2
    assert "video: cannot decode" in capsys.readouterr().err
    llava_folder, _ = saved
    assert main(["compare", str(clip), "--question", "q", "--methods", "pool", "--model", str(llava_folder)]) == 2
    assert "takes no video input" in capsys.readouterr().err
