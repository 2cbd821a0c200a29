"""``cls_attention``: keep the tokens the encoder's [CLS] attends to most.

FasterVLM (Zhang et al., "[CLS] Attention is All You Need for Training-Free Visual Token Pruning",
arXiv:2412.01818) ranks patch tokens by the head-averaged [CLS] attention of the encoder layer whose
features the VLM uses (LLaVA: the penultimate, ``layers=(-2,)``). VTC-CLS (Wang et al., "[CLS] Token
Tells Everything Needed for Training-free Efficient MLLMs", arXiv:2412.05819) ensembles several
layers by adding their raw score rows; here the rows are averaged (the same ranking).
Score-based: ``budget="coverage:p"`` keeps the fewest tokens holding ``p`` of that mass.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from vtc.core.budget import Budget
from vtc.core.ops import as_layers, most_attended_batch, select_layers, top_indices
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection
from vtc.core.types import VisualTokens


def cls_attention_indices(scores: Tensor, k: int) -> Tensor:
    """The ``k`` highest-scoring tokens (ties to the lower index)."""
    return top_indices(scores, k)


@register(
    "cls_attention",
    paper="arXiv:2412.01818 (FasterVLM); arXiv:2412.05819 (VTC-CLS)",
    signals=("cls_attn",),
    score_based=True,
    encoder_layers="layers",
    batched=True,
)
@dataclass(frozen=True)
class ClsAttention:
    """[CLS]-attention top-k, optionally averaged over several encoder layers."""

    layers: tuple[int, ...] = (-2,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", as_layers(self.layers))

    def select(self, sample: Sample, budget: Budget) -> Selection:
        scores = select_layers(sample.cls_attn, self.layers, "cls_attention").mean(0)
        k = budget.resolve(sample.n, mass=scores)
        return Selection.keep(cls_attention_indices(scores, k), sample.n)

    def select_batch(self, tokens: VisualTokens, budget: Budget) -> list[Selection]:
        scores = select_layers(tokens.cls_attn.transpose(0, 1), self.layers, "cls_attention").mean(0)  # [B, N]
        picks = most_attended_batch(scores, tokens.mask, budget)
        return [Selection.keep(p, n) for p, n in zip(picks, tokens.lengths.tolist(), strict=True)]
