"""``uniform``: keep tokens at a spatially even stride over the token grid.

The spatial-sampling baseline of Wen et al., "Token Pruning in Multimodal Large Language Models: Are
We Solving the Right Problem?" (arXiv:2502.11501, 2025). The budget is split evenly over frames, and
inside a frame over rows and columns (e.g. 144 of 24x24 keeps every second row and column).
"""

from __future__ import annotations

from dataclasses import dataclass

from vtc.core.budget import Budget
from vtc.core.ops import grid_uniform
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection


@register("uniform", paper="arXiv:2502.11501 (baseline)", video=True)
@dataclass(frozen=True)
class Uniform:
    """Spatially even stride over the grid (baseline)."""

    def select(self, sample: Sample, budget: Budget) -> Selection:
        k = budget.resolve(sample.n)
        keep = grid_uniform(sample.grid, k).to(sample.features.device)
        return Selection.keep(keep, sample.n)
