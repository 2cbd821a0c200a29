"""Loading a VLM and its processor: an embedded tiny model, any Hugging Face id or local path.

Weights load from safetensors only. The embedded models (``vtc-tiny-llava``, ``vtc-tiny-qwen2vl``) ship in
the package and load offline; a folder with a ``vtc_processor.json`` gets vtc's own tiny processor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vtc.tiny.model import EMBEDDED


def load(name_or_path: str, *, dtype: Any = None, device: str = "cpu", trust_remote_code: bool = False) -> tuple:
    """``(model, processor)`` for an embedded model name, a local folder or a hub id (weights: safetensors only)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    source = _source(name_or_path)
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            source, dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code
        )
        if (Path(source) / "vtc_processor.json").exists():
            from vtc.tiny.model import TinyProcessor

            processor = TinyProcessor.from_pretrained(source)
        else:
            processor = AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as err:
        known = ", ".join(sorted(EMBEDDED)) or "none yet"
        raise ValueError(
            f"model: could not load {name_or_path!r} as a local folder or hub id with safetensors weights "
            f"(embedded models: {known}): {err}"
        ) from err
    return model.to(device).eval(), processor


def _source(name_or_path: str) -> str:
    return str(EMBEDDED.get(name_or_path, name_or_path))


def load_config(name_or_path: str, *, trust_remote_code: bool = False) -> Any:
    """The model's config alone (no weights): what the checks before a run need."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(_source(name_or_path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ValueError(f"model: cannot read the config of {name_or_path!r}: {err}") from None


def max_options(name_or_path: str) -> int | None:
    """The most answer options the model's prompt format offers (embedded models' processors declare it);
    None: no limit known."""
    source = Path(_source(name_or_path))
    if not (source / "vtc_processor.json").exists():
        return None
    from vtc.tiny.model import TinyProcessor

    return TinyProcessor.from_pretrained(source).max_options
