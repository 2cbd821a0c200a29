"""`vtc eval` end to end on random-init tiny models: output files, bad videos, resume after SIGKILL,
a 2-process sharded run (gloo) and the built-in benchmark.

Runs that must agree use ``--batch-size 1``: every sample is then computed alone, whatever the sharding
or the point of the kill, so the lines are equal bit for bit (batched runs keep their batches on resume,
but a different sharding changes which samples share a batch).
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vtc.eval.cli import BUILTIN_KWARGS, DEFAULT_MODELS, main, parser
from vtc.eval.grid import build_grid
from vtc.eval.runner import VOLATILE

pytest.importorskip("av")

ENTRY = """
import os, sys, time
from vtc.eval import store
from vtc.eval.cli import main

delay = float(os.environ.get("VTC_TEST_LINE_DELAY", "0"))
if delay:  # a window to kill the run in: each line waits before it is written
    write = store.LineWriter.write
    store.LineWriter.write = lambda self, record: (time.sleep(delay), write(self, record))[1]
sys.exit(main(sys.argv[1:]))
"""


def save_model(folder: Path, family: str) -> str:
    from vtc.tiny.model import TinyProcessor, build_tokenizer, new_model

    tokenizer = build_tokenizer()
    new_model(family, tokenizer).save_pretrained(folder)
    TinyProcessor(tokenizer, family).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A random tiny Qwen2-VL, 2 images + 2 videos + a corrupt and a missing video, and one reference run."""
    from vtc.data.shapes import write_split

    root = tmp_path_factory.mktemp("eval")
    model = save_model(root / "qwen", "qwen2_vl")
    data = root / "data"
    annotations = write_split(data, split="val", n=4, video_fraction=0.5, frames=8)
    (data / "media" / "corrupt.mp4").write_bytes(b"\x00" * 64)
    bad = [{"id": name, "video": f"media/{name}.mp4", "media_type": "video", "question": "which way ?",
            "options": ["left", "right"], "answer": "A"} for name in ("corrupt", "missing")]
    with open(annotations, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in bad)
    args = [str(annotations), "--model", model, "--methods", "divprune:0.25", "--frames", "4",
            "--max-new-tokens", "2", "--batch-size", "1", "--no-progress", "--bootstrap", "50"]
    out = root / "reference"
    assert main([*args, "--out", str(out)]) == 0
    entry = root / "entry.py"
    entry.write_text(ENTRY)
    return {"root": root, "args": args, "out": out, "entry": entry, "model": model}


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def stable(records: list[dict]) -> dict[str, dict]:
    """Lines by key, without the fields that depend on the machine or the sharding."""
    return {r["key"]: {k: v for k, v in r.items() if k not in VOLATILE} for r in records}


def subprocess_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def test_output_files_and_error_lines(setup, capsys):
    out = setup["out"]
    records = lines(out)
    assert len(records) == 6 * 4 and len({r["key"] for r in records}) == 24
    assert {r["method"] for r in records} == {"none", "text-only", "pool:0.25", "divprune:0.25"}
    for r in records:
        assert {"key", "task", "id", "model", "method", "status", "error", "prediction", "extracted", "correct",
                "tokens_before", "tokens_after", "prefill_ms", "e2e_ms", "peak_mem_mb", "answer", "question",
                "options", "doc_id", "doc", "target", "resps", "filtered_resps", "acc"} <= set(r)
    assert {r["doc_id"] for r in records} == set(range(6)) and all(r["doc"]["question"] for r in records)
    errors = {r["id"]: r["error"] for r in records if r["status"] == "error"}
    assert set(errors) == {"corrupt", "missing"}
    assert "cannot decode" in errors["corrupt"] or "no frames" in errors["corrupt"]
    assert "no such file" in errors["missing"]
    ok = [r for r in records if r["status"] == "ok"]
    videos = [r for r in ok if r["media_type"] == "video" and r["method"] != "text-only"]
    assert videos and all(r["tokens_before"] == 2 * 49 for r in videos)  # 4 frames at 112 px: 2 temporal x 7 x 7
    assert all(r["tokens_after"] < r["tokens_before"] for r in ok if r["method"] not in ("none", "text-only"))
    assert all(r["tokens_before"] == r["tokens_after"] == 0 for r in ok if r["method"] == "text-only")
    assert all(r["prefill_ms"] > 0 and r["e2e_ms"] > 0 and r["peak_mem_mb"] > 0 for r in ok)

    results = json.loads((out / "results.json").read_text())
    assert len(results["vtc"]["runs"]) == 4  # one lmms-eval run per (model, method)
    run = next((out / "lmms_eval").glob("*__divprune_0.25"))
    saved = json.loads(next(run.glob("*_results.json")).read_text())
    assert {"acc,none", "acc_stderr,none"} <= set(saved["results"]["data"])
    assert saved["config"]["model_args"].endswith("method=divprune,ratio=0.25")
    assert results["vtc"]["totals"]["errors"] == 8 and results["vtc"]["totals"]["samples_with_errors"] == 2
    rows = results["vtc"]["rows"]
    assert [r["method"] for r in rows] == ["none", "text-only", "pool:0.25", "divprune:0.25"]
    assert all(r["n"] == 6 and r["n_errors"] == 2 for r in rows)
    assert "## Errors" in (out / "summary.md").read_text()
    for name in ("summary.csv", "run.json"):
        assert (out / name).exists()
    if importlib.util.find_spec("matplotlib"):
        assert (out / "accuracy_vs_tokens.png").exists() and (out / "latency_vs_tokens.png").exists()

    before = (out / "samples.jsonl").read_bytes()
    capsys.readouterr()
    assert main([*setup["args"], "--out", str(out)]) == 0  # the same command again: nothing left to run
    assert (out / "samples.jsonl").read_bytes() == before
    assert "resuming the run in" in capsys.readouterr().err and "24 of its 24 (model, sample, method) lines" in err_of(
        capsys, setup, out)


def err_of(capsys, setup, out) -> str:
    """stderr of one more resumed run on ``out``."""
    main([*setup["args"], "--out", str(out)])
    return capsys.readouterr().err


def test_a_second_run_on_the_same_out_stops_at_once(setup, capsys, tmp_path):
    from vtc.eval.lock import OutLock

    out = tmp_path / "busy"
    with OutLock(out):
        assert main([*setup["args"], "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"is in use by another vtc eval (PID {os.getpid()} on " in err and ", started 20" in err
    assert not (out / "samples.jsonl").exists() and not (out / "run.json").exists()


def test_resume_refuses_other_settings(setup, capsys):
    args = [a if a != "2" else "3" for a in setup["args"]]  # --max-new-tokens 3
    assert main([*args, "--out", str(setup["out"])]) == 2
    assert "other settings" in capsys.readouterr().err


def test_resume_after_sigkill_equals_an_uninterrupted_run(setup, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, str(setup["entry"]), *setup["args"], "--out", str(out)]
    kill_at = random.Random().randint(1, 23)  # a random point; printed on failure
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as err:  # a file, not a pipe: a full pipe would stall the run
        proc = subprocess.Popen(cmd, env={**subprocess_env(), "VTC_TEST_LINE_DELAY": "0.25"}, stdout=subprocess.DEVNULL,
                                stderr=err)
    path = out / "samples.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and path.read_bytes().count(b"\n") >= kill_at:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before the kill: {log.read_text()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = path.read_bytes().count(b"\n")
    assert kill_at <= written < 24, f"kill_at={kill_at}"
    with open(path, "ab") as f:  # what a kill in the middle of a write leaves
        f.write(b'{"key": "' + setup["model"].encode() + b'|data/shapes-val-0000')
    assert main([*setup["args"], "--out", str(out), "--no-progress"]) == 0
    resumed = lines(out)
    assert len(resumed) == 24 and len({r["key"] for r in resumed}) == 24, f"kill_at={kill_at}"
    assert stable(resumed) == stable(lines(setup["out"])), f"kill_at={kill_at}"


def test_two_process_sharded_run_equals_one_process(setup, tmp_path):
    out = tmp_path / "sharded"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(setup["entry"]), *setup["args"], "--out", str(out)]
    done = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = lines(out)
    assert {r["rank"] for r in records} == {0, 1}
    assert not list(out.glob("samples.rank*"))  # merged by rank 0
    assert stable(records) == stable(lines(setup["out"]))
    mine = json.loads((out / "results.json").read_text())
    reference = json.loads((setup["out"] / "results.json").read_text())
    accs = lambda res: [(r["model"], r["method"], r["acc"]) for r in res["vtc"]["rows"]]  # noqa: E731
    assert accs(mine) == accs(reference) and mine["vtc"]["world_size"] == 2
    assert mine["vtc"]["totals"] == reference["vtc"]["totals"]


def test_builtin_benchmark(setup, tmp_path, capsys):
    defaults = parser().parse_args([])
    assert (defaults.data, defaults.methods, defaults.ratios, defaults.model) == ([], "default", "0.25,0.11", None)
    assert DEFAULT_MODELS == ("vtc-tiny-llava", "vtc-tiny-qwen2vl")
    import vtc

    projector = [m.name for m in vtc.list_methods() if m.stage == "projector"]
    grid = build_grid("all", [0.25, 0.11], BUILTIN_KWARGS)
    assert len(grid) == 2 + 2 * len(projector) and {s.name for s in grid} == {"none", "text-only", *projector}

    llava = save_model(tmp_path / "llava", "llava")
    out = tmp_path / "builtin"
    argv = ["--model", llava, "--model", setup["model"], "--n", "4", "--methods", "visionzip,hiprune", "--ratios",
            "0.25", "--frames", "4", "--max-new-tokens", "2", "--batch-size", "2", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "shapes-video" in printed and "pool:0.25" in printed
    results = json.loads((out / "results.json").read_text())
    assert {(r["task"], r["model"]) for r in results["vtc"]["rows"]} == {
        ("shapes-image", llava), ("shapes-image", setup["model"]), ("shapes-video", setup["model"])}  # no llava videos
    assert results["vtc"]["skipped"][llava] == {"shapes-video": 2}
    assert results["vtc"]["totals"]["errors"] == 0  # visionzip without [CLS] on Qwen; hiprune's layers fit
    assert (out / "data" / "annotations.jsonl").exists()


def test_batched_resume_from_any_prefix(setup, tmp_path):
    """A killed run's file is a prefix of the uninterrupted one's; resuming keeps each batch's members."""
    base = setup["args"]
    args = [("2" if i and base[i - 1] == "--batch-size" else a) for i, a in enumerate(base)]
    reference = tmp_path / "batched"
    assert main([*args, "--out", str(reference)]) == 0
    full = (reference / "samples.jsonl").read_bytes().splitlines(keepends=True)
    for cut in sorted(random.Random().sample(range(1, len(full)), 2)):
        out = tmp_path / f"cut{cut}"
        out.mkdir()
        (out / "samples.jsonl").write_bytes(b"".join(full[:cut]) + full[cut][:10])
        assert main([*args, "--out", str(out)]) == 0
        assert stable(lines(out)) == stable(lines(reference)), f"cut={cut}"
        assert len(lines(out)) == len(full)


def test_embedded_model_without_weights_fails_fast(tmp_path, monkeypatch, capsys):
    from vtc.models import loading

    monkeypatch.setitem(loading.EMBEDDED, "vtc-tiny-llava", tmp_path / "absent")
    assert main(["--model", "vtc-tiny-llava", "--out", str(tmp_path / "out"), "--n", "2"]) == 2
    assert "has no weights in this install" in capsys.readouterr().err


def test_llm_stage_methods_are_evaluated(setup, tmp_path):
    """fastv in the grid: its token count is the count after its layer (a quarter of the visual tokens)."""
    args = [a if a != "divprune:0.25" else "fastv:0.25" for a in setup["args"]]
    out = tmp_path / "llm"
    assert main([*args, "--out", str(out)]) == 0
    fastv = [r for r in lines(out) if r["method"].startswith("fastv") and not r.get("error")]
    assert fastv
    for r in fastv:
        assert r["tokens_after"] == max(1, int(r["tokens_before"] * 0.25 + 0.5))


def test_pairs_that_cannot_run_stop_the_run_before_the_first_sample(setup, tmp_path, capsys):
    """pyramiddrop's default layers (8, 16, 24) do not exist in a 4-layer LLM, hiprune's (8, -2) not in a 4-block
    tower: one line each, and nothing runs."""
    args = [a if a != "divprune:0.25" else "divprune:0.25,pyramiddrop:0.5,hiprune:0.25" for a in setup["args"]]
    out = tmp_path / "refused"
    capsys.readouterr()
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    model = setup["model"]
    assert "nothing was run; fix these first:" in err
    assert f"{model} × pyramiddrop:0.5: pyramiddrop: layer(s) (8, 16, 24) must leave a decoder layer" in err
    assert f"{model} × hiprune:0.25: hiprune: reads encoder layer(s) [8], but the qwen2_vl vision tower" in err
    assert "divprune" not in err and "pool" not in err
    assert not (out / "samples.jsonl").exists()


def test_questions_with_more_options_than_the_model_offers_are_refused(setup, tmp_path, capsys, monkeypatch):
    """The embedded models offer all 26 letters, as the data does; a model whose prompt format offers fewer
    (here: 4, as the models before issue M did) is refused before the first sample."""
    from vtc.models import loading

    assert loading.max_options(setup["model"]) == 26
    monkeypatch.setattr(loading, "max_options", lambda name: 4)
    annotations = tmp_path / "many.jsonl"
    image = setup["root"] / "data" / "media"
    first = sorted(p.name for p in image.glob("*.png"))[0]
    annotations.write_text(json.dumps({"id": "many", "image": str(image / first), "question": "which ?",
                                       "options": [f"answer {i}" for i in range(5)], "answer": "A"}) + "\n")
    capsys.readouterr()
    assert main([str(annotations), *setup["args"][1:], "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "the data has questions with 5 options; this model's prompt format offers at most 4" in err
    assert not (tmp_path / "out" / "samples.jsonl").exists()
