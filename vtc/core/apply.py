"""``vtc.apply``: patch a transformers VLM in place so that its visual tokens are compressed."""

from __future__ import annotations

from typing import Any

from vtc.core.registry import Compressor, build


def apply(model: Any, method: str | Compressor, *, cls_substitute: str | None = None, **kwargs: Any) -> Any:
    """Patch ``model`` with ``method`` (a registered name plus budget/kwargs, or a built compressor).

    ``cls_substitute="received"`` lets methods that need [CLS] attention run on towers without a
    [CLS] (SigLIP, Qwen's ViT) on the attention each token receives instead; without it they raise.
    Returns the handle: ``.stats`` (tokens before/after per sample, per forward), ``.remove()``, and
    ``with vtc.apply(...):`` which removes the patch on exit.
    """
    from vtc.models import adapter_for
    from vtc.models.base import Patch

    if isinstance(method, Compressor):
        if kwargs:
            raise ValueError(f"kwargs: a built compressor takes none, got {', '.join(sorted(kwargs))}")
        compressor = method
    elif isinstance(method, str):
        compressor = build(method, **kwargs)
    else:
        raise ValueError(
            f"method: expected a method name or a built compressor, got {type(method).__name__} "
            "(chains of several methods come with the encoder and LLM stages)"
        )
    if compressor.info.stage != "projector":
        raise ValueError(
            f"method: {compressor.info.name} runs at stage {compressor.info.stage!r}; vtc.apply runs "
            "projector-stage methods"
        )
    return Patch(model, adapter_for(model, cls_substitute), compressor)
