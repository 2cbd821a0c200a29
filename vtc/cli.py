"""The ``vtc`` command.

vtc methods                      the registry as a table
vtc bench methods [--n 576] ...  run every method on synthetic tokens: tokens kept and time
vtc compare MEDIA --question ... each method on one image or video: tokens kept, prefill time, answer
vtc data shapes --out DIR        write a synthetic shapes-world QA split (images, mp4 videos, JSONL)
vtc train-tiny --model llava     train an embedded tiny model from scratch (resumable)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from vtc.core.registry import MethodInfo, build, list_methods


def format_table(rows: list[list[str]], header: list[str]) -> str:
    """A plain fixed-width text table."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


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


def bench_methods(n: int, dim: int, ratio: float, batch: int, repeats: int, seed: int) -> str:
    """Every registered projector method on the same synthetic batch: kept tokens and mean time."""
    import torch

    from vtc.core.types import VisualTokens

    torch.manual_seed(seed)
    side = int(n**0.5)
    if side * side != n:
        raise ValueError(f"--n: expected a square token count (e.g. 576 = 24x24), got {n}")
    tokens = VisualTokens(
        features=torch.randn(batch, n, dim),
        cls_attn=torch.softmax(torch.randn(batch, 4, n) * 2, dim=-1),
        keys=torch.randn(batch, n, 64),
    )
    rows = []
    for info in list_methods():
        if info.stage != "projector":
            continue
        compressor = build(info.name, **({} if info.adaptive else {"ratio": ratio}))
        layers = len(getattr(compressor.config, "layers", (-2,)))
        tokens_used = VisualTokens(tokens.features, cls_attn=tokens.cls_attn[:, :layers], keys=tokens.keys)
        out = compressor(tokens_used)
        start = time.perf_counter()
        for _ in range(repeats):
            compressor(tokens_used)
        ms = (time.perf_counter() - start) / repeats * 1000
        rows.append([info.name, str(n), ",".join(str(int(c)) for c in out.counts), f"{ms:.2f}"])
    header = ["method", "tokens in", "tokens kept (per sample)", "ms per batch"]
    title = f"synthetic batch {batch} x {n} x {dim}, ratio {ratio} (adaptive methods choose their own count)"
    return title + "\n" + format_table(rows, header)


MAX_IMAGE_PIXELS = 20_000_000


def parse_methods(spec: str, ratio: float | None, count: int | None) -> list[tuple[str, dict]]:
    """``"a,b:0.1,c:adaptive,d:count=64"`` into ``[(name, budget kwargs), ...]``; a bare name gets the defaults."""
    out = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, budget = item.partition(":")
        if not budget:
            kwargs = {"count": count} if count is not None else {"ratio": ratio}
        elif budget == "adaptive":
            kwargs = {"budget": "adaptive"}
        elif budget.startswith("count="):
            kwargs = {"count": int(budget[6:])}
        else:
            kwargs = {"ratio": float(budget)}
        out.append((name, kwargs))
    if not out:
        raise ValueError("--methods: expected a comma-separated list of method names")
    return out


def load_image(path: str, name: str | None = None) -> object:
    """An RGB PIL image, with clear errors for missing, unreadable or oversized files (``name``: shown in them)."""
    from PIL import Image

    name = name or path
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise ValueError(f"image: {name} has {img.width}x{img.height} pixels, over the 20 MP limit")
            return img.convert("RGB")
    except FileNotFoundError:
        raise ValueError(f"image: no such file {name}") from None
    except OSError as err:
        raise ValueError(f"image: cannot read {name} ({err})") from None


def media_prompt(processor: object, question: str, media: str = "image") -> str:
    """The processor's own prompt format, its chat template with one image or video, or ``<image>\nquestion``."""
    if hasattr(processor, "build_prompt"):
        return processor.build_prompt(question, media)
    if getattr(processor, "chat_template", None):
        messages = [{"role": "user", "content": [{"type": media}, {"type": "text", "text": question}]}]
        return processor.apply_chat_template(messages, add_generation_prompt=True)
    return f"{getattr(processor, media + '_token')}\n{question}"


def compare(media: str, question: str, methods: list[tuple[str, dict]], model_id: str, max_new_tokens: int,
            frames: int = 16) -> str:
    """Each method (and no compression) on one image or video: visual tokens kept, prefill time and the answer."""
    import torch

    from vtc.core.apply import apply
    from vtc.core.registry import build
    from vtc.data.video import is_video, load_video
    from vtc.models.loading import load

    compressors = [(name, build(name, **kwargs)) for name, kwargs in methods]  # bad names fail before loading
    video = is_video(media)
    pixels = load_video(media, num_frames=frames) if video else load_image(media)
    model, processor = load(model_id)
    kind = "video" if video else "image"
    token_id = getattr(model.config, f"{kind}_token_id", None)
    if token_id is None:
        raise ValueError(f"media: {model_id} ({model.config.model_type}) takes no {kind} input")
    inputs = processor(**{f"{kind}s": [pixels]}, text=media_prompt(processor, question, kind), return_tensors="pt")
    n_visual = int((inputs["input_ids"] == token_id).sum())
    rows = []
    for label, compressor in [("none", None), *compressors]:
        handle = apply(model, compressor) if compressor is not None else None
        try:
            with torch.no_grad():
                start = time.perf_counter()
                model(**inputs)
                prefill_ms = (time.perf_counter() - start) * 1000
                out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            kept = handle.stats[0]["after"][0] if handle else n_visual
        finally:
            if handle:
                handle.remove()
        answer = processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]
        rows.append([label, f"{n_visual} -> {kept}", f"{prefill_ms:.1f}", answer.strip()])
    return format_table(rows, ["method", "visual tokens", "prefill ms", "answer"])


def train_tiny(args: argparse.Namespace) -> None:
    import dataclasses

    import torch

    from vtc.tiny.train import Plan, train

    if args.threads:
        torch.set_num_threads(args.threads)
    given = {"dense_steps": args.dense_steps, "qa_steps": args.qa_steps, "batch": args.batch,
             "guide": args.guide, "easy_fraction": args.easy_fraction, "init": args.init,
             "qa_vision": args.qa_vision, "lr_qa": args.lr_qa}
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
            methods = parse_methods(args.methods, args.ratio, args.count)
            print(compare(args.media, args.question, methods, args.model, args.max_new_tokens, args.frames))
        elif args.command == "data":
            from vtc.data.shapes import write_split

            path = write_split(args.out, split=args.split, n=args.n, video_fraction=args.video_fraction,
                               seed=args.seed, frames=args.frames)
            print(f"wrote {args.n} samples: {path}")
        elif args.command == "train-tiny":
            train_tiny(args)
        elif args.command == "bench" and args.what == "methods":
            print(bench_methods(args.n, args.dim, args.ratio, args.batch, args.repeats, args.seed))
    except ValueError as err:
        print(f"vtc: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
