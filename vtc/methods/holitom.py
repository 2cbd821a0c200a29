"""``holitom``: HoliTom's merging before the LLM: optimal temporal segments, static tokens merged over each
segment then clustered, dynamic tokens kept by attention.

Shao et al., "HoliTom: Holistic Token Merging for Fast Video Large Language Models" (NeurIPS 2025,
arXiv:2505.21334), following the official LLaVA-OneVision code:

1. ``S[m, n]``: cosine of the token at position ``n`` in frame ``m`` with the same position in frame
   ``m + 1``. A position is static on frames ``s .. e`` when ``S > tau`` at every step (``tau = 0.8``);
   merging that segment saves ``(e - s)`` tokens per static position.
2. Segments: the partition of the frames that saves the most tokens, by dynamic programming (ties: the
   single frame, then the shorter window).
3. Static tokens of a segment: their mean over its frames, clustered by density peaks (DPC-KNN with
   ``k = min(7, clusters)`` neighbours; centres in position order, each token to its nearest centre,
   the lower position on ties); a slot is ``beta * centre + (1 - beta) * mean(its other tokens)``
   (``beta = 0.6``) at the centre's position in the segment's first frame.
4. Dynamic tokens: in each frame, those with the highest attention (``cls_attn``).

Budget. The official code keeps about ``r T N`` tokens (``round`` per static set, ``ceil`` per frame,
``r' = r T N / (T N - saved)``); vtc keeps exactly ``K``: it is shared over the sets (each segment's
static positions, each frame's dynamic positions) in proportion to their sizes by largest remainders.
If the temporal merge alone leaves fewer than ``K`` tokens, all are kept (so the count may fall short).
With the official counts (``official_counts``) the slots equal the official ones on fixtures generated
from its code (tests/test_parity_video.py).

Deviations, on purpose: density ties count the lower index as denser (the official code adds random
noise); slots stay in original order (the official output lists each segment's static clusters, then
its frames' dynamic tokens). HoliTom's merge inside the LLM (at layer 18, the least attended visual
tokens averaged into their most similar kept ones) is not part of this method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vtc.core.budget import Budget
from vtc.core.ops import as_layers, density_peak_clusters, largest_remainder, select_layers, top_indices, work_dtype
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection

NEIGHBOURS = 7


def step_similarity(frames: Tensor) -> Tensor:
    """``[T - 1, N]``: cosine of each token with the same position one frame later."""
    u = torch.nn.functional.normalize(frames.to(work_dtype(frames)), dim=-1)
    return (u[:-1] * u[1:]).sum(-1)


def optimal_segments(similarity: Tensor, tau: float, max_window: int = 1024) -> list[tuple[int, int]]:
    """Inclusive ``(start, end)`` frame segments saving the most tokens (dynamic programming)."""
    t = similarity.shape[0] + 1
    above = similarity > tau
    best = [0] * t
    start = [0] * t
    for i in range(1, t):
        best[i], start[i] = best[i - 1], i  # frame i alone
        static = torch.ones(similarity.shape[1], dtype=torch.bool, device=similarity.device)
        for w in range(2, min(i + 1, max_window) + 1):
            s = i - w + 1
            static &= above[s]
            gain = (best[s - 1] if s else 0) + (w - 1) * int(static.sum())
            if gain > best[i]:
                best[i], start[i] = gain, s
    segments, i = [], t - 1
    while i >= 0:
        segments.append((start[i], i))
        i = start[i] - 1
    return segments[::-1]


@dataclass
class Segment:
    start: int
    end: int
    static: Tensor  # [N] bool

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def plan_segments(frames: Tensor, tau: float) -> list[Segment]:
    similarity = step_similarity(frames)
    if frames.shape[0] == 1:
        return [Segment(0, 0, torch.zeros(frames.shape[1], dtype=torch.bool, device=frames.device))]
    out = []
    for s, e in optimal_segments(similarity, tau):
        static = (similarity[s:e] > tau).all(0) if e > s else torch.zeros_like(similarity[0], dtype=torch.bool)
        out.append(Segment(s, e, static))
    return out


def official_counts(segments: list[Segment], n: int, ratio: float) -> list[int]:
    """The official per-set counts: ``round(Ns r')`` per static set, ``ceil(Nd r')`` per frame."""
    t = sum(seg.length for seg in segments)
    saved = sum((seg.length - 1) * int(seg.static.sum()) for seg in segments)
    adjusted = min(ratio * t * n / (t * n - saved), 1.0)
    counts = []
    for seg in segments:
        n_static = int(seg.static.sum())
        counts.append(round(n_static * adjusted))
        counts += [math.ceil((n - n_static) * adjusted)] * seg.length
    return counts


def exact_counts(segments: list[Segment], n: int, k: int) -> list[int]:
    """``k`` over the sets (each segment's static set, then each of its frames' dynamic set) by size."""
    sizes = []
    for seg in segments:
        n_static = int(seg.static.sum())
        sizes += [n_static] + [n - n_static] * seg.length
    return largest_remainder([float(s) for s in sizes], sizes, k)


def holitom_slots(frames: Tensor, attention: Tensor, segments: list[Segment], counts: list[int],
                  beta: float) -> tuple[Tensor, Tensor]:
    """``(rep [T N], features [K, D])`` with ``counts`` slots per set (in ``exact_counts`` order)."""
    t, n, _ = frames.shape
    x = frames.to(work_dtype(frames))
    rep = torch.full((t * n,), -1, dtype=torch.long, device=frames.device)
    slot: dict[int, Tensor] = {}
    counts = iter(counts)
    for seg in segments:
        positions = seg.static.nonzero()[:, 0]
        clusters = next(counts)
        if positions.numel() and clusters:
            means = x[seg.start : seg.end + 1, seg.static].mean(0)  # [Ns, D]
            count = min(clusters, positions.numel())  # centres in position order, as the official code
            centres, label = density_peak_clusters(means, count, min(NEIGHBOURS, count), by_position=True)
            for c, centre in enumerate(centres.tolist()):
                members = (label == c).nonzero()[:, 0]
                others = members[members != centre]
                feature = means[centre] if others.numel() == 0 else beta * means[centre] + (1 - beta) * means[
                    others].mean(0)
                anchor = seg.start * n + int(positions[centre])
                sources = (torch.arange(seg.start, seg.end + 1, device=frames.device)[:, None] * n
                           + positions[members][None, :]).flatten()
                rep[sources] = anchor
                slot[anchor] = feature
        moving = (~seg.static).nonzero()[:, 0]
        for f in range(seg.start, seg.end + 1):
            keep = moving[top_indices(attention[f, moving], min(next(counts), moving.numel()))] + f * n
            rep[keep] = keep
            for i in keep.tolist():
                slot[i] = x[f, i - f * n]
    order = sorted(slot)
    features = torch.stack([slot[i] for i in order]) if order else x.new_zeros(0, x.shape[-1])
    return rep, features.to(frames.dtype)


@register(
    "holitom", paper="arXiv:2505.21334", signals=("cls_attn",), video=True, static_count=False,
    mean_slots=False, encoder_layers="layers",
)
@dataclass(frozen=True)
class HoliTom:
    """Optimal temporal segments; static tokens averaged over them and clustered; dynamic tokens by attention."""

    tau: float = 0.8
    beta: float = 0.6
    layers: tuple[int, ...] = (-2,)

    def __post_init__(self) -> None:
        for name, low in (("tau", -1), ("beta", 0)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not low <= value <= 1:
                raise ValueError(f"{name}: expected a number in [{low}, 1], got {value!r}")
        object.__setattr__(self, "layers", as_layers(self.layers))

    def select(self, sample: Sample, budget: Budget) -> Selection:
        k = budget.resolve(sample.n)
        t, h, w = sample.grid
        if k == sample.n:  # the full budget keeps every token as it is
            return Selection.keep(torch.arange(sample.n, device=sample.features.device), sample.n)
        frames = sample.features.reshape(t, h * w, -1)
        attention = select_layers(sample.cls_attn, self.layers, "holitom").mean(0).reshape(t, h * w)
        segments = plan_segments(frames, self.tau)
        rep, features = holitom_slots(frames, attention, segments, exact_counts(segments, h * w, k), self.beta)
        return Selection(rep, features=features, info={"segments": len(segments)})
