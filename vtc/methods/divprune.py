"""``divprune``: keep a maximally diverse subset by greedy max-min selection on cosine distance.

Alkhouri et al., "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models"
(CVPR 2025, arXiv:2503.02175) cast pruning as a Max-Min Diversity Problem and solve it greedily:
first the token whose nearest other token is farthest, then repeatedly the token whose minimum
distance to the chosen set is largest. Distance is ``1 - cos``. The selection runs in the
``maxmin_select`` kernel (Triton on CUDA): no N x N matrix, one running vector of length N.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from vtc.core.budget import Budget
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection
from vtc.kernels.maxmin import maxmin_select


def divprune_indices(x: Tensor, k: int) -> Tensor:
    """``k`` indices of ``x [N, D]`` in greedy max-min (MMDP) selection order."""
    return maxmin_select(x[None], k)[0]


@register("divprune", paper="arXiv:2503.02175")
@dataclass(frozen=True)
class DivPrune:
    """Greedy max-min diversity (MMDP) on cosine distance."""

    def select(self, sample: Sample, budget: Budget) -> Selection:
        k = budget.resolve(sample.n)
        order = divprune_indices(sample.features, k)
        return Selection.keep(order, sample.n)
