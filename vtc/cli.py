"""The ``vtc`` command.

vtc methods                      the registry as a table
vtc bench methods [--n 576] ...  run every method on synthetic tokens: tokens kept and time
vtc bench prefill --model M ...  prefill latency, TTFT, decode, FLOPs, KV bytes per method x budget x batch
vtc bench kernels ...            selection kernels against naive full-matrix versions
vtc compare MEDIA --question ... each method on one image or video: tokens kept, prefill time, answer
vtc data shapes --out DIR        write a synthetic shapes-world QA split (images, mp4 videos, JSONL)
vtc train-tiny --model llava     train an embedded tiny model from scratch (resumable)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vtc.core.registry import MethodInfo, list_methods
from vtc.core.spec import MethodSpec, check_specs, parse_specs
from vtc.core.text import format_table


def _yes(flag: bool) -> str:
    return "yes" if flag else "-"


def _signals(m: MethodInfo) -> str:
    text = ",".join(m.signals) or "-"
    return text + (f" (+{','.join(m.optional_signals)})" if m.optional_signals else "")


def methods_table(methods: list[MethodInfo]) -> str:
    header = ["name", "stage", "signals (+optional)", "trainable", "video", "static_count", "coverage", "paper"]
    rows = [
        [
            m.name,
            m.stage,
            _signals(m),
            _yes(m.trainable),
            _yes(m.video),
            _yes(m.static_count),
            _yes(m.score_based),
            m.paper,
        ]
        for m in methods
    ]
    return format_table(rows, header)


def compare(media: str, question: str, specs: list[MethodSpec], model_id: str, max_new_tokens: int,
            frames: int = 16) -> str:
    """Each method (and no compression) on one image or video: visual tokens kept, prefill time and the answer."""
    from vtc.data.image import load_image
    from vtc.data.video import is_video, load_video
    from vtc.models.loading import load
    from vtc.models.preflight import check_pairs
    from vtc.models.prompt import media_prompt
    from vtc.models.registry import check_media
    from vtc.models.run import run

    problems = check_specs(specs)  # bad names, kwargs or budgets fail before loading anything
    if problems:
        raise ValueError("--methods:\n" + "\n".join(f"  {p}" for p in problems))
    video = is_video(media)
    pixels = load_video(media, num_frames=frames) if video else load_image(media)
    model, processor = load(model_id)
    problems = check_pairs({model_id: model.config}, specs)  # every method can run on this model
    if problems:
        raise ValueError("nothing was run:\n" + "\n".join(f"  {p}" for p in problems))
    kind = "video" if video else "image"
    check_media(model.config, kind, model_id)
    inputs = processor(**{f"{kind}s": [pixels]}, text=media_prompt(processor, question, kind), return_tensors="pt")
    rows = []
    for spec in [MethodSpec("none"), *specs]:
        ran = run(model, inputs, spec, max_new_tokens=max_new_tokens)
        answer = processor.batch_decode(ran.new_tokens, skip_special_tokens=True)[0]
        label = spec.name if spec.is_none else spec.label
        rows.append([label, f"{ran.before[0]} -> {ran.after[0]}", f"{ran.prefill_ms:.1f}", answer.strip()])
    return format_table(rows, ["method", "visual tokens", "prefill ms", "answer"])


def train_tiny(args: argparse.Namespace) -> None:
    import dataclasses

    import torch

    from vtc.tiny.train import Plan, train

    if args.threads:
        torch.set_num_threads(args.threads)
    given = {"dense_steps": args.dense_steps, "qa_steps": args.qa_steps, "batch": args.batch,
             "guide": args.guide, "easy_fraction": args.easy_fraction, "init": args.init,
             "qa_vision": args.qa_vision, "lr_qa": args.lr_qa, "drill_steps": args.drill_steps,
             "drill": args.drill, "open_fraction": args.open_fraction, "snapshot_every": args.snapshot_every,
             "sink": False if args.no_sink else None}
    plan = dataclasses.replace(Plan(), **{k: v for k, v in given.items() if v is not None})
    family = {"llava": "llava", "qwen2vl": "qwen2_vl"}[args.model]
    print(f"weights: {train(family, args.out, plan, device=args.device)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vtc", description="Visual-token compression for VLMs.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("methods", help="list the registered methods")
    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="what", required=True)
    bm = bench_sub.add_parser("methods", help="every method on synthetic tokens")
    bm.add_argument("--n", type=int, default=576, help="tokens per sample (square), default 576")
    bm.add_argument("--dim", type=int, default=1024)
    bm.add_argument("--ratio", type=float, default=0.25)
    bm.add_argument("--batch", type=int, default=2)
    bm.add_argument("--repeats", type=int, default=3)
    bm.add_argument("--seed", type=int, default=0)
    bm.add_argument("--frames", type=int, default=1, help="tokens form frames x side x side (video scale: 32)")
    bm.add_argument("--methods", default=None, help="comma-separated method names (default: every projector method)")
    bm.add_argument("--isolate", action="store_true", help="each method in a fresh process, with its peak memory")
    bm.add_argument("--device", default="cpu")
    bm.add_argument("--adaptive", action="store_true", help="adaptive methods at their own count, not --ratio")
    bp = bench_sub.add_parser(
        "prefill", help="prefill latency, TTFT, decode, FLOPs and KV bytes per method x budget x batch"
    )
    bp.add_argument("--model", default="random:llava-1.5-7b",
                    help="random:llava-1.5-7b | random:qwen2-vl-7b | random:llava-onevision-7b (real widths, reduced "
                         "depth), or a model name/path")
    bp.add_argument("--methods", default="pool,divprune,visionzip,fastv",
                    help="comma-separated; a bare name runs at every --ratios, name:budget at that budget")
    bp.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.11])
    bp.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    bp.add_argument("--repeats", type=int, default=3, help="interleaved rounds after one warm-up round")
    bp.add_argument("--llm-layers", type=int, default=4, help="random: LLM layers built (the rest extrapolated)")
    bp.add_argument("--tower-layers", type=int, default=4, help="random: vision layers built")
    bp.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    bp.add_argument("--device", default="auto", help="auto: cuda when available, else cpu")
    bp.add_argument("--text-tokens", type=int, default=40, help="random: text tokens around the image")
    bp.add_argument("--frames", type=int, default=None, help="random:llava-onevision-7b: video frames (default 8)")
    bp.add_argument("--decode-tokens", type=int, default=8, help="tokens decoded after the first (0: skip)")
    bp.add_argument("--out", default=None, help="folder for prefill.json, prefill.md and prefill.png")
    cmp = sub.add_parser("compare", help="compare methods on one image or video: tokens kept, prefill time, answer")
    cmp.add_argument("media", help="an image or a video file (mp4, avi, mov, mkv, webm)")
    cmp.add_argument("--frames", type=int, default=16, help="frames sampled uniformly from a video")
    cmp.add_argument("--question", required=True)
    cmp.add_argument("--methods", required=True, help="e.g. divprune,visionzip:0.11,prumerge:adaptive")
    cmp.add_argument("--ratio", type=float, default=0.25)
    cmp.add_argument("--count", type=int, default=None)
    cmp.add_argument("--model", required=True, help="a supported model: hub id or local path")
    cmp.add_argument("--max-new-tokens", type=int, default=32)
    data = sub.add_parser("data", help="synthetic datasets")
    data_sub = data.add_subparsers(dest="what", required=True)
    ds = data_sub.add_parser("shapes", help="write a shapes-world split: media/ plus annotations.jsonl")
    ds.add_argument("--split", default="val", choices=["train", "val", "test"])
    ds.add_argument("--n", type=int, default=500)
    ds.add_argument("--out", required=True)
    ds.add_argument("--video-fraction", type=float, default=0.5)
    ds.add_argument("--seed", type=int, default=None, help="default: fixed per split (train 1000, val 1001, test 1002)")
    ds.add_argument("--frames", type=int, default=16)
    tt = sub.add_parser("train-tiny", help="train an embedded tiny model from scratch (resumes from DIR)")
    tt.add_argument("--model", required=True, choices=["llava", "qwen2vl"])
    tt.add_argument("--out", required=True, help="run folder: checkpoint.pt, then final/ with the weights")
    tt.add_argument("--dense-steps", type=int, default=None)
    tt.add_argument("--qa-steps", type=int, default=None)
    tt.add_argument("--batch", type=int, default=None)
    tt.add_argument("--lr-qa", type=float, default=None, help="peak learning rate of the QA stage")
    tt.add_argument("--guide", type=float, default=None, help="weight of the QA attention guidance (0: off)")
    tt.add_argument("--easy-fraction", type=float, default=None, help="share of QA steps with at most 3 objects")
    tt.add_argument("--qa-vision", action="store_true", default=None, help="QA also trains the vision tower")
    tt.add_argument("--drill-steps", type=int, default=None, help="text-only letter-drill stage before QA")
    tt.add_argument("--drill", type=int, default=None, help="text-only letter-drill rows in each QA step")
    tt.add_argument("--open-fraction", type=float, default=None, help="share of open (option-free) QA questions")
    tt.add_argument("--no-sink", action="store_true", help="do not guide exists-no / entered-0 to the first token")
    tt.add_argument("--snapshot-every", type=int, default=None, help="keep a checkpoint copy every N steps")
    tt.add_argument("--init", default=None, help="start from these weights (name or folder); use --dense-steps 0")
    tt.add_argument("--device", default="cpu")
    tt.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    sub.add_parser("eval", help="batch image/video-QA evaluation (see vtc eval --help)", add_help=False)
    sub.add_parser("demo", help="the Gradio comparison demo (see vtc demo --help)", add_help=False)
    bench_sub.add_parser(
        "kernels", help="selection kernels vs naive full-matrix torch (see vtc.kernels.bench)", add_help=False
    )
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench" and args.what == "kernels":
        from vtc.kernels.bench import main as bench_kernels

        return bench_kernels(rest)
    if args.command == "eval":
        from vtc.eval.cli import main as eval_main

        return eval_main(rest)
    if args.command == "demo":
        from vtc.demo.cli import main as demo_main

        return demo_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        if args.command == "methods":
            print(methods_table(list_methods()))
        elif args.command == "compare":
            default = {"count": args.count} if args.count is not None else {"ratio": args.ratio}
            specs = parse_specs(args.methods, default)
            print(compare(args.media, args.question, specs, args.model, args.max_new_tokens, args.frames))
        elif args.command == "data":
            from vtc.data.shapes import write_split

            path = write_split(args.out, split=args.split, n=args.n, video_fraction=args.video_fraction,
                               seed=args.seed, frames=args.frames)
            print(f"wrote {args.n} samples: {path}")
        elif args.command == "train-tiny":
            train_tiny(args)
        elif args.command == "bench" and args.what == "prefill":
            from vtc.eval.prefill import main as bench_prefill

            return bench_prefill(args)
        elif args.command == "bench" and args.what == "methods":
            from vtc.eval.methods_bench import bench_methods

            methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
            print(bench_methods(args.n, args.dim, args.ratio, args.batch, args.repeats, args.seed, args.frames,
                                methods, args.isolate, args.device, args.adaptive))
    except ValueError as err:
        print(f"vtc: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
