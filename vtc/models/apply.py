"""``vtc.apply``: patch a transformers VLM in place so that its visual tokens are compressed.

One method, or a chain of methods in pipeline order: at most one per stage, ``encoder`` (inside the
vision tower, e.g. ``("tome", {"r": 8})``), ``projector`` (between tower and LLM, e.g. ``divprune``),
``llm`` (inside the language model, e.g. ``fastv``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vtc.core.registry import STAGES, Compressor, build
from vtc.models.patch import Patch
from vtc.models.registry import adapter_for

MethodSpec = str | Compressor | tuple[str, dict[str, Any]]


def _one(spec: Any, kwargs: dict[str, Any]) -> Compressor:
    if isinstance(spec, Compressor):
        if kwargs:
            raise ValueError(f"kwargs: a built compressor takes none, got {', '.join(sorted(kwargs))}")
        return spec
    if isinstance(spec, str):
        return build(spec, **kwargs)
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str) and isinstance(spec[1], dict):
        return build(spec[0], **spec[1])
    raise ValueError(
        "method: expected a method name, a built compressor, a (name, kwargs) pair, or a list of those for a "
        f"chain; got {type(spec).__name__}"
    )


def build_chain(method: MethodSpec | Sequence[MethodSpec], kwargs: dict[str, Any]) -> dict[str, Compressor]:
    """The compressors of ``method`` by stage, checked: at most one per stage, in pipeline order."""
    if isinstance(method, list):
        if kwargs:
            raise ValueError(f"kwargs: a chain takes its arguments per method, got {', '.join(sorted(kwargs))}")
        if not method:
            raise ValueError("method: an empty chain; give at least one method")
        compressors = [_one(spec, {}) for spec in method]
    else:
        compressors = [_one(method, kwargs)]
    stages: dict[str, Compressor] = {}
    for c in compressors:
        stage = c.info.stage
        if stage in stages:
            raise ValueError(
                f"method: the chain has two {stage}-stage methods ({stages[stage].info.name}, {c.info.name}); "
                "give at most one per stage"
            )
        if any(STAGES.index(s) > STAGES.index(stage) for s in stages):
            order = " -> ".join(STAGES)
            raise ValueError(f"method: chain out of pipeline order ({order}): {c.info.name} ({stage}) comes too late")
        stages[stage] = c
    return stages


def apply(
    model: Any, method: MethodSpec | list[MethodSpec], *, cls_substitute: str | None = None, **kwargs: Any
) -> Any:
    """Patch ``model`` with ``method``: a registered name plus budget/kwargs, a built compressor, or a
    chain ``[("tome", {"r": 8}), ("divprune", {"ratio": 0.5}), ("fastv", {"ratio": 0.5, "layer": 2})]``.

    ``cls_substitute="received"`` lets methods that need [CLS] attention run on towers without a
    [CLS] (SigLIP, Qwen's ViT) on the attention each token receives instead; without it they raise.
    Returns the handle: ``.stats`` (tokens before/after per sample and per stage, per forward),
    ``.remove()``, and ``with vtc.apply(...):`` which removes the patch on exit.
    """
    stages = build_chain(method, kwargs)
    return Patch(model, adapter_for(model, cls_substitute), stages)
