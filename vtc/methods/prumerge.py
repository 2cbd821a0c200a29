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

from torch import Tensor

from vtc.core.budget import Budget
from vtc.core.ops import (
    as_layers,
    check_flag,
    check_metric,
    iqr_outliers,
    merge_into_nearest_batch,
    select_layers,
    similarity_metric,
    top_indices,
)
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection, split_samples
from vtc.core.types import VisualTokens


@register(
    "prumerge",
    paper="arXiv:2403.15388",
    signals=("cls_attn",),
    optional_signals=("keys",),
    static_count=False,
    adaptive=True,
    encoder_layers="layers",
    batched=True,
)
@dataclass(frozen=True)
class PruMerge:
    """IQR outliers of [CLS] attention (adaptive count), rest merged into nearest kept by key similarity."""

    layers: tuple[int, ...] = (-2,)
    metric: str = "auto"
    merge: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", as_layers(self.layers))
        check_metric(self.metric)
        check_flag(self.merge, "merge")

    def kept(self, sample: Sample, budget: Budget) -> Tensor:
        """The outliers (adaptive) or the top tokens by [CLS] attention."""
        scores = select_layers(sample.cls_attn, self.layers, "prumerge").mean(0)
        if budget.kind == "adaptive":
            return iqr_outliers(scores)
        return top_indices(scores, budget.resolve(sample.n))

    def select(self, sample: Sample, budget: Budget) -> Selection:
        return self.select_batch_of([sample], budget)[0]

    def select_batch(self, tokens: VisualTokens, budget: Budget) -> list[Selection]:
        return self.select_batch_of(split_samples(tokens), budget)

    def select_batch_of(self, samples: list[Sample], budget: Budget) -> list[Selection]:
        """Per sample the kept tokens, then one similarity call merges the rest of every sample."""
        keeps = [self.kept(s, budget) for s in samples]
        metrics = [similarity_metric(s.features, s.keys, self.metric, "prumerge") for s in samples]
        reps = merge_into_nearest_batch(keeps, metrics, self.merge)
        return [Selection(rep, info={"outliers": keep.numel()}) for rep, keep in zip(reps, keeps, strict=True)]
