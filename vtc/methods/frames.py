"""``frames``: fewer frames at the same token count, the frame-sampling baseline for video.

Sampling fewer frames is how video VLMs fit a long video into their context, and at equal token count
it is a strong baseline for video-token compression (Wen et al., "Token Pruning in Multimodal Large
Language Models: Are We Solving the Right Problem?", arXiv:2502.11501, 2025, argue for such baselines).
At a budget of ``K`` tokens on a ``(t, h, w)`` grid it keeps ``g = min(t, ceil(K / (h w)))`` frames:
the frames split into ``g`` runs of consecutive frames (sizes by ``split_even``) and each run's middle
frame (the lower one of two) is kept. The ``K`` tokens are split evenly over the kept frames
(``split_even``), each frame's share at even positions of its lattice
(``frame_lattice``): whole frames when ``K`` is a multiple of ``h w``. Exactly ``K`` tokens, as every
method keeps at the same budget. An image is a one-frame video: the uniform lattice.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vtc.core.budget import Budget
from vtc.core.ops import frame_lattice, split_even
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection


def sampled_frames(t: int, frames: int) -> list[int]:
    """The middle frame of each of ``frames`` runs of consecutive frames (the lower middle of an even run)."""
    out, start = [], 0
    for size in split_even(t, frames):
        out.append(start + (size - 1) // 2)
        start += size
    return out


def frame_indices(grid: tuple[int, int, int], k: int) -> Tensor:
    """``k`` flat indices: whole (or evenly thinned) frames, evenly spaced in time."""
    t, h, w = grid
    per_frame = h * w
    count = min(t, -(-k // per_frame))
    picks = [f * per_frame + frame_lattice(h, w, share)
             for f, share in zip(sampled_frames(t, count), split_even(k, count), strict=True)]
    return torch.cat(picks)


@register("frames", paper="arXiv:2502.11501 (baseline)", video=True)
@dataclass(frozen=True)
class Frames:
    """Fewer frames, evenly spaced, at exactly the budget's token count (baseline)."""

    def select(self, sample: Sample, budget: Budget) -> Selection:
        keep = frame_indices(sample.grid, budget.resolve(sample.n)).to(sample.features.device)
        return Selection.keep(keep, sample.n)
