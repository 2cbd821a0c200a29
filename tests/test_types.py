"""Bad inputs raise ValueError naming the argument and what was expected."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import make_tokens

import vtc
from vtc.core.budget import Budget, coverage_count


def features(b=2, n=16, d=4):
    return torch.randn(b, n, d)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"features": torch.randn(16, 4)}, r"features: expected a 3-D tensor"),
        ({"features": torch.randint(0, 3, (2, 16, 4))}, r"features: expected a floating dtype"),
        ({"features": [[1.0]]}, r"features: expected a torch.Tensor"),
        ({"features": torch.randn(0, 16, 4)}, r"features: expected at least one sample"),
        ({"mask": torch.ones(2, 15, dtype=torch.bool)}, r"mask: expected shape \(2, 16\)"),
        ({"mask": torch.full((2, 16), 0.5)}, r"mask: expected a bool tensor"),
        ({"mask": torch.tensor([[True] * 8 + [False, True] + [False] * 6, [True] * 16])}, r"mask: .*prefix.*row 0"),
        ({"mask": torch.tensor([[False] * 16, [True] * 16])}, r"mask: expected at least one valid token.*row 0"),
        ({"grid": torch.tensor([[1, 4, 4], [1, 2, 4]])}, r"grid: expected t\*h\*w equal to .*16 of sample 1"),
        ({"grid": torch.tensor([1, 4, 4])}, r"grid: expected shape \[B=2, 3\]"),
        ({"grid": torch.tensor([[1.0, 4, 4], [1, 4, 4]])}, r"grid: expected an integer tensor"),
        ({"grid": torch.tensor([[0, 4, 4], [1, 4, 4]])}, r"grid: expected positive"),
        ({"cls_attn": torch.rand(2, 16)}, r"cls_attn: expected a 3-D tensor"),
        ({"cls_attn": torch.rand(2, 1, 15)}, r"cls_attn: expected shape \[B=2, L>=1, N=16\]"),
        ({"cls_attn": -torch.rand(2, 1, 16)}, r"cls_attn: expected non-negative"),
        ({"keys": torch.randn(2, 15, 3)}, r"keys: expected shape \[B=2, N=16, Dk\]"),
        ({"text": torch.randn(3, 5, 4)}, r"text: expected shape \[B=2, T, Dt\]"),
        ({"text_mask": torch.ones(2, 5, dtype=torch.bool)}, r"text_mask: expected None when text is None"),
    ],
)
def test_visual_tokens_validation(kwargs, pattern):
    args = {"features": features(), **kwargs}
    with pytest.raises(ValueError, match=pattern):
        vtc.VisualTokens(**args)


@pytest.mark.parametrize("field", ["features", "keys", "cls_attn"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_values_are_rejected(field, bad):
    args = {"features": features(), "keys": torch.randn(2, 16, 3), "cls_attn": torch.rand(2, 1, 16)}
    where = (1, 0, 3) if field == "cls_attn" else (1, 3, 0)
    args[field][where] = bad
    with pytest.raises(ValueError, match=rf"{field}: expected finite values"):
        vtc.VisualTokens(**args)


def test_non_finite_padding_is_ignored():
    x = features()
    x[1, 12:] = float("nan")
    mask = torch.arange(16)[None, :] < torch.tensor([[16], [12]])
    tokens = vtc.VisualTokens(x, mask=mask)
    out = vtc.build("divprune", ratio=0.5)(tokens)
    assert out.counts.tolist() == [8, 6] and torch.isfinite(out.features).all()


def test_defaults_fill_mask_and_grid():
    tokens = vtc.VisualTokens(torch.randn(1, 12, 4))
    assert tokens.mask.all() and tokens.grid.tolist() == [[1, 1, 12]]
    assert vtc.VisualTokens(torch.randn(1, 9, 4)).grid.tolist() == [[1, 3, 3]]
    ints = vtc.VisualTokens(torch.randn(1, 4, 2), mask=torch.tensor([[1, 1, 0, 0]]))
    assert ints.mask.dtype == torch.bool and ints.lengths.tolist() == [2]


@pytest.mark.parametrize(
    "budget, pattern",
    [
        ({"ratio": 0}, r"ratio: expected a number in \(0, 1\], got 0"),
        ({"ratio": 1.5}, r"ratio: expected a number in \(0, 1\]"),
        ({"ratio": float("nan")}, r"ratio: expected a number in \(0, 1\]"),
        ({"ratio": True}, r"ratio: expected a number"),
        ({"count": 0}, r"count: expected an integer >= 1, got 0"),
        ({"count": 2.5}, r"count: expected an integer >= 1"),
        ({"ratio": 0.5, "count": 3}, r"budget: expected one of ratio=, count= or budget=, got ratio and count"),
        ({"budget": "coverage:1.2"}, r"coverage: expected a fraction in \(0, 1\]"),
        ({"budget": "percent:3"}, r"budget: expected 'ratio:R', 'count:C', 'coverage:P' or 'adaptive'"),
        ({"budget": "count:x"}, r"budget: expected a number after 'count:'"),
        ({"budget": 0.3}, r"budget: expected a string"),
    ],
)
def test_bad_budgets(budget, pattern):
    with pytest.raises(ValueError, match=pattern):
        vtc.build("random", **budget)


def test_budget_strings_and_rounding():
    assert Budget.parse(budget="ratio:0.25") == Budget("ratio", 0.25)
    assert Budget.parse(budget="count:64") == Budget("count", 64)
    assert Budget("ratio", 0.5).resolve(5) == 3  # round half up
    assert Budget("ratio", 0.01).resolve(10) == 1  # at least one
    assert Budget("count", 64).resolve(10) == 10
    assert str(Budget.parse(budget="coverage:0.9")) == "coverage:0.9"


def test_coverage_count_hand_computed():
    mass = torch.tensor([0.05, 0.5, 0.3, 0.1, 0.05])
    assert coverage_count(mass, 0.5) == 1
    assert coverage_count(mass, 0.8) == 2
    assert coverage_count(mass, 0.81) == 3
    assert coverage_count(mass, 1.0) == 5
    assert coverage_count(torch.zeros(4), 0.5) == 2  # no mass: spread evenly


def test_coverage_and_adaptive_need_the_right_method():
    with pytest.raises(ValueError, match=r"divprune: budget 'coverage:P' needs a score-based method: .*cls_attention"):
        vtc.build("divprune", budget="coverage:0.9")
    with pytest.raises(ValueError, match=r"divprune: budget 'adaptive' needs an adaptive method: .*prumerge"):
        vtc.build("divprune", budget="adaptive")


def test_unknown_method_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown method 'nope'; known methods: .*divprune.*visionzip"):
        vtc.build("nope", ratio=0.5)


def test_unknown_kwarg_lists_accepted():
    with pytest.raises(ValueError, match=r"visionzip: unknown argument\(s\) dominant; accepted: contextual_fraction"):
        vtc.build("visionzip", ratio=0.5, dominant=3)
    with pytest.raises(ValueError, match=r"divprune: unknown argument\(s\) seed; accepted: none"):
        vtc.build("divprune", ratio=0.5, seed=1)


@pytest.mark.parametrize(
    "name, kwargs, pattern",
    [
        ("pool", {"mode": "max"}, r"mode: expected 'avg' or 'bilinear'"),
        ("random", {"seed": "a"}, r"seed: expected an integer"),
        ("visionzip", {"contextual_fraction": 1.0}, r"contextual_fraction: expected a number in \[0, 1\)"),
        ("visionzip", {"metric": "dot"}, r"metric: expected one of"),
        ("hiprune", {"layers": (3,)}, r"layers: expected \(middle, deep\)"),
        ("cls_attention", {"layers": ()}, r"layers: expected a layer index"),
        ("dart", {"pivots": 0}, r"pivots: expected an integer >= 1"),
        ("dart", {"allocation": "min"}, r"allocation: expected 'max' or 'per_pivot'"),
        ("prumerge_plus", {"uniform_factor": -1}, r"uniform_factor: expected a number in \[0, 100\]"),
    ],
)
def test_bad_method_arguments(name, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        vtc.build(name, ratio=0.5, **kwargs)


def test_missing_signal_is_named():
    tokens = vtc.VisualTokens(features())
    with pytest.raises(ValueError, match=r"visionzip: needs signal\(s\) cls_attn .*methods that need none: .*divprune"):
        vtc.build("visionzip", ratio=0.5)(tokens)
    with pytest.raises(ValueError, match=r"tome: metric='keys' needs signal keys"):
        vtc.build("tome", ratio=0.5, metric="keys")(tokens)
    with pytest.raises(ValueError, match=r"dart: text_pivots > 0 needs signal text"):
        vtc.build("dart", ratio=0.5, text_pivots=2)(tokens)


def test_wrong_number_of_attention_rows():
    tokens = make_tokens(layers=1)
    with pytest.raises(ValueError, match=r"cls_attn: expected 2 row\(s\), one per layer in layers=\(8, -2\), got 1"):
        vtc.build("hiprune", ratio=0.5)(tokens)


def test_compressor_rejects_raw_tensors():
    with pytest.raises(ValueError, match=r"tokens: expected vtc.VisualTokens, got Tensor"):
        vtc.build("random", ratio=0.5)(features())


def test_import_is_light():
    heavy = "('triton', 'gradio', 'decord')"
    code = f"import sys, vtc; vtc.list_methods(); print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_torchvision_shim_lets_transformers_video_processors_run():
    """The test set-up makes PyPI's CUDA torchvision importable on CPU torch (tests/torchvision_shim.py)."""
    pytest.importorskip("torchvision")
    import numpy as np
    from transformers import Qwen2VLVideoProcessor

    frames = np.zeros((4, 56, 56, 3), dtype=np.uint8)
    out = Qwen2VLVideoProcessor(cap_pixels_per_frame=False)(videos=[frames], return_tensors="pt")
    (t, h, w), = out["video_grid_thw"].tolist()
    assert t == 2 and out["pixel_values_videos"].shape[0] == t * h * w  # 4 frames, temporal patches of 2
