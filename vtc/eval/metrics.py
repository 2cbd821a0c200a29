"""From result lines to one summary row per (task, model, method).

- ``acc``: the mean of ``correct`` over the pairs that ran (``status == "ok"``); error lines are
  counted (``n_errors``) but are not in the denominator. ``acc_stderr``: the standard error of that
  mean (sample standard deviation / sqrt(n), as lmms-eval reports it).
- ``ci_low``, ``ci_high``: the 95% percentile bootstrap interval of ``acc`` (``n_boot`` resamples of the
  samples with replacement, seeded, so a report is reproducible).
- ``pct_of_none``: ``acc`` as a percentage of the uncompressed (``none``) accuracy on the same task and
  model.
- The difficult split (after VTC-Bench): the samples that the method's iso-token ``pool`` baseline (same
  ratio or count) answers wrongly. ``difficult_n`` is how many of them the method ran on,
  ``difficult_acc`` its accuracy there, ``difficult_none_acc`` that of ``none`` on the same samples.
  Plain downsampling fails these, so they separate methods that keep the informative tokens from ones
  that merely keep enough. ``none`` and ``pool`` rows, and adaptive budgets, have no such split.
- ``chance``: the accuracy of guessing, the mean of ``1 / n_options`` over the multiple-choice lines (None
  when no line has options). The ``text-only`` row (no image or video) is the control of what the text
  alone gives away; it sits beside ``none``.
- Paired differences (``vs_none``, ``vs_pool``): on the samples both rows ran, the mean of
  ``correct(method) - correct(other)`` with a 95% paired bootstrap interval (the same resampled samples
  for both); ``significant`` only when the interval excludes zero. ``other`` is ``none``, and the
  method's iso-token ``pool`` baseline.
- Groundedness (``top_letter``, ``top_letter_share``, ``gold_share``): the letter the row answers most
  often among multiple-choice lines, how often it does, and how often that letter is the gold answer;
  a row that answers one letter far more often than the gold answers use it is not reading the media.
- Tokens: means over ok lines of ``tokens_before``/``tokens_after``; ``keep``: their ratio.
- Time: means of the per-sample ``prefill_ms`` and ``e2e_ms``; ``throughput``: samples per second of
  end-to-end time; ``peak_mem_mb``: the largest peak seen.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from vtc.core.spec import MethodSpec
from vtc.eval.grid import baseline_of


def acc_stderr(values: list[float]) -> float:
    """Standard error of the mean (0 for fewer than two values)."""
    n = len(values)
    return float(np.std(values, ddof=1) / np.sqrt(n)) if n > 1 else 0.0


def bootstrap_ci(values: list[float], n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean; ``(nan, nan)`` for no values."""
    if not values:
        return float("nan"), float("nan")
    data = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    step = max(1, 2_000_000 // len(data))  # bound memory: at most ~2M draws at a time
    for start in range(0, n_boot, step):
        stop = min(n_boot, start + step)
        means[start:stop] = data[rng.integers(0, len(data), size=(stop - start, len(data)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def paired_bootstrap(diffs: list[float], n_boot: int = 1000, seed: int = 0) -> dict | None:
    """Mean of paired differences and its 95% percentile bootstrap interval; ``significant`` when it excludes 0."""
    if not diffs:
        return None
    lo, hi = bootstrap_ci(diffs, n_boot, seed)
    return {"diff": float(np.mean(diffs)), "ci_low": lo, "ci_high": hi, "n": len(diffs),
            "significant": bool(lo > 0 or hi < 0)}


def paired(good: list[dict], other: list[dict], n_boot: int, seed: int) -> dict | None:
    """``paired_bootstrap`` of this row's correctness minus ``other``'s, on the samples both ran."""
    theirs = {r["id"]: float(r["correct"]) for r in other}
    diffs = [float(r["correct"]) - theirs[r["id"]] for r in good if r["id"] in theirs]
    return paired_bootstrap(diffs, n_boot, seed)


def chance(lines: list[dict]) -> float | None:
    """Accuracy of a uniform guess over each line's options (multiple-choice lines only)."""
    return _mean([1 / r["n_options"] for r in lines if r.get("n_options")])


def letters(good: list[dict]) -> dict:
    """The most frequent extracted letter of the multiple-choice lines, its share, and its share among the gold."""
    mc = [r for r in good if r.get("n_options")]
    if not mc:
        return {"top_letter": None, "top_letter_share": None, "gold_share": None}
    counts: dict[str, int] = defaultdict(int)
    for r in mc:
        counts[r["extracted"] or "-"] += 1
    top = max(sorted(counts), key=counts.get)
    return {"top_letter": top, "top_letter_share": counts[top] / len(mc),
            "gold_share": sum(r["answer"] == top for r in mc) / len(mc)}


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _acc(lines: list[dict]) -> float | None:
    return _mean([float(r["correct"]) for r in lines])


def summarise(records: list[dict], grid: list[MethodSpec], n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """One row per (task, model, method) present in ``records``, in task, model and grid order."""
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    tasks, models = [], []
    for r in records:
        groups[(r["task"], r["model"], r["method"])].append(r)
        if r["task"] not in tasks:
            tasks.append(r["task"])
        if r["model"] not in models:
            models.append(r["model"])
    ok = {k: [r for r in v if r["status"] == "ok"] for k, v in groups.items()}
    rows = []
    for task in tasks:
        for model in models:
            none_acc = _acc(ok.get((task, model, "none"), []))
            for spec in grid:
                key = (task, model, spec.label)
                if key not in groups:
                    continue
                rows.append(row(spec, groups[key], ok[key], none_acc, ok, n_boot, seed))
    return rows


def row(spec: MethodSpec, lines: list[dict], good: list[dict], none_acc: float | None,
        ok: dict[tuple[str, str, str], list[dict]], n_boot: int, seed: int) -> dict:
    task, model = lines[0]["task"], lines[0]["model"]
    correct = [float(r["correct"]) for r in good]
    acc = _mean(correct)
    lo, hi = bootstrap_ci(correct, n_boot, seed) if correct else (None, None)
    before = _mean([r["tokens_before"] for r in good])
    after = _mean([r["tokens_after"] for r in good])
    e2e_s = sum(r["e2e_ms"] for r in good) / 1000
    out = {
        "task": task, "model": model, "method": spec.label, "method_name": spec.name, "budget": dict(spec.budget),
        "n": len(lines), "n_ok": len(good), "n_errors": len(lines) - len(good),
        "acc": acc, "acc_stderr": acc_stderr(correct) if correct else None, "ci_low": lo, "ci_high": hi,
        "pct_of_none": 100 * acc / none_acc if acc is not None and none_acc else None,
        "tokens_before": before, "tokens_after": after,
        "keep": after / before if before else None,
        "prefill_ms": _mean([r["prefill_ms"] for r in good]), "e2e_ms": _mean([r["e2e_ms"] for r in good]),
        "throughput": len(good) / e2e_s if e2e_s > 0 else None,
        "peak_mem_mb": max((r["peak_mem_mb"] for r in good), default=None),
        "baseline": baseline_of(spec), "difficult_n": None, "difficult_acc": None, "difficult_none_acc": None,
        "chance": chance(good), **letters(good),
        "vs_none": None if spec.is_none else paired(good, ok.get((task, model, "none"), []), n_boot, seed),
        "vs_pool": None,
    }
    baseline = baseline_of(spec)
    if baseline is not None and (task, model, baseline) in ok:
        out["vs_pool"] = paired(good, ok[(task, model, baseline)], n_boot, seed)
    if baseline is not None and (task, model, baseline) in ok:
        hard = {r["id"] for r in ok[(task, model, baseline)] if not r["correct"]}
        mine = [r for r in good if r["id"] in hard]
        out["difficult_n"] = len(mine)
        out["difficult_acc"] = _acc(mine)
        out["difficult_none_acc"] = _acc([r for r in ok.get((task, model, "none"), []) if r["id"] in hard])
    return out


def difficult_splits(rows: list[dict]) -> list[dict]:
    """The difficult split per task, model and baseline: its size, and each method's and ``none``'s accuracy."""
    by_label = {(r["task"], r["model"], r["method"]): r for r in rows}
    out: dict[tuple[str, str, str], dict] = {}
    for r in rows:
        pool = by_label.get((r["task"], r["model"], r["baseline"] or ""))
        if pool is None or pool["acc"] is None:
            continue
        key = (r["task"], r["model"], r["baseline"])
        if key not in out:
            n_hard = pool["n_ok"] - round(pool["acc"] * pool["n_ok"])
            out[key] = {"task": r["task"], "model": r["model"], "baseline": r["baseline"], "n": n_hard,
                        "none_acc": r["difficult_none_acc"], "methods": {}}
        out[key]["methods"][r["method"]] = {"acc": r["difficult_acc"], "n": r["difficult_n"]}
    return list(out.values())
