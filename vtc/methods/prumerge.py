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

from vtc.core.budget import Budget
from vtc.core.ops import (
    as_layers,
    check_flag,
    check_metric,
    iqr_outliers,
    merge_into_nearest,
    select_layers,
    similarity_metric,
    top_indices,
)
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection


@register(
    "prumerge",
    paper="arXiv:2403.15388",
    signals=("cls_attn",),
    optional_signals=("keys",),
    static_count=False,
    adaptive=True,
    encoder_layers="layers",
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

    def select(self, sample: Sample, budget: Budget) -> Selection:
        scores = select_layers(sample.cls_attn, self.layers, "prumerge").mean(0)
        metric = similarity_metric(sample.features, sample.keys, self.metric, "prumerge")
        if budget.kind == "adaptive":
            keep = iqr_outliers(scores)
        else:
            keep = top_indices(scores, budget.resolve(sample.n))
        return Selection(merge_into_nearest(keep, metric, self.merge), info={"outliers": keep.numel()})
