"""Which adapter serves a model: one per family, chosen by ``config.model_type``."""

from __future__ import annotations

from typing import Any

from vtc.models.base import Adapter


def _adapters() -> dict[str, type[Adapter]]:
    from vtc.models import llava, llava_next, qwen_vl

    return {t: cls for module in (llava, llava_next, qwen_vl) for cls in module.ADAPTERS for t in cls.model_types}


def supported_model_types() -> list[str]:
    return sorted(_adapters())


def adapter_class(config: Any) -> type[Adapter]:
    """The adapter class for a model config; an unsupported type raises a ValueError listing the supported ones."""
    model_type = getattr(config, "model_type", None)
    adapters = _adapters()
    if model_type not in adapters:
        raise ValueError(
            f"model: vtc.apply does not support model_type {model_type!r}; supported: {', '.join(sorted(adapters))}"
        )
    return adapters[model_type]


def media_types(config: Any) -> set[str]:
    """The media a model takes (``image``, ``video``), by its family's adapter."""
    return set(adapter_class(config).media_keys)


def check_media(config: Any, kind: str, name: str = "this model") -> None:
    """A clear error when the model takes no ``kind`` input."""
    if kind not in media_types(config):
        raise ValueError(f"media: {name} ({config.model_type}) takes no {kind} input")


def adapter_for(model: Any, cls_substitute: str | None = None) -> Adapter:
    """The adapter for ``model``; an unsupported model raises a ValueError listing the supported types."""
    return adapter_class(getattr(model, "config", None))(model, cls_substitute)
