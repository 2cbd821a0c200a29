"""``dart``: keep pivot tokens, then the tokens least duplicated with respect to the pivots.

Wen et al., "Stop Looking for Important Tokens in Multimodal Language Models: Duplication Matters
More" (DART, arXiv:2502.11494). Pivots are the ``pivots`` tokens with the largest L1 norm of their keys
(of their features without keys). The remaining ``K - pivots`` slots go to the tokens least similar
(cosine, on features) to the pivots:

- ``allocation="max"`` (default): a token's duplication is its highest similarity to any pivot; keep the
  lowest. This is the global form of the paper's criterion.
- ``allocation="per_pivot"``: as in the official code, each pivot in turn (largest norm first) takes an
  equal share of the tokens least similar to it, removing them from the pool (the first
  ``(K - pivots) mod pivots`` pivots take one more).

With the ``text`` signal and ``text_pivots > 0``, that many question tokens (largest L1 norm) act as
extra pivots for similarity; they are never kept as visual tokens. Unlike the official code, the pivots
count towards ``K`` so that the budget is exact. The official method runs inside the LLM at layer 2;
this is its projector-stage form.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vtc.core.budget import Budget
from vtc.core.ops import (
    best_match,
    bottom_indices,
    check_metric,
    similarity_metric,
    top_indices,
    work_dtype,
)
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection
from vtc.kernels.common import unit


def dart_indices(
    pivot_score: Tensor, x: Tensor, k: int, n_pivots: int, allocation: str, text: Tensor | None = None
) -> Tensor:
    """``k`` kept indices of ``x [N, D]``: the top pivots by ``pivot_score``, then the least duplicated."""
    image_pivots = top_indices(pivot_score, min(n_pivots, k))
    if image_pivots.numel() == k:
        return image_pivots
    u = unit(x)
    anchors = u[image_pivots] if text is None else torch.cat([u[image_pivots], unit(text).to(u.dtype)])
    taken = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    taken[image_pivots] = True
    if allocation == "max":
        duplication, _ = best_match(u, anchors)  # highest similarity to any pivot, via the kernel
        picks = bottom_indices(duplication.masked_fill(taken, torch.inf), k - image_pivots.numel())
        return torch.cat([image_pivots, picks])
    sim = u @ anchors.T  # [N, P]: small, P is the number of pivots
    chosen = [image_pivots]
    base, extra = divmod(k - image_pivots.numel(), anchors.shape[0])
    for p in range(anchors.shape[0]):
        share = base + (p < extra)
        pick = bottom_indices(sim[:, p].masked_fill(taken, torch.inf), share)
        taken[pick] = True
        chosen.append(pick)
    return torch.cat(chosen)


@register("dart", paper="arXiv:2502.11494", optional_signals=("keys", "text"))
@dataclass(frozen=True)
class Dart:
    """Pivot tokens, then the tokens least duplicated (lowest cosine similarity) to the pivots."""

    pivots: int = 4
    allocation: str = "max"
    text_pivots: int = 0
    metric: str = "auto"

    def __post_init__(self) -> None:
        for name in ("pivots", "text_pivots"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (1 if name == "pivots" else 0):
                raise ValueError(f"{name}: expected an integer >= {1 if name == 'pivots' else 0}, got {value!r}")
        if self.allocation not in ("max", "per_pivot"):
            raise ValueError(f"allocation: expected 'max' or 'per_pivot', got {self.allocation!r}")
        check_metric(self.metric)

    def select(self, sample: Sample, budget: Budget) -> Selection:
        k = budget.resolve(sample.n)
        pivot_space = similarity_metric(sample.features, sample.keys, self.metric, "dart")
        pivot_score = pivot_space.to(work_dtype(pivot_space)).abs().sum(-1)
        text = None
        if self.text_pivots:
            if sample.text is None:
                raise ValueError("dart: text_pivots > 0 needs signal text (question embeddings)")
            if sample.text.shape[-1] != sample.features.shape[-1]:
                raise ValueError(
                    f"text: expected width {sample.features.shape[-1]} (the features'), got {sample.text.shape[-1]}"
                )
            text = sample.text[top_indices(sample.text.to(work_dtype(sample.text)).abs().sum(-1), self.text_pivots)]
        keep = dart_indices(pivot_score, sample.features, k, self.pivots, self.allocation, text)
        return Selection.keep(keep, sample.n)
