"""``vidcom2``: per-frame budgets from frame uniqueness, then each frame's most distinctive tokens.

Liu et al., "Video Compression Commander: Plug-and-Play Inference Acceleration for Video Large Language
Models" (VidCom², arXiv:2505.14454, 2025). Following the official implementation (which differs from
the paper's cosine formulation):

1. Channels: the half of the feature channels with the lowest variance over the video's tokens
   (``int(D / 2)``); the tokens restricted to them are L2-normalised.
2. Similarity to a centre ``c`` (not re-normalised) is a sum of Gaussian kernels,
   ``sum_a exp(-|x - c|^2 / (2 a))`` over ``a`` in ``ALPHAS``. Each token gets its similarity to the video
   centre (mean of all tokens) and to its frame's centre.
3. Frame uniqueness: minus the frame's mean similarity to the video centre. Frame scales
   ``s_t = ratio * (1 + p_t - mean(p))``, at most 1, with ``p = softmax(uniqueness / temperature)``
   (``temperature = 0.01``).
4. Frame ``t`` keeps the ``k_t`` tokens with the lowest sum of the two similarities (ties to the lower
   index), in frame order.

Deviation, on purpose: the official code rounds each ``s_t * N`` on its own, so a video keeps a few
tokens more or fewer than ``ratio * T * N``. Here the quotas ``s_t * N`` are scaled to the budget ``K``
and rounded by largest remainders (ties to the earlier frame, at most ``N`` per frame), so the method
keeps exactly ``K``, like every other method at the same budget. With the official rounding
(``frame_budgets(..., total=None)``) and the same budgets, the selection equals the official one on
fixtures generated from it (tests/test_parity_video.py). An image is a one-frame video.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vtc.core.budget import Budget
from vtc.core.ops import bottom_indices, largest_remainder, work_dtype
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection

ALPHAS = (0.125, 0.25, 0.5, 1.0, 2.0)


def low_variance_channels(x: Tensor) -> Tensor:
    """The ``int(D / 2)`` channels of ``x [M, D]`` with the lowest (population) variance over its rows."""
    variance = x.var(dim=0, unbiased=False)
    return torch.sort(variance, stable=True).indices[: int(x.shape[-1] * 0.5)]


def gaussian_similarity(x: Tensor, centre: Tensor, alphas: tuple[float, ...] = ALPHAS) -> Tensor:
    """``sum_a exp(-|x - centre|^2 / (2 a))`` over the last dimension."""
    d2 = ((x - centre) ** 2).sum(-1)
    return sum(torch.exp(-d2 / (2 * a)) for a in alphas)


def vidcom2_scores(frames: Tensor) -> tuple[Tensor, Tensor]:
    """``(uniqueness [T], token_score [T, N])`` of ``frames [T, N, D]``: low token scores are distinctive."""
    t, n, d = frames.shape
    x = frames.to(work_dtype(frames))
    channels = low_variance_channels(x.reshape(t * n, d))
    u = torch.nn.functional.normalize(x[..., channels], dim=-1)
    video = gaussian_similarity(u, u.mean(dim=(0, 1)))
    frame = gaussian_similarity(u, u.mean(dim=1, keepdim=True))
    return -video.mean(dim=1), video + frame


def frame_scales(uniqueness: Tensor, ratio: float, temperature: float) -> Tensor:
    """``s_t = ratio * (1 + p_t - mean(p))`` clamped to at most 1, ``p = softmax(uniqueness / temperature)``."""
    p = torch.softmax((uniqueness - uniqueness.max()) / temperature, dim=0)
    return (ratio * (1 + p - p.mean())).clamp(max=1.0)


def frame_budgets(scales: Tensor, n: int, total: int | None = None) -> Tensor:
    """Tokens per frame: with ``total``, the quotas ``scales * n`` scaled to it and rounded by largest
    remainders (ties to the earlier frame, at most ``n`` each); without, each quota rounded on its own and
    at least 1 (the official rule)."""
    quotas = scales * n
    if total is None:
        return quotas.round().long().clamp(min=1)
    counts = largest_remainder(quotas.double().tolist(), [n] * quotas.numel(), total)
    return torch.tensor(counts, dtype=torch.long, device=scales.device)


def vidcom2_indices(frames: Tensor, k: int, ratio: float, temperature: float) -> Tensor:
    """``k`` flat indices into ``frames [T, N, D]``, ascending."""
    t, n, _ = frames.shape
    uniqueness, score = vidcom2_scores(frames)
    budgets = frame_budgets(frame_scales(uniqueness, ratio, temperature), n, total=k)
    picks = [f * n + bottom_indices(score[f], int(b)).sort().values for f, b in enumerate(budgets.tolist())]
    return torch.cat(picks)


@register("vidcom2", paper="arXiv:2505.14454", video=True)
@dataclass(frozen=True)
class VidCom2:
    """Frame-uniqueness budgets, then the tokens least similar to their video and frame centres."""

    temperature: float = 0.01

    def __post_init__(self) -> None:
        if not isinstance(self.temperature, (int, float)) or not self.temperature > 0:
            raise ValueError(f"temperature: expected a number > 0, got {self.temperature!r}")

    def select(self, sample: Sample, budget: Budget) -> Selection:
        k = budget.resolve(sample.n)
        t, h, w = sample.grid
        frames = sample.features.reshape(t, h * w, -1)
        keep = vidcom2_indices(frames, k, k / sample.n, self.temperature)
        return Selection.keep(keep, sample.n)
