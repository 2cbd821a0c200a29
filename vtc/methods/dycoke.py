"""``dycoke``: DyCoke's temporal token merging: drop the tokens that repeat an earlier frame.

Tao et al., "DyCoke: Dynamic Compression of Tokens for Fast Video Large Language Models" (CVPR 2025,
arXiv:2411.15024). The frames form windows of four. The first frame of a window is the reference and
stays whole; every other frame compares each token with the token at the same position of its
reference frame (cosine similarity): frames 1 and 2 of a window with frame 0, frame 3 with frame 2
(unpruned). A compared frame keeps its least similar tokens, the ones that changed; despite the
method's name, the official code drops the others rather than averaging them.

Budget. ``budget="adaptive"`` is the paper's rule: each compared frame keeps ``int((1 - prune) * N)``
of its ``N`` tokens (``prune``, DyCoke's K, 0.7 by default), references keep all. A ratio or a count
keeps exactly ``K`` tokens, like every other method at that budget: the references stay whole and the
rest of ``K`` is split evenly over the compared frames (``split_even``); when ``K`` is below the
references' tokens, the references share ``K`` at even positions of their frames and nothing else is kept.

Deviations from the official code, on purpose: it compares frame 2 of the last window only when a
window follows (``range(0, T - 4, 4)``), and drops the last frame of an odd number of frames; here every
window is treated alike, and an incomplete last window uses the roles of the frames it has (a lone last
frame is a reference). Ties go to the lower index. Kept tokens stay in their original order.

DyCoke's second part, pruning the visual KV cache during decoding by the attention of the newest
token, belongs to the KV-cache stage and is not part of this method.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vtc.core.budget import Budget
from vtc.core.ops import bottom_indices, frame_lattice, split_even, work_dtype
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection

WINDOW = 4


def reference_of(frame: int) -> int | None:
    """The frame a frame is compared with (None for a window's first frame, which stays whole)."""
    position = frame % WINDOW
    start = frame - position
    return None if position == 0 else start + (2 if position == 3 else 0)


def repeat_scores(frames: Tensor) -> Tensor:
    """``[T, N]``: each token's cosine similarity to the same position of its reference frame (``-inf`` on
    reference frames, which are never dropped for repeating)."""
    t = frames.shape[0]
    x = frames.to(work_dtype(frames))
    scores = torch.full(frames.shape[:2], -torch.inf, dtype=x.dtype, device=frames.device)
    for f in range(t):
        ref = reference_of(f)
        if ref is not None:
            scores[f] = torch.nn.functional.cosine_similarity(x[f], x[ref], dim=-1)
    return scores


def frame_counts(t: int, n: int, k: int | None, prune: float) -> list[int]:
    """Tokens kept per frame: the adaptive rule (``k`` None) or exactly ``k`` (module docstring)."""
    references = [f for f in range(t) if reference_of(f) is None]
    compared = [f for f in range(t) if reference_of(f) is not None]
    counts = [0] * t
    if k is None:
        for f in range(t):
            counts[f] = n if f in references else int((1 - prune) * n)
        return counts
    if k < len(references) * n:
        for f, share in zip(references, split_even(k, len(references)), strict=True):
            counts[f] = share
        return counts
    for f in references:
        counts[f] = n
    for f, share in zip(compared, split_even(k - len(references) * n, max(1, len(compared))), strict=False):
        counts[f] = share
    return counts


def dycoke_indices(frames: Tensor, grid: tuple[int, int, int], k: int | None, prune: float) -> Tensor:
    """Flat indices into ``frames [T, N, D]`` (a ``(t, h, w)`` grid) that DyCoke keeps, ascending."""
    t, h, w = grid
    scores = repeat_scores(frames)
    picks = []
    for f, count in enumerate(frame_counts(t, h * w, k, prune)):
        if reference_of(f) is None:
            local = frame_lattice(h, w, count)  # the whole frame, or even positions below it
        else:
            local = bottom_indices(scores[f], count).sort().values
        picks.append(f * h * w + local.to(frames.device))
    return torch.cat(picks)


@register("dycoke", paper="arXiv:2411.15024", video=True, adaptive=True)
@dataclass(frozen=True)
class DyCoke:
    """Windows of four frames: the first whole, the others keep the tokens that changed (TTM)."""

    prune: float = 0.7

    def __post_init__(self) -> None:
        if not isinstance(self.prune, (int, float)) or not 0 <= self.prune < 1:
            raise ValueError(f"prune: expected a number in [0, 1), got {self.prune!r}")

    def select(self, sample: Sample, budget: Budget) -> Selection:
        t, h, w = sample.grid
        k = None if budget.kind == "adaptive" else budget.resolve(sample.n)
        keep = dycoke_indices(sample.features.reshape(t, h * w, -1), sample.grid, k, self.prune)
        return Selection.keep(keep, sample.n)
