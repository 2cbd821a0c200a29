"""``maxmin_select``: greedy max-min diversity selection (DivPrune's MMDP, k-center), O(N) memory.

Selection order: first the token whose most similar other token is least similar (its nearest
neighbour is farthest), then repeatedly the token whose highest similarity to the chosen set is
lowest. With cosine distance ``1 - cos`` this is exactly "maximise the minimum distance"; the kernels
compare similarities directly, so no rounding of ``1 - cos`` can create or break ties. Ties break
towards the lower index.

Memory: the first step streams similarity blocks (``similarity_topk``); after it, only a running
``[B, N]`` max-similarity vector is kept and updated once per chosen token. Time O(N^2 D + N K D).
"""

from __future__ import annotations

import torch
from torch import Tensor

from vtc.kernels.common import check_tokens, per_sample_k, unit
from vtc.kernels.dispatch import use_triton
from vtc.kernels.similarity import similarity_topk


def maxmin_select(x: Tensor, k: int | Tensor, mask: Tensor | None = None) -> Tensor:
    """Indices ``[B, K]`` (``K = max_b k_b``) in greedy max-min order; ``-1`` past ``min(k_b, n_b)``."""
    mask = check_tokens("x", x, mask)
    counts = per_sample_k(k, mask)
    if use_triton(x):
        from vtc.kernels.maxmin_triton import maxmin_select_triton

        return maxmin_select_triton(x, counts, mask)
    return maxmin_select_torch(x, counts, mask)


def first_pick(x: Tensor, mask: Tensor) -> Tensor:
    """Per sample, the valid token whose best match among the others is lowest (``[B]``)."""
    nearest, _ = similarity_topk(x, x, 1, mask, mask, exclude_self=True)
    return nearest[..., 0].masked_fill(~mask, torch.inf).argmin(dim=1)


def maxmin_select_torch(x: Tensor, counts: Tensor, mask: Tensor) -> Tensor:
    """The torch reference, batched: one ``[B, N]`` running max-similarity vector."""
    batch, n, _ = x.shape
    k_max = int(counts.max()) if counts.numel() else 0
    out = torch.full((batch, k_max), -1, dtype=torch.long, device=x.device)
    if k_max == 0:
        return out
    u = unit(x)
    rows = torch.arange(batch, device=x.device)
    pick = first_pick(x, mask)
    closest = torch.full((batch, n), -torch.inf, dtype=u.dtype, device=x.device)
    blocked = ~mask.clone()
    counts = counts.to(x.device)
    for step in range(k_max):
        active = counts > step
        out[:, step] = torch.where(active, pick, -1)
        blocked[rows, pick] = True
        sim = torch.einsum("bnd,bd->bn", u, u[rows, pick])
        closest = torch.maximum(closest, sim)
        pick = closest.masked_fill(blocked, torch.inf).argmin(dim=1)
    return out
