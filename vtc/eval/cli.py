"""``vtc eval``: batch image/video-QA evaluation of compression methods, resumable and data parallel.

Examples::

    vtc eval                                    # the built-in benchmark: tiny models, synthetic data, CPU
    vtc eval videomme.jsonl --media-root /data/videomme --model Qwen/Qwen2-VL-2B-Instruct \\
        --methods "divprune:0.25,visionzip:0.11" --batch-size 8 --out runs/videomme
    torchrun --nproc_per_node 8 -m vtc.eval.cli videomme.jsonl --media-root /data/videomme \\
        --model Qwen/Qwen2-VL-2B-Instruct --methods methods.yaml --out runs/videomme

Without data it runs the built-in benchmark: ``--n`` (600) freshly generated shapes-world samples, half
images and half 16-frame videos (``DIR/data``), on the embedded tiny models (``vtc-tiny-llava``: images;
``vtc-tiny-qwen2vl``: images and videos), for the default grid (``none``, ``text-only``, and DivPrune,
VisionZip and FastV at 25% and 11% next to the iso-token ``pool``); ``--methods all`` runs every registered
projector method (with kwargs that fit the tiny models, :data:`vtc.tiny.model.METHOD_KWARGS`). Before the
first sample every (model, method) pair and the questions' option counts are checked
(:mod:`vtc.models.preflight`); ``--out`` is locked for the run (:mod:`vtc.eval.lock`).

Outputs in ``--out``: ``samples.jsonl`` (one line per sample, model and method, written as produced;
schema in :mod:`vtc.eval.runner`), ``lmms_eval/`` (one lmms-eval run per model and method),
``results.json`` (vtc's combined results, :mod:`vtc.eval.report`),
``summary.md``, ``summary.csv``, ``accuracy_vs_tokens.png``, ``latency_vs_tokens.png`` and ``run.json``
(the settings a resumed run must share). Re-running the same command resumes: pairs already in
``samples.jsonl`` are skipped (see :mod:`vtc.eval.store`). Under ``torchrun`` or ``accelerate launch``
each rank takes samples ``rank::world_size`` (see :mod:`vtc.eval.dist`).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from vtc.core.spec import MethodSpec
from vtc.eval import dist as dist_mod
from vtc.eval.data import FORMATS, Item, builtin_dataset, builtin_items, load_items
from vtc.eval.grid import DEFAULT_METHODS, build_grid
from vtc.eval.lock import OutLock, describe_holder
from vtc.eval.runner import Settings, doc_ids, line_key, pending
from vtc.eval.store import SAMPLES, LineWriter, done_keys, merge, read_all, shard_path, write_atomic
from vtc.tiny.model import METHOD_KWARGS

DEFAULT_MODELS = ("vtc-tiny-llava", "vtc-tiny-qwen2vl")
RUN_FILE = "run.json"
DTYPES = ("auto", "float32", "bfloat16", "float16")
BUILTIN_N = 600  # 300 per task: a 95% interval of at most about ±5.7 points at any accuracy
BUILTIN_KWARGS = METHOD_KWARGS  # the built-in run's methods, with kwargs that fit the embedded models


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vtc eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Annotation formats and field mapping: see vtc/eval/data.py.")
    p.add_argument("data", nargs="*", help="annotation files (JSONL, JSON or parquet); none: the built-in benchmark")
    p.add_argument("--format", default="auto", choices=FORMATS, help="annotation format (default: detected)")
    p.add_argument("--answers", default=None,
                   help="answers file for EgoSchema's questions.json ({q_uid: index}; default: a "
                        "subset_answers.json next to it); unanswered questions are skipped")
    p.add_argument("--media-root", default=None, help="folder media paths are relative to (default: the file's)")
    p.add_argument("--task", default=None, help="task name (default: the record's task field or the file name)")
    p.add_argument("--limit", type=int, default=None, help="first N samples per task")
    p.add_argument("--model", action="append", default=None,
                   help="model to evaluate, repeatable: embedded name, hub id or folder "
                        f"(default: {', '.join(DEFAULT_MODELS)})")
    p.add_argument("--methods", default="default",
                   help="comma list (none, text-only, name:0.25, name:count=64, name:adaptive, name, default, all) or "
                        "a YAML/JSON file; none, text-only and the iso-token pool baseline are always added (default: "
                        f"default = {', '.join(DEFAULT_METHODS)}; all = every projector method)")
    p.add_argument("--video-baselines", action="store_true",
                   help="add the video baselines frames (fewer frames) and temporal_pool beside pool at every budget")
    p.add_argument("--ratios", default="0.25,0.11",
                   help="ratios for bare method names, 'default' and 'all' (default: 0.25,0.11)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--frames", type=int, default=16, help="frames sampled uniformly per video (default 16)")
    p.add_argument("--fps", type=float, default=None, help="sample videos at this rate instead (up to --max-frames)")
    p.add_argument("--max-frames", type=int, default=64)
    p.add_argument("--video-backend", default="auto", choices=["auto", "decord", "pyav"])
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--out", default="vtc-eval", help="output folder (default: ./vtc-eval)")
    p.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK when available, else cpu")
    p.add_argument("--dtype", default="auto", choices=DTYPES)
    p.add_argument("--n", type=int, default=BUILTIN_N,
                   help=f"built-in benchmark: samples, half images and half videos (default {BUILTIN_N}: 95%% "
                        "intervals of at most ±6 points per task)")
    p.add_argument("--seed", type=int, default=None, help="built-in benchmark: data seed (default: the test split's)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CI")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def parse_ratios(text: str) -> list[float]:
    try:
        ratios = [float(r) for r in text.split(",") if r.strip()]
    except ValueError:
        raise ValueError(f"--ratios: expected comma-separated numbers, got {text!r}") from None
    if not ratios or not all(0 < r <= 1 for r in ratios):
        raise ValueError(f"--ratios: expected ratios in (0, 1], got {text!r}")
    return ratios


def load_data(args: argparse.Namespace, out: Path, dist: dist_mod.Dist) -> list[Item]:
    """The items of the annotation files, or of the built-in benchmark (written by rank 0)."""
    if args.data:
        if args.task and len(args.data) > 1:
            raise ValueError("--task: names the task of one annotation file; give one file or drop --task")
        report = (lambda line: print(f"vtc eval: {line}", file=sys.stderr)) if dist.main else (lambda line: None)
        items = [it for path in args.data for it in load_items(path, args.format, args.media_root, args.task,
                                                                 args.limit, args.answers, report)]
        keys = [it.key for it in items]
        if len(set(keys)) != len(keys):
            raise ValueError("data: two files give the same task/id; name their tasks apart with separate runs "
                             "or a task field")
        return items
    folder = out / "data"
    if dist.main:
        builtin_dataset(folder, n=args.n, seed=args.seed, frames=16)
    dist_mod.barrier(dist)
    return builtin_items(folder / "annotations.jsonl", args.limit)


def check_run_file(out: Path, settings: Settings, dist: dist_mod.Dist) -> None:
    """Refuse to resume a run made with other result-shaping settings; rank 0 records them."""
    path = out / RUN_FILE
    current = settings.fingerprint()
    if path.exists():
        saved = json.loads(path.read_text()).get("settings", {})
        if saved != current:
            diff = ", ".join(f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in current.items() if saved.get(k) != v)
            raise ValueError(f"--out: {out} holds a run made with other settings ({diff}); use a new --out "
                             "or the same settings to resume it")
    dist_mod.barrier(dist)
    if dist.main and not path.exists():
        stamp = time.strftime("%Y-%m-%dT%H-%M-%S")  # names the lmms-eval result files of this run, resumed or not
        write_atomic(path, json.dumps({"settings": current, "started": stamp}, indent=1) + "\n")


def run_stamp(out: Path) -> str:
    """When the run in ``out`` started (lmms-eval's file names carry it)."""
    return json.loads((out / RUN_FILE).read_text()).get("started", "run")


def check_models(models: list[str]) -> None:
    """Embedded names must have their weights in the package (fail fast, before any hub lookup)."""
    from vtc.models.loading import EMBEDDED

    for name in models:
        if name in EMBEDDED and not (EMBEDDED[name] / "config.json").exists():
            raise ValueError(f"model: the embedded model {name} has no weights in this install ({EMBEDDED[name]}); "
                             "train them with `vtc train-tiny` or pass --model FOLDER")


def preflight(models: list[str], grid: list[MethodSpec], items: list[Item]) -> None:
    """Before the first sample: every (model, method) pair can run and the questions fit every model; all
    problems at once, one line each (:mod:`vtc.models.preflight`)."""
    from vtc.models.loading import load_config, max_options
    from vtc.models.preflight import check_pairs

    configs, problems = {}, []
    for name in models:
        try:
            configs[name] = load_config(name)
        except ValueError as err:
            problems.append(str(err))
    limits = {name: max_options(name) for name in configs}
    counts = {len(it.options) for it in items if it.options}
    problems += check_pairs(configs, grid, option_counts=counts, max_options=limits)
    if problems:
        raise ValueError("nothing was run; fix these first:\n" + "\n".join(f"  {p}" for p in problems))


def torch_dtype(name: str) -> object:
    if name == "auto":
        return None
    import torch

    return getattr(torch, name)


def progress_bar(total: int, enabled: bool) -> object:
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc="vtc eval", unit="pair", file=sys.stderr,
                dynamic_ncols=True, smoothing=0.1)


def run_models(args: argparse.Namespace, out: Path, items: list[Item], grid: list[MethodSpec], settings: Settings,
               dist: dist_mod.Dist, models: list[str]) -> dict[str, set[str]]:
    """Evaluate this rank's share on every model; returns each model's media types."""
    import torch

    from vtc.eval.runner import ModelRunner, evaluate
    from vtc.models.loading import load

    torch.manual_seed(0)
    share = items[dist.rank :: dist.world_size]
    ids = doc_ids(items)  # positions in the whole task, whichever rank runs the sample
    if dist.world_size == 1:
        merge(out)  # fold shards left by an earlier distributed run
    done = done_keys(out)
    target = out / SAMPLES if dist.world_size == 1 else shard_path(out, dist.rank)
    device = dist_mod.device_for(dist, args.device)
    kinds: dict[str, set[str]] = {}
    progress = progress_bar(sum(pending(m, share, grid, done) for m in models), not args.no_progress and dist.main)
    try:
        with LineWriter(target) as writer:
            for name in models:
                model, processor = load(name, dtype=torch_dtype(args.dtype), device=device)
                runner = ModelRunner(name, model, processor, device, settings)
                kinds[name] = runner.media_types()
                usable = [it for it in share if it.media_type in kinds[name]]
                unusable = [it for it in share if it.media_type not in kinds[name]]
                if unusable:
                    progress.total -= pending(name, unusable, grid, done)
                    progress.refresh()
                evaluate(runner, usable, grid, done, writer.write, progress, dist.rank, ids)
                del model, processor, runner
                gc.collect()
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
    finally:
        progress.close()
    return kinds


def finish_run(args: argparse.Namespace, out: Path, items: list[Item], grid: list[MethodSpec], settings: Settings,
               dist: dist_mod.Dist, models: list[str], kinds: dict[str, set[str]]) -> dict:
    """Rank 0: merge the shards and write the reports for exactly this command's pairs."""
    from vtc.eval.metrics import summarise
    from vtc.eval.report import write_reports

    merge(out)
    expected = {line_key(m, it, s.label) for m in models for it in items if it.media_type in kinds[m] for s in grid}
    records = [r for r in read_all(out) if r["key"] in expected]
    rows = summarise(records, grid, n_boot=args.bootstrap)
    task_sizes = dict(Counter(it.task for it in items))
    skipped = {m: dict(Counter(it.task for it in items if it.media_type not in kinds[m])) for m in models}
    meta = {"models": models, "task_sizes": task_sizes, "skipped": skipped, "world_size": dist.world_size,
            "settings": {**settings.fingerprint(), "batch_size": settings.batch_size},
            "batch_size": settings.batch_size,
            "device": dist_mod.device_for(dist, args.device), "limit": args.limit,
            "missing": len(expected) - len(records), "stamp": run_stamp(out), "methods_arg": args.methods}
    results = write_reports(out, rows, records, grid, meta)
    results["vtc"]["missing"] = meta["missing"]
    return results


def text_summary(results: dict, out: Path) -> str:
    from vtc.core.text import format_table

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}"

    def diff(paired: dict | None) -> str:
        if paired is None:
            return "-"
        return f"{100 * paired['diff']:+.1f}" + ("*" if paired["significant"] else "")

    rows = [[r["task"], r["model"], r["method"],
             "-" if r["tokens_after"] is None else f"{r['tokens_before']:.0f}->{r['tokens_after']:.0f}",
             "-" if r["acc"] is None else f"{pct(r['acc'])} [{pct(r['ci_low'])}, {pct(r['ci_high'])}]",
             diff(r.get("vs_none")), diff(r.get("vs_pool")), pct(r["chance"]), str(r["n_ok"]),
             "-" if r["prefill_ms"] is None else f"{r['prefill_ms']:.1f}", str(r["n_errors"])]
            for r in results["vtc"]["rows"]]
    header = ["task", "model", "method", "tokens", "acc % [95% CI]", "vs none", "vs pool", "chance %", "n",
              "prefill ms", "errors"]
    totals = results["vtc"]["totals"]
    tail = (f"\n* paired 95% bootstrap interval excludes 0. Scoring: the option letter read from the answer "
            f"(lmms-eval's rules).\n{totals['lines']} lines ({totals['errors']} errors) -> {out}/summary.md, "
            "results.json, samples.jsonl, lmms_eval/")
    return format_table(rows, header) + tail


def lock_out(out: Path, dist: dist_mod.Dist) -> OutLock:
    """Rank 0 takes the lock on ``out`` for the whole job; every rank stops if it cannot (:mod:`vtc.eval.lock`)."""
    lock, problem = OutLock(out), None
    if dist.main:
        try:
            lock.acquire()
        except ValueError as err:
            problem = str(err)
    problem = dist_mod.broadcast(dist, problem)
    if problem is not None:
        raise ValueError(problem)
    if lock.stale is not None:
        print(f"vtc eval: {out} was left locked by a run that did not finish ({describe_holder(lock.stale)}); "
              "taking it over", file=sys.stderr)
    return lock


def say_resumed(out: Path, items: list[Item], grid: list[MethodSpec], models: list[str]) -> None:
    """Tell the user when ``out`` already holds lines of this command's (model, sample, method) pairs."""
    done = done_keys(out)
    wanted = {line_key(m, it, s.label) for m in models for it in items for s in grid}
    found = len(done & wanted)
    if found:
        print(f"vtc eval: resuming the run in {out}: {found} of its {len(wanted)} (model, sample, method) lines "
              "are already there; computing the rest", file=sys.stderr)


def run(args: argparse.Namespace, dist: dist_mod.Dist) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lock = lock_out(out, dist)  # held by rank 0 only
    try:
        return run_locked(args, out, dist)
    finally:
        lock.release()


def run_locked(args: argparse.Namespace, out: Path, dist: dist_mod.Dist) -> int:
    if args.batch_size < 1 or args.frames < 1 or args.max_new_tokens < 1:
        raise ValueError("--batch-size, --frames and --max-new-tokens must be at least 1")
    grid = build_grid(args.methods, parse_ratios(args.ratios), None if args.data else BUILTIN_KWARGS,
                      args.video_baselines)
    settings = Settings(frames=args.frames, fps=args.fps, max_frames=args.max_frames, video_backend=args.video_backend,
                        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    models = list(dict.fromkeys(args.model or DEFAULT_MODELS))
    check_models(models)
    items = load_data(args, out, dist)
    if not items:
        raise ValueError("data: no samples to evaluate")
    preflight(models, grid, items)
    check_run_file(out, settings, dist)
    if dist.main:
        say_resumed(out, items, grid, models)
    kinds = run_models(args, out, items, grid, settings, dist, models)
    dist_mod.barrier(dist)
    if dist.main:
        results = finish_run(args, out, items, grid, settings, dist, models, kinds)
        print(text_summary(results, out))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(list(argv) if argv is not None else None)
    try:
        dist = dist_mod.from_env()
        dist_mod.init(dist)
    except ValueError as err:
        print(f"vtc eval: error: {err}", file=sys.stderr)
        return 2
    try:
        return run(args, dist)
    except ValueError as err:
        print(f"vtc eval: error: {err}", file=sys.stderr)
        return 2
    finally:
        dist_mod.finish(dist)


if __name__ == "__main__":
    sys.exit(main())
