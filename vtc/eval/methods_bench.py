"""``vtc bench methods``: every projector method on one synthetic batch: tokens kept, time, and peak memory.

    vtc bench methods                                     # 2 x 576 x 1024, ratio 0.25
    vtc bench methods --frames 32 --n 25088 --dim 3584 --ratio 0.1 --batch 1 --isolate   # video scale

Tokens are Gaussian features on a ``frames x side x side`` grid with random [CLS] attention rows and
keys. Times are the median of ``--repeats`` calls after one warm-up call. ``--isolate`` runs each
method in a fresh process and reports its peak extra memory (CPU: the peak RSS during the calls over the
RSS before it with the tokens already built, the peak window reset first where Linux allows; CUDA:
``max_memory_allocated``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch

from vtc.core.registry import get_info, list_methods
from vtc.core.spec import MethodSpec
from vtc.core.text import format_table
from vtc.core.types import VisualTokens
from vtc.kernels.bench import PeakMemory, isolated


def synthetic_tokens(batch: int, frames: int, side: int, dim: int, layers: int, seed: int,
                     device: str = "cpu") -> VisualTokens:
    gen = torch.Generator().manual_seed(seed)
    n = frames * side * side
    return VisualTokens(
        features=torch.randn(batch, n, dim, generator=gen).to(device),
        grid=torch.tensor([[frames, side, side]] * batch, device=device),
        cls_attn=torch.softmax(torch.randn(batch, layers, n, generator=gen) * 2, dim=-1).to(device),
        keys=torch.randn(batch, n, 64, generator=gen).to(device),
    )


def measure_method(name: str, ratio: float, batch: int, frames: int, side: int, dim: int, repeats: int,
                   seed: int, device: str, adaptive: bool = False) -> tuple[float, list[int], float]:
    """Median ms per batch, tokens kept per sample, and peak extra MiB (meaningful in a fresh process)."""
    own = adaptive and get_info(name).adaptive
    compressor = MethodSpec(name, {"budget": "adaptive"} if own else {"ratio": ratio}).build()
    tokens = synthetic_tokens(batch, frames, side, dim, max(1, len(compressor.encoder_layers)), seed, device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times = []
    with PeakMemory(device) as memory:
        for _ in range(repeats + 1):
            sync()
            start = time.perf_counter()
            out = compressor(tokens)
            sync()
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[1:]), [int(c) for c in out.counts], memory.mib


def bench_methods(n: int, dim: int, ratio: float, batch: int, repeats: int, seed: int, frames: int = 1,
                  methods: Sequence[str] | None = None, isolate: bool = False, device: str = "cpu",
                  adaptive: bool = False) -> str:
    """The table: one row per projector method (or ``methods``), each at ``ratio`` (``adaptive``: the
    adaptive methods at their own count)."""
    side = int(round((n / frames) ** 0.5))
    if frames < 1 or frames * side * side != n:
        raise ValueError(f"--n: expected frames x side x side tokens (e.g. 576 = 24x24, 25088 = 32x28x28), "
                         f"got {n} with --frames {frames}")
    names = list(methods or [m.name for m in list_methods() if m.stage == "projector"])
    rows = []
    for name in names:
        args = (name, ratio, batch, frames, side, dim, repeats, seed, device, adaptive)
        result = isolated(measure_method, *args) if isolate else measure_method(*args)
        if isinstance(result, Exception):
            rows.append([name, str(n), f"failed: {type(result).__name__}: {result}", "-", "-"])
            continue
        ms, kept, peak = result
        rows.append([name, str(n), ",".join(map(str, kept)), f"{ms:.2f}", f"{peak:.0f}" if isolate else "-"])
    header = ["method", "tokens in", "tokens kept (per sample)", "ms per batch", "peak extra MiB"]
    title = (f"synthetic batch {batch} x {n} ({frames} x {side} x {side}) x {dim} on {device}, ratio {ratio}, "
             f"{torch.get_num_threads()} threads, median of {repeats} after a warm-up"
             + (" (adaptive methods choose their own count)" if adaptive else ""))
    return title + "\n" + format_table(rows, header)
