"""``tome``: Token Merging by bipartite soft matching, repeated until the budget is met.

Bolya et al., "Token Merging: Your ViT But Faster" (ICLR 2023, arXiv:2210.09461). One round splits the
tokens alternately into sets A (even positions) and B (odd positions), matches every A token to its
most similar B token (cosine), and merges the ``r`` best-matched A tokens into their matches, with
sizes tracked and features averaged by size. At the projector stage the rounds repeat, with
``r = min(N_now - K, |A|)``, until ``K`` tokens remain; between rounds the tokens stay in the order of
their representatives (a merged group is represented by its B token), so the A/B split stays
spatially interleaved. Similarity uses the keys when present (``metric="auto"``), else features.
The inside-the-encoder ToMe (proportional attention, per-layer schedule) is a separate stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vtc.core.budget import Budget
from vtc.core.ops import bipartite_match, check_metric, similarity_metric, work_dtype
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection


def bipartite_round(metric: Tensor, sizes: Tensor, r: int) -> tuple[Tensor, Tensor, Tensor]:
    """One round of bipartite soft matching on ``metric [M, D]`` with group ``sizes [M]``.

    Returns ``(dst, metric, sizes)``: ``dst [M]`` is the position each token merges into (itself if
    it stays), and the updated size-weighted metric and sizes (rows of merged-away tokens are stale).
    """
    m = metric.shape[0]
    merged, into = bipartite_match(metric[None], r)
    merged_a, targets = merged[0], into[0]
    dst = torch.arange(m, device=metric.device)
    dst[merged_a] = targets
    weighted = metric * sizes[:, None]
    weighted.index_add_(0, targets, weighted[merged_a])
    sizes = sizes.clone().index_add_(0, targets, sizes[merged_a])
    return dst, weighted / sizes[:, None], sizes


def tome_rep(metric: Tensor, k: int) -> Tensor:
    """Representative of each of ``N`` tokens after merging down to ``k`` groups."""
    n = metric.shape[0]
    rep = torch.arange(n, device=metric.device)  # representative of each source token
    alive = torch.arange(n, device=metric.device)  # representatives still present, ascending
    metric = metric.to(work_dtype(metric))
    sizes = torch.ones(n, dtype=metric.dtype, device=metric.device)
    while alive.numel() > k:
        r = min(alive.numel() - k, (alive.numel() + 1) // 2)
        dst, metric, sizes = bipartite_round(metric, sizes, r)
        position_of = torch.full((n,), -1, dtype=torch.long, device=metric.device)
        position_of[alive] = torch.arange(alive.numel(), device=metric.device)
        rep = alive[dst[position_of[rep]]]
        stays = dst == torch.arange(alive.numel(), device=metric.device)
        alive, metric, sizes = alive[stays], metric[stays], sizes[stays]
    return rep


@register("tome", paper="arXiv:2210.09461", optional_signals=("keys",))
@dataclass(frozen=True)
class ToMe:
    """Repeated bipartite soft matching with size-weighted averaging."""

    metric: str = "auto"

    def __post_init__(self) -> None:
        check_metric(self.metric)

    def select(self, sample: Sample, budget: Budget) -> Selection:
        k = budget.resolve(sample.n)
        metric = similarity_metric(sample.features, sample.keys, self.metric, "tome")
        return Selection(tome_rep(metric, k))
