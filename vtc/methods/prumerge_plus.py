"""``prumerge_plus``: PruMerge's attention outliers plus spatially uniform samples, then merging.

Shang et al., "LLaVA-PruMerge: Adaptive Token Reduction for Efficient Large Multimodal Models"
(arXiv:2403.15388), PruMerge+. The IQR outliers of the [CLS] attention (see ``prumerge``) are
complemented with ``round(uniform_factor * outliers)`` spatially uniform tokens over the grid (the
official code adds about three per outlier, ~25% of the tokens in all), skipping tokens already
kept; the count is adaptive. With ``ratio=``/``count=`` the budget ``K`` is split: the
``top = round(K / (1 + uniform_factor))`` top-attention tokens, then ``K - top`` spatially uniform
picks, and where some of those were already kept, the next tokens by attention fill the budget.
The rest merge into their nearest kept token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vtc.core.budget import Budget
from vtc.core.ops import (
    as_layers,
    check_flag,
    check_metric,
    grid_uniform,
    iqr_outliers,
    merge_into_nearest_batch,
    select_layers,
    similarity_metric,
    top_indices,
)
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection, split_samples
from vtc.core.types import VisualTokens


def add_uniform(keep: Tensor, uniform: Tensor, scores: Tensor, k: int | None) -> Tensor:
    """``keep`` extended with the ``uniform`` picks not already kept; with ``k``, exactly ``k`` tokens.

    If ``k`` is given and the picks fall short, the next tokens by score fill the budget.
    """
    taken = torch.zeros(scores.shape[0], dtype=torch.bool, device=scores.device)
    taken[keep] = True
    out = torch.cat([keep, uniform[~taken[uniform]]])
    if k is not None and out.numel() < k:
        taken[out] = True
        fill = top_indices(scores.masked_fill(taken, -torch.inf), k - out.numel())
        out = torch.cat([out, fill])
    return out


@register(
    "prumerge_plus",
    paper="arXiv:2403.15388",
    signals=("cls_attn",),
    optional_signals=("keys",),
    static_count=False,
    adaptive=True,
    video=True,
    encoder_layers="layers",
    batched=True,
)
@dataclass(frozen=True)
class PruMergePlus:
    """PruMerge outliers + spatially uniform samples (adaptive count), rest merged by key similarity."""

    layers: tuple[int, ...] = (-2,)
    metric: str = "auto"
    merge: bool = True
    uniform_factor: float = 3.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", as_layers(self.layers))
        check_metric(self.metric)
        check_flag(self.merge, "merge")
        if not isinstance(self.uniform_factor, (int, float)) or not 0 <= self.uniform_factor <= 100:
            raise ValueError(f"uniform_factor: expected a number in [0, 100], got {self.uniform_factor!r}")

    def kept(self, sample: Sample, budget: Budget) -> tuple[Tensor, int]:
        """The kept tokens (outliers, then uniform picks) and how many of them are outliers."""
        scores = select_layers(sample.cls_attn, self.layers, "prumerge_plus").mean(0)
        device = scores.device
        if budget.kind == "adaptive":
            outliers = iqr_outliers(scores)
            count = min(sample.n, int(self.uniform_factor * outliers.numel() + 0.5))
            return add_uniform(outliers, grid_uniform(sample.grid, count).to(device), scores, None), outliers.numel()
        k = budget.resolve(sample.n)
        outliers = top_indices(scores, max(1, int(k / (1 + self.uniform_factor) + 0.5)))
        uniform = grid_uniform(sample.grid, k - outliers.numel()).to(device)
        return add_uniform(outliers, uniform, scores, k), outliers.numel()

    def select(self, sample: Sample, budget: Budget) -> Selection:
        return self.select_batch_of([sample], budget)[0]

    def select_batch(self, tokens: VisualTokens, budget: Budget) -> list[Selection]:
        return self.select_batch_of(split_samples(tokens), budget)

    def select_batch_of(self, samples: list[Sample], budget: Budget) -> list[Selection]:
        """Per sample the kept tokens, then one similarity call merges the rest of every sample."""
        kept = [self.kept(s, budget) for s in samples]
        metrics = [similarity_metric(s.features, s.keys, self.metric, "prumerge_plus") for s in samples]
        reps = merge_into_nearest_batch([keep for keep, _ in kept], metrics, self.merge)
        return [Selection(rep, info={"outliers": n_out, "uniform": keep.numel() - n_out})
                for rep, (keep, n_out) in zip(reps, kept, strict=True)]
