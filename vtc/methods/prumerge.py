"""``prumerge``: adaptive [CLS]-attention outliers (IQR), then merge the rest into their nearest kept token.

Shang et al., "LLaVA-PruMerge: Adaptive Token Reduction for Efficient Large Multimodal Models"
(arXiv:2403.15388). The kept tokens are the outliers of the [CLS] attention: scores above
``Q3 + 1.5 * IQR`` (quartiles by linear interpolation), at least one token. Their number is chosen per
sample (the default ``budget="adaptive"``); with ``ratio=``/``count=`` the top-``K`` tokens by attention
are kept instead, for iso-token comparisons.

Every pruned token then joins the kept token whose key is most similar (cosine; features without
keys), and a slot is the mean of its group (``merge=False`` drops them instead). The official code
instead adds to each kept token an attention-weighted sum of its 32 nearest tokens (a token may feed
several), which is not an average; vtc uses a partition so that ``assign`` and ``sizes`` stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vtc.core.budget import Budget
from vtc.core.ops import as_layers, best_match, check_metric, select_layers, similarity_metric, top_indices
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection


def iqr_outliers(scores: Tensor) -> Tensor:
    """Indices (best first) of the scores above ``Q3 + 1.5 * IQR``; the top score if there are none."""
    q1, q3 = torch.quantile(scores.double(), torch.tensor([0.25, 0.75], dtype=torch.float64, device=scores.device))
    fence = q3 + 1.5 * (q3 - q1)
    count = max(1, int((scores.double() > fence).sum()))
    return top_indices(scores, count)


def merge_into_nearest(keep: Tensor, metric: Tensor, merge: bool = True) -> Tensor:
    """Representatives: kept tokens keep themselves, every other token joins its most similar kept token."""
    n = metric.shape[0]
    rep = torch.full((n,), -1, dtype=torch.long, device=metric.device)
    rep[keep] = keep
    others = (rep < 0).nonzero()[:, 0]
    if merge and others.numel():
        _, nearest = best_match(metric[others], metric[keep])
        rep[others] = keep[nearest]
    return rep


@dataclass(frozen=True)
class _PruMergeBase:
    layers: tuple[int, ...] = (-2,)
    metric: str = "auto"
    merge: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", as_layers(self.layers))
        check_metric(self.metric)
        if not isinstance(self.merge, bool):
            raise ValueError(f"merge: expected True or False, got {self.merge!r}")

    def _scores_and_metric(self, sample: Sample, name: str) -> tuple[Tensor, Tensor]:
        scores = select_layers(sample.cls_attn, self.layers, name).mean(0)
        return scores, similarity_metric(sample.features, sample.keys, self.metric, name)


@register(
    "prumerge",
    paper="arXiv:2403.15388",
    signals=("cls_attn",),
    optional_signals=("keys",),
    static_count=False,
    adaptive=True,
)
@dataclass(frozen=True)
class PruMerge(_PruMergeBase):
    """IQR outliers of [CLS] attention (adaptive count), rest merged into nearest kept by key similarity."""

    def select(self, sample: Sample, budget: Budget) -> Selection:
        scores, metric = self._scores_and_metric(sample, "prumerge")
        if budget.kind == "adaptive":
            keep = iqr_outliers(scores)
        else:
            keep = top_indices(scores, budget.resolve(sample.n))
        return Selection(merge_into_nearest(keep, metric, self.merge), info={"outliers": keep.numel()})
