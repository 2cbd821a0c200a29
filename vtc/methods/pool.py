"""``pool``: average (or bilinear) pooling over regions of the token grid, the iso-token baseline.

LLaVA-OneVision pools video frames 2x2 with bilinear interpolation before the LLM (Li et al.,
"LLaVA-OneVision: Easy Visual Task Transfer", arXiv:2408.03326, 2024), and plain downsampling beats
many pruning methods at equal token count (Wen et al., arXiv:2502.11501). To be a fair baseline it keeps
**exactly** the count every other method keeps at the same budget, ``K = max(1, round(ratio * N))`` (or
``min(count, N)``), on image and video grids alike, instead of the nearest regular grid.

Cells partition the ``(t, h, w)`` grid into ``K`` boxes:

- Time: the frames form ``g = min(t, K)`` groups of consecutive frames (sizes by :func:`split_even`), and
  the ``K`` cells are split evenly over the groups; a cell spans all frames of its group, so with fewer
  cells than frames, neighbouring frames pool together (temporal pooling).
- Space: a group's ``k`` cells form ``rows = round(sqrt(k * h / w))`` bands of rows (clamped to fit),
  band ``i`` split into ``c_i`` columns with ``sum(c_i) = k`` (``split_even``); token row ``y`` goes to
  band ``floor(y * rows / h)``, column ``x`` of band ``i`` to ``floor(x * c_i / w)``. When ``k`` is a
  regular ``h' x w'`` grid this is the usual pooling: ``ratio=0.25`` on an even grid is exactly 2x2 pooling.

``mode="avg"`` gives each cell the exact mean of its tokens. ``mode="bilinear"`` samples each frame group's
mean frame bilinearly (``align_corners=False``) at evenly spaced points, one per cell (band ``i`` of
``b`` at row ``(i + 0.5) h / b``, column ``j`` of ``c_i`` at ``(j + 0.5) w / c_i``), which equals
``F.interpolate`` to ``h' x w'`` on regular grids and the 2x2 mean when ``h = 2 h'``; its ``assign``
still reports the cell partition. A cell's representative (``index``) is its first token (first frame, top-left).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vtc.core.budget import Budget
from vtc.core.ops import split_even, work_dtype
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection


def band_layout(h: int, w: int, k: int) -> list[int]:
    """Columns per band of rows for ``k`` cells in an ``h x w`` frame (``len`` = number of bands)."""
    k = max(1, min(k, h * w))
    rows = min(h, k, max(1, math.floor(math.sqrt(k * h / w) + 0.5)))
    while rows * w < k:  # a band holds at most w cells
        rows += 1
    return split_even(k, rows)


def frame_cells(h: int, w: int, k: int) -> Tensor:
    """``[h * w]``: the cell (0 .. k-1, in row-major order of cells) of every token of one frame."""
    columns = band_layout(h, w, k)
    rows = len(columns)
    band = torch.arange(h) * rows // h  # [h]
    per_band = torch.tensor(columns)[band]  # columns of each token row's band
    first = torch.cumsum(torch.tensor([0, *columns]), 0)[band]  # first cell of each token row's band
    col = torch.arange(w)[None, :] * per_band[:, None] // w  # [h, w]
    return (first[:, None] + col).flatten()


def cell_of(grid: tuple[int, int, int], k: int, groups: int | None = None) -> Tensor:
    """``[t * h * w]``: the cell (0 .. k-1) of every token of a ``(t, h, w)`` grid with ``k`` cells, in
    ``groups`` groups of consecutive frames (default ``min(t, k)``: every frame its own group while
    there are enough cells)."""
    t, h, w = grid
    groups = min(t, k) if groups is None else groups
    frames = split_even(t, groups)
    cells = split_even(k, groups)
    out, offset = [], 0
    for n_frames, n_cells in zip(frames, cells, strict=True):
        out.append((frame_cells(h, w, n_cells) + offset).repeat(n_frames))
        offset += n_cells
    return torch.cat(out)


def cell_centres(grid: tuple[int, int, int], k: int) -> tuple[Tensor, Tensor]:
    """Per cell: its frame group and its sampling point ``(y, x)`` in edge coordinates (0 .. h, 0 .. w):
    band ``i`` of ``b`` at ``(i + 0.5) h / b``, column ``j`` of ``c`` at ``(j + 0.5) w / c``, the points
    ``F.interpolate`` samples for a regular ``b x c`` grid."""
    t, h, w = grid
    groups = min(t, k)
    group_of, centres = [], []
    for g, n_cells in enumerate(split_even(k, groups)):
        columns = band_layout(h, w, n_cells)
        rows = len(columns)
        for i, c in enumerate(columns):
            for j in range(c):
                group_of.append(g)
                centres.append(((i + 0.5) * h / rows, (j + 0.5) * w / c))
    return torch.tensor(group_of), torch.tensor(centres, dtype=torch.float64)


def bilinear_cells(x: Tensor, grid: tuple[int, int, int], k: int) -> Tensor:
    """``[k, D]``: each frame group's mean frame sampled bilinearly at the centre of each of its cells."""
    t, h, w = grid
    groups = min(t, k)
    frames = x.to(work_dtype(x)).reshape(t, h, w, -1)
    bounds = torch.cumsum(torch.tensor([0, *split_even(t, groups)]), 0)
    means = torch.stack([frames[bounds[g] : bounds[g + 1]].mean(0) for g in range(groups)])  # [g, h, w, D]
    group_of, centres = cell_centres(grid, k)
    # grid_sample's normalised coordinates (align_corners=False): -1 is the left edge of token 0
    norm = torch.stack([centres[:, 1] / w * 2 - 1, centres[:, 0] / h * 2 - 1], dim=-1).to(means.dtype)
    out = []
    for g in range(groups):
        where = (group_of == g).nonzero()[:, 0]
        points = norm[where].to(x.device)[None, None]  # [1, 1, n, 2]
        image = means[g].permute(2, 0, 1)[None]  # [1, D, h, w]
        sampled = F.grid_sample(image, points, mode="bilinear", padding_mode="border", align_corners=False)
        out.append(sampled[0, :, 0].T)  # [n, D]
    return torch.cat(out)


def cell_representatives(cells: Tensor, k: int) -> Tensor:
    """``[N]``: for every token, the first token of its cell."""
    first = torch.full((k,), cells.numel(), dtype=torch.long).scatter_reduce(
        0, cells, torch.arange(cells.numel()), reduce="amin"
    )
    return first[cells]


@register("pool", paper="arXiv:2408.03326", video=True)
@dataclass(frozen=True)
class Pool:
    """Average/bilinear pooling over exactly K grid regions per sample (the iso-token baseline)."""

    mode: str = "avg"

    def __post_init__(self) -> None:
        if self.mode not in ("avg", "bilinear"):
            raise ValueError(f"mode: expected 'avg' or 'bilinear', got {self.mode!r}")

    def select(self, sample: Sample, budget: Budget) -> Selection:
        k = budget.resolve(sample.n)
        cells = cell_of(sample.grid, k)
        rep = cell_representatives(cells, k).to(sample.features.device)
        features = bilinear_cells(sample.features, sample.grid, k) if self.mode == "bilinear" else None
        return Selection(rep, features=features, info={"cells": k})
