"""`vtc eval` bookkeeping without a model: metrics, the difficult split, crash-safe lines, report files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from vtc.eval.dist import Dist, from_env
from vtc.eval.grid import build_grid
from vtc.eval.metrics import acc_stderr, bootstrap_ci, summarise
from vtc.eval.report import CSV_COLUMNS, write_reports
from vtc.eval.runner import chunks
from vtc.eval.store import SAMPLES, LineWriter, done_keys, merge, read_all, read_lines, repair_tail, shard_path


def line(sample: int, method: str, correct: bool, status: str = "ok", task: str = "t", model: str = "m") -> dict:
    ok = status == "ok"
    answer = "ABCD"[sample % 4]
    extracted = answer if correct else "A" if answer != "A" else "B"
    return {
        "key": f"{model}|{task}/{sample}|{method}", "task": task, "id": str(sample), "model": model, "method": method,
        "method_name": method.split(":")[0], "status": status, "error": None if ok else "video: no such file x.mp4",
        "correct": correct and ok, "tokens_before": 100 if ok else None,
        "tokens_after": (100 if method == "none" else 25) if ok else None, "prefill_ms": 10.0 if ok else None,
        "e2e_ms": 20.0 if ok else None, "peak_mem_mb": 500.0 if ok else None,
        "answer": answer, "n_options": 4, "extracted": extracted if ok else None, "doc_id": sample,
        "doc": {"id": str(sample), "question": "q", "options": ["w", "x", "y", "z"], "answer": answer},
        "target": answer, "resps": [[extracted]] if ok else [], "filtered_resps": [extracted] if ok else [],
        "acc": float(correct and ok), "question": "q",
    }


# samples 0-9: pool gets 0-3 wrong (the difficult split); divprune gets 0, 1 of those right; none gets 0-2 right
RECORDS = (
    [line(i, "none", i != 9) for i in range(10)]
    + [line(i, "pool:0.25", i >= 4) for i in range(10)]
    + [line(i, "divprune:0.25", i in (0, 1, 5, 6, 7)) for i in range(10)]
    + [line(10, m, False, "error") for m in ("none", "pool:0.25", "divprune:0.25")]
)
GRID = build_grid("divprune:0.25", [0.25])


def test_bootstrap_and_stderr():
    values = [1.0] * 30 + [0.0] * 10
    lo, hi = bootstrap_ci(values, n_boot=2000, seed=0)
    assert lo < 0.75 < hi and 0.55 < lo and hi < 0.9
    assert bootstrap_ci(values, seed=0) == bootstrap_ci(values, seed=0)  # seeded
    assert bootstrap_ci([1.0, 1.0]) == (1.0, 1.0)
    assert acc_stderr(values) == pytest.approx(np.std(values, ddof=1) / np.sqrt(40))
    assert acc_stderr([1.0]) == 0.0


def test_summary_rows_and_the_difficult_split():
    rows = {r["method"]: r for r in summarise(RECORDS, GRID, n_boot=200)}
    assert list(rows) == ["none", "pool:0.25", "divprune:0.25"]
    none, pool, div = rows["none"], rows["pool:0.25"], rows["divprune:0.25"]
    assert (none["n"], none["n_ok"], none["n_errors"], none["acc"]) == (11, 10, 1, 0.9)
    assert pool["acc"] == 0.6 and div["acc"] == 0.5
    assert div["pct_of_none"] == pytest.approx(100 * 0.5 / 0.9)
    assert div["baseline"] == "pool:0.25" and pool["baseline"] is None and none["baseline"] is None
    assert (div["difficult_n"], div["difficult_acc"], div["difficult_none_acc"]) == (4, 0.5, 1.0)
    assert pool["difficult_acc"] is None
    assert (div["tokens_before"], div["tokens_after"], div["keep"]) == (100, 25, 0.25)
    assert div["throughput"] == pytest.approx(50.0)  # 20 ms per sample
    assert div["ci_low"] <= div["acc"] <= div["ci_high"]


def test_repair_tail_and_reading(tmp_path):
    path = tmp_path / SAMPLES
    with LineWriter(path) as w:
        for r in RECORDS[:3]:
            w.write(r)
    with open(path, "a") as f:
        f.write('{"key": "m|t/9|none", "tas')  # killed mid-line
    assert len(read_lines(path)) == 3
    assert repair_tail(path) > 0 and path.read_text().endswith("\n") and repair_tail(path) == 0
    with LineWriter(path) as w:  # appending repairs first, so the new line is whole
        w.write(RECORDS[3])
    assert [r["key"] for r in read_lines(path)] == [r["key"] for r in RECORDS[:4]]
    one = tmp_path / "one.jsonl"
    one.write_text('{"key": "x"')
    assert repair_tail(one) == len('{"key": "x"') and one.read_text() == ""


def test_shards_merge_into_one_file_without_duplicates(tmp_path):
    with LineWriter(tmp_path / SAMPLES) as w:
        w.write(RECORDS[0])
    for rank, part in enumerate((RECORDS[:5], RECORDS[5:9])):  # rank 0 repeats line 0
        with LineWriter(shard_path(tmp_path, rank)) as w:
            for r in part:
                w.write(r)
    assert len(done_keys(tmp_path)) == 9
    assert merge(tmp_path) == 9
    assert not list(tmp_path.glob("samples.rank*")) and len(read_lines(tmp_path / SAMPLES)) == 9
    assert [r["key"] for r in read_all(tmp_path)] == [r["key"] for r in RECORDS[:9]]


def test_paired_differences_chance_and_groundedness():
    rows = {r["method"]: r for r in summarise(RECORDS, GRID, n_boot=500)}
    none, pool, div = rows["none"], rows["pool:0.25"], rows["divprune:0.25"]
    # divprune - none on samples 0-9: -1 on 2, 3, 4, 8; 0 elsewhere -> -0.4, an interval below zero
    assert div["vs_none"]["diff"] == pytest.approx(-0.4) and div["vs_none"]["n"] == 10
    assert div["vs_none"]["ci_high"] < 0 and div["vs_none"]["significant"]
    # divprune - pool: +1 on 0, 1; -1 on 4, 8, 9 -> -0.1, an interval around zero
    assert div["vs_pool"]["diff"] == pytest.approx(-0.1) and not div["vs_pool"]["significant"]
    assert none["vs_none"] is None and pool["vs_pool"] is None and none["chance"] == 0.25
    # none answers right 9 of 10 (gold letters A B C D A B C D A B); its one miss (sample 9, gold B) says A
    assert (none["top_letter"], none["top_letter_share"], none["gold_share"]) == ("A", 0.4, 0.3)


def test_report_files_schema(tmp_path):
    rows = summarise(RECORDS, GRID, n_boot=100)
    meta = {"models": ["m"], "task_sizes": {"t": 11}, "skipped": {"m": {}}, "settings": {"max_new_tokens": 4},
            "batch_size": 2, "device": "cpu", "stamp": "S"}
    results = write_reports(tmp_path, rows, RECORDS, GRID, meta)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert "results" not in saved  # vtc's own file; the lmms-eval runs are one per (model, method)
    runs = {label: json.loads((tmp_path / "lmms_eval" / f"m__{slug}" / "S_results.json").read_text())
            for label, slug in (("none", "none"), ("pool:0.25", "pool_0.25"), ("divprune:0.25", "divprune_0.25"))}
    assert runs["none"]["results"]["t"]["acc,none"] == 0.9 and runs["divprune:0.25"]["results"]["t"]["acc,none"] == 0.5
    assert set(runs["none"]["results"]["t"]) == {"alias", "acc,none", "acc_stderr,none"}
    assert runs["divprune:0.25"]["config"]["model_args"] == "pretrained=m,method=divprune,ratio=0.25"
    assert runs["none"]["config"]["model_args"] == "pretrained=m,method=none"
    assert runs["none"]["n-samples"]["t"] == {"original": 11, "effective": 10}
    for key in ("configs", "versions", "n-shot", "higher_is_better"):
        assert "t" in runs["none"][key]
    samples = [json.loads(x) for x in (tmp_path / "lmms_eval" / "m__divprune_0.25" / "S_samples_t.jsonl").open()]
    assert [s["doc_id"] for s in samples] == list(range(11))
    first = samples[0]
    assert {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "acc", "vtc"} <= set(first)
    assert first["doc"]["question"] == "q" and first["doc"]["options"] == ["w", "x", "y", "z"]
    assert (first["target"], first["resps"], first["filtered_resps"], first["acc"]) == ("A", [["A"]], ["A"], 1.0)
    assert first["vtc"]["tokens_before"] == 100 and first["vtc"]["tokens_after"] == 25 and first["vtc"]["prefill_ms"]
    v = saved["vtc"]
    assert sorted(v["runs"]) == ["lmms_eval/m__divprune_0.25", "lmms_eval/m__none", "lmms_eval/m__pool_0.25"]
    assert v["totals"] == {"lines": 33, "ok": 30, "errors": 3, "samples_with_errors": 1}
    assert v["errors"] == [{"task": "t", "id": "10", "model": "m", "error": "video: no such file x.mp4",
                            "methods": ["none", "pool:0.25", "divprune:0.25"]}]
    assert [r["method"] for r in v["rows"]] == ["none", "pool:0.25", "divprune:0.25"]
    assert results["vtc"]["rows"] == v["rows"]
    assert v["difficult"] == [{"task": "t", "model": "m", "baseline": "pool:0.25", "n": 4, "none_acc": 1.0,
                               "methods": {"divprune:0.25": {"acc": 0.5, "n": 4}}}]
    table = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert list(table[0]) == CSV_COLUMNS and len(table) == 3
    md = (tmp_path / "summary.md").read_text()
    assert "**pool:0.25**" in md and "## t — m" in md and "## Errors" in md and "## Difficult split" in md
    assert "Scoring. Multiple choice: the option letter read from the answer" in md
    assert "chance (uniform guess over each question's options): 25.0%" in md
    assert "none (uncompressed): 90.0% [" in md and "groundedness: none answers 'A' on 40.0%" in md
    assert "-40.0 [" in md and "] *" in md  # divprune vs none: significant
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert v["plots"] == [] and "plots_skipped" in v
    else:
        for name in ("accuracy_vs_tokens.png", "latency_vs_tokens.png"):
            assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_two_models_write_one_lmms_eval_run_each(tmp_path):
    records = RECORDS + [dict(r, model="n", key="n" + r["key"][1:]) for r in RECORDS]
    rows = summarise(records, GRID, n_boot=10)
    results = write_reports(tmp_path, rows, records, GRID, {"models": ["m", "n"], "stamp": "S"})
    assert len(results["vtc"]["runs"]) == 6
    assert json.loads((tmp_path / "lmms_eval" / "n__none" / "S_results.json").read_text())["config"][
        "model_args"] == "pretrained=n,method=none"


def test_rank_from_env_and_chunking():
    assert from_env({}) == Dist(0, 1, 0)
    assert from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == Dist(3, 4, 1)
    with pytest.raises(ValueError, match="inconsistent"):
        from_env({"RANK": "4", "WORLD_SIZE": "4"})
    from vtc.eval.data import Item

    items = [Item("t", str(i), "x", "video" if i % 2 else "image", "q") for i in range(5)]
    assert [[it.id for it in c] for c in chunks(items, 2)] == [["0", "2"], ["4"], ["1", "3"]]
