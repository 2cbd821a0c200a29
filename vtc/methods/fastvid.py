"""``fastvid``: segment the video by frame similarity, keep salient tokens, merge the rest around density peaks.

Shen et al., "FastVID: Dynamic Density Pruning for Fast Video Large Language Models" (arXiv:2503.11187,
2025), following its LLaVA-OneVision implementation:

1. Dynamic temporal segmentation: ``g_t`` is frame ``t``'s mean token, L2-normalised; a segment ends
   after frame ``i`` where ``cos(g_i, g_{i+1}) < tau`` or where it is among the ``c - 1`` lowest of those
   similarities (so at least ``c`` segments).
2. Budgets: frame ``t`` keeps ``R_t`` tokens (the budget ``K`` split evenly over the frames):
   ``S_t = R_t - int(R_t * d)`` salient tokens and ``C_t = int(R_t * d)`` context slots. A segment of
   ``L`` frames pools its context slots on its anchor frames: its last frame and every ``p``-th frame
   before it (``ceil(L / p)`` frames), split evenly.
3. Salient tokens: each frame's ``S_t`` tokens with the highest attention (``cls_attn``; the official
   code reads the SigLIP pooling head's attention, vtc the encoder attention the adapter provides).
4. Density: within a frame, over its non-salient tokens, ``dist = |x_i - x_j| / sqrt(D)``, density
   ``rho = exp(-mean of the 4 smallest dist^2)`` (the token itself included), ``delta`` = distance to the
   nearest token of higher density (the frame's largest distance for the densest), score
   ``rho * delta``. An anchor frame's context slots go to its highest-scoring tokens (density peaks).
5. Merging: for each anchor frame, every non-salient token of its segment joins that frame's most
   similar anchor (cosine); the slot is ``w * anchor + (1 - w) * mean(joined)``,
   ``w = max(1 / (n + 1), beta)`` (``beta = 0.6``).

Deviations, on purpose: ties in density are broken towards the lower index instead of by random noise
(the official code adds ``1e-6 * rand``), so the result is deterministic; budgets are split to keep
exactly ``K`` (the official per-frame floors keep up to a few tokens fewer); a segment whose anchor
frames get one slot each is merged like any other (the official code then merges only within each
anchor frame). Where a token joins anchors of several anchor frames (as in the official merge), its
``assign`` names the most similar anchor of its segment; the slot features follow the official merge.
Salient tokens are kept unmerged. Output slots stay in original order. At the full budget every token
is kept as it is (the official merge would still blend anchors of several anchor frames).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vtc.core.budget import Budget
from vtc.core.ops import as_layers, density_peak_scores, select_layers, split_even, top_indices, work_dtype
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection


def segment_sizes(frame_means: Tensor, c: int, tau: float) -> list[int]:
    """Frames per segment: cuts where adjacent frames' cosine is below ``tau`` or among the ``c - 1`` lowest."""
    t = frame_means.shape[0]
    if t == 1:
        return [1]
    g = torch.nn.functional.normalize(frame_means.to(work_dtype(frame_means)), dim=-1)
    sim = (g[:-1] * g[1:]).sum(-1)
    lowest = torch.sort(sim, stable=True).indices[: max(0, min(c - 1, t - 1))]
    cuts = sorted(set(lowest.tolist()) | set((sim < tau).nonzero()[:, 0].tolist()))
    bounds = [-1, *cuts, t - 1]
    return [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def anchor_frames(length: int, p: int) -> list[int]:
    """Positions (ascending) of a segment's anchor frames: the last, then every ``p``-th before it."""
    return [j for j in range(length) if (length - 1 - j) % p == 0]


@dataclass
class Plan:
    """Per frame: how many salient tokens, and how many anchors (0 unless an anchor frame)."""

    salient: list[int]
    anchors: list[int]
    segments: list[int]


def exact_plan(t: int, n: int, k: int, d: float, p: int, segments: list[int]) -> Plan:
    """Budgets that keep exactly ``k``: ``R_t`` by ``split_even``, context pooled per segment on its anchor
    frames. Slots an anchor frame has no tokens for (at high ratios) go to other anchor frames of the
    segment, then to salient tokens of its frames, so the total stays ``k``."""
    retain = split_even(k, t)
    context = [int(r * d) for r in retain]
    salient = [r - c for r, c in zip(retain, context, strict=True)]
    anchors, start = [0] * t, 0
    for length in segments:
        frames = [start + j for j in anchor_frames(length, p)]
        overflow = 0
        for f, share in zip(frames, split_even(sum(context[start : start + length]), len(frames)), strict=True):
            anchors[f] = min(share, n - salient[f])
            overflow += share - anchors[f]
        for f in frames + list(range(start, start + length)):
            room = n - salient[f] - anchors[f]
            move = min(room, overflow)
            if f in frames:
                anchors[f] += move
            else:
                salient[f] += move
            overflow -= move
        start += length
    return Plan(salient, anchors, segments)


def fastvid_select(frames: Tensor, attention: Tensor, plan: Plan, beta: float) -> tuple[Tensor, Tensor]:
    """``(rep [T N], features [K, D])`` for ``frames [T, N, D]`` and ``attention [T, N]`` under ``plan``."""
    t, n, dim = frames.shape
    flat = frames.to(work_dtype(frames)).reshape(t * n, dim)
    rep = torch.full((t * n,), -1, dtype=torch.long, device=frames.device)
    slot_features: dict[int, Tensor] = {}
    rest = []  # per frame: flat indices of its non-salient tokens, ascending
    for f in range(t):
        salient = top_indices(attention[f], plan.salient[f]) + f * n
        rep[salient] = salient
        for i in salient.tolist():
            slot_features[i] = flat[i]
        taken = torch.zeros(n, dtype=torch.bool, device=frames.device)
        taken[salient - f * n] = True
        rest.append((~taken).nonzero()[:, 0] + f * n)
    unit = torch.nn.functional.normalize(flat, dim=-1)
    start = 0
    for length in plan.segments:
        members = torch.cat(rest[start : start + length])  # the segment's non-salient tokens
        anchor_sets = []
        for f in range(start, start + length):
            if plan.anchors[f]:
                score = density_peak_scores(flat[rest[f]], 4)
                anchor_sets.append(rest[f][top_indices(score, plan.anchors[f])])
        for anchors in anchor_sets:
            joined = (unit[members] @ unit[anchors].T).argmax(dim=1)  # first maximum: lower anchor index
            for j, a in enumerate(anchors.tolist()):
                group = members[joined == j]
                w = max(1.0 / (group.numel() + 1), beta)
                mean = flat[group].sum(0) / max(group.numel(), 1)
                slot_features[a] = w * flat[a] + (1 - w) * mean
                rep[a] = a
        if anchor_sets:
            every = torch.cat(anchor_sets)
            others = members[rep[members] < 0]
            if others.numel():
                rep[others] = every[(unit[others] @ unit[every].T).argmax(dim=1)]
        start += length
    order = sorted(slot_features)
    return rep, torch.stack([slot_features[i] for i in order]).to(frames.dtype)


@register(
    "fastvid", paper="arXiv:2503.11187", signals=("cls_attn",), video=True, encoder_layers="layers",
    mean_slots=False,
)
@dataclass(frozen=True)
class FastVID:
    """Temporal segments, attention-salient tokens, density-peak anchors merging the rest of each segment."""

    segments: int = 8  # c: at least this many segments
    tau: float = 0.9
    context: float = 0.4  # d: share of each frame's budget for context (merged) slots
    period: int = 4  # p: anchor frames every p frames of a segment
    beta: float = 0.6
    layers: tuple[int, ...] = (-2,)

    def __post_init__(self) -> None:
        for name in ("segments", "period"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        for name in ("tau", "context", "beta"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"{name}: expected a number in [0, 1], got {value!r}")
        object.__setattr__(self, "layers", as_layers(self.layers))

    def select(self, sample: Sample, budget: Budget) -> Selection:
        k = budget.resolve(sample.n)
        if k == sample.n:  # the full budget keeps every token as it is (no slot merges a kept token)
            return Selection.keep(torch.arange(sample.n, device=sample.features.device), sample.n)
        t, h, w = sample.grid
        frames = sample.features.reshape(t, h * w, -1)
        attention = select_layers(sample.cls_attn, self.layers, "fastvid").mean(0).reshape(t, h * w)
        segments = segment_sizes(frames.mean(dim=1), self.segments, self.tau)
        plan = exact_plan(t, h * w, k, self.context, self.period, segments)
        rep, features = fastvid_select(frames, attention, plan, self.beta)
        return Selection(rep, features=features, info={"segments": len(segments)})
