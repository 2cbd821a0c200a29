"""``visionzip``: dominant tokens by [CLS] attention, plus contextual tokens merged by key similarity.

Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision Language Models" (CVPR 2025,
arXiv:2412.04467). Of the budget ``K``, ``round(K * contextual_fraction)`` slots are contextual (the
default 10/64 matches the paper's 54+10, 108+20 and 162+30 splits) and the rest dominant:

1. Dominant: the top tokens by [CLS] attention (``layers``, default the penultimate encoder layer).
2. Contextual: the remaining tokens, in raster order, give ``C`` targets at a uniform stride
   (positions ``0, s, 2s, ...`` with ``s = max(1, R // C)``); every other remaining token joins its
   most similar target (cosine on keys, or features without keys).
3. A contextual slot is the mean of its target and the tokens that joined it, represented by the target.

Differences from the official code, on purpose: the [CLS] token itself is not a visual token here
(VLMs like LLaVA drop it), and a contextual slot is a true mean (the official code adds the target to
the mean of the others). Score-based: ``budget="coverage:p"`` sets ``K`` from the attention mass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vtc.core.budget import Budget
from vtc.core.ops import (
    as_layers,
    best_match,
    best_match_batch,
    check_metric,
    select_layers,
    similarity_metric,
    top_indices,
    top_indices_batch,
)
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection, split_samples
from vtc.core.types import VisualTokens


def split_budget(k: int, contextual_fraction: float) -> tuple[int, int]:
    """``(dominant, contextual)`` counts for a budget of ``k`` (round half up, dominant >= 1)."""
    contextual = min(k - 1, int(k * contextual_fraction + 0.5))
    return k - contextual, contextual


def dominant_and_targets(keep: Tensor, n: int, contextual: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(rep, targets, others)``: the dominant tokens ``keep`` represent themselves, ``contextual`` targets
    at a uniform stride over the rest (raster order) too; ``others`` still need a target."""
    rep = torch.full((n,), -1, dtype=torch.long, device=keep.device)
    rep[keep] = keep
    if contextual == 0:
        empty = keep.new_zeros(0)
        return rep, empty, empty
    rest = (rep < 0).nonzero()[:, 0]  # ascending raster order
    step = max(1, rest.numel() // contextual)
    targets = rest[::step][:contextual]
    rep[targets] = targets
    return rep, targets, rest[rep[rest] < 0]


def visionzip_rep(scores: Tensor, metric: Tensor, dominant: int, contextual: int) -> Tensor:
    """Representative of each token: dominant tokens keep themselves, the rest join contextual targets."""
    rep, targets, others = dominant_and_targets(top_indices(scores, dominant), scores.shape[0], contextual)
    if others.numel():
        _, nearest = best_match(metric[others], metric[targets])
        rep[others] = targets[nearest]
    return rep


@register(
    "visionzip",
    paper="arXiv:2412.04467",
    signals=("cls_attn",),
    optional_signals=("keys",),
    score_based=True,
    encoder_layers="layers",
    batched=True,
)
@dataclass(frozen=True)
class VisionZip:
    """Dominant tokens by [CLS] attention + contextual tokens merged by key similarity."""

    contextual_fraction: float = 10 / 64
    layers: tuple[int, ...] = (-2,)
    metric: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.contextual_fraction, (int, float)) or not 0 <= self.contextual_fraction < 1:
            raise ValueError(f"contextual_fraction: expected a number in [0, 1), got {self.contextual_fraction!r}")
        object.__setattr__(self, "layers", as_layers(self.layers))
        check_metric(self.metric)

    def select(self, sample: Sample, budget: Budget) -> Selection:
        scores = select_layers(sample.cls_attn, self.layers, "visionzip").mean(0)
        k = budget.resolve(sample.n, mass=scores)
        dominant, contextual = split_budget(k, self.contextual_fraction)
        metric = similarity_metric(sample.features, sample.keys, self.metric, "visionzip")
        rep = visionzip_rep(scores, metric, dominant, contextual)
        return Selection(rep, info={"dominant": dominant, "contextual": contextual})

    def select_batch(self, tokens: VisualTokens, budget: Budget) -> list[Selection]:
        """One sort for the dominant tokens and one ``similarity_topk`` call for the contextual merge."""
        lengths = tokens.lengths.tolist()
        scores = select_layers(tokens.cls_attn.transpose(0, 1), self.layers, "visionzip").mean(0)  # [B, N]
        splits = [split_budget(budget.resolve(n, mass=scores[b, :n]), self.contextual_fraction)
                  for b, n in enumerate(lengths)]
        keeps = top_indices_batch(scores, tokens.mask, [d for d, _ in splits])
        plans = [dominant_and_targets(keep, n, c) for keep, n, (_, c) in zip(keeps, lengths, splits, strict=True)]
        metrics = [similarity_metric(s.features, s.keys, self.metric, "visionzip") for s in split_samples(tokens)]
        matches = best_match_batch([m[others] for m, (_, _, others) in zip(metrics, plans, strict=True)],
                                   [m[targets] for m, (_, targets, _) in zip(metrics, plans, strict=True)])
        out = []
        for (rep, targets, others), (_, nearest), (d, c) in zip(plans, matches, splits, strict=True):
            if others.numel():
                rep[others] = targets[nearest]
            out.append(Selection(rep, info={"dominant": d, "contextual": c}))
        return out
