"""`remove()` puts back everything `vtc.apply` touched: the model's whole state (every module's attributes,
hooks, parameters and buffers, and attributes such as Qwen's ``rope_deltas``) equals its state before
`apply`, after a patched forward and generate, for every adapter family and every stage it supports."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import vtc

CONTAINERS = (dict, list, tuple, set)


def describe(value: Any) -> Any:
    """A comparable picture of an attribute: plain values as they are, containers by content, objects by identity."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return (type(value).__name__, {k: describe(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [describe(v) for v in value])
    return (type(value).__name__, id(value))


def state(model: torch.nn.Module) -> dict[str, Any]:
    """Every module's attributes (hook dicts, parameters, buffers and children included), by module name."""
    modules = {name: {key: describe(value) for key, value in vars(module).items()} for name, module in
               model.named_modules()}
    return modules | {"<config>": {key: describe(value) for key, value in vars(model.config).items()}}


def use(model, inputs, generate_kwargs) -> None:
    with torch.no_grad():
        model(**inputs)
        model.generate(**inputs, max_new_tokens=2, do_sample=False, **(generate_kwargs or {}))


def check_restored(model, chain, inputs, generate_kwargs=None) -> None:
    use(model, inputs, generate_kwargs)  # what transformers sets up lazily at a first call is not the patch's doing
    before = state(model)
    with vtc.apply(model, chain) as handle:
        use(model, inputs, generate_kwargs)
        assert handle.stats and state(model) != before  # the patch did touch the model
    after = state(model)
    changed = {name: [k for k in set(before[name]) | set(after.get(name, {})) if before[name].get(k) !=
                      after.get(name, {}).get(k)] for name in before}
    assert {name: keys for name, keys in changed.items() if keys} == {}
    assert set(after) == set(before)


def test_llava_every_stage():
    from test_llm_stage import batch_two, llava

    pixels = torch.randn(3, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    chain = [("tome", {"r": 4}), ("divprune", {"ratio": 0.5}), ("fastv", {"ratio": 0.5, "layer": 1})]
    check_restored(llava(), chain, batch_two(pixels))


@pytest.mark.parametrize("version", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_qwen(version):
    from test_apply_qwen import case
    from tiny_qwen import END, IMAGE, START, VIDEO, tiny_qwen

    model = tiny_qwen(version, text_layers=4)
    inputs, _ = case(model, version, "batch")
    chain = [("visionzip", {"ratio": 0.5}), ("fastv", {"ratio": 0.5, "layer": 2})]
    with pytest.raises(ValueError, match="no \\[CLS\\] token"):  # Qwen's ViT: visionzip needs the substitute
        vtc.apply(model, chain)
    chain[0] = ("divprune", {"ratio": 0.5})
    check_restored(model, chain, inputs, {"suppress_tokens": [IMAGE, VIDEO, START, END]})


@pytest.mark.parametrize(("model_type", "modality"), [("llava_next", "image"), ("llava_onevision", "video"),
                                                      ("llava_next_video", "video")])
def test_llava_next_family(model_type, modality):
    from test_apply_llava_next import TOKEN_IDS, batch
    from tiny_llava_next import tiny

    ids, mask, media = batch(model_type, modality)
    chain = [("divprune", {"ratio": 0.5}), ("fastv", {"ratio": 0.5, "layer": 0})]
    check_restored(tiny(model_type), chain, {"input_ids": ids, "attention_mask": mask, **media},
                   {"suppress_tokens": list(TOKEN_IDS.values())})
