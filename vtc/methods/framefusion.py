"""``framefusion``: merge the tokens that repeat their position in the frame before, then drop the least attended.

Fu et al., "FrameFusion: Combining Similarity and Importance for Video Token Reduction on Large Visual
Language Models" (arXiv:2501.01986, ICCV 2025). The official code works inside the LLM: its first
merge round runs on the input embeddings, and vtc's projector-stage version is that round:

1. Each visual token is compared (cosine) with the token at the same spatial position in the previous
   frame; first-frame tokens never merge.
2. Tokens merge when their similarity is at least ``threshold`` (0.6, the official default; the paper
   lists per-model values), at most ``1 - cost`` of the visual tokens (``cost = 0.3``): beyond that, the
   most similar ones. A run of consecutive merged frames at one position joins the token just before the
   run (the earliest frame), and the slot is the plain mean of the original vectors.

Budget. ``budget="adaptive"`` is exactly that round. A ratio or a count keeps exactly ``K``: the ``N - K``
tokens most similar to their predecessor merge (those above the threshold come first in that order);
when even merging every later frame into the first leaves more than ``K`` slots, the slots with the
least encoder attention (``cls_attn``, summed over their tokens) are dropped. The official code instead
continues merging on LLM hidden states and prunes by the last prompt token's attention inside the LLM
(chain ``fastv`` for that). Ties go to the lower index (the official ``topk`` leaves them open).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vtc.core.budget import Budget
from vtc.core.ops import as_layers, select_layers, top_indices, work_dtype
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection


def previous_frame_similarity(frames: Tensor) -> Tensor:
    """``[T, P]``: cosine of each token with the same position one frame earlier (``-2`` in frame 0)."""
    x = frames.to(work_dtype(frames))
    sim = torch.full(frames.shape[:2], -2.0, dtype=x.dtype, device=frames.device)
    if frames.shape[0] > 1:
        a, b = x[:-1], x[1:]
        sim[1:] = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
    return sim


def merge_into_earlier(merged: Tensor, t: int, p: int) -> Tensor:
    """Representatives ``[T P]`` (frame-major) when the tokens flagged in ``merged [T, P]`` join the nearest
    earlier unmerged token at their position."""
    rep = torch.arange(t * p, device=merged.device).reshape(t, p)
    for f in range(1, t):
        rep[f] = torch.where(merged[f], rep[f - 1], rep[f])
    return rep.flatten()


def merge_count(sim: Tensor, threshold: float, cost: float) -> int:
    """The official round's merges: those at or above ``threshold``, at most ``int((1 - cost) N)``."""
    above = int((sim >= threshold).sum())
    cap = int((1 - cost) * sim.numel())
    return above if above < cap else cap


def framefusion_rep(frames: Tensor, attention: Tensor | None, k: int | None, threshold: float, cost: float) -> Tensor:
    """Representatives of the ``T P`` tokens of ``frames [T, P, D]`` (``-1``: dropped); ``k`` None is the
    official round, else exactly ``k`` slots."""
    t, p, _ = frames.shape
    sim = previous_frame_similarity(frames).flatten()
    movable = (t - 1) * p
    count = merge_count(sim, threshold, cost) if k is None else min(t * p - k, movable)
    order = torch.sort(-sim, stable=True).indices[:count]  # most similar first, lower index on ties
    merged = torch.zeros(t * p, dtype=torch.bool, device=frames.device)
    merged[order] = True
    rep = merge_into_earlier(merged.reshape(t, p), t, p)
    if k is None or t * p - count <= k:
        return rep
    slots = rep.unique()  # the p first-frame tokens: every later token has merged into one
    mass = torch.zeros(t * p, dtype=torch.float64, device=frames.device).index_add_(
        0, rep, attention.flatten().double())
    keep = slots[top_indices(mass[slots], k)]
    kept = torch.zeros(t * p, dtype=torch.bool, device=frames.device)
    kept[keep] = True
    return torch.where(kept[rep], rep, -1)


@register(
    "framefusion", paper="arXiv:2501.01986", signals=("cls_attn",), video=True, adaptive=True,
    encoder_layers="layers",
)
@dataclass(frozen=True)
class FrameFusion:
    """Merge tokens similar to the same position one frame earlier; drop the least attended if still over K."""

    threshold: float = 0.6
    cost: float = 0.3
    layers: tuple[int, ...] = (-2,)

    def __post_init__(self) -> None:
        if not isinstance(self.threshold, (int, float)) or not -1 <= self.threshold <= 1:
            raise ValueError(f"threshold: expected a cosine in [-1, 1], got {self.threshold!r}")
        if not isinstance(self.cost, (int, float)) or not 0 < self.cost <= 1:
            raise ValueError(f"cost: expected a number in (0, 1], got {self.cost!r}")
        object.__setattr__(self, "layers", as_layers(self.layers))

    def select(self, sample: Sample, budget: Budget) -> Selection:
        t, h, w = sample.grid
        frames = sample.features.reshape(t, h * w, -1)
        attention = select_layers(sample.cls_attn, self.layers, "framefusion").mean(0)
        k = None if budget.kind == "adaptive" else budget.resolve(sample.n)
        rep = framefusion_rep(frames, attention, k, self.threshold, self.cost)
        return Selection(rep)
