"""``divprune``: keep a maximally diverse subset by greedy max-min selection on cosine distance.

Alkhouri et al., "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models"
(CVPR 2025, arXiv:2503.02175) cast pruning as a Max-Min Diversity Problem and solve it greedily:
first the token whose nearest other token is farthest, then repeatedly the token whose minimum
distance to the chosen set is largest. Distance is ``1 - cos``. Memory stays O(N * chunk + N): the
first step scans similarity row blocks, later steps keep one running min-distance vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vtc.core.budget import Budget
from vtc.core.ops import CHUNK, unit_rows
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection


def farthest_isolated(u: Tensor) -> int:
    """Index of the unit row whose nearest *other* row is farthest in cosine distance (lowest on ties)."""
    n = u.shape[0]
    if n == 1:
        return 0
    nearest = []
    for start in range(0, n, CHUNK):
        dist = 1 - u[start : start + CHUNK] @ u.T
        rows = torch.arange(dist.shape[0], device=u.device)
        dist[rows, rows + start] = torch.inf
        nearest.append(dist.min(dim=1).values)
    return int(torch.cat(nearest).argmax())


def divprune_indices(x: Tensor, k: int) -> Tensor:
    """``k`` indices of ``x [N, D]`` in greedy max-min (MMDP) selection order."""
    u = unit_rows(x)
    chosen = [farthest_isolated(u)]
    min_dist = 1 - u @ u[chosen[0]]
    taken = torch.zeros(u.shape[0], dtype=torch.bool, device=u.device)
    taken[chosen[0]] = True
    for _ in range(k - 1):
        nxt = int(min_dist.masked_fill(taken, -torch.inf).argmax())
        chosen.append(nxt)
        taken[nxt] = True
        min_dist = torch.minimum(min_dist, 1 - u @ u[nxt])
    return torch.tensor(chosen, dtype=torch.long, device=x.device)


@register("divprune", paper="arXiv:2503.02175")
@dataclass(frozen=True)
class DivPrune:
    """Greedy max-min diversity (MMDP) on cosine distance."""

    def select(self, sample: Sample, budget: Budget) -> Selection:
        k = budget.resolve(sample.n)
        order = divprune_indices(sample.features, k)
        return Selection.keep(order, sample.n)
