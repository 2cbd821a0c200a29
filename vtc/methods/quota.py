"""``quota``: per-frame token budgets from each frame's relevance to the question, then each frame pooled.

Luo et al., "QuoTA: Query-oriented Token Assignment via CoT Query Decouple for Long Video Comprehension"
(arXiv:2503.08689, 2025). The official pipeline scores each frame with a separate VLM (Qwen2-VL-2B's
probability of answering "yes" to whether the frame holds the objects the question names, or enough
to answer it), turns the scores ``s_t`` into weights ``w_t = s_t^2 / sum s^2``, gives frame ``t``
``int(target * w_t)`` tokens (none: the frame is dropped), fits them to an ``h x w`` grid and
resizes the frame to it bilinearly (``F.interpolate``, ``align_corners=False``).

vtc's plug-in version, on the visual tokens and the question alone:

- Relevance: ``s_t = (1 + cos(mean token of frame t, mean question embedding)) / 2`` from the ``text``
  signal (question embeddings in the features' space), a score in ``[0, 1]`` standing in for the
  scorer's probability; without question text every frame scores the same. The official weights
  ``s^2 / sum s^2`` follow.
- Budgets: exactly ``K`` tokens, split over the frames by those weights (largest remainders, at most a
  frame's tokens), instead of the official truncation and grid fitting (which keep up to a frame's
  width fewer, and may upsample a frame past its own size).
- Reduction: each frame's tokens pooled into its count of cells as ``pool`` tiles a frame
  (``mode="bilinear"``, the official resize: samples at the cell centres, equal to ``F.interpolate``
  on regular grids; ``mode="avg"``: cell means, the official adaptive-pooling variant).

The frame scorer and the CoT query decoupling (an LLM call that lists the question's objects) are not
part of a plug-in compressor; pass relevance through the question embeddings instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vtc.core.budget import Budget
from vtc.core.ops import largest_remainder, work_dtype
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection
from vtc.methods.pool import bilinear_cells, cell_of, cell_representatives


def frame_scores(frames: Tensor, text: Tensor | None) -> Tensor:
    """``[T]``: ``(1 + cos(frame mean, question mean)) / 2``, or ones without question text."""
    if text is None or text.shape[0] == 0:
        return torch.ones(frames.shape[0], dtype=torch.float64, device=frames.device)
    means = frames.to(work_dtype(frames)).mean(dim=1)
    question = text.to(means.dtype).mean(dim=0, keepdim=True)
    return ((1 + torch.nn.functional.cosine_similarity(means, question, dim=-1)) / 2).double()


def frame_weights(scores: Tensor) -> Tensor:
    """The official weights ``s^2 / sum s^2`` (float64)."""
    squared = scores.double() ** 2
    return squared / squared.sum().clamp_min(1e-300)


def official_counts(weights: Tensor, target: int) -> list[tuple[int, int]]:
    """The official ``(h, w)`` grid of each frame: ``cur = int(target * w_t)``, ``h = w = floor(sqrt(cur))``,
    one more row if it fits (``(0, 0)``: the frame is dropped)."""
    out = []
    for w in weights.tolist():
        cur = int(target * w)
        if cur <= 0:
            out.append((0, 0))
            continue
        side = int(cur**0.5)
        rows = side + 1 if side * side < cur and (side + 1) * side <= cur else side
        out.append((rows, side))
    return out


@register("quota", paper="arXiv:2503.08689", optional_signals=("text",), video=True, mean_slots=False)
@dataclass(frozen=True)
class QuoTA:
    """Question-relevance budgets per frame, each frame pooled to its budget."""

    mode: str = "bilinear"

    def __post_init__(self) -> None:
        if self.mode not in ("bilinear", "avg"):
            raise ValueError(f"mode: expected 'bilinear' or 'avg', got {self.mode!r}")

    def select(self, sample: Sample, budget: Budget) -> Selection:
        k = budget.resolve(sample.n)
        t, h, w = sample.grid
        frames = sample.features.reshape(t, h * w, -1)
        if sample.text is not None and sample.text.shape[-1] != frames.shape[-1]:
            raise ValueError(f"text: expected width {frames.shape[-1]} (the features'), got {sample.text.shape[-1]}")
        weights = frame_weights(frame_scores(frames, sample.text))
        counts = largest_remainder(weights.tolist(), [h * w] * t, k)
        rep = torch.full((sample.n,), -1, dtype=torch.long, device=sample.features.device)
        pieces = []
        for f, count in enumerate(counts):
            if not count:
                continue
            cells = cell_of((1, h, w), count)
            rep[f * h * w : (f + 1) * h * w] = cell_representatives(cells, count).to(rep.device) + f * h * w
            if self.mode == "bilinear" and count == h * w:  # a frame kept whole stays as it is
                pieces.append(frames[f].to(work_dtype(frames)))
            elif self.mode == "bilinear":
                pieces.append(bilinear_cells(frames[f], (1, h, w), count))
        features = torch.cat(pieces).to(sample.features.dtype) if pieces else None  # avg: the cells' means
        return Selection(rep, features=features, info={"frames_kept": sum(1 for c in counts if c)})
