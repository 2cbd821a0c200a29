"""``maxmin_select``: greedy max-min diversity selection (DivPrune's MMDP, k-center), with exact fast routes.

Selection order: first the token whose most similar other token is least similar (its nearest
neighbour is farthest), then repeatedly the token whose highest similarity to the chosen set is
lowest. With cosine distance ``1 - cos`` this is exactly "maximise the minimum distance"; the kernels
compare similarities directly, so no rounding of ``1 - cos`` can create or break ties. Ties break
towards the lower index.

Routes, all exact (the same picks as the plain loop, up to the rounding of a dot product):

- ``maxmin_select_torch``, the reference: the first step streams similarity blocks
  (``similarity_topk``); after it, a running ``[B, N]`` max-similarity vector is updated once per
  chosen token by a matrix-vector product. Time O(N^2 D + N K D), memory O(N D).
- ``maxmin_select_cached`` (CPU, when ``B N^2`` floats fit in ``max_memory``): one ``u u^T`` product,
  then each step reads one row of it. What the naive full-matrix version does.
- ``maxmin_select_blocked`` (CPU, larger inputs): the first step from the symmetric block pairs
  (``nearest_other_row``: half the products of a full pass); then the reference's loop with its matrix-vector
  products batched. Picks are folded into the running vector ``BLOCK`` at a time by one matrix
  product; in between, the running vector is a lower bound of the true one, and a step refreshes only
  the ``CANDIDATES`` tokens with the lowest bound against the unfolded picks. When the lowest
  refreshed value is below every other token's bound, it is the true minimum; otherwise the step
  folds first and takes the plain ``argmin``. Same O(N K D) arithmetic as the reference, but in
  matrix products instead of K passes over ``[N, D]``; memory O(N D + N BLOCK).
- Triton on CUDA (``maxmin_triton.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from vtc.kernels.common import check_tokens, fits_in_memory, per_sample_k, selection_start, unpicked
from vtc.kernels.dispatch import use_triton
from vtc.kernels.similarity import nearest_other_row, topk_of_unit_rows

BLOCK = 64  # picks folded into the running vector at once (blocked route)
CANDIDATES = 16  # tokens refreshed per step between folds (blocked route)


def maxmin_select(x: Tensor, k: int | Tensor, mask: Tensor | None = None, max_memory: int | None = None) -> Tensor:
    """Indices ``[B, K]`` (``K = max_b k_b``) in greedy max-min order; ``-1`` past ``min(k_b, n_b)``.

    Routes, all exact: Triton on CUDA; on the CPU the cached similarity matrix when ``B N^2`` floats
    fit in ``max_memory`` bytes (default ``MAX_MEMORY``), else the blocked lazy loop.
    """
    mask = check_tokens("x", x, mask)
    counts = per_sample_k(k, mask)
    if use_triton(x):
        from vtc.kernels.maxmin_triton import maxmin_select_triton

        return maxmin_select_triton(x, counts, mask)
    if fits_in_memory(x, max_memory):
        return maxmin_select_cached(x, counts, mask)
    return maxmin_select_blocked(x, counts, mask)


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


def maxmin_select_cached(x: Tensor, counts: Tensor, mask: Tensor) -> Tensor:
    """The greedy loop over a cached ``[B, N, N]`` similarity matrix (one matrix product, then row reads)."""
    batch, n, _ = x.shape
    out, u = selection_start(x, counts)
    if u is None:
        return out
    rows = torch.arange(batch, device=x.device)
    sim = u @ u.transpose(1, 2)
    sim.diagonal(dim1=1, dim2=2).fill_(-torch.inf)  # in place: chosen and masked tokens are marked below
    if not bool(mask.all()):
        sim.masked_fill_(~mask[:, None, :], -torch.inf)
    nearest, partner = sim.max(dim=2)  # first maximum: lower index on ties
    partner = partner.masked_fill((nearest == -torch.inf) | ~mask, -1)
    pick = most_isolated(nearest.masked_fill(~mask, -torch.inf), partner, mask)
    # +inf marks tokens that may not be picked (masked out or chosen): max(+inf, s) keeps the mark
    closest = torch.where(mask, -torch.inf, torch.inf).to(u.dtype)
    for step in range(out.shape[1]):
        out[:, step] = pick
        closest[rows, pick] = torch.inf
        closest = torch.maximum(closest, sim[rows, pick])
        pick = closest.argmin(dim=1)
    return out.masked_fill(unpicked(out, counts), -1)


def fold(closest: Tensor, u: Tensor, recent: list[Tensor]) -> Tensor:
    """``closest`` raised by the similarities of every token to the ``recent`` picks' rows (``[B, D]`` each)."""
    if not recent:
        return closest
    picked = torch.stack(recent, dim=2)  # [B, D, P]
    return torch.maximum(closest, (u @ picked).amax(dim=2))


def refreshed_argmin(
    u: Tensor, closest: Tensor, recent: list[Tensor], active: Tensor, candidates: int
) -> Tensor | None:
    """The exact next pick from the tokens with the lowest bounds, or None when they cannot prove it.

    ``closest`` misses the ``recent`` picks, so it is a lower bound of each token's true value (``+inf``
    for tokens that may not be picked). The ``candidates`` lowest get their true value; the lowest of
    those (lower index on ties) is the answer if it is strictly below the next bound, which every other
    token's true value is at least.
    """
    batch, n, _ = u.shape
    take = min(candidates + 1, n)
    low, cand = closest.topk(take, dim=1, largest=False)
    if take > candidates:
        threshold, low, cand = low[:, candidates], low[:, :candidates], cand[:, :candidates]
    else:
        threshold = torch.full((batch,), torch.inf, dtype=low.dtype, device=u.device)
    rows = torch.arange(batch, device=u.device)[:, None]
    fresh = (u[rows, cand] @ torch.stack(recent, dim=2)).amax(dim=2)
    true = torch.maximum(low, fresh)  # candidates that may not be picked keep +inf
    best = true.min(dim=1).values
    pick = torch.where(true == best[:, None], cand, n).min(dim=1).values
    if not bool(((best < threshold) | ~active).all()):
        return None
    return pick


def maxmin_select_blocked(
    x: Tensor, counts: Tensor, mask: Tensor, block: int = BLOCK, candidates: int = CANDIDATES
) -> Tensor:
    """The reference's loop with its matrix-vector products folded ``block`` picks at a time (exact)."""
    batch, n, _ = x.shape
    out, u = selection_start(x, counts)
    if u is None:
        return out
    k_max = out.shape[1]
    rows = torch.arange(batch, device=x.device)
    pick = most_isolated(*nearest_other_row(u, mask), mask)
    closest = torch.where(mask, -torch.inf, torch.inf).to(u.dtype)  # +inf: may not be picked (as cached)
    counts = counts.to(x.device)
    recent: list[Tensor] = []
    for step in range(k_max):
        out[:, step] = pick
        closest[rows, pick] = torch.inf
        recent.append(u[rows, pick])
        if step + 1 == k_max:
            break
        if step == 0 or len(recent) == block:
            closest, recent = fold(closest, u, recent), []
        found = refreshed_argmin(u, closest, recent, counts > step + 1, candidates) if recent else None
        if found is None:
            closest, recent = fold(closest, u, recent), []
            found = closest.argmin(dim=1)
        pick = found
    return out.masked_fill(unpicked(out, counts), -1)
