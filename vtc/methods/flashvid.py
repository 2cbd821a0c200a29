"""``flashvid``: scene segments; attention-calibrated diverse tokens; the rest merged along time, then in space.

Fan et al., "FlashVID: Efficient Video Large Language Models via Training-free Tree-based Spatiotemporal
Token Merging" (ICLR 2026, arXiv:2602.08024), following the official code (Fanziyang-v/FlashVID):

1. Segments: cuts after frame ``t`` where the cosine of the mean tokens of frames ``t`` and ``t + 1``
   is below ``segment_threshold`` (0.9); with fewer than ``min_segments`` (8) segments, the lowest
   remaining similarities add cuts.
2. Budgets: each frame keeps ``R_t`` tokens (the budget split evenly over the frames),
   ``ceil(alpha R_t)`` of them selected (``alpha = 0.7``) and the rest as merged slots.
3. Selection (ADTS): in each frame, a max-min diversity pick on the calibrated distance
   ``D[i, j] = (1 - cos(x_i, x_j)) * a_j * (x_j . m)``, ``a`` the token's attention (``cls_attn``) and
   ``m`` the segment's mean token: first the token whose second-smallest column value is largest, then
   repeatedly the token whose smallest distance to the chosen set is largest.
4. Tree merging (TSTM), in segments of several frames: each unselected token's parent is its most
   similar unselected token of the previous frame; it joins the parent's tree when their cosine exceeds
   ``temporal_threshold`` (0.8), but only the most similar join when otherwise fewer roots than merged
   slots would remain (the official threshold fallback). Trees are represented by their root (earliest
   frame).
5. Spatial merging: each frame's roots are clustered by density peaks (DPC-KNN, ``k = min(7, C)``) into
   its share of the merged slots; a slot is the mean of its tokens.

Deviations, on purpose (each keeps one slot per source token and exactly ``K`` slots): the official
selection may pick a token twice and a single-frame segment clusters the selected tokens again (both
duplicate tokens); here chosen tokens are excluded and only unselected tokens are clustered. A slot is
the plain mean of all its source tokens (the official tree sum divides by the root's direct children
only, and clusters average their roots unweighted). The merged slots are shared over a segment's frames
by largest remainders instead of per-frame ceilings; density ties count the lower index as denser
instead of random noise; ``expansion`` (1.25 officially, to make up for FlashVID's pruning inside the
LLM at layer 20) is 1, since that pruning is not part of this method (chain ``fastv`` for it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vtc.core.budget import Budget
from vtc.core.ops import (
    as_layers,
    density_peak_clusters,
    largest_remainder,
    select_layers,
    split_even,
    work_dtype,
)
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection


def scene_segments(frames: Tensor, threshold: float, min_segments: int) -> list[int]:
    """Frames per segment: cuts below ``threshold`` plus the lowest similarities up to ``min_segments``."""
    t = frames.shape[0]
    if t == 1:
        return [1]
    means = torch.nn.functional.normalize(frames.to(work_dtype(frames)).mean(dim=1), dim=-1)
    sim = (means[:-1] * means[1:]).sum(-1)
    cuts = set((sim < threshold).nonzero()[:, 0].tolist())
    for i in torch.sort(sim, stable=True).indices.tolist():
        if len(cuts) + 1 >= min_segments:
            break
        cuts.add(i)
    bounds = [-1, *sorted(cuts), t - 1]
    return [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def calibrated_distance(x: Tensor, attention: Tensor, segment_mean: Tensor, gram: Tensor | None = None) -> Tensor:
    """``D[i, j] = (1 - cos(x_i, x_j)) * a_j * (x_j . m)`` (columns scaled; not symmetric). ``gram`` passes
    ``x x^T`` when the caller has it."""
    if gram is None:
        u = torch.nn.functional.normalize(x, dim=-1)
        cosine = u @ u.T
    else:
        norms = gram.diagonal().clamp_min(0).sqrt().clamp_min(1e-12)
        cosine = gram / norms[:, None] / norms[None, :]
    weight = attention * (x @ segment_mean)
    return (1 - cosine) * weight[None, :]


def adts_select(distance: Tensor, k: int) -> Tensor:
    """``k`` distinct columns by calibrated max-min (FlashVID's ADTS), ascending."""
    n = distance.shape[0]
    if k <= 0:
        return torch.zeros(0, dtype=torch.long, device=distance.device)
    if k >= n:
        return torch.arange(n, device=distance.device)
    second = torch.topk(distance, min(2, n), dim=0, largest=False).values[-1]  # each column's second-smallest
    chosen = [int(torch.argmax(second))]  # first maximum: the lower index on ties
    nearest = distance[chosen[0]].clone()
    taken = torch.zeros(n, dtype=torch.bool, device=distance.device)
    taken[chosen[0]] = True
    while len(chosen) < k:
        pick = int(torch.argmax(nearest.masked_fill(taken, -torch.inf)))
        chosen.append(pick)
        taken[pick] = True
        nearest = torch.minimum(nearest, distance[pick])
    return torch.tensor(sorted(chosen), dtype=torch.long, device=distance.device)


def tree_roots(x: Tensor, free: Tensor, threshold: float, min_roots: int) -> Tensor:
    """``[L, N]`` flat root (``frame * N + token``) of each token of a segment ``x [L, N, D]``: an unselected
    token joins its most similar unselected token of the previous frame when their cosine exceeds
    ``threshold``, but at most so many join that ``min_roots`` unselected roots remain (the most similar
    join first, as the official threshold fallback); selected tokens and the rest are their own roots."""
    seg_len, n, _ = x.shape
    u = torch.nn.functional.normalize(x, dim=-1)
    best = torch.full((seg_len, n), -torch.inf, dtype=x.dtype, device=x.device)
    parent = torch.zeros(seg_len, n, dtype=torch.long, device=x.device)
    for f in range(1, seg_len):
        sim = (u[f] @ u[f - 1].T).masked_fill(~free[f - 1][None, :], -torch.inf)
        best[f], parent[f] = sim.max(dim=1)  # first maximum: the lower index on ties
    join = free & (best > threshold)
    allowed = max(0, int(free.sum()) - min_roots)
    if int(join.sum()) > allowed:  # the official fallback: the allowed-th largest similarity becomes the bar
        ranked = torch.sort(best.masked_fill(~free, -1.0).flatten(), descending=True).values
        bar = max(float(ranked[allowed - 1]), -1 + 1e-6) if allowed else math.inf
        join = free & (best > bar)
    root = torch.arange(seg_len * n, device=x.device).reshape(seg_len, n)
    for f in range(1, seg_len):
        root[f] = torch.where(join[f], root[f - 1][parent[f]], root[f])
    return root


def frame_budgets(t: int, k: int, alpha: float) -> tuple[list[int], list[int]]:
    """Per frame: selected tokens ``ceil(alpha R_t)`` and merged slots ``R_t - that``, ``R_t`` by ``split_even``."""
    retain = split_even(k, t)
    selected = [min(r, math.ceil(alpha * r)) for r in retain]
    return selected, [r - s for r, s in zip(retain, selected, strict=True)]


def flashvid_rep(frames: Tensor, attention: Tensor, k: int, threshold: float, min_segments: int, alpha: float,
                 temporal_threshold: float) -> Tensor:
    """Representatives of the ``T N`` tokens of ``frames [T, N, D]`` (``-1``: dropped), ``k`` slots."""
    t, n, _ = frames.shape
    x = frames.to(work_dtype(frames))
    selected_counts, merged_counts = frame_budgets(t, k, alpha)
    rep = torch.full((t * n,), -1, dtype=torch.long, device=frames.device)
    start = 0
    for length in scene_segments(frames, threshold, min_segments):
        seg = x[start : start + length]
        mean = seg.mean(dim=(0, 1))
        free = torch.ones(length, n, dtype=torch.bool, device=frames.device)
        grams = [seg[f] @ seg[f].T for f in range(length)]
        for f in range(length):
            distance = calibrated_distance(seg[f], attention[start + f].to(x.dtype), mean, grams[f])
            chosen = adts_select(distance, min(selected_counts[start + f], n))
            free[f, chosen] = False
            flat = (start + f) * n + chosen
            rep[flat] = flat
        slots = sum(merged_counts[start : start + length])
        root = tree_roots(seg, free, temporal_threshold, slots) + start * n  # flat indices into the video
        roots = [(root[f] == torch.arange(n, device=frames.device) + (start + f) * n) & free[f]
                 for f in range(length)]
        shares = largest_remainder([float(r.sum()) for r in roots], [int(r.sum()) for r in roots], slots)
        slot_of_root = torch.full((t * n,), -1, dtype=torch.long, device=frames.device)
        for f in range(length):
            mine = roots[f].nonzero()[:, 0]  # this frame's roots (local indices)
            if not shares[f] or not mine.numel():
                continue
            if shares[f] >= mine.numel():
                slot_root = mine  # every root its own slot
            else:
                label = cluster_roots(seg[f, mine], shares[f], grams[f][mine][:, mine])
                lowest = torch.full((shares[f],), n, dtype=torch.long, device=frames.device).scatter_reduce(
                    0, label, mine, reduce="amin")  # a cluster is represented by its earliest root
                slot_root = lowest[label]
            head = (start + f) * n
            slot_of_root[head + mine] = head + slot_root
        members = free.flatten().nonzero()[:, 0]  # unselected tokens of the segment (segment-local flat)
        rep[start * n + members] = slot_of_root[root.flatten()[members]]
        start += length
    return rep


def cluster_roots(x: Tensor, clusters: int, gram: Tensor | None = None) -> Tensor:
    """DPC-KNN cluster of each row (``k = min(7, clusters)``): nearest of the top-scoring centres. ``gram``
    passes ``x x^T`` when the caller has it."""
    xf = x.to(work_dtype(x))
    if gram is None:
        gram = xf @ xf.T
    squared = gram.diagonal()
    dist = (squared[:, None] + squared[None, :] - 2 * gram).clamp_min(0).sqrt() / math.sqrt(x.shape[-1])
    return density_peak_clusters(xf, clusters, min(7, clusters), dist)[1]


@register("flashvid", paper="arXiv:2602.08024", signals=("cls_attn",), video=True, encoder_layers="layers")
@dataclass(frozen=True)
class FlashVID:
    """Scene segments, calibrated diverse selection, temporal trees and spatial clusters for the rest."""

    segment_threshold: float = 0.9
    min_segments: int = 8
    alpha: float = 0.7
    temporal_threshold: float = 0.8
    layers: tuple[int, ...] = (-2,)

    def __post_init__(self) -> None:
        for name in ("segment_threshold", "alpha", "temporal_threshold"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not -1 <= value <= 1:
                raise ValueError(f"{name}: expected a number in [-1, 1], got {value!r}")
        if not isinstance(self.min_segments, int) or isinstance(self.min_segments, bool) or self.min_segments < 1:
            raise ValueError(f"min_segments: expected an integer >= 1, got {self.min_segments!r}")
        object.__setattr__(self, "layers", as_layers(self.layers))

    def select(self, sample: Sample, budget: Budget) -> Selection:
        k = budget.resolve(sample.n)
        t, h, w = sample.grid
        if k == sample.n:
            return Selection.keep(torch.arange(sample.n, device=sample.features.device), sample.n)
        frames = sample.features.reshape(t, h * w, -1)
        attention = select_layers(sample.cls_attn, self.layers, "flashvid").mean(0).reshape(t, h * w)
        rep = flashvid_rep(frames, attention, k, self.segment_threshold, self.min_segments, self.alpha,
                           self.temporal_threshold)
        return Selection(rep)
