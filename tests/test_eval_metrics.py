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
    return {
        "key": f"{model}|{task}/{sample}|{method}", "task": task, "id": str(sample), "model": model, "method": method,
        "method_name": method.split(":")[0], "status": status, "error": None if ok else "video: no such file x.mp4",
        "correct": correct and ok, "tokens_before": 100 if ok else None,
        "tokens_after": (100 if method == "none" else 25) if ok else None, "prefill_ms": 10.0 if ok else None,
        "e2e_ms": 20.0 if ok else None, "peak_mem_mb": 500.0 if ok else None,
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


def test_report_files_schema(tmp_path):
    rows = summarise(RECORDS, GRID, n_boot=100)
    meta = {"models": ["m"], "task_sizes": {"t": 11}, "skipped": {"m": {}}, "settings": {"max_new_tokens": 4},
            "batch_size": 2, "device": "cpu"}
    results = write_reports(tmp_path, rows, RECORDS, GRID, meta)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["results"]["t"]["acc,none"] == 0.9 and saved["results"]["t"]["acc,divprune:0.25"] == 0.5
    assert set(saved["results"]["t"]) == {"alias"} | {f"{m},{s.label}" for s in GRID for m in ("acc", "acc_stderr")}
    assert saved["n-samples"]["t"] == {"original": 11, "effective": 10}
    for key in ("configs", "versions", "n-shot", "higher_is_better", "config"):
        assert "t" in saved[key] or key == "config"
    v = saved["vtc"]
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
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert v["plots"] == [] and "plots_skipped" in v
    else:
        for name in ("accuracy_vs_tokens.png", "latency_vs_tokens.png"):
            assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_two_models_key_tasks_by_model(tmp_path):
    records = RECORDS + [dict(r, model="n", key="n" + r["key"][1:]) for r in RECORDS]
    rows = summarise(records, GRID, n_boot=10)
    results = write_reports(tmp_path, rows, records, GRID, {"models": ["m", "n"]})
    assert set(results["results"]) == {"t@m", "t@n"}


def test_rank_from_env_and_chunking():
    assert from_env({}) == Dist(0, 1, 0)
    assert from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == Dist(3, 4, 1)
    with pytest.raises(ValueError, match="inconsistent"):
        from_env({"RANK": "4", "WORLD_SIZE": "4"})
    from vtc.eval.data import Item

    items = [Item("t", str(i), "x", "video" if i % 2 else "image", "q") for i in range(5)]
    assert [[it.id for it in c] for c in chunks(items, 2)] == [["0", "2"], ["4"], ["1", "3"]]
