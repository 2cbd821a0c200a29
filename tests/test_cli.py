"""The `vtc` command: the registry table and the synthetic method benchmark."""

from __future__ import annotations

import vtc
from vtc.cli import main


def test_methods_table(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["name", "stage", "signals"]
    names = [line.split()[0] for line in lines[2:]]
    assert names == [m.name for m in vtc.list_methods()]


def test_bench_methods_reports_counts(capsys):
    assert main(["bench", "methods", "--n", "64", "--dim", "16", "--ratio", "0.25", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[3:]}
    assert rows["divprune"][2] == "16,16"
    assert rows["pool"][2] == "16,16"
    assert set(rows) == {m.name for m in vtc.list_methods() if m.stage == "projector"}


def test_bench_rejects_non_square(capsys):
    assert main(["bench", "methods", "--n", "50"]) == 2
    assert "frames x side x side tokens" in capsys.readouterr().err


def test_bench_methods_video_grid_isolated(capsys):
    """2 frames x 4 x 4: the uniform baseline splits the budget per frame; --isolate reports peak memory."""
    argv = ["bench", "methods", "--n", "32", "--frames", "2", "--dim", "8", "--ratio", "0.5", "--repeats", "1",
            "--methods", "uniform,divprune", "--isolate", "--batch", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "(2 x 4 x 4)" in out.splitlines()[0]
    rows = {line.split()[0]: line.split() for line in out.splitlines()[3:]}
    assert rows["uniform"][2] == rows["divprune"][2] == "16"
    assert float(rows["divprune"][4]) >= 0


def test_bench_kernels_table(capsys):
    assert main(["bench", "kernels", "--n", "64", "--d", "8", "--kernels", "maxmin", "--fractions", "0.25"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("device: cpu; vtc backend: torch")
    row = [c.strip() for c in lines[-1].strip("|").split("|")]
    assert row[:4] == ["maxmin", "64", "8", "16"]
    assert row[6].endswith("x") and float(row[6][:-1]) > 0
