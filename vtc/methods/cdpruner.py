"""``cdpruner``: maximise the conditional diversity of the kept tokens with a DPP.

Zhang et al., "Beyond Attention or Similarity: Maximizing Conditional Diversity for Token Pruning in
MLLMs" (CDPruner, NeurIPS 2025, arXiv:2506.10967). The DPP kernel is ``L_ij = r_i * cos(x_i, x_j) * r_j``
where ``r`` is each token's relevance to the instruction: the mean cosine similarity between the
token and the question's text embeddings (the ``text`` signal, in the features' space), min-max
normalised to ``(0, 1]``. Greedy MAP inference (``dpp_select`` kernel, incremental Cholesky) picks the
``K`` tokens. Without ``text`` every relevance is 1 and the method is a pure diversity DPP. The
official LLaVA code negates the relevance before normalising (a quirk of its feature space);
``negate_relevance=True`` reproduces that.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from vtc.core.budget import Budget
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection
from vtc.kernels.common import unit
from vtc.kernels.dpp import dpp_select


def instruction_relevance(x: Tensor, text: Tensor, negate: bool = False) -> Tensor:
    """Mean cosine similarity of each token to the text tokens, min-max normalised to (0, 1]."""
    ux = unit(x)
    r = (ux @ unit(text).to(ux.dtype).T).mean(dim=1)
    if negate:
        r = -r
    spread = (r.max() - r.min()).clamp_min(1e-12)
    return (r - r.min() + 1e-6) / spread


@register("cdpruner", paper="arXiv:2506.10967", optional_signals=("text",))
@dataclass(frozen=True)
class CDPruner:
    """Conditional DPP: diverse tokens weighted by relevance to the question (greedy MAP)."""

    negate_relevance: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.negate_relevance, bool):
            raise ValueError(f"negate_relevance: expected True or False, got {self.negate_relevance!r}")

    def select(self, sample: Sample, budget: Budget) -> Selection:
        k = budget.resolve(sample.n)
        quality = None
        if sample.text is not None and sample.text.shape[0] > 0:
            if sample.text.shape[-1] != sample.features.shape[-1]:
                raise ValueError(
                    f"text: expected width {sample.features.shape[-1]} (the features'), got {sample.text.shape[-1]}"
                )
            quality = instruction_relevance(sample.features, sample.text, self.negate_relevance)[None]
        order = dpp_select(sample.features[None], k, quality)[0]
        return Selection.keep(order, sample.n, relevance_used=quality is not None)
