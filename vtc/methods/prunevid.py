"""``prunevid``: segment the video, merge static tokens over time, cluster what remains in space.

Huang et al., "PruneVid: Visual Token Pruning for Efficient Video Large Language Models" (ACL Findings
2025, arXiv:2412.16117), following the official PLLaVA code's merging before the LLM:

1. Segments: the frames' mean tokens are clustered by DPC-KNN (``int(T * segment_ratio)`` clusters,
   ``k = 7`` neighbours, ``segment_ratio = 0.25``); runs of a cluster shorter than its longest run are
   relabelled after their longer neighbour (the left one on ties), and a segment is a run of one label.
2. Static tokens: in a segment of ``W`` frames, a position is static when the mean pairwise cosine of its
   ``W`` tokens exceeds ``tau`` (0.8); its tokens merge into one (their mean).
3. Space: the static tokens of a segment, and each frame's dynamic tokens, are clustered by DPC-KNN
   into ``int(n * cluster_ratio)`` clusters (``cluster_ratio = 0.5``) when there are more than 14 of
   them; each token joins its nearest centre and a cluster is the mean of its source tokens.

DPC-KNN: density-peak scores (``vtc.core.ops.density_peak_scores``, k = 7) pick the centres, every other
token joins the nearest centre (the higher-scoring one on ties).

Budget. ``budget="adaptive"`` is the official rule (its count follows the content). A ratio or a count
asks for ``K`` slots: ``K`` is shared over a video's sets (each segment's static set, each frame's dynamic
set) in proportion to their source tokens (largest remainders, at most a set's size, the rest moved to
sets with room), and each set is clustered to its share (kept whole at or above it). When the temporal
merge alone leaves fewer than ``K`` tokens, all of them are kept (so the count may fall short).

Deviations, on purpose: density ties count the lower index as denser (the official code adds random
noise); slots stay in original order (the official output lists each segment's static clusters, then
each frame's dynamic ones). The question-guided selection inside the LLM (the attention of the question
to the visual tokens at layer 10, keeping ``alpha = 0.4``) is not part of this method: chain an
LLM-stage method such as ``fastv``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vtc.core.budget import Budget
from vtc.core.ops import density_peak_clusters, largest_remainder, work_dtype
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection

NEIGHBOURS = 7
MIN_TO_CLUSTER = 14  # sets of at most this many tokens are not clustered (official rule)


def dpc_knn(x: Tensor, clusters: int, k: int = NEIGHBOURS) -> Tensor:
    """Cluster id of each row of ``x [M, D]``: ids rank the centres by density-peak score."""
    return density_peak_clusters(x, max(1, min(clusters, x.shape[0])), k)[1]


def runs(labels: list[int]) -> list[tuple[int, int, int]]:
    """``(label, start, length)`` of each maximal run."""
    out, start = [], 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            out.append((labels[start], start, i - start))
            start = i
    return out


def refine_segments(labels: list[int]) -> list[int]:
    """PruneVid's label refinement: only each label's longest run(s) survive (none if they have length 1);
    the others take, left to right, the label of their longer neighbouring run (left on ties, else 0)."""
    labels = list(labels)
    for value in sorted(set(labels)):
        mine = [r for r in runs(labels) if r[0] == value]
        longest = max(length for _, _, length in mine)
        for _, start, length in mine:
            if longest == 1 or length < longest:
                labels[start : start + length] = [-1] * length
    while -1 in labels:
        current = runs(labels)
        i = next(j for j, r in enumerate(current) if r[0] == -1)
        left = current[i - 1] if i > 0 else None
        right = current[i + 1] if i + 1 < len(current) else None
        if left is None and right is None:
            fill = 0
        elif right is None or (left is not None and left[2] >= right[2]):
            fill = left[0]
        else:
            fill = right[0]
        _, start, length = current[i]
        labels[start : start + length] = [fill] * length
    return labels


def segment_sizes(frames: Tensor, segment_ratio: float) -> list[int]:
    """Frames per segment (PruneVid's temporal segmentation of ``frames [T, N, D]``)."""
    t = frames.shape[0]
    if t == 1:
        return [1]
    labels = dpc_knn(frames.mean(dim=1), int(t * segment_ratio)).tolist()
    return [length for _, _, length in runs(refine_segments(labels))]


def static_positions(segment: Tensor, tau: float) -> Tensor:
    """``[N]`` bool: positions whose ``W`` tokens' mean pairwise cosine exceeds ``tau`` (none for ``W = 1``)."""
    w = segment.shape[0]
    if w < 2:
        return torch.zeros(segment.shape[1], dtype=torch.bool, device=segment.device)
    u = torch.nn.functional.normalize(segment.to(work_dtype(segment)), dim=-1)  # [W, N, D]
    total = torch.einsum("wnd,tnd->n", u, u)
    return (total - w) / (w * (w - 1)) > tau


@dataclass
class TokenSet:
    """Units to cluster: their vectors ``[M, D]`` and the flat source indices of each unit ``[M, W]`` (a static
    unit stands for its position in the segment's ``W`` frames, a dynamic one for one token)."""

    vectors: Tensor
    sources: Tensor

    @property
    def units(self) -> int:
        return self.sources.shape[0]


def token_sets(frames: Tensor, segments: list[int], tau: float) -> list[TokenSet]:
    """Each segment's static set (temporal means), then each of its frames' dynamic set."""
    _, n, _ = frames.shape
    x = frames.to(work_dtype(frames))
    sets, start = [], 0
    for w in segments:
        segment = x[start : start + w]
        static = static_positions(segment, tau)
        positions, moving = static.nonzero()[:, 0], (~static).nonzero()[:, 0]
        frame_ids = torch.arange(start, start + w, device=frames.device)
        sets.append(TokenSet(segment[:, static].mean(0), positions[:, None] + frame_ids[None, :] * n))
        for f in range(start, start + w):
            sets.append(TokenSet(x[f, ~static], (f * n + moving)[:, None]))
        start += w
    return sets


def shares(sets: list[TokenSet], k: int) -> list[int]:
    """``k`` slots over the sets in proportion to their source tokens (``largest_remainder``, at most a set's
    units)."""
    return largest_remainder([float(s.sources.numel()) for s in sets], [s.units for s in sets], k)


def cluster_labels(token_set: TokenSet, clusters: int | None, cluster_ratio: float) -> Tensor:
    """Slot of each unit of one set (``-1``: dropped): the official rule (``clusters`` None) or ``clusters``
    slots; units stay alone when the set is small or the count covers it."""
    m = token_set.units
    if clusters is None:
        clusters = m if m <= MIN_TO_CLUSTER else int(m * cluster_ratio)
    if clusters >= m:
        return torch.arange(m, device=token_set.sources.device)
    if clusters == 0:
        return torch.full((m,), -1, dtype=torch.long, device=token_set.sources.device)
    return dpc_knn(token_set.vectors, clusters)


def prunevid_rep(frames: Tensor, k: int | None, tau: float, segment_ratio: float, cluster_ratio: float) -> Tensor:
    """Representatives of the ``T N`` tokens (``-1``: dropped): each slot is its sources' lowest index."""
    t, n, _ = frames.shape
    sets = token_sets(frames, segment_sizes(frames, segment_ratio), tau)
    counts = [None] * len(sets) if k is None else shares(sets, k)
    rep = torch.full((t * n,), -1, dtype=torch.long, device=frames.device)
    for token_set, count in zip(sets, counts, strict=True):
        label = cluster_labels(token_set, count, cluster_ratio)
        if not token_set.units:
            continue
        slots = int(label.max()) + 1
        kept = label >= 0
        lowest = torch.full((max(slots, 1),), t * n, dtype=torch.long, device=frames.device).scatter_reduce(
            0, label[kept], token_set.sources[kept].min(dim=1).values, reduce="amin")
        sources = token_set.sources[kept]
        rep[sources.flatten()] = lowest[label[kept]][:, None].expand_as(sources).flatten()
    return rep


@register("prunevid", paper="arXiv:2412.16117", video=True, adaptive=True, static_count=False)
@dataclass(frozen=True)
class PruneVid:
    """Temporal segments; static tokens merged over time; static and dynamic sets clustered in space."""

    tau: float = 0.8
    segment_ratio: float = 0.25
    cluster_ratio: float = 0.5

    def __post_init__(self) -> None:
        for name in ("tau", "segment_ratio", "cluster_ratio"):
            value = getattr(self, name)
            low = -1 if name == "tau" else 0
            if not isinstance(value, (int, float)) or not low <= value <= 1:
                raise ValueError(f"{name}: expected a number in [{low}, 1], got {value!r}")

    def select(self, sample: Sample, budget: Budget) -> Selection:
        t, h, w = sample.grid
        k = None if budget.kind == "adaptive" else budget.resolve(sample.n)
        frames = sample.features.reshape(t, h * w, -1)
        return Selection(prunevid_rep(frames, k, self.tau, self.segment_ratio, self.cluster_ratio))
