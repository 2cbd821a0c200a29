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
from vtc.core.ops import as_layers, select_layers, top_indices, top_indices_batch
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection
from vtc.core.types import VisualTokens


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


def anchors_and_buffers(anchors: Tensor, grid: tuple[int, int, int], n: int, k: int) -> tuple[Tensor, Tensor]:
    """The anchors, then their 4-neighbours, de-duplicated and cut to ``k``; and the ``[n]`` taken mask."""
    taken = torch.zeros(n, dtype=torch.bool, device=anchors.device)
    kept = []
    for i in torch.cat([anchors, four_neighbours(anchors, grid)]).tolist():
        if not taken[i] and len(kept) < k:
            taken[i] = True
            kept.append(i)
    return torch.tensor(kept, dtype=torch.long, device=anchors.device), taken


def anchor_count(k: int, alpha: float) -> int:
    return max(1, int(k * alpha / 5 + 0.5))


def hiprune_indices(middle: Tensor, deep: Tensor, grid: tuple[int, int, int], k: int, alpha: float) -> Tensor:
    """``k`` kept indices: anchors, then their buffers, then registers (in that order)."""
    anchors = top_indices(middle, anchor_count(k, alpha))[:k]
    kept, taken = anchors_and_buffers(anchors, grid, middle.shape[0], k)
    registers = top_indices(deep.masked_fill(taken, -torch.inf), k - kept.numel())
    return torch.cat([kept, registers])


@register(
    "hiprune",
    paper="arXiv:2508.00553",
    signals=("cls_attn",),
    score_based=True,
    video=True,
    encoder_layers="layers",
    attention="attention",
    batched=True,
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

    def select_batch(self, tokens: VisualTokens, budget: Budget) -> list[Selection]:
        """One sort for the anchors and one for the registers of the whole batch."""
        middle, deep = select_layers(tokens.cls_attn.transpose(0, 1), self.layers, "hiprune")  # [B, N] each
        lengths = tokens.lengths.tolist()
        ks = [budget.resolve(n, mass=deep[b, :n]) for b, n in enumerate(lengths)]
        anchors = top_indices_batch(middle, tokens.mask, [min(k, anchor_count(k, self.alpha)) for k in ks])
        grids = [tuple(int(v) for v in g) for g in tokens.grid.tolist()]
        kept = [anchors_and_buffers(a, g, deep.shape[1], k) for a, g, k in zip(anchors, grids, ks, strict=True)]
        taken = torch.stack([t for _, t in kept])
        registers = top_indices_batch(deep.masked_fill(taken, -torch.inf), tokens.mask,
                                      [k - kk.numel() for k, (kk, _) in zip(ks, kept, strict=True)])
        return [Selection.keep(torch.cat([kk, r]), n) for (kk, _), r, n in zip(kept, registers, lengths, strict=True)]
