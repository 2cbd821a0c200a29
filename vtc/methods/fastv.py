"""``fastv``: after layer K of the LLM, keep the visual tokens the last text token attends to most.

Chen et al., "An Image is Worth 1/2 Tokens After Layer 2: Plug-and-Play Inference Acceleration for
Large Vision-Language Models" (ECCV 2024, arXiv:2403.06764). Layer ``K`` runs on the whole sequence;
its attention from the last token of the prompt (computed from that layer's query and keys for that one
query, averaged over heads) ranks the visual tokens, and layers ``K+1 ...`` see only the kept ones and
all the text. The budget counts the visual tokens of a sequence (all its images and videos together):
``ratio=0.5`` is the paper's R = 50%. Kept tokens keep their original positions.
Score-based: ``budget="coverage:p"`` keeps the fewest tokens holding ``p`` of that attention.
"""

from __future__ import annotations

from dataclasses import dataclass

from vtc.core.budget import Budget
from vtc.core.ops import check_llm_layer, most_attended, most_attended_batch
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection
from vtc.core.types import VisualTokens


@register(
    "fastv", paper="arXiv:2403.06764", stage="llm", signals=("query_attn",), score_based=True, llm_layers="layer",
    batched=True,
)
@dataclass(frozen=True)
class FastV:
    """Visual tokens ranked by the last text token's attention at LLM layer K; the rest dropped after K."""

    layer: int = 2

    def __post_init__(self) -> None:
        check_llm_layer(self.layer)

    def select(self, sample: Sample, budget: Budget) -> Selection:
        return Selection.keep(most_attended(sample.query_attn.float(), budget), sample.n)

    def select_batch(self, tokens: VisualTokens, budget: Budget) -> list[Selection]:
        picks = most_attended_batch(tokens.query_attn.float(), tokens.mask, budget)
        return [Selection.keep(p, n) for p, n in zip(picks, tokens.lengths.tolist(), strict=True)]
