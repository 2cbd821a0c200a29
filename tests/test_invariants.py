"""Registry-wide invariants: shapes, masks, assign/index/sizes, merge means, determinism, batching, dtypes."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import GRIDS, attention_rows, make_tokens

import vtc
from vtc.core.types import Compressed, VisualTokens

RATIOS = [0.1, 0.3, 1.0]


def compress(name: str, dtype=torch.float32, seed: int = 0, grids=GRIDS, **budget) -> tuple[VisualTokens, Compressed]:
    info = next(m for m in vtc.list_methods() if m.name == name)
    if not budget and not info.adaptive:
        budget = {"ratio": 0.3}
    compressor = vtc.build(name, **budget)
    tokens = make_tokens(grids, layers=attention_rows(compressor), dtype=dtype, seed=seed)
    return tokens, compressor(tokens)


def expected_count(name: str, grid: tuple[int, int, int], ratio: float) -> int | None:
    """The count a static method must keep; None for adaptive ones."""
    t, h, w = grid
    n = t * h * w
    return max(1, math.floor(ratio * n + 0.5))


def check_structure(tokens: VisualTokens, out: Compressed, exact_means: bool | None = None) -> None:
    """Every structural promise of `Compressed` for this input; slot features are checked to be their tokens'
    means unless the method declares its own slot features (``mean_slots=False``) or ``exact_means`` is False."""
    if exact_means is None:
        exact_means = next(m for m in vtc.list_methods() if m.name == out.method).mean_slots
    b, n_max, d = tokens.features.shape
    k_max = out.features.shape[1]
    assert out.features.shape == (b, k_max, d) and out.features.dtype == tokens.features.dtype
    for name in ("mask", "index", "sizes"):
        assert getattr(out, name).shape == (b, k_max)
    assert out.assign.shape == (b, n_max)
    assert int(out.counts.max()) == k_max
    for i in range(b):
        n, k = int(tokens.lengths[i]), int(out.counts[i])
        assert 1 <= k <= n
        assert out.mask[i, :k].all() and not out.mask[i, k:].any()
        index, sizes, assign = out.index[i, :k], out.sizes[i, :k], out.assign[i, :n]
        assert (out.index[i, k:] == -1).all() and (out.sizes[i, k:] == 0).all() and (out.assign[i, n:] == -1).all()
        assert (index[1:] > index[:-1]).all(), "indices sorted and unique"
        assert index.min() >= 0 and index.max() < n
        assert assign.min() >= -1 and assign.max() < k
        assert torch.equal(torch.bincount(assign[assign >= 0], minlength=k), sizes)
        assert (sizes >= 1).all()
        assert torch.equal(assign[index], torch.arange(k)), "each slot's representative lies in the slot"
        assert (out.features[i, k:] == 0).all()
        if exact_means:
            x = tokens.features[i, :n].double()
            for j in range(k):
                mean = x[assign == j].mean(0)
                tol = 1e-5 if tokens.features.dtype == torch.float32 else 1e-2
                assert torch.allclose(out.features[i, j].double(), mean, atol=tol, rtol=tol)
            single = sizes == 1
            assert torch.equal(out.features[i, :k][single], tokens.features[i, index[single]]), "pruned tokens copied"


def test_all_methods_registered():
    names = [m.name for m in vtc.list_methods()]
    expected = {"random", "uniform", "pool", "cls_attention", "visionzip", "prumerge", "prumerge_plus"}
    expected |= {"divprune", "dart", "tome", "hiprune", "tome_encoder", "fastv", "pyramiddrop"}
    assert expected <= set(names)
    stages = {"tome_encoder": "encoder", "fastv": "llm", "pyramiddrop": "llm"}
    for m in vtc.list_methods():
        assert m.stage == stages.get(m.name, "projector") and not m.trainable and m.paper


@pytest.mark.parametrize("ratio", RATIOS)
def test_structure_and_count(method_name, ratio):
    info = next(m for m in vtc.list_methods() if m.name == method_name)
    tokens, out = compress(method_name, ratio=ratio)
    check_structure(tokens, out)
    for i, grid in enumerate(GRIDS):
        assert out.info[i]["kept"] == int(out.counts[i])
        if info.static_count:
            assert int(out.counts[i]) == expected_count(method_name, grid, ratio)


@pytest.mark.parametrize("count", [1, 5, 1000])
def test_count_budget(method_name, count):
    info = next(m for m in vtc.list_methods() if m.name == method_name)
    tokens, out = compress(method_name, count=count)
    check_structure(tokens, out)
    if info.static_count:
        assert out.counts.tolist() == [min(count, t * h * w) for t, h, w in GRIDS]


def test_adaptive_default(method_name):
    info = next(m for m in vtc.list_methods() if m.name == method_name)
    if not info.adaptive:
        with pytest.raises(ValueError, match="needs a budget"):
            vtc.build(method_name)
        return
    tokens, out = compress(method_name)
    check_structure(tokens, out)


def test_deterministic(method_name):
    _, first = compress(method_name, seed=3)
    _, second = compress(method_name, seed=3)
    for name in ("features", "mask", "index", "assign", "sizes"):
        assert torch.equal(getattr(first, name), getattr(second, name))


def test_batch_equals_per_sample(method_name):
    tokens, out = compress(method_name, ratio=0.3)
    compressor = vtc.build(method_name, ratio=0.3)
    for i in range(tokens.batch_size):
        alone = compressor(tokens.sample(i))
        n, k = int(tokens.lengths[i]), int(out.counts[i])
        assert int(alone.counts[0]) == k
        assert torch.equal(alone.index[0], out.index[i, :k])
        assert torch.equal(alone.sizes[0], out.sizes[i, :k])
        assert torch.equal(alone.assign[0], out.assign[i, :n])
        assert torch.equal(alone.features[0], out.features[i, :k])


BATCHED_VARIANTS = {  # kwargs beyond the defaults whose batched path differs
    "dart": [{"allocation": "per_pivot"}, {"text_pivots": 2}, {"allocation": "per_pivot", "text_pivots": 2}],
    "visionzip": [{"metric": "features"}, {"contextual_fraction": 0.5}],
    "cdpruner": [{"negate_relevance": True}],
}


def batched_cases() -> list[tuple[str, dict]]:
    names = [m.name for m in vtc.list_methods() if m.batched]
    return [(n, kw) for n in names for kw in [{}, *BATCHED_VARIANTS.get(n, [])]]


def tied(tokens: vtc.VisualTokens) -> vtc.VisualTokens:
    """The same batch with scores and features rounded coarsely: many exact ties."""
    return vtc.VisualTokens(
        features=(tokens.features * 2).round() / 2, mask=tokens.mask, grid=tokens.grid,
        cls_attn=(tokens.cls_attn * 20).round() / 20, keys=(tokens.keys * 2).round() / 2,
        text=tokens.text, text_mask=tokens.text_mask, query_attn=(tokens.query_attn * 20).round() / 20,
    )


@pytest.mark.parametrize("name, kwargs", batched_cases())
@pytest.mark.parametrize("budget", [{"ratio": 0.3}, {"count": 5}, {"budget": "coverage:0.6"}, {"budget": "adaptive"}])
@pytest.mark.parametrize("ties", [False, True])
def test_batched_selection_equals_the_per_sample_one(name, kwargs, budget, ties):
    """A batched method's one call for the padded batch picks exactly what its per-sample select picks."""
    from vtc.core.selection import split_samples

    info = next(m for m in vtc.list_methods() if m.name == name)
    if budget.get("budget") == "coverage:0.6" and not info.score_based:
        pytest.skip("coverage budgets are for score-based methods")
    if budget.get("budget") == "adaptive" and not info.adaptive:
        pytest.skip("an adaptive budget is for adaptive methods")
    compressor = vtc.build(name, **budget, **kwargs)
    tokens = make_tokens(GRIDS, dim=16, layers=max(1, len(compressor.encoder_layers)))
    tokens = tied(tokens) if ties else tokens
    batched = compressor.config.select_batch(tokens, compressor.budget)
    for sample, together in zip(split_samples(tokens), batched, strict=True):
        alone = compressor.config.select(sample, compressor.budget)
        assert torch.equal(together.rep, alone.rep) and together.info == alone.info


def test_every_method_with_a_kernel_is_batched():
    """Per-sample loops remain only where selection is index arithmetic (no kernel, nothing to batch): the
    grid baselines (pool, frames, temporal_pool, uniform), random, and the per-frame video methods (vidcom2,
    dycoke, fastvid, flashvid, framefusion, prunevid, holitom, quota: per-frame scores and sorts,
    per-segment merges);
    tome_encoder runs inside the tower's blocks on the whole batch already."""
    unbatched = {m.name for m in vtc.list_methods() if not m.batched}
    assert unbatched == {"pool", "frames", "temporal_pool", "random", "uniform", "vidcom2", "dycoke",
                         "fastvid", "flashvid", "framefusion", "prunevid", "holitom", "quota", "tome_encoder"}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(method_name, dtype):
    tokens, out = compress(method_name, dtype=dtype, ratio=0.3)
    check_structure(tokens, out)
    info = next(m for m in vtc.list_methods() if m.name == method_name)
    if info.static_count:
        assert out.counts.tolist() == [expected_count(method_name, g, 0.3) for g in GRIDS]


def test_pool_bilinear_structure():
    compressor = vtc.build("pool", ratio=0.25, mode="bilinear")
    tokens = make_tokens()
    out = compressor(tokens)
    check_structure(tokens, out, exact_means=False)


@pytest.mark.parametrize("name", [m.name for m in vtc.list_methods() if m.score_based])
def test_coverage_grows_with_fraction(name):
    counts = []
    for fraction in (0.2, 0.5, 0.9, 1.0):
        tokens, out = compress(name, budget=f"coverage:{fraction}")
        check_structure(tokens, out)
        counts.append(out.counts)
    for low, high in zip(counts, counts[1:], strict=False):
        assert (low <= high).all()
    assert (counts[0] < counts[-1]).any()


def test_single_token_and_keep_all(method_name):
    """Edge budgets: one token kept, and ratio 1.0 keeps every token (static methods)."""
    info = next(m for m in vtc.list_methods() if m.name == method_name)
    if info.static_count:
        tokens, out = compress(method_name, ratio=1.0)
        assert out.counts.tolist() == tokens.lengths.tolist()
        for i in range(tokens.batch_size):
            n = int(tokens.lengths[i])
            assert torch.equal(out.index[i, :n], torch.arange(n))
            assert torch.equal(out.features[i, :n], tokens.features[i, :n])
    tokens, out = compress(method_name, count=1, grids=[(1, 1, 1), (1, 2, 3)])
    check_structure(tokens, out)
