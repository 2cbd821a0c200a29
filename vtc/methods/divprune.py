"""``divprune``: keep a maximally diverse subset by greedy max-min selection on cosine distance.

Alkhouri et al., "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models"
(CVPR 2025, arXiv:2503.02175) cast pruning as a Max-Min Diversity Problem and solve it greedily:
first the token whose nearest other token is farthest, then repeatedly the token whose minimum
distance to the chosen set is largest. Distance is ``1 - cos``. The selection runs in the
``maxmin_select`` kernel, one call for a whole padded batch (``select_batch``): Triton on CUDA; on the
CPU a cached similarity matrix when it fits in ``vtc.kernels.common.MAX_MEMORY``, else a blocked loop
with no N x N matrix (see ``vtc/kernels/maxmin.py``). Every route picks what the plain greedy loop picks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vtc.core.budget import Budget
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection
from vtc.core.types import VisualTokens
from vtc.kernels.maxmin import maxmin_select


def divprune_indices(x: Tensor, k: int) -> Tensor:
    """``k`` indices of ``x [N, D]`` in greedy max-min (MMDP) selection order."""
    return maxmin_select(x[None], k)[0]


@register("divprune", paper="arXiv:2503.02175", batched=True)
@dataclass(frozen=True)
class DivPrune:
    """Greedy max-min diversity (MMDP) on cosine distance."""

    def select(self, sample: Sample, budget: Budget) -> Selection:
        k = budget.resolve(sample.n)
        order = divprune_indices(sample.features, k)
        return Selection.keep(order, sample.n)

    def select_batch(self, tokens: VisualTokens, budget: Budget) -> list[Selection]:
        lengths = tokens.lengths.tolist()
        counts = [budget.resolve(n) for n in lengths]
        order = maxmin_select(tokens.features, torch.tensor(counts), tokens.mask)
        return [Selection.keep(order[b, :k], n) for b, (k, n) in enumerate(zip(counts, lengths, strict=True))]
