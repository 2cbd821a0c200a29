"""The ``vtc`` command.

vtc methods                      the registry as a table
vtc bench methods [--n 576] ...  run every method on synthetic tokens: tokens kept and time
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
    bench_sub.add_parser(
        "kernels", help="selection kernels vs naive full-matrix torch (see vtc.kernels.bench)", add_help=False
    )
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench" and args.what == "kernels":
        from vtc.kernels.bench import main as bench_kernels

        return bench_kernels(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        if args.command == "methods":
            print(methods_table(list_methods()))
        elif args.command == "bench" and args.what == "methods":
            print(bench_methods(args.n, args.dim, args.ratio, args.batch, args.repeats, args.seed))
    except ValueError as err:
        print(f"vtc: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
