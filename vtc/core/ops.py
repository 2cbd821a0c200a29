"""Small pure tensor helpers shared by the methods. Ties always break towards the lower index."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vtc.core.budget import Budget
from vtc.kernels.common import work_dtype
from vtc.kernels.similarity import similarity_topk


def top_indices(scores: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` largest scores, best first; equal scores rank the lower index first."""
    return torch.sort(scores, descending=True, stable=True).indices[:k]


def most_attended(scores: Tensor, budget: Budget) -> Tensor:
    """The tokens with the highest attention ``scores [N]`` under ``budget`` (``coverage:p`` counts the
    attention mass), best first, ties to the lower index."""
    return top_indices(scores, budget.resolve(scores.shape[0], mass=scores))


def top_indices_batch(scores: Tensor, mask: Tensor, counts: list[int], largest: bool = True) -> list[Tensor]:
    """``top_indices`` (or ``bottom_indices``) of each row's valid scores, from one sort of the padded
    ``[B, N]`` batch: padding sorts last, and a stable sort keeps the lower index first on ties."""
    fill = -torch.inf if largest else torch.inf
    order = torch.sort(scores.masked_fill(~mask, fill), dim=1, descending=largest, stable=True).indices
    return [order[b, :k] for b, k in enumerate(counts)]


def most_attended_batch(scores: Tensor, mask: Tensor, budget: Budget) -> list[Tensor]:
    """``most_attended`` for each row of a padded ``[B, N]`` batch, with one sort."""
    counts = [budget.resolve(n, mass=scores[b, :n]) for b, n in enumerate(mask.sum(1).tolist())]
    return top_indices_batch(scores, mask, counts)


def bottom_indices(scores: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` smallest scores, smallest first; ties rank the lower index first."""
    return torch.sort(scores, descending=False, stable=True).indices[:k]


def best_match(queries: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """For each query row ``[M, D]``, its highest cosine similarity to a target row ``[T, D]`` and that
    target's index (lower index on ties), through the ``similarity_topk`` kernel."""
    values, indices = similarity_topk(queries[None], targets[None], 1)
    return values[0, :, 0], indices[0, :, 0]


def pad_rows(rows: list[Tensor]) -> tuple[Tensor, Tensor]:
    """``[R_b, D]`` tensors stacked into a zero-padded ``[B, max R_b (at least 1), D]`` and its ``[B, R]`` mask."""
    first = rows[0]
    width = max(1, max(r.shape[0] for r in rows))
    padded = first.new_zeros(len(rows), width, first.shape[-1])
    for b, r in enumerate(rows):
        padded[b, : r.shape[0]] = r
    lengths = torch.tensor([r.shape[0] for r in rows], device=first.device)
    return padded, torch.arange(width, device=first.device)[None, :] < lengths[:, None]


def best_match_batch(queries: list[Tensor], targets: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
    """``best_match`` for several samples (``[M_b, D]`` queries against ``[T_b, D]`` targets) with one
    ``similarity_topk`` call on the padded batch."""
    padded_q, mask_q = pad_rows(queries)
    padded_t, mask_t = pad_rows(targets)
    values, indices = similarity_topk(padded_q, padded_t, 1, mask_q, mask_t)
    return [(values[b, : q.shape[0], 0], indices[b, : q.shape[0], 0]) for b, q in enumerate(queries)]


def bipartite_match(metric: Tensor, r: int, protected: int = 0, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One round of ToMe's bipartite soft matching on ``metric [B, N, C]`` (Bolya et al., arXiv:2210.09461).

    The tokens split alternately into A (even positions) and B (odd positions); each A token's best
    cosine match in B is found, and the ``r`` A tokens with the best matches merge. The first
    ``protected`` tokens neither merge nor receive; padding (``mask [B, N]`` False, after the valid tokens)
    neither. Returns ``(merged, into)``, each ``[B, r]``: the positions of the merging A tokens, best
    matched first, and the B position each goes to. Ties: the lower B index wins a match, and of equal
    matches the lower A index merges first.
    """
    batch, n, _ = metric.shape
    positions = torch.arange(n, device=metric.device)
    a_pos, b_pos = positions[0::2], positions[1::2]
    mask_a = (a_pos >= protected).expand(batch, -1)
    mask_b = (b_pos >= protected).expand(batch, -1)
    if mask is not None:
        mask_a, mask_b = mask_a & mask[:, 0::2], mask_b & mask[:, 1::2]
    score, match = similarity_topk(metric[:, 0::2], metric[:, 1::2], 1, mask_a, mask_b)
    order = torch.sort(score[..., 0], dim=-1, descending=True, stable=True).indices[:, :r]
    return a_pos[order], b_pos[match[..., 0].gather(1, order)]


def density_peak_scores(x: Tensor, k: int, dist: Tensor | None = None) -> Tensor:
    """Density-peak scores ``rho * delta`` of the rows of ``x [M, D]`` (Rodriguez and Laio's density peaks,
    with a k-nearest-neighbour density as in DPC-KNN): ``dist = |x_i - x_j| / sqrt(D)``,
    ``rho = exp(-mean of the k smallest dist^2)`` (the row itself included), ``delta`` the distance to the
    nearest row of higher density (the largest distance for the densest). Ties in ``rho`` count the lower
    index as denser, so the result is deterministic (FastVID and PruneVid add random noise instead).
    ``dist`` passes the scaled distances when the caller has them already."""
    m = x.shape[0]
    if dist is None:
        x = x.to(work_dtype(x))
        dist = torch.cdist(x, x) / math.sqrt(x.shape[-1])
    rho = torch.exp(-(torch.topk(dist, min(k, m), dim=-1, largest=False).values ** 2).mean(-1))
    index = torch.arange(m, device=dist.device)
    higher = (rho[None, :] > rho[:, None]) | ((rho[None, :] == rho[:, None]) & (index[None, :] < index[:, None]))
    delta = dist.masked_fill(~higher, torch.inf).min(dim=-1).values
    delta = torch.where(torch.isinf(delta), dist.max(), delta)
    return rho * delta


def density_peak_clusters(
    x: Tensor, clusters: int, k: int, dist: Tensor | None = None, by_position: bool = False
) -> tuple[Tensor, Tensor]:
    """DPC-KNN on the rows of ``x [M, D]``: the ``clusters`` rows with the highest density-peak scores are the
    centres (ranked by score, or in row order with ``by_position``), every row joins its nearest centre
    (the earlier-listed one on ties) and each centre itself. Returns ``(centres, label)``; ``dist`` as in
    :func:`density_peak_scores`."""
    if dist is None:
        x = x.to(work_dtype(x))
        dist = torch.cdist(x, x) / math.sqrt(x.shape[-1])
    score = density_peak_scores(x, k, dist)
    centres = torch.sort(-score, stable=True).indices[:clusters]
    if by_position:
        centres = centres.sort().values
    label = dist[:, centres].argmin(dim=1)
    label[centres] = torch.arange(clusters, device=dist.device)
    return centres, label


def iqr_outliers(scores: Tensor) -> Tensor:
    """Indices (best first) of the scores above ``Q3 + 1.5 * IQR``; the top score if there are none
    (quartiles by linear interpolation, as PruMerge's outlier rule)."""
    q1, q3 = torch.quantile(scores.double(), torch.tensor([0.25, 0.75], dtype=torch.float64, device=scores.device))
    fence = q3 + 1.5 * (q3 - q1)
    count = max(1, int((scores.double() > fence).sum()))
    return top_indices(scores, count)


def merge_into_nearest_batch(keeps: list[Tensor], metrics: list[Tensor], merge: bool = True) -> list[Tensor]:
    """``merge_into_nearest`` for several samples, with one ``similarity_topk`` call for all of them."""
    reps, others = [], []
    for keep, metric in zip(keeps, metrics, strict=True):
        rep = torch.full((metric.shape[0],), -1, dtype=torch.long, device=metric.device)
        rep[keep] = keep
        reps.append(rep)
        others.append((rep < 0).nonzero()[:, 0])
    if merge and any(o.numel() for o in others):
        matches = best_match_batch([m[o] for m, o in zip(metrics, others, strict=True)],
                                   [m[k] for m, k in zip(metrics, keeps, strict=True)])
        for rep, other, keep, (_, nearest) in zip(reps, others, keeps, matches, strict=True):
            if other.numel():
                rep[other] = keep[nearest]
    return reps


def merge_into_nearest(keep: Tensor, metric: Tensor, merge: bool = True) -> Tensor:
    """Representatives: kept tokens keep themselves, every other token joins its most similar kept token
    (cosine of ``metric``), or is dropped (-1) when ``merge`` is False."""
    return merge_into_nearest_batch([keep], [metric], merge)[0]


def check_llm_layer(layer: object, name: str = "layer") -> int:
    """A decoder layer index (an int >= 0) for LLM-stage methods."""
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
        raise ValueError(f"{name}: expected a decoder layer index >= 0, got {layer!r}")
    return layer


def check_flag(value: object, name: str) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected True or False, got {value!r}")


def split_even(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` near-equal integers spread evenly (not front-loaded)."""
    return [(i + 1) * total // parts - i * total // parts for i in range(parts)]


def largest_remainder(weights: list[float], caps: list[int], total: int) -> list[int]:
    """``total`` split in proportion to ``weights`` (Hamilton's method): the floors of the quotas, then one
    more each by largest remainder (the earlier on ties), all capped at ``caps``; what the caps leave over
    goes to the parts with room, earliest first (so the sum is ``min(total, sum(caps))``)."""
    mass = sum(weights)
    quota = [w * total / mass if mass > 0 else 0.0 for w in weights]
    out = [min(int(q), cap) for q, cap in zip(quota, caps, strict=True)]
    spare = total - sum(out)
    for i in sorted(range(len(out)), key=lambda i: (-(quota[i] - int(quota[i])), i)):
        if spare and out[i] < caps[i]:
            out[i] += 1
            spare -= 1
    for i in range(len(out)):
        take = min(spare, caps[i] - out[i])
        out[i] += take
        spare -= take
    return out


def frame_lattice(h: int, w: int, k: int) -> Tensor:
    """``k`` spatially even positions (flat indices, ascending) in an ``h x w`` frame.

    Picks a lattice of ``rows x cols >= k`` cells with the frame's aspect ratio, takes each cell's
    centre token, then keeps ``k`` of the cells at an even stride. Exact for ``k = rows * cols``
    (e.g. 144 of 24x24 is every second row and column).
    """
    if k >= h * w:
        return torch.arange(h * w)
    rows = min(h, max(1, round(math.sqrt(k * h / w))))
    cols = min(w, math.ceil(k / rows))
    while rows * cols < k:
        rows += 1
    r = ((torch.arange(rows) + 0.5) * h / rows).floor().long()
    c = ((torch.arange(cols) + 0.5) * w / cols).floor().long()
    cells = (r[:, None] * w + c[None, :]).flatten()
    pick = ((torch.arange(k) + 0.5) * cells.numel() / k).floor().long()
    return cells[pick]


def grid_uniform(grid: tuple[int, int, int], k: int) -> Tensor:
    """``k`` token indices spread evenly over frames, then over each frame's rows and columns."""
    t, h, w = grid
    out = [torch.zeros(0, dtype=torch.long)]
    for frame, k_frame in enumerate(split_even(k, t)):
        if k_frame:
            out.append(frame * h * w + frame_lattice(h, w, k_frame))
    return torch.cat(out)


def select_layers(cls_attn: Tensor | None, layers: tuple[int, ...], method: str) -> Tensor:
    """The attention rows ``[len(layers), N]`` a method asked for, in the work dtype.

    ``cls_attn`` rows are expected in the order of ``layers`` (the adapter extracts exactly those).
    """
    if cls_attn is None:
        raise ValueError(f"{method}: needs signal cls_attn")
    if cls_attn.shape[0] != len(layers):
        raise ValueError(
            f"cls_attn: expected {len(layers)} row(s), one per layer in layers={layers}, got {cls_attn.shape[0]}"
        )
    return cls_attn.to(work_dtype(cls_attn))


def as_layers(layers: object, name: str = "layers") -> tuple[int, ...]:
    """Validate a ``layers`` config field (an int or a sequence of ints) and return it as a tuple."""
    if isinstance(layers, int) and not isinstance(layers, bool):
        layers = (layers,)
    if (
        isinstance(layers, (list, tuple))
        and layers
        and all(isinstance(i, int) and not isinstance(i, bool) for i in layers)
    ):
        return tuple(layers)
    raise ValueError(f"{name}: expected a layer index or a non-empty tuple of them, got {layers!r}")


METRICS = ("auto", "keys", "features")


def similarity_metric(sample_features: Tensor, keys: Tensor | None, metric: str, method: str) -> Tensor:
    """The vectors a merger compares: ``keys`` (or features when ``metric="features"``).

    ``metric="auto"`` uses keys when the sample has them and falls back to features.
    """
    if metric == "features" or (metric == "auto" and keys is None):
        return sample_features
    if keys is None:
        raise ValueError(f"{method}: metric='keys' needs signal keys; pass metric='features' to use features")
    return keys


def check_metric(metric: object) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")
