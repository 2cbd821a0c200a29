"""Reports of a run: ``results.json``, ``summary.md``, ``summary.csv`` and two plots.

``results.json`` is shaped like lmms-eval's: ``results[task]["acc,<method>"]`` and
``results[task]["acc_stderr,<method>"]``, where the lmms-eval filter slot names the compression method,
so ``"acc,none"`` is the uncompressed accuracy and ``"acc,pool:0.25"`` the downsampling baseline's.
With more than one model the task keys are ``<task>@<model>``. ``n-samples``, ``configs``,
``versions``, ``higher_is_better``, ``n-shot`` and ``config`` follow lmms-eval; vtc's own fields are
under ``"vtc"``: ``rows`` (every metric of :mod:`vtc.eval.metrics`, one per task, model and method),
``difficult`` (per task, model and baseline: the split's size, ``none``'s and each method's accuracy
on it), ``grid``, ``settings``, ``errors`` (per failed sample and model: the reason and the methods),
``skipped`` (samples a model cannot take, per model and task) and ``totals``.

``summary.md`` has one table per task and model (the ``pool`` baseline rows in bold) and the errors;
``summary.csv`` has the rows. ``accuracy_vs_tokens.png`` and ``latency_vs_tokens.png`` (matplotlib,
Agg backend; skipped with a note when matplotlib is missing) plot accuracy and prefill time against the
visual tokens reaching the LLM, one panel per task and model: each method a line over its budgets,
``pool`` thick black, ``none`` a dashed line and a star.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections import defaultdict
from pathlib import Path

from vtc.core.spec import MethodSpec
from vtc.eval.grid import BASELINE, baseline_of
from vtc.eval.metrics import difficult_splits
from vtc.eval.store import write_atomic

RESULTS, SUMMARY_MD, SUMMARY_CSV = "results.json", "summary.md", "summary.csv"
ACC_PLOT, LATENCY_PLOT = "accuracy_vs_tokens.png", "latency_vs_tokens.png"
CSV_COLUMNS = [
    "task", "model", "method", "method_name", "budget", "n", "n_ok", "n_errors", "acc", "acc_stderr", "ci_low",
    "ci_high", "pct_of_none", "tokens_before", "tokens_after", "keep", "prefill_ms", "e2e_ms", "throughput",
    "peak_mem_mb", "baseline", "difficult_n", "difficult_acc", "difficult_none_acc",
]


def task_key(row: dict, multi_model: bool) -> str:
    return f"{row['task']}@{row['model']}" if multi_model else row["task"]


def sample_errors(records: list[dict]) -> list[dict]:
    """Error lines grouped per (task, id, model, reason), with the methods they hit."""
    groups: dict[tuple, list[str]] = defaultdict(list)
    for r in records:
        if r["status"] == "error":
            groups[(r["task"], r["id"], r["model"], r["error"])].append(r["method"])
    return [{"task": t, "id": i, "model": m, "error": e, "methods": ms} for (t, i, m, e), ms in groups.items()]


def results_json(rows: list[dict], records: list[dict], grid: list[MethodSpec], meta: dict) -> dict:
    """The lmms-eval-shaped results with vtc's fields under ``"vtc"`` (module docstring)."""
    models = list(dict.fromkeys(r["model"] for r in rows)) or list(meta.get("models", []))
    multi = len(models) > 1
    results: dict[str, dict] = {}
    n_samples: dict[str, dict] = {}
    for r in rows:
        key = task_key(r, multi)
        entry = results.setdefault(key, {"alias": key})
        entry[f"acc,{r['method']}"] = r["acc"]
        entry[f"acc_stderr,{r['method']}"] = r["acc_stderr"]
        if r["method"] == "none":
            n_samples[key] = {"original": meta.get("task_sizes", {}).get(r["task"], r["n"]), "effective": r["n_ok"]}
    generation = {"max_new_tokens": meta.get("settings", {}).get("max_new_tokens"), "do_sample": False}
    errors = sample_errors(records)
    return {
        "results": results,
        "group_subtasks": {k: [] for k in results},
        "configs": {k: {"task": k, "output_type": "generate_until", "generation_kwargs": generation,
                        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}
                    for k in results},
        "versions": {k: 1 for k in results},
        "n-shot": {k: 0 for k in results},
        "higher_is_better": {k: {"acc": True} for k in results},
        "n-samples": n_samples,
        "config": {"model": "vtc", "model_args": ",".join(models), "batch_size": meta.get("batch_size"),
                   "device": meta.get("device"), "limit": meta.get("limit")},
        "date": time.time(),
        "vtc": {
            "version": 1,
            "models": models,
            "grid": [{"label": s.label, "name": s.name, "budget": s.budget, "kwargs": s.kwargs,
                      "baseline": baseline_of(s)} for s in grid],
            "settings": meta.get("settings", {}),
            "world_size": meta.get("world_size", 1),
            "rows": rows,
            "difficult": difficult_splits(rows),
            "errors": errors,
            "skipped": meta.get("skipped", {}),
            "totals": {"lines": len(records), "ok": sum(r["status"] == "ok" for r in records),
                       "errors": sum(r["status"] == "error" for r in records),
                       "samples_with_errors": len({(e["task"], e["id"], e["model"]) for e in errors})},
        },
    }


def _pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table_rows(rows: list[dict]) -> list[list[str]]:
    """The summary table's cells, one list per row."""
    out = []
    for r in rows:
        method = f"**{r['method']}**" if r["method_name"] == BASELINE else r["method"]
        tokens = "-" if r["tokens_before"] is None else f"{r['tokens_before']:.0f} → {r['tokens_after']:.0f}"
        acc = _pct(r["acc"])
        if r["ci_low"] is not None:
            acc += f" [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]"
        hard = "-" if r["difficult_n"] is None else f"{_pct(r['difficult_acc'])} (n={r['difficult_n']})"
        out.append([method, tokens, acc, _num(r["pct_of_none"]), hard, _pct(r["difficult_none_acc"]),
                    _num(r["prefill_ms"]), _num(r["e2e_ms"]), _num(r["throughput"], 2), _num(r["peak_mem_mb"], 0),
                    str(r["n_errors"])])
    return out


HEADER = ["method", "visual tokens", "acc % [95% CI]", "% of none", "difficult acc % (n)", "none on difficult %",
          "prefill ms", "e2e ms", "samples/s", "peak MB", "errors"]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows])


def summary_md(results: dict, task_sizes: dict[str, int]) -> str:
    v = results["vtc"]
    rows = v["rows"]
    totals = v["totals"]
    parts = [
        "# vtc eval",
        "",
        f"Models: {', '.join(v['models'])}. Tasks: "
        + ", ".join(f"{t} ({n} samples)" for t, n in task_sizes.items()) + ".",
        f"Methods: {', '.join(s['label'] for s in v['grid'])}.",
        f"Lines: {totals['ok']} ok, {totals['errors']} errors ({totals['samples_with_errors']} samples with errors).",
        "",
        "Accuracy over the pairs that ran (errors excluded), with a 95% bootstrap interval. **pool** is plain "
        "downsampling at the same budget (the iso-token baseline). The difficult split is the samples that "
        "baseline gets wrong (VTC-Bench); 'none on difficult' is the uncompressed model on them. Times are per "
        "sample (batch time / batch size).",
    ]
    for model, skipped in v["skipped"].items():
        if skipped:
            parts.append(f"Skipped by {model} (media it cannot take): "
                         + ", ".join(f"{t}: {n}" for t, n in skipped.items()) + ".")
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["task"], r["model"])].append(r)
    for (task, model), group in groups.items():
        parts += ["", f"## {task} — {model}", "", markdown_table(HEADER, table_rows(group))]
    if v["difficult"]:
        parts += ["", "## Difficult split", "",
                  "Samples the iso-token pool baseline answers wrongly, per task, model and budget.", ""]
        cells = [[d["task"], d["model"], d["baseline"], str(d["n"]), _pct(d["none_acc"]),
                  ", ".join(f"{m} {_pct(x['acc'])}" for m, x in d["methods"].items())] for d in v["difficult"]]
        parts.append(markdown_table(["task", "model", "baseline", "samples", "none acc %", "methods acc %"], cells))
    if v["errors"]:
        parts += ["", "## Errors", ""]
        shown = v["errors"][:100]
        parts.append(markdown_table(["task", "id", "model", "error", "methods"],
                                    [[e["task"], e["id"], e["model"], e["error"], str(len(e["methods"]))]
                                     for e in shown]))
        if len(v["errors"]) > len(shown):
            parts.append(f"\n... and {len(v['errors']) - len(shown)} more (results.json: vtc.errors)")
    return "\n".join(parts) + "\n"


def summary_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: json.dumps(r[k]) if isinstance(r[k], dict) else ("" if r[k] is None else r[k])
                         for k in CSV_COLUMNS})
    return buffer.getvalue()


def plot(rows: list[dict], metric: str, ylabel: str, path: Path) -> None:
    """One panel per task and model: ``metric`` against the visual tokens reaching the LLM."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        if r[metric] is not None and r["tokens_after"] is not None:
            groups[(r["task"], r["model"])].append(r)
    names = list(dict.fromkeys(r["method_name"] for r in rows if r["method_name"] not in ("none", BASELINE)))
    colours = {n: plt.get_cmap("tab20")(i % 20) for i, n in enumerate(names)}
    cols = min(3, max(1, len(groups)))
    nrows = max(1, math.ceil(len(groups) / cols))
    legend_rows = math.ceil((len(names) + 2) / 5)
    legend_in = 0.3 * legend_rows + 0.2
    height = 4 * nrows + legend_in
    fig, axes = plt.subplots(nrows, cols, figsize=(5.5 * cols, height), squeeze=False)
    handles: dict[str, object] = {}
    scale = 100 if metric == "acc" else 1
    for ax, ((task, model), group) in zip(axes.flat, groups.items(), strict=False):
        by_name: dict[str, list[dict]] = defaultdict(list)
        for r in group:
            by_name[r["method_name"]].append(r)
        for name, pts in by_name.items():
            pts = sorted(pts, key=lambda r: r["tokens_after"])
            xs, ys = [p["tokens_after"] for p in pts], [p[metric] * scale for p in pts]
            if name == "none":
                ax.axhline(ys[0], color="grey", ls="--", lw=1)
                handles["none"] = ax.plot(xs, ys, "*", color="grey", ms=12, label="none (uncompressed)")[0]
            elif name == BASELINE:
                handles[name] = ax.plot(xs, ys, "s-", color="black", lw=2.5, label="pool (iso-token baseline)")[0]
            else:
                handles[name] = ax.plot(xs, ys, "o-", color=colours[name], lw=1.2, label=name)[0]
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(f"{task} — {model}", fontsize=9)
        ax.set_xlabel("visual tokens to the LLM")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    if handles:
        fig.legend(list(handles.values()), [h.get_label() for h in handles.values()], loc="lower center",
                   ncol=min(5, len(handles)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, legend_in / height if handles else 0, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reports(out: Path, rows: list[dict], records: list[dict], grid: list[MethodSpec], meta: dict) -> dict:
    """Write every report file into ``out``; returns the results dict (plots noted under ``vtc.plots``)."""
    results = results_json(rows, records, grid, meta)
    plots: list[str] = []
    try:
        plot(rows, "acc", "accuracy %", out / ACC_PLOT)
        plot(rows, "prefill_ms", "prefill ms per sample", out / LATENCY_PLOT)
        plots = [ACC_PLOT, LATENCY_PLOT]
    except ImportError:
        results["vtc"]["plots_skipped"] = "matplotlib is not installed (pip install matplotlib)"
    results["vtc"]["plots"] = plots
    write_atomic(out / RESULTS, json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    write_atomic(out / SUMMARY_MD, summary_md(results, meta.get("task_sizes", {})))
    write_atomic(out / SUMMARY_CSV, summary_csv(rows))
    return results
