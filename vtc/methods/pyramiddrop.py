"""``pyramiddrop``: drop visual tokens in several LLM stages, by the last text token's attention.

Xing et al., "PyramidDrop: Accelerating Your Large Vision-Language Models via Pyramid Visual
Redundancy Reduction" (CVPR 2025, arXiv:2410.17247). The LLM is split into stages at ``layers``; after
each of those layers, the visual tokens still present are ranked by the attention the last instruction
token pays them (that layer's query and keys, averaged over heads) and only ``ratio`` of them (the
paper's lambda, 0.5) go on. So after the i-th listed layer ``ratio**i`` of the visual tokens remain:
a pyramid. The budget applies at every stage; inside a model (``vtc.apply``) it must be a ratio, since
a count would keep that many at each stage and only the first listed layer would drop. Kept tokens keep
their original positions.
"""

from __future__ import annotations

from dataclasses import dataclass

from vtc.core.budget import Budget
from vtc.core.ops import check_llm_layer, most_attended, most_attended_batch
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection
from vtc.core.types import VisualTokens


@register(
    "pyramiddrop", paper="arXiv:2410.17247", stage="llm", signals=("query_attn",), batched=True, llm_layers="layers",
    llm_budgets=("ratio",),
)
@dataclass(frozen=True)
class PyramidDrop:
    """Multi-stage FastV: keep ``ratio`` of the visual tokens after each listed LLM layer."""

    layers: tuple[int, ...] = (8, 16, 24)

    def __post_init__(self) -> None:
        layers = (self.layers,) if isinstance(self.layers, int) else self.layers
        if not isinstance(layers, (tuple, list)) or not layers:
            raise ValueError(f"layers: expected increasing decoder layer indices, got {self.layers!r}")
        layers = tuple(check_llm_layer(i, "layers") for i in layers)
        if list(layers) != sorted(set(layers)):
            raise ValueError(f"layers: expected strictly increasing decoder layer indices, got {layers}")
        object.__setattr__(self, "layers", layers)

    def select(self, sample: Sample, budget: Budget) -> Selection:
        return Selection.keep(most_attended(sample.query_attn.float(), budget), sample.n)

    def select_batch(self, tokens: VisualTokens, budget: Budget) -> list[Selection]:
        picks = most_attended_batch(tokens.query_attn.float(), tokens.mask, budget)
        return [Selection.keep(p, n) for p, n in zip(picks, tokens.lengths.tolist(), strict=True)]
