"""``pool``: average (or bilinear) pooling of each frame's token grid, the iso-token baseline.

LLaVA-OneVision pools video frames 2x2 with bilinear interpolation before the LLM (Li et al.,
"LLaVA-OneVision: Easy Visual Task Transfer", arXiv:2408.03326, 2024), and plain downsampling beats
many pruning methods at equal token count (Wen et al., arXiv:2502.11501). Each frame of ``h x w``
tokens becomes ``h' x w'`` cells with ``h' = round(h * sqrt(r))`` (same for ``w``), where ``r`` is the
budget ratio (``count / N`` for a count budget), rounded half up: ``ratio=0.25`` is exactly a 2x2
ceil-mode pool (``ceil(h / 2)`` cells), as in LLaVA-OneVision. The count is therefore the nearest grid
count, not always the budget.

Cells partition the frame: row ``y`` goes to cell ``floor(y * h' / h)`` (same for columns), so
``mode="avg"`` is an exact mean of each cell's tokens. ``mode="bilinear"`` resamples with
``F.interpolate(..., align_corners=False)`` instead (equal to ``avg`` when ``h`` is ``2 h'``); its
``assign`` still reports the cell partition. A cell's representative (``index``) is its top-left token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vtc.core.budget import Budget
from vtc.core.ops import work_dtype
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection


def pooled_size(size: int, ratio: float) -> int:
    """Cells along one axis of ``size`` tokens for an area ``ratio``."""
    return min(size, max(1, math.floor(size * math.sqrt(ratio) + 0.5)))


def cell_rep(grid: tuple[int, int, int], cells: tuple[int, int]) -> Tensor:
    """Representative (top-left token of its cell) for every token of a ``(t, h, w)`` grid."""
    t, h, w = grid
    ch, cw = cells
    first_row = (torch.arange(h) * ch // h * h + ch - 1) // ch  # ceil(cell * h / ch)
    first_col = (torch.arange(w) * cw // w * w + cw - 1) // cw
    frame_rep = first_row[:, None] * w + first_col[None, :]
    return (torch.arange(t)[:, None] * h * w + frame_rep.flatten()[None, :]).flatten()


def bilinear_pool(x: Tensor, grid: tuple[int, int, int], cells: tuple[int, int]) -> Tensor:
    """``x [t*h*w, D]`` resampled to ``[t*h'*w', D]`` with bilinear interpolation."""
    t, h, w = grid
    frames = x.to(work_dtype(x)).reshape(t, h, w, -1).permute(0, 3, 1, 2)
    pooled = F.interpolate(frames, size=cells, mode="bilinear", align_corners=False)
    return pooled.permute(0, 2, 3, 1).reshape(-1, x.shape[-1])


@register("pool", paper="arXiv:2408.03326", video=True)
@dataclass(frozen=True)
class Pool:
    """Grid average/bilinear pooling per frame (iso-token downsampling baseline)."""

    mode: str = "avg"

    def __post_init__(self) -> None:
        if self.mode not in ("avg", "bilinear"):
            raise ValueError(f"mode: expected 'avg' or 'bilinear', got {self.mode!r}")

    def select(self, sample: Sample, budget: Budget) -> Selection:
        t, h, w = sample.grid
        ratio = budget.value if budget.kind == "ratio" else budget.resolve(sample.n) / sample.n
        cells = (pooled_size(h, ratio), pooled_size(w, ratio))
        rep = cell_rep(sample.grid, cells).to(sample.features.device)
        features = bilinear_pool(sample.features, sample.grid, cells) if self.mode == "bilinear" else None
        return Selection(rep, features=features, info={"grid": (t, *cells)})
