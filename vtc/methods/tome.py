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
from vtc.core.ops import bipartite_match, check_metric, pad_rows, similarity_metric, work_dtype
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection, split_samples
from vtc.core.types import VisualTokens


def merge_round(metric: Tensor, sizes: Tensor, merged_a: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Merge the A tokens at ``merged_a`` into ``targets`` (one bipartite round on ``metric [M, D]``).

    Returns ``(dst, metric, sizes)``: ``dst [M]`` is the position each token merges into (itself if
    it stays), and the updated size-weighted metric and sizes (rows of merged-away tokens are stale).
    """
    m = metric.shape[0]
    dst = torch.arange(m, device=metric.device)
    dst[merged_a] = targets
    weighted = metric * sizes[:, None]
    weighted.index_add_(0, targets, weighted[merged_a])
    sizes = sizes.clone().index_add_(0, targets, sizes[merged_a])
    return dst, weighted / sizes[:, None], sizes


def tome_reps(metrics: list[Tensor], ks: list[int]) -> list[Tensor]:
    """Representative of each token of each sample after merging ``metrics[b] [N_b, D]`` down to ``ks[b]``
    groups; each round matches every sample still above its count with one kernel call."""
    state = []
    for metric in metrics:
        n = metric.shape[0]
        every = torch.arange(n, device=metric.device)
        metric = metric.to(work_dtype(metric))
        # representative of each source token, representatives still present (ascending), metric, sizes
        state.append([every, every, metric, torch.ones(n, dtype=metric.dtype, device=metric.device)])
    while True:
        active = [b for b, (_, alive, _, _) in enumerate(state) if alive.numel() > ks[b]]
        if not active:
            return [rep for rep, _, _, _ in state]
        rs = [min(state[b][1].numel() - ks[b], (state[b][1].numel() + 1) // 2) for b in active]
        padded, mask = pad_rows([state[b][2] for b in active])
        merged, into = bipartite_match(padded, max(rs), mask=mask)
        for i, (b, r) in enumerate(zip(active, rs, strict=True)):
            rep, alive, metric, sizes = state[b]
            dst, metric, sizes = merge_round(metric, sizes, merged[i, :r], into[i, :r])
            position_of = torch.full((rep.numel(),), -1, dtype=torch.long, device=rep.device)
            position_of[alive] = torch.arange(alive.numel(), device=rep.device)
            rep = alive[dst[position_of[rep]]]
            stays = dst == torch.arange(alive.numel(), device=rep.device)
            state[b] = [rep, alive[stays], metric[stays], sizes[stays]]


def tome_rep(metric: Tensor, k: int) -> Tensor:
    """Representative of each of ``N`` tokens after merging down to ``k`` groups."""
    return tome_reps([metric], [k])[0]


@register("tome", paper="arXiv:2210.09461", optional_signals=("keys",), batched=True)
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

    def select_batch(self, tokens: VisualTokens, budget: Budget) -> list[Selection]:
        samples = split_samples(tokens)
        metrics = [similarity_metric(s.features, s.keys, self.metric, "tome") for s in samples]
        reps = tome_reps(metrics, [budget.resolve(s.n) for s in samples])
        return [Selection(rep) for rep in reps]
