"""Benchmark: vtc's selection kernels against naive full-matrix torch versions, in the same run.

    python -m vtc.kernels.bench                 # the full grid (CPU: tens of minutes at N = 25,088)
    python -m vtc.kernels.bench --n 576 2880 --d 1024 --kernels maxmin
    vtc bench kernels ...                       # the same

For each N, D and K (10% and 25% of N) it prints the time of the naive version over vtc's (``x faster``)
and the peak memory of each. On CUDA the vtc side is whatever the dispatch picks (Triton by default)
and peak memory is ``torch.cuda.max_memory_allocated``; on CPU it is the torch path, and peak memory
is the peak RSS over the RSS before the call (the peak window reset first where Linux allows), each
measurement in a fresh subprocess. Times are the median of ``--repeats`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

KERNELS = ("maxmin", "similarity", "dpp")


def naive_maxmin(x: Tensor, k: int) -> Tensor:
    """DivPrune-style: the full N x N cosine matrix, then greedy max-min on its rows."""
    u = torch.nn.functional.normalize(x[0].float(), dim=-1)
    sim = u @ u.T
    sim.fill_diagonal_(-torch.inf)
    pick = sim.max(dim=1).values.argmin()
    sim.fill_diagonal_(1.0)
    closest = sim[pick].clone()
    chosen = [int(pick)]
    blocked = torch.zeros(u.shape[0], dtype=torch.bool, device=u.device)
    blocked[pick] = True
    for _ in range(k - 1):
        pick = closest.masked_fill(blocked, torch.inf).argmin()
        chosen.append(int(pick))
        blocked[pick] = True
        closest = torch.maximum(closest, sim[pick])
    return torch.tensor(chosen)


def naive_similarity(x: Tensor, k: int) -> Tensor:
    """ToMe-style bipartite best match through the full (N/2) x (N/2) matrix."""
    u = torch.nn.functional.normalize(x[0].float(), dim=-1)
    return (u[0::2] @ u[1::2].T).argmax(dim=1)


def naive_dpp(x: Tensor, k: int) -> Tensor:
    """CDPruner-style: the full N x N kernel matrix, then fast greedy MAP on its rows."""
    u = torch.nn.functional.normalize(x[0].float(), dim=-1)
    kernel = u @ u.T
    n = u.shape[0]
    d2 = kernel.diagonal().clone()
    c = torch.zeros(k, n, device=u.device)
    chosen = []
    for t in range(k):
        j = int(d2.argmax())
        chosen.append(j)
        e = (kernel[j] - c[:t, j] @ c[:t]) / d2[j].clamp_min(1e-6).sqrt()
        c[t] = e
        d2 = d2 - e * e
        d2[j] = -torch.inf
    return torch.tensor(chosen)


def vtc_kernel(name: str) -> Callable[[Tensor, int], Tensor]:
    from vtc.kernels import dpp_select, maxmin_select, similarity_topk

    if name == "maxmin":
        return lambda x, k: maxmin_select(x, k)
    if name == "dpp":
        return lambda x, k: dpp_select(x, k)
    return lambda x, k: similarity_topk(x[:, 0::2], x[:, 1::2], 1)[1]


NAIVE = {"maxmin": naive_maxmin, "similarity": naive_similarity, "dpp": naive_dpp}


def measure(kernel: str, impl: str, n: int, d: int, k: int, repeats: int, device: str) -> tuple[float, float]:
    """Median seconds (after one warm-up) and peak extra memory in MiB of one implementation on one shape.

    Peak memory is counted from before the warm-up, which sets the high-water mark.
    """
    fn = vtc_kernel(kernel) if impl == "vtc" else NAIVE[kernel]
    x = torch.randn(1, n, d, device=device, generator=torch.Generator(device).manual_seed(0))
    times = []
    with PeakMemory(device) as memory:
        for _ in range(repeats + 1):
            start = time.perf_counter()
            fn(x, k)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return statistics.median(times[1:]), memory.mib


def _child(queue: mp.Queue, fn: Callable, args: tuple) -> None:
    try:
        queue.put(fn(*args))
    except Exception as err:  # reported in the table, never silently dropped
        queue.put(err)


def isolated(fn: Callable, *args: object) -> object:
    """``fn(*args)`` in a fresh process (``fn`` importable at module level), so that a peak-memory reading
    belongs to this call alone; an exception comes back as the value."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, fn, args))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def reset_peak_rss() -> None:
    """Start a new peak-RSS window (Linux: writing 5 to /proc/self/clear_refs resets VmHWM); without it,
    the peak stays the process's lifetime peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def status_mib(field: str) -> float | None:
    """A memory field of /proc/self/status (``VmHWM``, ``VmRSS``) in MiB; None where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mib() -> float:
    """This process's peak resident memory since the last :func:`reset_peak_rss` (else since it started), MiB."""
    peak = status_mib("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if peak is None else peak


def rss_mib() -> float:
    """This process's resident memory now, MiB (the peak where /proc is missing)."""
    now = status_mib("VmRSS")
    return peak_rss_mib() if now is None else now


class PeakMemory:
    """Peak extra memory (MiB) of the code run inside ``with``: CUDA's allocator peak over what was allocated
    before, or on the CPU the peak RSS over the RSS before (the peak window reset first where Linux allows)."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.mib = 0.0

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            reset_peak_rss()
            self.base = rss_mib()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.mib = max((torch.cuda.max_memory_allocated() - self.base) / 2**20, 0.0)
        else:
            self.mib = max(peak_rss_mib() - self.base, 0.0)


def measure_isolated(*args: object) -> tuple[float, float] | Exception:
    """`measure` in a fresh process, so that the peak memory belongs to this measurement alone."""
    return isolated(measure, *args)


def run(ns: Sequence[int], ds: Sequence[int], fractions: Sequence[float], kernels: Sequence[str], repeats: int) -> str:
    """Print the table row by row as measured (long runs show progress) and return it."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    from vtc.kernels.dispatch import use_triton

    backend = "triton" if device == "cuda" and use_triton(torch.zeros(1, device=device)) else "torch"
    header = [
        f"device: {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}; vtc backend: {backend}; "
        f"median of {repeats} after a warm-up",
        "| kernel | N | D | K | naive ms | vtc ms | naive/vtc | naive peak MiB | vtc peak MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    print("\n".join(header), flush=True)
    lines = list(header)
    for kernel in kernels:
        for n in ns:
            for d in ds:
                for frac in fractions if kernel != "similarity" else fractions[:1]:
                    k = max(1, round(frac * n))
                    cells = []
                    for impl in ("naive", "vtc"):
                        cells.append(measure_isolated(kernel, impl, n, d, k, repeats, device))
                    kcol = "-" if kernel == "similarity" else str(k)
                    if any(isinstance(c, Exception) for c in cells):
                        errs = "; ".join(f"{type(c).__name__}: {c}" for c in cells if isinstance(c, Exception))
                        lines.append(f"| {kernel} | {n} | {d} | {kcol} | failed: {errs} |")
                        print(lines[-1], flush=True)
                        continue
                    (t_naive, m_naive), (t_vtc, m_vtc) = cells
                    lines.append(
                        f"| {kernel} | {n} | {d} | {kcol} | {t_naive * 1e3:.1f} | {t_vtc * 1e3:.1f} | "
                        f"{t_naive / t_vtc:.2f}x | {m_naive:.0f} | {m_vtc:.0f} |"
                    )
                    print(lines[-1], flush=True)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vtc.kernels.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[576, 2880, 6272, 25088])
    parser.add_argument("--d", type=int, nargs="+", default=[1024, 3584])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.10, 0.25])
    parser.add_argument("--kernels", nargs="+", choices=KERNELS, default=list(KERNELS))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    run(args.n, args.d, args.fractions, args.kernels, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
