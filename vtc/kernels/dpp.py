"""``dpp_select``: greedy MAP inference for a DPP with a quality-weighted cosine kernel.

The kernel is ``L_ij = q_i * cos(x_i, x_j) * q_j``: diversity from the cosine similarities, relevance
from the qualities ``q`` (all ones by default). Greedy MAP adds, at each step, the token that most
increases ``log det L_S``, with the incremental Cholesky updates of Chen, Zhang and Zhou, "Fast
Greedy MAP Inference for Determinantal Point Process to Improve Recommendation Diversity" (NeurIPS
2018): per token a residual variance ``d_i^2`` and one Cholesky row per step, O(N K) memory and
O(N K (D + K)) time, with no N x N matrix. CDPruner (Zhang et al., arXiv:2506.10967) uses it with
instruction relevance as quality.

When every remaining residual is at most ``EPS`` times the sample's largest ``q^2`` (the chosen
tokens already span the rest, up to float32 rounding), the remaining picks go to the highest-quality
unchosen tokens, so the count is always met. The threshold is relative so that rounding noise, which
scales with ``q^2``, never decides a pick. Ties break towards the lower index.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vtc.kernels.common import check_tokens, fits_in_memory, per_sample_k, selection_start, unpicked
from vtc.kernels.dispatch import use_triton

EPS = 1e-5  # relative to the largest q^2 of the sample
BLOCK = 64  # steps folded into the Cholesky rows at once (blocked route)
CANDIDATES = 64  # tokens brought up to date per step between folds (blocked route)


def spent_threshold(q: Tensor) -> Tensor:
    """Per-sample residual threshold ``EPS * max q^2`` (``[B]``; q is 0 at masked tokens)."""
    return EPS * (q * q).amax(dim=1).clamp_min(torch.finfo(q.dtype).tiny)


def dpp_select(
    x: Tensor,
    k: int | Tensor,
    quality: Tensor | None = None,
    mask: Tensor | None = None,
    max_memory: int | None = None,
) -> Tensor:
    """Indices ``[B, K]`` in greedy MAP order; ``-1`` past ``min(k_b, n_b)``. ``quality [B, N] > 0``.

    Routes, all exact: Triton on CUDA; on the CPU the reference loop over a cached cosine matrix when
    ``B N^2`` floats fit in ``max_memory`` bytes (default ``MAX_MEMORY``), else the blocked lazy loop.
    """
    mask = check_tokens("x", x, mask)
    counts = per_sample_k(k, mask)
    if quality is None:
        quality = torch.ones(x.shape[:2], dtype=torch.float32, device=x.device)
    if not isinstance(quality, Tensor) or tuple(quality.shape) != tuple(x.shape[:2]):
        got = tuple(quality.shape) if isinstance(quality, Tensor) else type(quality).__name__
        raise ValueError(f"quality: expected a tensor of shape {tuple(x.shape[:2])}, got {got}")
    valid_q = quality[mask]
    if not bool(torch.isfinite(valid_q).all()) or bool((valid_q < 0).any()):
        raise ValueError("quality: expected finite, non-negative values at valid tokens")
    if use_triton(x, quality):
        from vtc.kernels.dpp_triton import dpp_select_triton

        return dpp_select_triton(x, counts, quality, mask)
    if fits_in_memory(x, max_memory):
        return dpp_select_torch(x, counts, quality, mask, cache=True)
    return dpp_select_blocked(x, counts, quality, mask)


def map_start(x: Tensor, counts: Tensor, quality: Tensor, mask: Tensor) -> Tensor | tuple[Tensor, ...]:
    """The state every greedy-MAP loop starts from: ``(out, u, q, d2, c, eps)`` (output buffer, unit rows,
    masked qualities, residuals ``q^2`` with ``-inf`` marking tokens that may not be picked, zero
    Cholesky rows ``[B, K, N]``, spent threshold), or just ``out`` when nothing is to be selected. A
    loop marks each pick ``-inf`` too; subtracting from ``-inf`` keeps the mark."""
    out, u = selection_start(x, counts)
    if u is None:
        return out
    q = quality.to(u.dtype).masked_fill(~mask, 0)
    d2 = (q * q * (u.abs().sum(-1) > 0)).masked_fill(~mask, -torch.inf)  # cos(x_i, x_i) is exactly 1
    c = torch.zeros(x.shape[0], out.shape[1], x.shape[1], dtype=u.dtype, device=x.device)
    return out, u, q, d2, c, spent_threshold(q)


def fallback_pick(q: Tensor, d2: Tensor) -> Tensor:
    """Per sample, the highest-quality token that may still be picked (once the residuals are spent)."""
    return q.masked_fill(d2 == -torch.inf, -torch.inf).argmax(dim=1)


def dpp_select_torch(x: Tensor, counts: Tensor, quality: Tensor, mask: Tensor, cache: bool = False) -> Tensor:
    """The torch reference, batched: residuals ``d2 [B, N]`` and Cholesky rows ``c [B, K, N]``.

    ``cache`` reads each step's cosine row from one ``[B, N, N]`` product instead of a matrix-vector
    product per step.
    """
    start = map_start(x, counts, quality, mask)
    if isinstance(start, Tensor):
        return start
    out, u, q, d2, c, eps = start
    k_max = out.shape[1]
    rows = torch.arange(x.shape[0], device=x.device)
    cosines = u @ u.transpose(1, 2) if cache else None
    for step in range(k_max):
        best = d2.argmax(dim=1)  # first maximum: lower index on ties
        spent = d2[rows, best] <= eps
        any_spent = bool(spent.any())  # usually not: skip the fallback's ops
        pick = torch.where(spent, fallback_pick(q, d2), best) if any_spent else best
        out[:, step] = pick
        scale = torch.maximum(d2[rows, pick], eps).sqrt()[:, None]  # -inf only for a finished sample
        d2[rows, pick] = -torch.inf
        cos_row = cosines[rows, pick] if cosines is not None else (u @ u[rows, pick][:, :, None])[..., 0]
        row_l = q[rows, pick][:, None] * q * cos_row
        dot = (c[rows, :step, pick][:, None, :] @ c[:, :step])[:, 0]
        e = (row_l - dot) / scale
        if any_spent:
            e = torch.where(spent[:, None], torch.zeros_like(row_l), e)
        c[:, step] = e
        d2 = d2 - e * e
    return out.masked_fill(unpicked(out, counts), -1)


class PendingSteps:
    """The steps not yet folded into ``c`` and ``d2``: their picks and their block of the Cholesky factor.

    Row ``s`` of ``factor`` holds ``e_s'[p_s]`` for the earlier pending steps ``s'`` and the step's scale
    on the diagonal; a spent step (``e_s = 0``) has a unit diagonal and a zero row.
    """

    def __init__(self, batch: int, block: int, dtype: torch.dtype, device: torch.device) -> None:
        self.picks = torch.zeros(batch, block, dtype=torch.long, device=device)
        self.spent = torch.zeros(batch, block, dtype=torch.bool, device=device)
        self.factor = torch.zeros(batch, block, block, dtype=dtype, device=device)
        self.count = 0

    def add(self, pick: Tensor, spent: Tensor, column: Tensor, residual: Tensor, eps: Tensor) -> None:
        j = self.count
        self.picks[:, j] = pick
        self.spent[:, j] = spent
        self.factor[:, j, :j] = torch.where(spent[:, None], torch.zeros_like(column), column)
        self.factor[:, j, j] = torch.where(spent, torch.ones_like(residual), torch.maximum(residual, eps).sqrt())
        self.count += 1

    def rows_at(self, u: Tensor, q: Tensor, c: Tensor, done: int, cols: Tensor | None) -> Tensor:
        """``e_s[cols]`` for every pending step ``s``: ``[B, pending, len(cols)]`` (one triangular solve).

        ``cols=None`` means every token.
        """
        j = self.count
        rows = torch.arange(u.shape[0], device=u.device)[:, None]
        picks = self.picks[:, :j]
        u_cols, q_cols = (u, q) if cols is None else (u[rows, cols], q[rows, cols])
        right = q[rows, picks][:, :, None] * q_cols[:, None, :] * (u[rows, picks] @ u_cols.transpose(1, 2))
        if done:
            folded = c[:, :done]
            at_picks = folded.gather(2, picks[:, None, :].expand(-1, done, -1))
            at_cols = folded if cols is None else folded.gather(2, cols[:, None, :].expand(-1, done, -1))
            right = right - at_picks.transpose(1, 2) @ at_cols
        right = right.masked_fill(self.spent[:, :j, None], 0)
        return torch.linalg.solve_triangular(self.factor[:, :j, :j], right, upper=False)


def fold_pending(u: Tensor, q: Tensor, c: Tensor, d2: Tensor, done: int, pending: PendingSteps) -> tuple[Tensor, int]:
    """Write the pending steps' Cholesky rows for every token into ``c`` and lower ``d2`` by them."""
    j = pending.count
    if not j:
        return d2, done
    e = pending.rows_at(u, q, c, done, None)
    c[:, done : done + j] = e
    for s in range(j):  # step by step, as the reference subtracts
        d2 = d2 - e[:, s] * e[:, s]
    pending.count = 0
    return d2, done + j


def refreshed_argmax(
    u: Tensor, q: Tensor, c: Tensor, d2: Tensor, done: int, pending: PendingSteps, active: Tensor, candidates: int,
) -> tuple[Tensor, Tensor, Tensor] | None:
    """The exact next best token from the ``candidates`` highest folded residuals, or None.

    The folded ``d2`` misses the pending steps, so it bounds each token's true residual from above
    (``-inf``: may not be picked).
    The candidates get their true residual; the highest (lower index on ties) is the answer if it is
    strictly above the next bound. Returns the token, its residual and its pending ``e`` values.
    """
    batch, n, _ = u.shape
    take = min(candidates + 1, n)
    high, cand = d2.topk(take, dim=1)
    if take > candidates:
        threshold, high, cand = high[:, candidates], high[:, :candidates], cand[:, :candidates]
    else:
        threshold = torch.full((batch,), -torch.inf, dtype=high.dtype, device=u.device)
    e = pending.rows_at(u, q, c, done, cand)  # [B, pending, m]
    true = high - (e * e).sum(dim=1)  # candidates that may not be picked keep -inf
    best_value = true.max(dim=1).values
    best = torch.where(true == best_value[:, None], cand, n).min(dim=1).values
    if not bool(((best_value > threshold) | ~active).all()):
        return None
    where = (cand == best[:, None]).to(torch.int8).argmax(dim=1)
    column = e.gather(2, where[:, None, None].expand(-1, e.shape[1], 1))[..., 0]
    return best, best_value, column


def dpp_select_blocked(
    x: Tensor, counts: Tensor, quality: Tensor, mask: Tensor, block: int = BLOCK, candidates: int = CANDIDATES
) -> Tensor:
    """The reference's greedy MAP with its per-step products folded ``block`` steps at a time (exact).

    Between folds, ``d2`` is an upper bound of the residuals, and only the tokens with the highest
    bounds are brought up to date (``refreshed_argmax``); when they cannot prove the maximum, the step
    folds first and takes the plain ``argmax``. The fold is a blocked Cholesky update: two matrix
    products and a ``block x block`` triangular solve instead of ``block`` passes over ``[N, D]`` and
    ``[K, N]``.
    """
    start = map_start(x, counts, quality, mask)
    if isinstance(start, Tensor):
        return start
    out, u, q, d2, c, eps = start
    k_max, batch = out.shape[1], x.shape[0]
    rows = torch.arange(batch, device=x.device)
    counts = counts.to(x.device)
    pending = PendingSteps(batch, block, u.dtype, x.device)
    done = 0
    for step in range(k_max):
        found = None
        if pending.count:
            found = refreshed_argmax(u, q, c, d2, done, pending, counts > step, candidates)
        if found is None:
            d2, done = fold_pending(u, q, c, d2, done, pending)
            best = d2.argmax(dim=1)
            found = best, d2[rows, best], torch.zeros(batch, 0, dtype=u.dtype, device=x.device)
        best, best_value, column = found
        spent = best_value <= eps
        pick = torch.where(spent, fallback_pick(q, d2), best)
        out[:, step] = pick
        d2[rows, pick] = -torch.inf
        pending.add(pick, spent, column, best_value, eps)
        if pending.count == block:
            d2, done = fold_pending(u, q, c, d2, done, pending)
    return out.masked_fill(unpicked(out, counts), -1)
