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
    pad_rows,
    similarity_metric,
    top_indices,
    top_indices_batch,
    work_dtype,
)
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection, split_samples
from vtc.core.types import VisualTokens
from vtc.kernels.common import unit
from vtc.kernels.similarity import similarity_topk


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


def dart_indices_batch(
    pivot_score: Tensor, x: Tensor, mask: Tensor, ks: list[int], n_pivots: int, allocation: str,
    texts: list[Tensor | None],
) -> list[Tensor]:
    """``dart_indices`` for a padded batch ``x [B, N, D]``: one sort for the pivots, then one
    ``similarity_topk`` call (``max``) or one ``[B, N, P]`` product (``per_pivot``) and one sort per pivot."""
    pivots = top_indices_batch(pivot_score, mask, [min(n_pivots, k) for k in ks])
    rest = [k - p.numel() for k, p in zip(ks, pivots, strict=True)]
    u = unit(x)
    anchors = [u[b, p] if t is None else torch.cat([u[b, p], unit(t).to(u.dtype)])
               for b, (p, t) in enumerate(zip(pivots, texts, strict=True))]
    taken = torch.zeros(mask.shape, dtype=torch.bool, device=x.device)
    for b, p in enumerate(pivots):
        taken[b, p] = True
    padded, anchor_mask = pad_rows(anchors)
    if allocation == "max":  # the padded rows go to the kernel as they are: no copy of the [B, N, D] tokens
        values, _ = similarity_topk(u, padded, 1, mask, anchor_mask)
        duplication = values[..., 0].masked_fill(~mask | taken, torch.inf)
        picks = top_indices_batch(duplication, mask, rest, largest=False)
        return [torch.cat([p, q]) for p, q in zip(pivots, picks, strict=True)]
    sim = u @ padded.transpose(1, 2)  # [B, N, P]: small, P is the number of pivots
    chosen = [[p] for p in pivots]
    splits = [divmod(r, a.shape[0]) for r, a in zip(rest, anchors, strict=True)]
    for p in range(padded.shape[1]):
        shares = [base + (p < extra) if anchor_mask[b, p] else 0 for b, (base, extra) in enumerate(splits)]
        picks = top_indices_batch(sim[:, :, p].masked_fill(taken, torch.inf), mask, shares, largest=False)
        for b, pick in enumerate(picks):
            taken[b, pick] = True
            chosen[b].append(pick)
    return [torch.cat(c) for c in chosen]


@register("dart", paper="arXiv:2502.11494", optional_signals=("keys", "text"), batched=True)
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

    def text_pivots_of(self, sample: Sample) -> Tensor | None:
        """The question tokens that act as extra pivots (largest L1 norm), or None."""
        if not self.text_pivots:
            return None
        if sample.text is None:
            raise ValueError("dart: text_pivots > 0 needs signal text (question embeddings)")
        if sample.text.shape[-1] != sample.features.shape[-1]:
            raise ValueError(
                f"text: expected width {sample.features.shape[-1]} (the features'), got {sample.text.shape[-1]}"
            )
        return sample.text[top_indices(sample.text.to(work_dtype(sample.text)).abs().sum(-1), self.text_pivots)]

    def pivot_scores(self, features: Tensor, keys: Tensor | None) -> Tensor:
        """L1 norm of each token's keys (features without keys): ``[..., N]``."""
        pivot_space = similarity_metric(features, keys, self.metric, "dart")
        return pivot_space.to(work_dtype(pivot_space)).abs().sum(-1)

    def select(self, sample: Sample, budget: Budget) -> Selection:
        k = budget.resolve(sample.n)
        pivot_score = self.pivot_scores(sample.features, sample.keys)
        keep = dart_indices(pivot_score, sample.features, k, self.pivots, self.allocation, self.text_pivots_of(sample))
        return Selection.keep(keep, sample.n)

    def select_batch(self, tokens: VisualTokens, budget: Budget) -> list[Selection]:
        lengths = tokens.lengths.tolist()
        texts = [self.text_pivots_of(s) for s in split_samples(tokens)]
        keeps = dart_indices_batch(self.pivot_scores(tokens.features, tokens.keys), tokens.features, tokens.mask,
                                   [budget.resolve(n) for n in lengths], self.pivots, self.allocation, texts)
        return [Selection.keep(keep, n) for keep, n in zip(keeps, lengths, strict=True)]
