"""``random``: keep a seeded random subset of tokens.

The baseline that pruning papers must beat; it is often close. See Wen et al., "Token Pruning in
Multimodal Large Language Models: Are We Solving the Right Problem?" (arXiv:2502.11501, 2025).
The permutation is drawn on the CPU from ``seed``, so every device and every sample of a batch gets
the same draw for the same length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vtc.core.budget import Budget
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection


def random_indices(n: int, k: int, seed: int) -> Tensor:
    """``k`` distinct indices out of ``n``, drawn from ``seed`` (CPU generator)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=generator)[:k]


@register("random", paper="arXiv:2502.11501 (baseline)")
@dataclass(frozen=True)
class Random:
    """Seeded random subset (baseline)."""

    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed: expected an integer, got {self.seed!r}")

    def select(self, sample: Sample, budget: Budget) -> Selection:
        k = budget.resolve(sample.n)
        keep = random_indices(sample.n, k, self.seed).to(sample.features.device)
        return Selection.keep(keep, sample.n)
