"""Input checks and normalisation shared by the kernels and their torch references."""

from __future__ import annotations

import torch
from torch import Tensor

MAX_MEMORY = 1 << 30  # bytes a CPU route may spend on an N x N similarity cache (per call)


def fits_in_memory(x: Tensor, max_memory: int | None) -> bool:
    """Whether a ``[B, N, N]`` similarity cache in the work dtype fits in ``max_memory`` (default ``MAX_MEMORY``)."""
    cap = MAX_MEMORY if max_memory is None else max_memory
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 0:
        raise ValueError(f"max_memory: expected a number of bytes >= 0, got {max_memory!r}")
    batch, n, _ = x.shape
    return batch * n * n * torch.finfo(work_dtype(x)).bits // 8 <= cap


def work_dtype(x: Tensor) -> torch.dtype:
    """Dtype for scores and similarities: float64 stays, everything else goes to float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def unit(x: Tensor) -> Tensor:
    """Rows scaled to unit L2 norm in the work dtype; zero rows stay zero."""
    x = x.to(work_dtype(x))
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def check_tokens(name: str, x: Tensor, mask: Tensor | None) -> Tensor:
    """Validate ``x [B, N, D]`` (floating) and return a bool mask ``[B, N]`` (all True by default)."""
    if not isinstance(x, Tensor) or x.ndim != 3 or not x.dtype.is_floating_point:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a floating tensor [B, N, D], got {got}")
    if mask is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    if not isinstance(mask, Tensor) or tuple(mask.shape) != tuple(x.shape[:2]) or mask.dtype != torch.bool:
        got = (mask.dtype, tuple(mask.shape)) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"mask of {name}: expected a bool tensor of shape {tuple(x.shape[:2])}, got {got}")
    return mask.to(x.device)


def per_sample_k(k: int | Tensor, mask: Tensor) -> Tensor:
    """``min(k_b, n_b)`` per sample as a CPU long tensor; ``k`` may be an int or a ``[B]`` tensor."""
    lengths = mask.sum(1).cpu()
    if isinstance(k, Tensor):
        k_t = k.detach().cpu().long().reshape(-1)
        if k_t.numel() != lengths.numel():
            raise ValueError(f"k: expected an int or a [B={lengths.numel()}] tensor, got shape {tuple(k.shape)}")
    elif isinstance(k, int) and not isinstance(k, bool):
        k_t = torch.full_like(lengths, k)
    else:
        raise ValueError(f"k: expected an int or a tensor, got {k!r}")
    if bool((k_t < 0).any()):
        raise ValueError(f"k: expected values >= 0, got {k_t.tolist()}")
    return torch.minimum(k_t, lengths)


def selection_start(x: Tensor, counts: Tensor) -> tuple[Tensor, Tensor | None]:
    """A greedy selection's output buffer (:func:`selection_buffer`) and the unit rows of ``x``; the rows are
    None when no sample selects anything."""
    out = selection_buffer(x, counts)
    return out, (unit(x) if out.shape[1] else None)


def tile_sizes(u: Tensor, block_n: int | None, block_d: int | None) -> tuple[int, int]:
    """A Triton kernel's token and feature tiles: the caller's, else small ones for the CPU interpreter."""
    return block_n or (128 if u.is_cuda else 32), block_d or 64


def selection_buffer(x: Tensor, counts: Tensor) -> Tensor:
    """The output of a selection kernel: ``[B, max(counts)]`` indices, all ``-1`` to start."""
    k_max = int(counts.max()) if counts.numel() else 0
    return torch.full((x.shape[0], k_max), -1, dtype=torch.long, device=x.device)


def unpicked(out: Tensor, counts: Tensor) -> Tensor:
    """``[B, K]``: the slots of a selection buffer past each sample's count (they read ``-1``)."""
    return torch.arange(out.shape[1], device=out.device)[None, :] >= counts.to(out.device)[:, None]
