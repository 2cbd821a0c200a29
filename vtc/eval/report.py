"""Reports of a run: one lmms-eval run per (model, method), and the combined ``results.json``, ``summary.md``,
``summary.csv`` and two plots.

lmms-eval's own shapes (``lmms_eval/<model>__<method>/``, one folder per (model, method), each a run that
lmms-eval's tooling reads as one): ``<stamp>_results.json`` with ``results[task]["acc,none"]`` and
``"acc_stderr,none"`` (``none`` is lmms-eval's default filter), ``configs``, ``versions``, ``n-shot``,
``higher_is_better``, ``n-samples`` and ``config`` whose ``model_args`` names the model, the method and its
budget (``pretrained=vtc-tiny-llava,method=divprune,ratio=0.25``); and ``<stamp>_samples_<task>.jsonl``,
one line per sample with lmms-eval's fields (``doc_id``, ``doc``, ``target``, ``arguments``, ``resps``,
``filtered_resps``, ``acc``) and vtc's under ``"vtc"`` (tokens before and after, latencies, status).

``results.json`` (vtc's own, not an lmms-eval file): ``vtc.rows`` (every metric of
:mod:`vtc.eval.metrics`, one per task, model and method), ``difficult`` (per task, model and baseline: the
split's size, ``none``'s and each method's accuracy on it), ``grid``, ``settings``, ``scoring``, ``errors``
(per failed sample and model: the reason and the methods), ``skipped`` (samples a model cannot take, per
model and task), ``totals`` and ``runs`` (the lmms-eval folders).

``summary.md`` states the scoring rule and, per task and model, the samples, the chance level, ``none``
with its interval and the ``text-only`` control, whether the answers are grounded (the most frequent
letter), and a table with each method's paired difference from ``none`` and from ``pool`` (marked
significant only when the paired bootstrap interval excludes zero); ``summary.csv`` has the rows.
``accuracy_vs_tokens.png`` and ``latency_vs_tokens.png`` (matplotlib, Agg backend; skipped with a note when
matplotlib is missing) plot accuracy (with its 95% interval) and prefill time against the visual tokens
reaching the LLM, one panel per task and model: each method a line over its budgets, ``pool`` thick black,
``none`` a dashed line and a star, ``text-only`` a dotted line.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from pathlib import Path

from vtc.core.spec import MethodSpec
from vtc.eval.grid import BASELINE, BASELINES, baseline_of
from vtc.eval.metrics import difficult_splits
from vtc.eval.store import write_atomic

RESULTS, SUMMARY_MD, SUMMARY_CSV = "results.json", "summary.md", "summary.csv"
ACC_PLOT, LATENCY_PLOT = "accuracy_vs_tokens.png", "latency_vs_tokens.png"
CSV_COLUMNS = [
    "task", "model", "method", "method_name", "budget", "n", "n_ok", "n_errors", "acc", "acc_stderr", "ci_low",
    "ci_high", "pct_of_none", "tokens_before", "tokens_after", "keep", "prefill_ms", "e2e_ms", "throughput",
    "peak_mem_mb", "baseline", "difficult_n", "difficult_acc", "difficult_none_acc", "chance", "top_letter",
    "top_letter_share", "gold_share", "vs_none", "vs_pool",
]


def sample_errors(records: list[dict]) -> list[dict]:
    """Error lines grouped per (task, id, model, reason), with the methods they hit."""
    groups: dict[tuple, list[str]] = defaultdict(list)
    for r in records:
        if r["status"] == "error":
            groups[(r["task"], r["id"], r["model"], r["error"])].append(r["method"])
    return [{"task": t, "id": i, "model": m, "error": e, "methods": ms} for (t, i, m, e), ms in groups.items()]


SCORING = (
    "Multiple choice: the option letter read from the answer must equal the gold letter (vtc.eval.answers."
    "extract_letter, lmms-eval's rules: a bare letter, 'answer: X', '(X)', a leading 'X.', a standalone "
    "capital letter, else the one option whose text the answer names). Short answers: the normalised answer "
    "(lower case, no punctuation or articles, number words as digits) equals the reference."
)


def slug(text: str) -> str:
    """A folder-safe name: letters, digits, ``.``, ``_``, ``-``, ``=``; the rest as ``_``."""
    return "".join(c if c.isalnum() or c in "._-=" else "_" for c in text).strip("_") or "_"


def model_args(model: str, spec: MethodSpec) -> str:
    """lmms-eval's ``model_args`` of one run: the model, the method, its budget and kwargs."""
    parts = [f"pretrained={model}", f"method={spec.name}"]
    parts += [f"{k}={v}" for k, v in spec.budget.items()]
    parts += [f"{k}={v}" for k, v in sorted(spec.kwargs.items())]
    return ",".join(parts)


def lmms_eval_runs(out: Path, rows: list[dict], records: list[dict], grid: list[MethodSpec], meta: dict) -> list[str]:
    """Write one lmms-eval run per (model, method): results and per-task samples (module docstring)."""
    stamp = meta.get("stamp", "run")
    by_label = {s.label: s for s in grid}
    runs: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        runs[(r["model"], r["method"])].append(r)
    lines: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for r in records:
        lines[(r["model"], r["method"], r["task"])].append(r)
    generation = {"max_new_tokens": meta.get("settings", {}).get("max_new_tokens"), "do_sample": False}
    written = []
    for (model, method), group in runs.items():
        folder = out / "lmms_eval" / f"{slug(model)}__{slug(method)}"
        folder.mkdir(parents=True, exist_ok=True)
        spec = by_label[method]
        tasks = [r["task"] for r in group]
        results = {
            "results": {r["task"]: {"alias": r["task"], "acc,none": r["acc"], "acc_stderr,none": r["acc_stderr"]}
                        for r in group},
            "group_subtasks": {t: [] for t in tasks},
            "configs": {t: {"task": t, "output_type": "generate_until", "generation_kwargs": generation,
                            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}
                        for t in tasks},
            "versions": {t: 1 for t in tasks},
            "n-shot": {t: 0 for t in tasks},
            "higher_is_better": {t: {"acc": True} for t in tasks},
            "n-samples": {r["task"]: {"original": meta.get("task_sizes", {}).get(r["task"], r["n"]),
                                      "effective": r["n_ok"]} for r in group},
            "config": {"model": "vtc", "model_args": model_args(model, spec), "batch_size": meta.get("batch_size"),
                       "device": meta.get("device"), "limit": meta.get("limit"), "gen_kwargs": generation},
            "model_name": "vtc",
            "model_name_sanitized": f"{slug(model)}__{slug(method)}",
            "date": stamp,
            "vtc": {"model": model, "method": method, "rows": group},
        }
        write_atomic(folder / f"{stamp}_results.json", json.dumps(results, indent=1, ensure_ascii=False) + "\n")
        for task in tasks:
            samples = sorted(lines[(model, method, task)], key=lambda r: r.get("doc_id", 0))
            text = "".join(json.dumps(lmms_eval_sample(r, generation), ensure_ascii=False) + "\n" for r in samples)
            write_atomic(folder / f"{stamp}_samples_{slug(task)}.jsonl", text)
        written.append(str(folder.relative_to(out)))
    return written


VTC_FIELDS = ("tokens_before", "tokens_after", "prefill_ms", "e2e_ms", "load_ms", "peak_mem_mb", "batch_size",
              "prediction", "extracted", "status", "error", "method", "model", "rank")


def lmms_eval_sample(record: dict, generation: dict) -> dict:
    """One ``samples_<task>.jsonl`` line: lmms-eval's fields, then vtc's under ``"vtc"``."""
    return {"doc_id": record.get("doc_id"), "doc": record.get("doc"), "target": record.get("target"),
            "arguments": [[record.get("question"), generation]], "resps": record.get("resps", []),
            "filtered_resps": record.get("filtered_resps", []), "acc": record.get("acc"),
            "vtc": {k: record.get(k) for k in VTC_FIELDS}}


def results_json(rows: list[dict], records: list[dict], grid: list[MethodSpec], meta: dict) -> dict:
    """vtc's combined results (module docstring)."""
    models = list(dict.fromkeys(r["model"] for r in rows)) or list(meta.get("models", []))
    errors = sample_errors(records)
    return {
        "vtc": {
            "version": 2,
            "models": models,
            "scoring": SCORING,
            "grid": [{"label": s.label, "name": s.name, "budget": s.budget, "kwargs": s.kwargs,
                      "baseline": baseline_of(s)} for s in grid],
            "settings": meta.get("settings", {}),
            "methods_arg": meta.get("methods_arg"),
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


def _difference(paired: dict | None) -> str:
    """``+3.1 [-2.0, 8.2]``, with ``*`` when the paired interval excludes zero (points of accuracy)."""
    if paired is None:
        return "-"
    text = f"{100 * paired['diff']:+.1f} [{100 * paired['ci_low']:+.1f}, {100 * paired['ci_high']:+.1f}]"
    return text + (" *" if paired["significant"] else "")


def table_rows(rows: list[dict]) -> list[list[str]]:
    """The summary table's cells, one list per row."""
    out = []
    for r in rows:
        method = f"**{r['method']}**" if r["method_name"] in BASELINES else r["method"]
        tokens = "-" if r["tokens_before"] is None else f"{r['tokens_before']:.0f} → {r['tokens_after']:.0f}"
        acc = _pct(r["acc"])
        if r["ci_low"] is not None:
            acc += f" [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]"
        hard = "-" if r["difficult_n"] is None else f"{_pct(r['difficult_acc'])} (n={r['difficult_n']})"
        out.append([method, tokens, acc, _difference(r.get("vs_none")), _difference(r.get("vs_pool")),
                    _num(r["pct_of_none"]), hard, _num(r["prefill_ms"]), _num(r["e2e_ms"]), str(r["n_ok"]),
                    str(r["n_errors"])])
    return out


HEADER = ["method", "visual tokens", "acc % [95% CI]", "vs none (points) [95% CI]", "vs pool (points) [95% CI]",
          "% of none", "difficult acc % (n)", "prefill ms", "e2e ms", "n", "errors"]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows])


def group_notes(group: list[dict]) -> list[str]:
    """The lines above one task and model's table: samples, chance, none and its interval, text-only,
    groundedness."""
    by_name = {r["method"]: r for r in group}
    none, text = by_name.get("none"), by_name.get("text-only")
    notes = []
    if none is not None and none["acc"] is not None:
        half = (none["ci_high"] - none["ci_low"]) / 2 if none["ci_low"] is not None else None
        notes.append(f"- samples: {none['n_ok']} (n per row in the table); chance (uniform guess over each "
                     f"question's options): {_pct(none['chance'])}%")
        notes.append(f"- none (uncompressed): {_pct(none['acc'])}% [{_pct(none['ci_low'])}, {_pct(none['ci_high'])}]"
                     f" (±{_pct(half)} points)" + (f"; text-only control (no image or video): {_pct(text['acc'])}%"
                                                   if text is not None and text["acc"] is not None else ""))
        if none["top_letter"] is not None:
            notes.append(f"- groundedness: none answers '{none['top_letter']}' on {_pct(none['top_letter_share'])}% "
                         f"of the questions; '{none['top_letter']}' is the gold answer of "
                         f"{_pct(none['gold_share'])}%")
    return notes


def summary_md(results: dict, task_sizes: dict[str, int]) -> str:
    v = results["vtc"]
    rows = v["rows"]
    totals = v["totals"]
    parts = [
        "# vtc eval",
        "",
        f"Models: {', '.join(v['models'])}. Tasks: "
        + ", ".join(f"{t} ({n} samples)" for t, n in task_sizes.items()) + ".",
        f"Methods: {', '.join(s['label'] for s in v['grid'])}."
        + (" This is the default grid, a few representative methods (diversity, [CLS] attention with merging, the "
           "LLM stage); `--methods all` runs every projector method." if v.get("methods_arg") == "default" else ""),
        f"Lines: {totals['ok']} ok, {totals['errors']} errors ({totals['samples_with_errors']} samples with errors).",
        "",
        f"Scoring. {v['scoring']}",
        "",
        "Accuracy over the pairs that ran (errors excluded), with a 95% bootstrap interval. **pool** is plain "
        "downsampling to the same token count (the iso-token baseline); text-only is the model without the "
        "image or video. 'vs none' and 'vs pool' are paired differences in points of accuracy on the same "
        "samples, with a 95% paired bootstrap interval; `*` marks a difference whose interval excludes zero "
        "(only those are differences the data shows). The difficult split is the samples pool gets wrong "
        "(VTC-Bench). Times are per sample (batch time / batch size).",
    ]
    for model, skipped in v["skipped"].items():
        if skipped:
            parts.append(f"Skipped by {model} (media it cannot take): "
                         + ", ".join(f"{t}: {n}" for t, n in skipped.items()) + ".")
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["task"], r["model"])].append(r)
    for (task, model), group in groups.items():
        parts += ["", f"## {task} — {model}", "", *group_notes(group), "", markdown_table(HEADER, table_rows(group))]
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
    if v.get("runs"):
        parts += ["", f"lmms-eval runs (one per model and method): {len(v['runs'])} folders under lmms_eval/."]
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
    names = list(dict.fromkeys(r["method_name"] for r in rows
                               if r["method_name"] not in ("none", "text-only", BASELINE)))
    colours = {n: plt.get_cmap("tab20")(i % 20) for i, n in enumerate(names)}
    cols = min(3, max(1, len(groups)))
    nrows = max(1, math.ceil(len(groups) / cols))
    legend_rows = math.ceil((len(names) + 2) / 5)
    legend_in = 0.3 * legend_rows + 0.2
    height = 4 * nrows + legend_in
    fig, axes = plt.subplots(nrows, cols, figsize=(5.5 * cols, height), squeeze=False)
    handles: dict[str, tuple[object, str]] = {}
    scale = 100 if metric == "acc" else 1
    # methods at one budget keep the same count: spread them a little along the (log) token axis
    spread = {n: 1 + 0.04 * (i - (len(names) - 1) / 2) for i, n in enumerate(names)}
    for ax, ((task, model), group) in zip(axes.flat, groups.items(), strict=False):
        by_name: dict[str, list[dict]] = defaultdict(list)
        for r in group:
            by_name[r["method_name"]].append(r)
        for name, pts in by_name.items():
            pts = sorted(pts, key=lambda r: r["tokens_after"])
            xs = [p["tokens_after"] * spread.get(name, 1.0) for p in pts]
            ys = [p[metric] * scale for p in pts]
            bars = None
            if metric == "acc" and all(p["ci_low"] is not None for p in pts):
                bars = [[y - p["ci_low"] * scale for p, y in zip(pts, ys, strict=True)],
                        [p["ci_high"] * scale - y for p, y in zip(pts, ys, strict=True)]]
            if name == "text-only":
                handles[name] = (ax.axhline(ys[0], color="tab:red", ls=":", lw=1.2), "text-only (no media)")
                continue
            if name == "none":
                ax.axhline(ys[0], color="grey", ls="--", lw=1)
                style = {"fmt": "*", "color": "grey", "ms": 12, "label": "none (uncompressed)"}
            elif name == BASELINE:
                style = {"fmt": "s-", "color": "black", "lw": 2.5, "label": "pool (iso-token baseline)"}
            else:
                style = {"fmt": "o-", "color": colours[name], "lw": 1.2, "label": name}
            label = style.pop("label")
            handles[name] = (ax.errorbar(xs, ys, yerr=bars, capsize=3, elinewidth=0.8, **style), label)
        ax.set_xscale("log")
        ax.set_xticks(sorted({round(r["tokens_after"]) for r in group if r["tokens_after"]}))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(f"{task} — {model}", fontsize=9)
        ax.set_xlabel("visual tokens to the LLM")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    if handles:
        fig.legend([h for h, _ in handles.values()], [label for _, label in handles.values()], loc="lower center",
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
    results["vtc"]["runs"] = lmms_eval_runs(out, rows, records, grid, meta)
    write_atomic(out / RESULTS, json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    write_atomic(out / SUMMARY_MD, summary_md(results, meta.get("task_sizes", {})))
    write_atomic(out / SUMMARY_CSV, summary_csv(rows))
    return results
