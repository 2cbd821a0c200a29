"""Naive reference implementations of every method, written from the docstrings only, compared to vtc.

Each reference uses plain Python loops over small inputs (explicit pairwise cosine similarities, explicit
argmax with ties to the lower index) so that it shares no code with the package. Merging methods are
checked through a representative map ``rep[i]`` (the source token whose slot token ``i`` joins, -1 when
dropped): from it follow the expected ``index``, ``assign``, ``sizes`` and the slot means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import vtc

# ----------------------------------------------------------------------------------------------- helpers


@dataclass
class Result:
    index: list[int]
    assign: list[int]
    sizes: list[int]
    features: torch.Tensor  # [K, D], valid slots only
    info: dict


def compress(name, features, *, grid=None, cls_attn=None, keys=None, text=None, **kwargs) -> Result:
    """Run method ``name`` on one sample (unbatched tensors) and return its valid slots."""
    tokens = vtc.VisualTokens(
        features=features[None],
        grid=None if grid is None else torch.tensor([grid]),
        cls_attn=None if cls_attn is None else cls_attn[None],
        keys=None if keys is None else keys[None],
        text=None if text is None else text[None],
    )
    out = vtc.build(name, **kwargs)(tokens)
    k = int(out.mask[0].sum())
    return Result(
        index=out.index[0, :k].tolist(),
        assign=out.assign[0].tolist(),
        sizes=out.sizes[0, :k].tolist(),
        features=out.features[0, :k],
        info=out.info[0],
    )


def budget_k(n: int, ratio: float | None = None, count: int | None = None) -> int:
    """The documented budget: ratio -> max(1, round half up of r * N); count -> min(c, N)."""
    if ratio is not None:
        return max(1, math.floor(ratio * n + 0.5))
    return min(count, n)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Dot product of the L2-normalised vectors, in float32."""
    a, b = a.float(), b.float()
    return float(torch.dot(a / a.norm(), b / b.norm()))


def cosine_matrix(x: torch.Tensor) -> list[list[float]]:
    """Explicit N x N table of pairwise cosine similarities."""
    return [[cosine(x[i], x[j]) for j in range(len(x))] for i in range(len(x))]


def top(scores, k: int, among=None) -> list[int]:
    """The ``k`` largest ``scores`` (best first) among candidate indices; ties go to the lower index."""
    candidates = range(len(scores)) if among is None else among
    return sorted(candidates, key=lambda i: (-float(scores[i]), i))[:k]


def argmax_first(values, candidates) -> int:
    """Candidate with the largest value; the first (lowest index) one on ties."""
    best, best_value = None, -math.inf
    for c in sorted(candidates):
        if values[c] > best_value:
            best, best_value = c, values[c]
    return best


def check_selection(res: Result, x: torch.Tensor, expected: list[int]) -> None:
    """A pure selection: slots are exactly ``expected`` (any order) with their own features."""
    rep = [-1] * len(x)
    for i in expected:
        rep[i] = i
    check_reps(res, x, rep)


def check_reps(res: Result, x: torch.Tensor, rep: list[int]) -> None:
    """``index``/``assign``/``sizes``/slot means implied by the representative map ``rep``."""
    expected_index = sorted({r for r in rep if r >= 0})
    assert res.index == expected_index
    slot = {r: j for j, r in enumerate(expected_index)}
    assert res.assign == [slot[r] if r >= 0 else -1 for r in rep]
    assert res.sizes == [rep.count(r) for r in expected_index]
    for j, r in enumerate(expected_index):
        members = [i for i in range(len(x)) if rep[i] == r]
        mean = sum(x[i].double() for i in members) / len(members)
        torch.testing.assert_close(res.features[j].double(), mean, atol=1e-5, rtol=1e-5)


def randn(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def attention(seed: int, layers: int, n: int) -> torch.Tensor:
    """Positive attention-like rows ``[layers, n]``, each summing to 1."""
    return torch.softmax(randn(seed, layers, n) * 2, dim=-1)


# ----------------------------------------------------------------------------------------------- random


@pytest.mark.parametrize("n,ratio", [(10, 0.3), (36, 0.25), (17, 0.5)])
def test_random_count_and_seeding(n, ratio):
    x = randn(0, n, 4)
    k = budget_k(n, ratio=ratio)
    results = [compress("random", x, ratio=ratio, seed=s) for s in range(6)]
    for res in results:
        assert len(res.index) == k and len(set(res.index)) == k
        check_selection(res, x, res.index)
    again = compress("random", x, ratio=ratio, seed=3)
    assert again.index == results[3].index
    assert len({tuple(r.index) for r in results}) >= 3, "different seeds should usually differ"


# ----------------------------------------------------------------------------------------------- uniform


def test_uniform_144_of_24x24_keeps_every_second_row_and_column():
    x = randn(1, 576, 4)
    res = compress("uniform", x, grid=(1, 24, 24), count=144)
    expected = [y * 24 + c for y in range(1, 24, 2) for c in range(1, 24, 2)]
    check_selection(res, x, expected)


def test_uniform_exact_lattices():
    # 9 of 9x9: 3x3 cells of 3 tokens, centre offset 1 -> rows/cols 1, 4, 7
    x = randn(2, 81, 4)
    res = compress("uniform", x, grid=(1, 9, 9), count=9)
    check_selection(res, x, [y * 9 + c for y in (1, 4, 7) for c in (1, 4, 7)])
    # 8 of 4x8 (aspect 1:2): 2x4 cells of 2x2 -> rows 1, 3 and columns 1, 3, 5, 7
    x = randn(3, 32, 4)
    res = compress("uniform", x, grid=(1, 4, 8), count=8)
    check_selection(res, x, [y * 8 + c for y in (1, 3) for c in (1, 3, 5, 7)])


def test_uniform_two_frame_video_splits_budget_per_frame():
    x = randn(4, 32, 4)
    res = compress("uniform", x, grid=(2, 4, 4), count=8)
    per_frame = [5, 7, 13, 15]  # 2x2 lattice of a 4x4 frame: rows/cols 1, 3
    check_selection(res, x, per_frame + [16 + i for i in per_frame])


# ----------------------------------------------------------------------------------------------- pool


def naive_pool_cells(grid, k) -> list[int]:
    """Cell of every token, by the partition pool.py documents, written as plain loops.

    Frames in min(t, k) consecutive groups, cells split evenly over them; in a group with c cells, rows
    form b bands (b = round(sqrt(c h / w)), clamped), band i has split_even(c, b)[i] columns; row y is in
    band floor(y b / h), column x of band i in cell floor(x c_i / w).
    """
    t, h, w = grid
    groups = min(t, k)

    def even(total, parts):
        return [(i + 1) * total // parts - i * total // parts for i in range(parts)]

    cells, offset = [], 0
    for n_frames, c in zip(even(t, groups), even(k, groups), strict=True):
        bands = min(h, c, max(1, math.floor(math.sqrt(c * h / w) + 0.5)))
        while bands * w < c:
            bands += 1
        columns = even(c, bands)
        frame = []
        for y in range(h):
            band = y * bands // h
            for x in range(w):
                frame.append(offset + sum(columns[:band]) + x * columns[band] // w)
        cells += frame * n_frames
        offset += c
    return cells


def naive_pool_reps(grid, k) -> list[int]:
    """The first token of each token's cell."""
    cells = naive_pool_cells(grid, k)
    return [cells.index(c) for c in cells]


@pytest.mark.parametrize(
    "grid,budget",
    [
        ((1, 5, 3), {"ratio": 0.5}),  # 8 cells: rows {0,1},{2},{3},{4}; cols {0,1},{2}
        ((1, 4, 4), {"ratio": 0.25}),
        ((1, 4, 4), {"count": 4}),
        ((2, 4, 4), {"ratio": 0.25}),
        ((1, 6, 5), {"ratio": 0.3}),  # 9 cells over 3 bands of 3
        ((1, 5, 5), {"ratio": 0.25}),  # 6 cells: 2 bands of 3
        ((8, 7, 7), {"ratio": 0.11}),  # 43 cells over 8 frames: 5 or 6 per frame
        ((4, 2, 2), {"count": 2}),  # fewer cells than frames: 2 frames per cell
        ((3, 3, 4), {"count": 7}),
    ],
)
def test_pool_avg_matches_cell_means(grid, budget):
    t, h, w = grid
    n = t * h * w
    x = randn(5, n, 6)
    k = budget.get("count") or max(1, math.floor(budget["ratio"] * n + 0.5))
    res = compress("pool", x, grid=grid, **budget)
    assert len(res.index) == k  # iso-token: exactly the budget every other method keeps
    check_reps(res, x, naive_pool_reps(grid, k))


def test_pool_5x3_partition_by_hand():
    x = randn(6, 15, 4)
    res = compress("pool", x, grid=(1, 5, 3), ratio=0.5)
    # rows -> bands 0,0,1,2,3 and columns -> cells 0,0,1; top-left tokens
    rep = []
    for y in range(5):
        for c in range(3):
            rep.append({0: 0, 1: 0, 2: 2, 3: 3, 4: 4}[y] * 3 + (0 if c < 2 else 2))
    check_reps(res, x, rep)
    assert len(res.index) == 8


def test_pool_pools_frames_together_below_one_cell_per_frame():
    x = randn(9, 16, 3)
    res = compress("pool", x, grid=(4, 2, 2), count=2)
    assert res.index == [0, 8] and res.sizes == [8, 8]  # frames 0-1 and 2-3, each one cell
    check_reps(res, x, [0] * 8 + [8] * 8)


def test_frames_keeps_whole_evenly_spaced_frames():
    x = randn(21, 8 * 4, 3)
    res = compress("frames", x, grid=(8, 2, 2), count=8)  # two whole frames: the middles of 0-3 and 4-7
    assert res.index == [4, 5, 6, 7, 20, 21, 22, 23]
    res = compress("frames", x, grid=(8, 2, 2), count=6)  # two frames, three tokens each
    assert res.index == [4, 6, 7, 20, 22, 23]
    res = compress("frames", x[:12], grid=(3, 2, 2), count=12)  # every frame
    assert res.index == list(range(12))


def test_temporal_pool_averages_runs_of_frames_at_full_resolution():
    x = randn(22, 4 * 2 * 3, 5)
    res = compress("temporal_pool", x, grid=(4, 2, 3), count=12)  # 2 runs of 2 frames, 6 cells each
    rep = [f // 2 * 12 + p for f in range(4) for p in range(6)]
    check_reps(res, x, rep)
    res = compress("temporal_pool", x, grid=(4, 2, 3), count=6)  # one run of all 4 frames, full resolution
    check_reps(res, x, [p for _ in range(4) for p in range(6)])


@pytest.mark.parametrize("grid", [(8, 5, 7), (32, 6, 6), (3, 24, 24), (1, 27, 27)])
@pytest.mark.parametrize("ratio", [0.01, 0.05, 0.11, 0.25, 0.5, 0.9])
def test_video_baselines_are_iso_token(grid, ratio):
    """pool, frames, temporal_pool and uniform keep exactly the budget, as every other method does."""
    n = grid[0] * grid[1] * grid[2]
    x = randn(23, n, 2)
    for name in ("pool", "frames", "temporal_pool", "uniform", "divprune"):
        assert len(compress(name, x, grid=grid, ratio=ratio).index) == budget_k(n, ratio=ratio), name


def test_pool_bilinear_halving_equals_avg():
    x = randn(7, 16, 5)
    avg = compress("pool", x, grid=(1, 4, 4), ratio=0.25, mode="avg")
    bil = compress("pool", x, grid=(1, 4, 4), ratio=0.25, mode="bilinear")
    assert bil.index == avg.index == [0, 2, 8, 10]
    assert bil.assign == avg.assign and bil.sizes == avg.sizes == [4, 4, 4, 4]
    torch.testing.assert_close(bil.features, avg.features, atol=1e-5, rtol=1e-5)


def test_pool_bilinear_equals_interpolate_on_regular_grids():
    """Where the K cells form a regular h' x w' grid, bilinear pooling is F.interpolate (align_corners=False)."""
    import torch.nn.functional as F

    x = randn(10, 2 * 6 * 9, 4)
    res = compress("pool", x, grid=(2, 6, 9), count=2 * 12, mode="bilinear")  # 12 cells a frame: 3 bands of 4
    frames = x.reshape(2, 6, 9, 4).permute(0, 3, 1, 2)
    want = F.interpolate(frames, size=(3, 4), mode="bilinear", align_corners=False).permute(0, 2, 3, 1).reshape(-1, 4)
    torch.testing.assert_close(torch.stack([torch.as_tensor(f) for f in res.features]), want, atol=1e-5, rtol=1e-5)


def test_pool_quarter_of_27x27_keeps_exactly_a_quarter():
    x = randn(8, 729, 4)
    res = compress("pool", x, grid=(1, 27, 27), ratio=0.25)
    assert len(res.index) == 182  # round(729 / 4), where the nearest regular grid would give 14 x 14 = 196
    assert res.index[:14] == list(range(0, 27, 2))  # 13 bands of 14 cells
    check_reps(res, x, naive_pool_reps((1, 27, 27), 182))


# ----------------------------------------------------------------------------------------------- cls_attention


def naive_cls_attention(rows: torch.Tensor, k: int) -> list[int]:
    scores = rows.float().mean(dim=0).tolist()
    return top(scores, k)


@pytest.mark.parametrize("seed,n,layers,ratio", [(0, 20, 1, 0.3), (1, 36, 1, 0.1), (2, 25, 2, 0.4), (3, 12, 2, 0.5)])
def test_cls_attention_topk_of_mean(seed, n, layers, ratio):
    x = randn(seed, n, 8)
    rows = attention(seed + 100, layers, n)
    res = compress("cls_attention", x, cls_attn=rows, ratio=ratio, layers=tuple(range(-layers, 0)))
    check_selection(res, x, naive_cls_attention(rows, budget_k(n, ratio=ratio)))


def test_cls_attention_ensemble_differs_from_single_layers():
    # layer a favours token 0, layer b favours token 1, their mean favours token 2
    rows = torch.tensor([[0.50, 0.00, 0.30, 0.20], [0.00, 0.50, 0.30, 0.20]])
    x = randn(9, 4, 4)
    res = compress("cls_attention", x, cls_attn=rows, count=1, layers=(-3, -2))
    check_selection(res, x, [2])
    assert naive_cls_attention(rows, 1) == [2]


def test_cls_attention_ties_go_to_lower_index():
    rows = torch.tensor([[0.1, 0.2, 0.2, 0.05, 0.2, 0.2, 0.05]])
    x = randn(10, 7, 4)
    res = compress("cls_attention", x, cls_attn=rows, count=3)
    check_selection(res, x, [1, 2, 4])


def naive_coverage_count(mass: list[float], p: float) -> int:
    total = sum(mass)
    acc = 0.0
    for k, m in enumerate(sorted(mass, reverse=True), start=1):
        acc += m
        if acc >= p * total:
            return k
    return len(mass)


@pytest.mark.parametrize(
    "mass,p,expected",
    [
        ([0.125, 0.5, 0.0625, 0.25, 0.0625], 0.9, 4),  # 0.5 + 0.25 + 0.125 = 0.875 < 0.9 <= 0.9375
        ([0.0625, 0.375, 0.0625, 0.25, 0.125, 0.125], 0.875, 4),  # reaches exactly 0.875 with 4 tokens
        ([0.5, 0.25, 0.125, 0.125], 0.75, 2),  # reaching exactly the fraction is enough
        ([0.97, 0.01, 0.01, 0.01], 0.9, 1),
        ([0.25, 0.25, 0.25, 0.25], 0.9, 4),
    ],
)
def test_cls_attention_coverage_budget(mass, p, expected):
    assert naive_coverage_count(mass, p) == expected
    rows = torch.tensor([mass])
    x = randn(11, len(mass), 4)
    res = compress("cls_attention", x, cls_attn=rows, budget=f"coverage:{p}")
    check_selection(res, x, naive_cls_attention(rows, expected))


# ----------------------------------------------------------------------------------------------- visionzip


def naive_visionzip(scores: list[float], metric: torch.Tensor, k: int, fraction: float = 10 / 64) -> list[int]:
    n = len(scores)
    contextual = math.floor(k * fraction + 0.5)
    dominant = k - contextual
    if dominant < 1:
        dominant, contextual = 1, k - 1
    dom = top(scores, dominant)
    rest = [i for i in range(n) if i not in dom]
    rep = [-1] * n
    for i in dom:
        rep[i] = i
    if contextual > 0 and rest:
        step = max(1, len(rest) // contextual)
        targets = rest[::step][:contextual]
        for i in rest:
            if i in targets:
                rep[i] = i
            else:
                sims = {t: cosine(metric[i], metric[t]) for t in targets}
                rep[i] = argmax_first(sims, targets)
    return rep


@pytest.mark.parametrize(
    "seed,n,budget,with_keys,fraction",
    [
        (0, 36, {"count": 8}, True, 10 / 64),  # 7 dominant + 1 contextual
        (1, 36, {"count": 12}, True, 0.25),  # 9 + 3
        (2, 30, {"ratio": 0.4}, False, 0.25),  # 12 -> 9 + 3
        (3, 24, {"count": 10}, True, 0.5),  # 5 + 5
        (4, 40, {"count": 16}, False, 10 / 64),  # 13 + 3 (round(2.5) half up)
    ],
)
def test_visionzip_vs_naive(seed, n, budget, with_keys, fraction):
    x = randn(seed, n, 8)
    keys = randn(seed + 50, n, 6) if with_keys else None
    rows = attention(seed + 100, 1, n)
    res = compress("visionzip", x, cls_attn=rows, keys=keys, contextual_fraction=fraction, **budget)
    metric = keys if with_keys else x
    rep = naive_visionzip(rows[0].tolist(), metric, budget_k(n, **budget), fraction)
    check_reps(res, x, rep)


def test_visionzip_contextual_targets_by_hand():
    # 10 tokens, K = 4 with fraction 0.5: dominant = top-2 by attention = {3, 7}.
    # Remaining (raster order) = [0, 1, 2, 4, 5, 6, 8, 9], R = 8, C = 2, stride 4 -> targets 0 and 5.
    rows = torch.tensor([[0.01, 0.02, 0.03, 0.40, 0.04, 0.05, 0.06, 0.30, 0.05, 0.04]])
    left, right = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    keys = torch.stack([left, left, right, left, left, right, right, left, right, left]).float()
    keys = keys + 0.01 * randn(12, 10, 2).abs()
    x = randn(13, 10, 4)
    res = compress("visionzip", x, cls_attn=rows, keys=keys, count=4, contextual_fraction=0.5)
    rep = [0, 0, 5, 3, 0, 5, 5, 7, 5, 0]
    assert naive_visionzip(rows[0].tolist(), keys, 4, 0.5) == rep
    check_reps(res, x, rep)


# ----------------------------------------------------------------------------------------------- prumerge


def naive_iqr_outliers(scores: list[float]) -> list[int]:
    q1, q3 = np.percentile(np.asarray(scores, dtype=np.float64), [25, 75])
    fence = q3 + 1.5 * (q3 - q1)
    out = [i for i, s in enumerate(scores) if s > fence]
    return out if out else top(scores, 1)


def merge_into_nearest(keep: list[int], metric: torch.Tensor, n: int) -> list[int]:
    rep = [-1] * n
    for i in range(n):
        if i in keep:
            rep[i] = i
        else:
            sims = {j: cosine(metric[i], metric[j]) for j in keep}
            rep[i] = argmax_first(sims, keep)
    return rep


@pytest.mark.parametrize("seed,n,with_keys", [(0, 36, True), (1, 40, False), (2, 25, True), (3, 30, True)])
def test_prumerge_adaptive_vs_naive(seed, n, with_keys):
    x = randn(seed, n, 8)
    keys = randn(seed + 50, n, 5) if with_keys else None
    rows = torch.softmax(randn(seed + 100, 1, n) * 3, dim=-1)
    res = compress("prumerge", x, cls_attn=rows, keys=keys)
    keep = naive_iqr_outliers(rows[0].tolist())
    check_reps(res, x, merge_into_nearest(keep, keys if with_keys else x, n))


def test_prumerge_single_obvious_outlier():
    scores = [0.05, 0.06, 0.04, 0.05, 0.07, 0.05, 0.06, 0.9, 0.05, 0.04, 0.06, 0.05]
    assert naive_iqr_outliers(scores) == [7]
    x = randn(14, 12, 6)
    res = compress("prumerge", x, cls_attn=torch.tensor([scores]))
    assert res.index == [7] and res.sizes == [12]
    torch.testing.assert_close(res.features[0], x.mean(dim=0), atol=1e-5, rtol=1e-5)


def test_prumerge_iqr_uses_linear_interpolation():
    # n = 6: numpy linear percentiles Q1 = s(1.25), Q3 = s(3.75) between sorted values.
    scores = [0.0, 1.0, 2.0, 3.0, 4.0, 12.0]
    # Q1 = 1.25, Q3 = 3.75, IQR = 2.5, fence = 7.5 -> only 12 is an outlier
    assert naive_iqr_outliers(scores) == [5]
    scores = [0.0, 1.0, 2.0, 3.0, 4.0, 8.0, 8.4]
    # sorted n = 7: Q1 = s(1.5) = 1.5, Q3 = s(4.5) = 6.0, IQR 4.5, fence 12.75 -> no outliers -> top-1
    assert naive_iqr_outliers(scores) == [6]
    scores = [1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 10.0, 11.0]
    # Q1 = 1, Q3 = s(5.25) = 3 + 0.25 * 7 = 4.75, fence = 10.375 -> only 11 (index 7)
    assert naive_iqr_outliers(scores) == [7]
    x = randn(15, 8, 4)
    res = compress("prumerge", x, cls_attn=torch.tensor([scores]) / 30, merge=False)
    check_selection(res, x, [7])


@pytest.mark.parametrize("seed,n,budget", [(0, 36, {"ratio": 0.25}), (1, 20, {"count": 3}), (2, 30, {"count": 7})])
def test_prumerge_fixed_budget_keeps_topk_by_attention(seed, n, budget):
    x = randn(seed, n, 8)
    keys = randn(seed + 50, n, 5)
    rows = attention(seed + 100, 1, n)
    res = compress("prumerge", x, cls_attn=rows, keys=keys, **budget)
    keep = top(rows[0].tolist(), budget_k(n, **budget))
    check_reps(res, x, merge_into_nearest(keep, keys, n))


# ----------------------------------------------------------------------------------------------- prumerge_plus


def lattice_9x9_of_81() -> list[int]:
    """9 spatially uniform tokens of a 9x9 frame: the centres (offset 1) of its 3x3 cells."""
    return [y * 9 + c for y in (1, 4, 7) for c in (1, 4, 7)]


def outlier_scores(outliers: list[int], n: int, seed: int) -> list[float]:
    """Background scores in [0.01, 0.02) with a few clear outliers (0.5, 0.4, ...)."""
    g = torch.Generator().manual_seed(seed)
    scores = (0.01 + 0.01 * torch.rand(n, generator=g)).tolist()
    for rank, i in enumerate(outliers):
        scores[i] = 0.5 - 0.1 * rank
    return scores


@pytest.mark.parametrize(
    "outliers",
    [
        [0, 20, 80],  # no overlap with the lattice: 3 + 9 tokens
        [10, 40, 33],  # 10 and 40 are lattice points: 3 + 7 tokens
    ],
)
def test_prumerge_plus_adaptive_vs_naive(outliers):
    n = 81
    scores = outlier_scores(outliers, n, seed=16)
    keep_outliers = naive_iqr_outliers(scores)
    assert sorted(keep_outliers) == sorted(outliers)
    # uniform_factor 3 -> round(3 * 3) = 9 uniform tokens: an exact 3x3 lattice of the 9x9 frame
    keep = keep_outliers + [u for u in lattice_9x9_of_81() if u not in keep_outliers]
    x = randn(17, n, 6)
    keys = randn(18, n, 5)
    res = compress("prumerge_plus", x, grid=(1, 9, 9), cls_attn=torch.tensor([scores]), keys=keys)
    check_reps(res, x, merge_into_nearest(keep, keys, n))


@pytest.mark.parametrize(
    "top_tokens",
    [
        [0, 20, 80],  # off the lattice: 3 by attention + 9 uniform
        [10, 20, 80],  # 10 is a lattice point: topped up with the 4th best by attention
    ],
)
def test_prumerge_plus_count_vs_naive(top_tokens):
    # count=12 with uniform_factor 3: round(12 / 4) = 3 top-attention tokens, then uniform picks for the other 9
    # (an exact 3x3 lattice of the 9x9 frame), then the next tokens by attention if some picks were already kept.
    n, k = 81, 12
    scores = outlier_scores(top_tokens, n, seed=19)
    by_attention = top(scores, n)
    keep = by_attention[:3]
    keep += [u for u in lattice_9x9_of_81() if u not in keep]
    keep += [i for i in by_attention if i not in keep][: k - len(keep)]
    assert len(keep) == k
    x = randn(20, n, 6)
    res = compress("prumerge_plus", x, grid=(1, 9, 9), cls_attn=torch.tensor([scores]), count=k)
    check_reps(res, x, merge_into_nearest(keep, x, n))


@pytest.mark.parametrize("seed,k", [(0, 12), (1, 8), (2, 20)])
def test_prumerge_plus_count_keeps_top_attention_and_merges_into_nearest(seed, k):
    # Whatever the uniform picks are: exactly K kept, the round(K / 4) best by attention among them,
    # and every other token in the slot of its most similar kept token (keys).
    n = 81
    x = randn(seed, n, 6)
    keys = randn(seed + 50, n, 5)
    rows = attention(seed + 100, 1, n)
    res = compress("prumerge_plus", x, grid=(1, 9, 9), cls_attn=rows, keys=keys, count=k)
    assert len(res.index) == k
    assert set(top(rows[0].tolist(), math.floor(k / 4 + 0.5))) <= set(res.index)
    check_reps(res, x, merge_into_nearest(res.index, keys, n))


# ----------------------------------------------------------------------------------------------- divprune


def naive_divprune(x: torch.Tensor, k: int) -> list[int]:
    n = len(x)
    sim = cosine_matrix(x)
    dist = [[1.0 - sim[i][j] for j in range(n)] for i in range(n)]
    nearest = {i: min(dist[i][j] for j in range(n) if j != i) for i in range(n)}
    chosen = [argmax_first(nearest, range(n))]
    while len(chosen) < k:
        rest = [j for j in range(n) if j not in chosen]
        score = {j: min(dist[s][j] for s in chosen) for j in rest}
        chosen.append(argmax_first(score, rest))
    return chosen


@pytest.mark.parametrize("seed,n,d,ratio", [(0, 20, 8, 0.3), (1, 36, 4, 0.25), (2, 12, 16, 0.5), (3, 40, 6, 0.1)])
def test_divprune_vs_naive(seed, n, d, ratio):
    x = randn(seed, n, d)
    res = compress("divprune", x, ratio=ratio)
    check_selection(res, x, naive_divprune(x, budget_k(n, ratio=ratio)))


def test_divprune_never_keeps_two_duplicates():
    # tokens 1, 4 and 6 are the same direction; with K = number of distinct directions, only one of them is kept
    base = randn(21, 6, 8)
    x = torch.stack([base[0], base[1], base[2], base[3], base[1], base[4], base[1], base[5]])
    res = compress("divprune", x, count=6)
    kept = set(res.index)
    assert len(kept & {1, 4, 6}) == 1
    assert {0, 2, 3, 5, 7} <= kept
    check_selection(res, x, naive_divprune(x, 6))


def test_divprune_picks_orthogonal_outlier_first():
    g = torch.Generator().manual_seed(22)
    cluster = torch.tensor([1.0, 0.0, 0.0, 0.0]) + 0.05 * torch.randn(7, 4, generator=g)
    cluster[:, 3] = 0.0
    outlier = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    x = torch.cat([cluster[:4], outlier, cluster[4:]])  # outlier at index 4
    assert naive_divprune(x, 1) == [4]
    res = compress("divprune", x, count=1)
    check_selection(res, x, [4])
    res = compress("divprune", x, count=3)
    check_selection(res, x, naive_divprune(x, 3))
    assert 4 in res.index


# ----------------------------------------------------------------------------------------------- dart


def naive_dart(x, k, pivots, allocation, keys=None, text=None, text_pivots=0) -> list[int]:
    n = len(x)
    source = keys if keys is not None else x
    l1 = [float(source[i].float().abs().sum()) for i in range(n)]
    image_pivots = top(l1, pivots)
    pivot_vectors = [x[p] for p in image_pivots]
    if text is not None and text_pivots > 0:
        text_l1 = [float(text[t].float().abs().sum()) for t in range(len(text))]
        pivot_vectors += [text[t] for t in top(text_l1, text_pivots)]
    pool = [i for i in range(n) if i not in image_pivots]
    sim = {i: [cosine(x[i], v) for v in pivot_vectors] for i in pool}
    remaining = k - pivots
    if allocation == "max":
        duplication = [max(sim[i]) if i in sim else math.inf for i in range(n)]
        return image_pivots + top([-d for d in duplication], remaining, among=pool)
    picks = []
    m = len(pivot_vectors)
    for p in range(m):
        share = remaining // m + (1 if p < remaining % m else 0)
        candidates = [i for i in pool if i not in picks]
        picks += sorted(candidates, key=lambda i: (sim[i][p], i))[:share]
    return image_pivots + picks


DART_CASES = [
    (0, 36, {"ratio": 0.3}, 4, True),  # 11 = 4 pivots + 7 (shares 2, 2, 2, 1)
    (1, 30, {"count": 9}, 3, False),  # 3 + 6 (shares 2, 2, 2)
    (2, 24, {"count": 10}, 2, True),  # 2 + 8 (shares 4, 4)
    (3, 40, {"ratio": 0.25}, 4, False),  # 4 + 6 (shares 2, 2, 1, 1)
]


@pytest.mark.parametrize("seed,n,budget,pivots,with_keys", DART_CASES)
def test_dart_max_vs_naive(seed, n, budget, pivots, with_keys):
    x = randn(seed, n, 8)
    keys = randn(seed + 50, n, 6) if with_keys else None
    res = compress("dart", x, keys=keys, pivots=pivots, allocation="max", **budget)
    check_selection(res, x, naive_dart(x, budget_k(n, **budget), pivots, "max", keys=keys))


@pytest.mark.parametrize(
    "seed,n,budget,pivots,with_keys",
    DART_CASES,
)
def test_dart_per_pivot_vs_naive(seed, n, budget, pivots, with_keys):
    x = randn(seed, n, 8)
    keys = randn(seed + 50, n, 6) if with_keys else None
    res = compress("dart", x, keys=keys, pivots=pivots, allocation="per_pivot", **budget)
    expected = naive_dart(x, budget_k(n, **budget), pivots, "per_pivot", keys=keys)
    check_selection(res, x, expected)
    if pivots > 1:
        max_rule = naive_dart(x, budget_k(n, **budget), pivots, "max", keys=keys)
        assert sorted(expected) != sorted(max_rule), "case should tell the two allocations apart"


def test_dart_pivots_follow_key_norm_not_feature_norm():
    n = 12
    x = randn(23, n, 4)
    x[5] *= 10.0  # largest feature norm, small key
    keys = torch.ones(n, 3)
    keys[9] *= 10.0  # largest key norm
    res = compress("dart", x, keys=keys, count=1, pivots=1)
    check_selection(res, x, [9])
    res = compress("dart", x, count=1, pivots=1)
    check_selection(res, x, [5])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dart_text_pivots_vs_naive(seed):
    n, d = 30, 8
    x = randn(seed, n, d)
    keys = randn(seed + 50, n, 6)
    text = randn(seed + 60, 7, d) * torch.linspace(0.5, 2.0, 7)[:, None]
    res = compress("dart", x, keys=keys, text=text, count=10, pivots=2, text_pivots=3)
    expected = naive_dart(x, 10, 2, "max", keys=keys, text=text, text_pivots=3)
    check_selection(res, x, expected)
    without_text = naive_dart(x, 10, 2, "max", keys=keys)
    assert sorted(expected) != sorted(without_text), "the text pivots should change this selection"


# ----------------------------------------------------------------------------------------------- tome


def naive_tome(metric: torch.Tensor, k: int) -> list[int]:
    """Repeated bipartite soft matching; returns the representative (final B token) of every token."""
    n = len(metric)
    reps = list(range(n))  # representative of each current group, in order
    members = [[i] for i in range(n)]
    vectors = [metric[i].double() for i in range(n)]
    sizes = [1] * n
    while len(reps) > k:
        now = len(reps)
        a_pos, b_pos = list(range(0, now, 2)), list(range(1, now, 2))
        r = min(now - k, len(a_pos))
        best = {}
        for a in a_pos:
            sims = {b: cosine(vectors[a], vectors[b]) for b in b_pos}
            target = argmax_first(sims, b_pos)
            best[a] = (sims[target], target)
        merged = sorted(a_pos, key=lambda a: (-best[a][0], a))[:r]
        for b in b_pos:
            incoming = [a for a in merged if best[a][1] == b]
            if incoming:
                total = sizes[b] + sum(sizes[a] for a in incoming)
                vectors[b] = (vectors[b] * sizes[b] + sum(vectors[a] * sizes[a] for a in incoming)) / total
                sizes[b] = total
                for a in incoming:
                    members[b] += members[a]
        stay = [p for p in range(now) if p not in merged]
        reps = [reps[p] for p in stay]
        members = [members[p] for p in stay]
        vectors = [vectors[p] for p in stay]
        sizes = [sizes[p] for p in stay]
    rep = [-1] * n
    for r_, group in zip(reps, members, strict=True):
        for i in group:
            rep[i] = r_
    return rep


@pytest.mark.parametrize(
    "seed,n,budget,with_keys",
    [
        (0, 16, {"count": 5}, False),  # several rounds: 16 -> 8 -> 5
        (1, 36, {"ratio": 0.25}, True),
        (2, 20, {"count": 13}, True),  # a single partial round
        (3, 30, {"count": 2}, False),
        (4, 11, {"count": 3}, True),  # odd lengths: |A| = |B| + 1
    ],
)
def test_tome_vs_naive(seed, n, budget, with_keys):
    x = randn(seed, n, 8)
    keys = randn(seed + 50, n, 6) if with_keys else None
    res = compress("tome", x, keys=keys, **budget)
    rep = naive_tome(keys if with_keys else x, budget_k(n, **budget))
    check_reps(res, x, rep)


def test_tome_one_round_by_hand():
    # A = {0, 2, 4}, B = {1, 3, 5}; 2 is an exact copy of 3 and 4 of 5, 0 is orthogonal to everything.
    e = torch.eye(4)
    x = torch.stack([e[0], e[1], e[2], e[2], e[3], e[3] + 0.1 * e[1]])
    res = compress("tome", x, count=4)
    rep = [0, 1, 3, 3, 5, 5]
    assert naive_tome(x, 4) == rep
    check_reps(res, x, rep)


# ----------------------------------------------------------------------------------------------- hiprune


def naive_hiprune(middle: list[float], deep: list[float], grid, k: int, alpha: float) -> list[int]:
    t, h, w = grid
    n_anchor = max(1, math.floor(k * alpha / 5 + 0.5))
    anchors = top(middle, n_anchor)
    kept = list(anchors)
    for a in anchors:
        f, y, c = a // (h * w), (a % (h * w)) // w, a % w
        for dy, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            yy, cc = y + dy, c + dc
            if 0 <= yy < h and 0 <= cc < w:
                j = f * h * w + yy * w + cc
                if j not in kept:
                    kept.append(j)
    assert len(kept) <= k, "the reference does not model cutting buffers to K"
    rest = [i for i in range(len(middle)) if i not in kept]
    return kept + top(deep, k - len(kept), among=rest)


@pytest.mark.parametrize(
    "seed,grid,budget,alpha",
    [
        (0, (1, 6, 6), {"count": 12}, 0.5),  # round(1.2) = 1 anchor
        (1, (1, 6, 6), {"count": 20}, 0.5),  # 2 anchors
        (2, (1, 6, 6), {"count": 10}, 0.1),  # max(1, round(0.2)) = 1 anchor
        (3, (2, 4, 4), {"count": 16}, 0.7),  # round(2.24) = 2 anchors, video
        (4, (2, 3, 5), {"ratio": 0.5}, 1.0),  # 15 -> 3 anchors
    ],
)
def test_hiprune_vs_naive(seed, grid, budget, alpha):
    n = math.prod(grid)
    x = randn(seed, n, 6)
    rows = attention(seed + 100, 2, n)
    res = compress("hiprune", x, grid=grid, cls_attn=rows, alpha=alpha, **budget)
    expected = naive_hiprune(rows[0].tolist(), rows[1].tolist(), grid, budget_k(n, **budget), alpha)
    check_selection(res, x, expected)


def test_hiprune_neighbours_do_not_wrap_rows_or_frames():
    # 6x6: the anchor is token 12 (row 2, column 0). Its left neighbour in flat order, 11, is on row 1 and must
    # not be a buffer; 11 also has the lowest deep score so it cannot come back as a register.
    n = 36
    middle = [0.01] * n
    middle[12] = 1.0
    deep = [0.02 + 0.001 * i for i in range(n)]
    deep[11] = 0.0
    x = randn(24, n, 4)
    rows = torch.tensor([middle, deep])
    res = compress("hiprune", x, grid=(1, 6, 6), cls_attn=rows, count=6, alpha=0.5)
    expected = [12, 6, 18, 13] + [35, 34]  # anchor, up/down/right, then the 2 best registers
    assert naive_hiprune(middle, deep, (1, 6, 6), 6, 0.5) == expected
    check_selection(res, x, expected)
    # video (2, 3, 3): anchor 9 is frame 1's top-left; 8 (previous frame, flat neighbour) is not adjacent
    n = 18
    middle = [0.01] * n
    middle[9] = 1.0
    deep = [0.02 + 0.001 * i for i in range(n)]
    deep[8] = deep[6] = deep[0] = 0.0
    x = randn(25, n, 4)
    rows = torch.tensor([middle, deep])
    res = compress("hiprune", x, grid=(2, 3, 3), cls_attn=rows, count=4, alpha=1.0)
    expected = [9, 12, 10, 17]
    assert naive_hiprune(middle, deep, (2, 3, 3), 4, 1.0) == expected
    check_selection(res, x, expected)
