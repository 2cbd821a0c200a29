"""``hiprune``: anchors from a middle encoder layer, their spatial neighbours, and deep-layer registers.

Liu et al., "HiPrune: Training-Free Visual Token Pruning via Hierarchical Attention in Vision-Language
Models" (arXiv:2508.00553). Middle encoder layers attend to objects, deep layers to global context.
``cls_attn`` carries two rows, in the order of ``layers = (middle, deep)``:

1. Anchors: the ``max(1, round(K * alpha / 5))`` tokens with the highest middle-layer attention.
2. Buffers: each anchor's 4-neighbours (up, down, left, right) in the same frame, without wrapping
   across rows or frames; anchors and buffers are de-duplicated (and cut to ``K`` if need be).
3. Registers: the rest of the budget, by deep-layer attention among tokens not yet kept.

The paper scores a token by the attention it receives (mean over heads and queries) rather than the
[CLS] row; ``attention="received"`` (default) asks adapters for that signal, ``"cls"`` for the [CLS]
row. Defaults follow the paper for CLIP-L (LLaVA-1.5): middle layer index 8 (the 9th), deep layer -2,
``alpha=0.1``. Score-based: ``budget="coverage:p"`` sets ``K`` from the deep-layer mass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vtc.core.budget import Budget
from vtc.core.ops import as_layers, select_layers, top_indices
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection


def four_neighbours(index: Tensor, grid: tuple[int, int, int]) -> Tensor:
    """Flat indices of the in-frame up/down/left/right neighbours of each token in ``index``."""
    _, h, w = grid
    frame, rest = index // (h * w), index % (h * w)
    row, col = rest // w, rest % w
    out = []
    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        r, c = row + dr, col + dc
        ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        out.append((frame * h * w + r * w + c)[ok])
    return torch.cat(out)


def hiprune_indices(middle: Tensor, deep: Tensor, grid: tuple[int, int, int], k: int, alpha: float) -> Tensor:
    """``k`` kept indices: anchors, then their buffers, then registers (in that order)."""
    anchors = top_indices(middle, max(1, int(k * alpha / 5 + 0.5)))[:k]
    buffers = four_neighbours(anchors, grid)
    taken = torch.zeros(middle.shape[0], dtype=torch.bool, device=middle.device)
    kept = []
    for i in torch.cat([anchors, buffers]).tolist():
        if not taken[i] and len(kept) < k:
            taken[i] = True
            kept.append(i)
    kept_t = torch.tensor(kept, dtype=torch.long, device=middle.device)
    registers = top_indices(deep.masked_fill(taken, -torch.inf), k - len(kept))
    return torch.cat([kept_t, registers])


@register(
    "hiprune",
    paper="arXiv:2508.00553",
    signals=("cls_attn",),
    score_based=True,
    video=True,
    encoder_layers="layers",
    attention="attention",
)
@dataclass(frozen=True)
class HiPrune:
    """Middle-layer anchors + their 4-neighbours + deep-layer register tokens."""

    alpha: float = 0.1
    layers: tuple[int, ...] = (8, -2)
    attention: str = "received"

    def __post_init__(self) -> None:
        if not isinstance(self.alpha, (int, float)) or not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha: expected a number in [0, 1], got {self.alpha!r}")
        layers = as_layers(self.layers)
        if len(layers) != 2:
            raise ValueError(f"layers: expected (middle, deep), two layer indices, got {self.layers!r}")
        object.__setattr__(self, "layers", layers)
        if self.attention not in ("received", "cls"):
            raise ValueError(f"attention: expected 'received' or 'cls', got {self.attention!r}")

    def select(self, sample: Sample, budget: Budget) -> Selection:
        middle, deep = select_layers(sample.cls_attn, self.layers, "hiprune")
        k = budget.resolve(sample.n, mass=deep)
        return Selection.keep(hiprune_indices(middle, deep, sample.grid, k, self.alpha), sample.n)
