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

import torch
from torch import Tensor

from vtc.core.budget import Budget
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection, split_samples
from vtc.core.types import VisualTokens
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


@register("cdpruner", paper="arXiv:2506.10967", optional_signals=("text",), batched=True)
@dataclass(frozen=True)
class CDPruner:
    """Conditional DPP: diverse tokens weighted by relevance to the question (greedy MAP)."""

    negate_relevance: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.negate_relevance, bool):
            raise ValueError(f"negate_relevance: expected True or False, got {self.negate_relevance!r}")

    def quality(self, sample: Sample) -> Tensor | None:
        """The relevance of each token to the question (None without question text)."""
        if sample.text is None or sample.text.shape[0] == 0:
            return None
        if sample.text.shape[-1] != sample.features.shape[-1]:
            raise ValueError(
                f"text: expected width {sample.features.shape[-1]} (the features'), got {sample.text.shape[-1]}"
            )
        return instruction_relevance(sample.features, sample.text, self.negate_relevance)

    def select(self, sample: Sample, budget: Budget) -> Selection:
        quality = self.quality(sample)
        order = dpp_select(sample.features[None], budget.resolve(sample.n), None if quality is None else quality[None])
        return Selection.keep(order[0], sample.n, relevance_used=quality is not None)

    def select_batch(self, tokens: VisualTokens, budget: Budget) -> list[Selection]:
        """One ``dpp_select`` call for the padded batch; a sample without question text gets quality 1."""
        samples = split_samples(tokens)
        qualities = [self.quality(s) for s in samples]
        quality = torch.ones(tokens.features.shape[:2], dtype=torch.float32, device=tokens.features.device)
        for b, q in enumerate(qualities):
            if q is not None:
                quality[b, : q.shape[0]] = q
        counts = [budget.resolve(s.n) for s in samples]
        order = dpp_select(tokens.features, torch.tensor(counts), quality, tokens.mask)
        return [Selection.keep(order[b, :k], s.n, relevance_used=q is not None)
                for b, (k, s, q) in enumerate(zip(counts, samples, qualities, strict=True))]
