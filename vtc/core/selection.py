"""Per-sample plumbing: a `Sample` view in, a `Selection` out, and `assemble` to pad them into a batch.

Every method is written for one unpadded sample. It returns, for each source token, the
*representative* token it ends up in (``rep[i]``), or -1 if it is dropped. A pruner maps kept tokens
to themselves; a merger maps a group onto one member (the representative, e.g. ToMe's destination
token). `assemble` turns those into slots ordered by representative, whose feature is the mean of the
group (so size-weighted averaging of partial merges comes out exact).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from vtc.core.types import Compressed, VisualTokens


@dataclass(frozen=True)
class Sample:
    """One sample's valid tokens and signals, unpadded."""

    features: Tensor  # [N, D]
    grid: tuple[int, int, int]  # (t, h, w), t * h * w == N
    cls_attn: Tensor | None = None  # [L, N]
    keys: Tensor | None = None  # [N, Dk]
    text: Tensor | None = None  # [T, Dt]
    query_attn: Tensor | None = None  # [N]

    @property
    def n(self) -> int:
        return self.features.shape[0]


def split_samples(tokens: VisualTokens) -> list[Sample]:
    """The batch as a list of unpadded samples."""
    out = []
    for b, n in enumerate(tokens.lengths.tolist()):
        text = None
        if tokens.text is not None:
            text = tokens.text[b][tokens.text_mask[b]]
        out.append(
            Sample(
                features=tokens.features[b, :n],
                grid=tuple(int(v) for v in tokens.grid[b].tolist()),
                cls_attn=None if tokens.cls_attn is None else tokens.cls_attn[b, :, :n],
                keys=None if tokens.keys is None else tokens.keys[b, :n],
                query_attn=None if tokens.query_attn is None else tokens.query_attn[b, :n],
                text=text,
            )
        )
    return out


@dataclass
class Selection:
    """A method's answer for one sample.

    ``rep [N]``: representative source index of each token, or -1 if dropped. ``features [K, D]``
    overrides the group means (slots in ascending representative order), for methods whose slot
    feature is not a plain mean (e.g. bilinear pooling). ``info``: facts to report.
    """

    rep: Tensor
    features: Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def keep(cls, indices: Tensor, n: int, **info: Any) -> Selection:
        """A pruner's selection: ``indices`` kept (any order), the rest dropped."""
        indices = indices.long()
        rep = torch.full((n,), -1, dtype=torch.long, device=indices.device)
        rep[indices] = indices
        return cls(rep, info=info)


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_rep(rep: Tensor, n: int, method: str) -> None:
    if rep.shape != (n,) or rep.dtype != torch.long:
        raise RuntimeError(
            f"{method}: selection rep must be a long tensor of shape ({n},), got {rep.dtype} {tuple(rep.shape)}"
        )
    kept = rep >= 0
    if bool((rep >= n).any() | (rep < -1).any()):
        raise RuntimeError(f"{method}: selection rep has values outside [-1, {n})")
    if not bool(kept.any()):
        raise RuntimeError(f"{method}: selection kept no token")
    if not bool((rep[rep[kept]] == rep[kept]).all()):
        raise RuntimeError(f"{method}: a representative token does not map to itself")


def assemble(tokens: VisualTokens, selections: list[Selection], method: str) -> Compressed:
    """Pad per-sample selections into one `Compressed` batch."""
    features = tokens.features
    batch, n_max, dim = features.shape
    acc = _accumulate_dtype(features.dtype)
    per_sample = []
    for b, (sel, n) in enumerate(zip(selections, tokens.lengths.tolist(), strict=False)):
        rep = sel.rep.to(features.device)
        _check_rep(rep, n, method)
        slots = torch.unique(rep[rep >= 0])  # sorted ascending
        assign = torch.where(rep >= 0, torch.searchsorted(slots, rep.clamp_min(0)), -1)
        kept = assign >= 0
        sizes = torch.bincount(assign[kept], minlength=len(slots))
        if sel.features is None:
            sums = torch.zeros(len(slots), dim, dtype=acc, device=features.device)
            sums.index_add_(0, assign[kept], features[b, :n][kept].to(acc))
            slot_features = (sums / sizes[:, None].to(acc)).to(features.dtype)
        else:
            slot_features = sel.features.to(features.dtype)
            if tuple(slot_features.shape) != (len(slots), dim):
                raise RuntimeError(
                    f"{method}: feature override has shape {tuple(slot_features.shape)}, expected {(len(slots), dim)}"
                )
        per_sample.append((slots, assign, sizes, slot_features, {"kept": len(slots), **sel.info}))

    k_max = max(len(s[0]) for s in per_sample)
    out_features = features.new_zeros(batch, k_max, dim)
    out_mask = torch.zeros(batch, k_max, dtype=torch.bool, device=features.device)
    out_index = torch.full((batch, k_max), -1, dtype=torch.long, device=features.device)
    out_assign = torch.full((batch, n_max), -1, dtype=torch.long, device=features.device)
    out_sizes = torch.zeros(batch, k_max, dtype=torch.long, device=features.device)
    infos = []
    for b, (slots, assign, sizes, slot_features, info) in enumerate(per_sample):
        k, n = len(slots), len(assign)
        out_features[b, :k] = slot_features
        out_mask[b, :k] = True
        out_index[b, :k] = slots
        out_assign[b, :n] = assign
        out_sizes[b, :k] = sizes
        infos.append(info)
    return Compressed(out_features, out_mask, out_index, out_assign, out_sizes, method=method, info=infos)
