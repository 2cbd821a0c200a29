"""``temporal_pool``: average over time at full spatial resolution, at the same token count.

The temporal counterpart of ``pool``'s spatial pooling, as in the temporal pooling of video VLMs that
average neighbouring frames (e.g. Maaz et al., "Video-ChatGPT", arXiv:2306.05424, pools over time and
space; LLaVA-OneVision pools in space, arXiv:2408.03326). At a budget of ``K`` tokens on a
``(t, h, w)`` grid the frames form ``g = min(t, ceil(K / (h w)))`` runs of consecutive frames
(``split_even``), the ``K`` cells are split evenly over the runs, and within a run the cells tile the
frame as ``pool`` tiles it (full resolution when a run has ``h w`` cells): each cell is the mean of its
tokens over all the run's frames. Exactly ``K`` tokens, as every method keeps at the same budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from vtc.core.budget import Budget
from vtc.core.registry import register
from vtc.core.selection import Sample, Selection
from vtc.methods.pool import cell_of, cell_representatives


@register("temporal_pool", paper="arXiv:2306.05424 (baseline)", video=True)
@dataclass(frozen=True)
class TemporalPool:
    """Mean over runs of consecutive frames, full spatial resolution where the budget allows (baseline)."""

    def select(self, sample: Sample, budget: Budget) -> Selection:
        k = budget.resolve(sample.n)
        t, h, w = sample.grid
        cells = cell_of(sample.grid, k, groups=min(t, -(-k // (h * w))))
        rep = cell_representatives(cells, k).to(sample.features.device)
        return Selection(rep, info={"cells": k})
