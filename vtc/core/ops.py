"""Small pure tensor helpers shared by the methods. Ties always break towards the lower index."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vtc.kernels.common import work_dtype
from vtc.kernels.similarity import similarity_topk


def top_indices(scores: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` largest scores, best first; equal scores rank the lower index first."""
    return torch.sort(scores, descending=True, stable=True).indices[:k]


def bottom_indices(scores: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` smallest scores, smallest first; ties rank the lower index first."""
    return torch.sort(scores, descending=False, stable=True).indices[:k]


def best_match(queries: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """For each query row ``[M, D]``, its highest cosine similarity to a target row ``[T, D]`` and that
    target's index (lower index on ties), through the ``similarity_topk`` kernel."""
    values, indices = similarity_topk(queries[None], targets[None], 1)
    return values[0, :, 0], indices[0, :, 0]


def split_even(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` near-equal integers spread evenly (not front-loaded)."""
    return [(i + 1) * total // parts - i * total // parts for i in range(parts)]


def frame_lattice(h: int, w: int, k: int) -> Tensor:
    """``k`` spatially even positions (flat indices, ascending) in an ``h x w`` frame.

    Picks a lattice of ``rows x cols >= k`` cells with the frame's aspect ratio, takes each cell's
    centre token, then keeps ``k`` of the cells at an even stride. Exact for ``k = rows * cols``
    (e.g. 144 of 24x24 is every second row and column).
    """
    if k >= h * w:
        return torch.arange(h * w)
    rows = min(h, max(1, round(math.sqrt(k * h / w))))
    cols = min(w, math.ceil(k / rows))
    while rows * cols < k:
        rows += 1
    r = ((torch.arange(rows) + 0.5) * h / rows).floor().long()
    c = ((torch.arange(cols) + 0.5) * w / cols).floor().long()
    cells = (r[:, None] * w + c[None, :]).flatten()
    pick = ((torch.arange(k) + 0.5) * cells.numel() / k).floor().long()
    return cells[pick]


def grid_uniform(grid: tuple[int, int, int], k: int) -> Tensor:
    """``k`` token indices spread evenly over frames, then over each frame's rows and columns."""
    t, h, w = grid
    out = [torch.zeros(0, dtype=torch.long)]
    for frame, k_frame in enumerate(split_even(k, t)):
        if k_frame:
            out.append(frame * h * w + frame_lattice(h, w, k_frame))
    return torch.cat(out)


def select_layers(cls_attn: Tensor | None, layers: tuple[int, ...], method: str) -> Tensor:
    """The attention rows ``[len(layers), N]`` a method asked for, in the work dtype.

    ``cls_attn`` rows are expected in the order of ``layers`` (the adapter extracts exactly those).
    """
    if cls_attn is None:
        raise ValueError(f"{method}: needs signal cls_attn")
    if cls_attn.shape[0] != len(layers):
        raise ValueError(
            f"cls_attn: expected {len(layers)} row(s), one per layer in layers={layers}, got {cls_attn.shape[0]}"
        )
    return cls_attn.to(work_dtype(cls_attn))


def as_layers(layers: object, name: str = "layers") -> tuple[int, ...]:
    """Validate a ``layers`` config field (an int or a sequence of ints) and return it as a tuple."""
    if isinstance(layers, int) and not isinstance(layers, bool):
        layers = (layers,)
    if (
        isinstance(layers, (list, tuple))
        and layers
        and all(isinstance(i, int) and not isinstance(i, bool) for i in layers)
    ):
        return tuple(layers)
    raise ValueError(f"{name}: expected a layer index or a non-empty tuple of them, got {layers!r}")


METRICS = ("auto", "keys", "features")


def similarity_metric(sample_features: Tensor, keys: Tensor | None, metric: str, method: str) -> Tensor:
    """The vectors a merger compares: ``keys`` (or features when ``metric="features"``).

    ``metric="auto"`` uses keys when the sample has them and falls back to features.
    """
    if metric == "features" or (metric == "auto" and keys is None):
        return sample_features
    if keys is None:
        raise ValueError(f"{method}: metric='keys' needs signal keys; pass metric='features' to use features")
    return keys


def check_metric(metric: object) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")
