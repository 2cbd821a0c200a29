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

from vtc.kernels.common import check_tokens, per_sample_k, selection_start
from vtc.kernels.dispatch import use_triton

EPS = 1e-5  # relative to the largest q^2 of the sample


def spent_threshold(q: Tensor) -> Tensor:
    """Per-sample residual threshold ``EPS * max q^2`` (``[B]``; q is 0 at masked tokens)."""
    return EPS * (q * q).amax(dim=1).clamp_min(torch.finfo(q.dtype).tiny)


def dpp_select(x: Tensor, k: int | Tensor, quality: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
    """Indices ``[B, K]`` in greedy MAP order; ``-1`` past ``min(k_b, n_b)``. ``quality [B, N] > 0``."""
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
    return dpp_select_torch(x, counts, quality, mask)


def dpp_select_torch(x: Tensor, counts: Tensor, quality: Tensor, mask: Tensor) -> Tensor:
    """The torch reference, batched: residuals ``d2 [B, N]`` and Cholesky rows ``c [B, K, N]``."""
    batch, n, _ = x.shape
    out, u = selection_start(x, counts)
    if u is None:
        return out
    k_max = out.shape[1]
    q = quality.to(u.dtype).masked_fill(~mask, 0)
    rows = torch.arange(batch, device=x.device)
    d2 = q * q * (u.abs().sum(-1) > 0)  # cos(x_i, x_i) is exactly 1 (0 for a zero row)
    c = torch.zeros(batch, k_max, n, dtype=u.dtype, device=x.device)
    blocked = ~mask.clone()
    counts = counts.to(x.device)
    eps = spent_threshold(q)
    for step in range(k_max):
        residual = d2.masked_fill(blocked, -torch.inf)
        best = residual.argmax(dim=1)  # first maximum: lower index on ties
        spent = residual[rows, best] <= eps
        fallback = q.masked_fill(blocked, -torch.inf).argmax(dim=1)
        pick = torch.where(spent, fallback, best)
        out[:, step] = torch.where(counts > step, pick, -1)
        blocked[rows, pick] = True
        row_l = q[rows, pick][:, None] * q * (u @ u[rows, pick][:, :, None])[..., 0]
        dot = (c[rows, :step, pick][:, None, :] @ c[:, :step])[:, 0]
        scale = torch.maximum(d2[rows, pick], eps).sqrt()[:, None]
        e = torch.where(spent[:, None], torch.zeros_like(row_l), (row_l - dot) / scale)
        c[:, step] = e
        d2 = d2 - e * e
    return out
