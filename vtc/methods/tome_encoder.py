"""``tome_encoder``: Token Merging inside a ViT, block by block, with proportional attention.

Bolya et al., "Token Merging: Your ViT But Faster" (ICLR 2023, arXiv:2210.09461). After a block, the
tokens are split alternately into sets A (even positions) and B (odd positions); every A token is
matched to its most similar B token (cosine of the block's keys, averaged over heads), and the ``r``
best-matched A tokens are merged into their matches. Each token carries its size (how many patches it
holds); merges average features weighted by size, and the next blocks add ``log(size)`` to their
attention logits (proportional attention), so a merged token draws the attention its members would.
Leading ``protected`` tokens ([CLS], registers) never merge. ``r`` is one number for every block or a
per-block schedule; a round merges at most half of the unprotected tokens, as in the paper.

Order: unlike the paper's ``cat(unmerged A, B)``, the survivors stay in their original order, so a
merged group is represented by its B token at that token's place. Which patches each output token
holds (``sources``) is tracked, so model adapters can map merged tokens back to placeholder positions.

Placement (``placement=``). ``"block"`` (the default) is the paper's: inside every block, after the
attention branch has been added to the residual stream and before the MLP, so each block's MLP already
runs on the reduced tokens and a tower of ``L`` blocks ends with ``N - L·r`` tokens (a ViT-B/16 at
``r=8``: 197 - 12·8 = 101). ``"between"`` merges at the input of the next block instead, using the
previous block's keys: the block that decides a merge still runs its MLP on all tokens, and the last
block merges nothing (ViT-B/16 at ``r=8``: 109 tokens). Both use the keys of the block that decides.

The functions here are pure tensor code; :class:`MergeState` carries sizes and sources between blocks.
Model hooks (where the keys come from, how the bias reaches attention) live in ``vtc.models.vit``.
Ties break towards the lower index: a matched B token is the first of equal scores, and of A tokens
with equal scores the lower index merges first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from vtc.core.ops import bipartite_match
from vtc.core.registry import register


def bipartite_plan(metric: Tensor, r: int, protected: int = 0) -> tuple[Tensor, Tensor]:
    """One round of bipartite soft matching on ``metric [B, N, C]``, the same ``r`` for every sample.

    Returns ``(dst, keep)``: ``dst [B, N]`` is the output position each token goes to (survivors in
    their original order; a merged A token goes to its B match's position), and ``keep [B, N]`` marks
    the survivors. ``r`` is capped at half of the unprotected tokens; ``N - r`` tokens come out.
    """
    batch, n, _ = metric.shape
    r = max(0, min(int(r), (n - protected) // 2))
    positions = torch.arange(n, device=metric.device)
    keep = torch.ones(batch, n, dtype=torch.bool, device=metric.device)
    if r == 0:
        return positions.expand(batch, n).clone(), keep
    merged, into = bipartite_match(metric, r, protected)
    keep.scatter_(1, merged, False)
    target = positions.expand(batch, n).clone()
    target.scatter_(1, merged, into)
    rank = torch.cumsum(keep, dim=1) - 1  # output position of each survivor
    return rank.gather(1, target), keep


def merge_by_plan(x: Tensor, sizes: Tensor, dst: Tensor, n_out: int) -> tuple[Tensor, Tensor]:
    """Size-weighted average of ``x [B, N, C]`` into ``n_out`` slots by ``dst [B, N]``; new sizes too."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    index = dst[..., None].expand(-1, -1, x.shape[-1])
    sums = x.new_zeros((x.shape[0], n_out, x.shape[-1]), dtype=acc)
    sums.scatter_add_(1, index, x.to(acc) * sizes[..., None].to(acc))
    new_sizes = sizes.new_zeros((x.shape[0], n_out)).scatter_add_(1, dst, sizes)
    return (sums / new_sizes[..., None].to(acc)).to(x.dtype), new_sizes


def r_schedule(r: int | Sequence[int], depth: int) -> list[int]:
    """Tokens to merge after each of ``depth`` blocks: ``r`` for all, or a per-block list checked."""
    if isinstance(r, (bool, str)) or not isinstance(r, (int, Sequence)):
        raise ValueError(f"r: expected an integer >= 0 or one integer per block, got {r!r}")
    if isinstance(r, int) and r < 0:
        raise ValueError(f"r: expected integers >= 0, got {r}")
    values = [r] * depth if isinstance(r, int) else list(r)
    if len(values) != depth:
        raise ValueError(f"r: expected {depth} values (one per block), got {len(values)}")
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
        raise ValueError(f"r: expected integers >= 0, got {values}")
    return values


class MergeState:
    """Sizes and sources of the tokens of one tower call, updated block by block.

    ``sizes [B, N]``: patches each current token holds. ``sources [B, N0]``: the current position of
    each original token. ``own [B, N]``: the original index of each current token, i.e. of the token
    that survived every round; ascending, so it serves as the slot's representative (all samples
    merge alike, so one ``N`` for the batch).
    """

    def __init__(self, batch: int, n: int, protected: int, device: torch.device) -> None:
        self.protected = protected
        self.sizes = torch.ones(batch, n, dtype=torch.float32, device=device)
        self.sources = torch.arange(n, device=device).expand(batch, n).clone()
        self.own = self.sources.clone()  # the original index of each current token (its survivor)

    @property
    def length(self) -> int:
        return self.sizes.shape[1]

    def attention_bias(self, dtype: torch.dtype) -> Tensor:
        """Additive attention bias ``[B, 1, 1, N]``: ``log(size)`` of each key (proportional attention)."""
        return self.sizes.log().to(dtype)[:, None, None, :]

    def merge(self, x: Tensor, metric: Tensor, r: int) -> Tensor:
        """Merge ``r`` tokens of ``x [B, N, C]`` by ``metric [B, N, Ck]``; sizes and sources follow."""
        if x.shape[:2] != self.sizes.shape:
            raise RuntimeError(
                f"tome_encoder: tokens {tuple(x.shape[:2])} do not match the tracked sizes {tuple(self.sizes.shape)}"
            )
        dst, keep = bipartite_plan(metric, r, self.protected)
        n_out = int(keep[0].sum())
        if n_out == x.shape[1]:
            return x
        x, self.sizes = merge_by_plan(x, self.sizes, dst, n_out)
        self.sources = dst.gather(1, self.sources)
        self.own = self.own[keep].view(x.shape[0], n_out)
        return x


PLACEMENTS = ("block", "between")


@register("tome_encoder", paper="arXiv:2210.09461", stage="encoder", alias=("tome", "r"))
@dataclass(frozen=True)
class ToMeEncoder:
    """ToMe inside the vision tower: r merges per block, proportional attention, sizes tracked."""

    r: int | tuple[int, ...] = 8
    proportional: bool = True
    placement: str = "block"

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement: expected one of {PLACEMENTS}, got {self.placement!r}")
        if isinstance(self.r, bool) or not isinstance(self.r, int):  # r_schedule rejects non-sequences
            depth = len(self.r) if isinstance(self.r, Sequence) else 0
            object.__setattr__(self, "r", tuple(r_schedule(self.r, depth)))
        elif self.r < 0:
            raise ValueError(f"r: expected an integer >= 0 or one integer per block, got {self.r!r}")
        if not isinstance(self.proportional, bool):
            raise ValueError(f"proportional: expected True or False, got {self.proportional!r}")

    def schedule(self, depth: int) -> list[int]:
        """Merges after each of ``depth`` blocks."""
        return r_schedule(self.r, depth)
