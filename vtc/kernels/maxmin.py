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

from vtc.kernels.common import check_tokens, per_sample_k, selection_start
from vtc.kernels.dispatch import use_triton
from vtc.kernels.similarity import topk_of_unit_rows


def maxmin_select(x: Tensor, k: int | Tensor, mask: Tensor | None = None) -> Tensor:
    """Indices ``[B, K]`` (``K = max_b k_b``) in greedy max-min order; ``-1`` past ``min(k_b, n_b)``."""
    mask = check_tokens("x", x, mask)
    counts = per_sample_k(k, mask)
    if use_triton(x):
        from vtc.kernels.maxmin_triton import maxmin_select_triton

        return maxmin_select_triton(x, counts, mask)
    return maxmin_select_torch(x, counts, mask)


def most_isolated(nearest: Tensor, partner: Tensor, mask: Tensor) -> Tensor:
    """Per sample, the valid token whose best match (``nearest [B, N]``, at ``partner``) is lowest.

    The lowest best match always belongs to a mutual pair (``i``'s nearest is ``j`` and ``j``'s is
    ``i``), whose two values are equal in exact arithmetic but may differ by an ulp in a tiled
    matmul. Both members get the pair's minimum first, so the tie rule (lower index), not rounding,
    decides. Shared by both backends.
    """
    safe = partner.clamp_min(0)
    own = torch.arange(nearest.shape[1], device=nearest.device)[None, :]
    mutual = (partner >= 0) & (partner.gather(1, safe) == own)
    nearest = torch.where(mutual, torch.minimum(nearest, nearest.gather(1, safe)), nearest)
    return nearest.masked_fill(~mask, torch.inf).argmin(dim=1)


def maxmin_select_torch(x: Tensor, counts: Tensor, mask: Tensor) -> Tensor:
    """The torch reference, batched: one ``[B, N]`` running max-similarity vector."""
    batch, n, _ = x.shape
    out, u = selection_start(x, counts)
    if u is None:
        return out
    k_max = out.shape[1]
    rows = torch.arange(batch, device=x.device)
    nearest, partner = topk_of_unit_rows(u, u, 1, mask, mask, exclude_self=True)
    pick = most_isolated(nearest[..., 0], partner[..., 0], mask)
    closest = torch.full((batch, n), -torch.inf, dtype=u.dtype, device=x.device)
    blocked = ~mask.clone()
    counts = counts.to(x.device)
    for step in range(k_max):
        active = counts > step
        out[:, step] = torch.where(active, pick, -1)
        blocked[rows, pick] = True
        sim = (u @ u[rows, pick][:, :, None])[..., 0]
        closest = torch.maximum(closest, sim)
        pick = closest.masked_fill(blocked, torch.inf).argmin(dim=1)
    return out
