"""Test-environment shim: make PyPI's CUDA torchvision importable on a CPU-only torch.

PyPI's Linux torchvision wheel is a CUDA build. On a CPU-only machine its compiled ops fail to load, and
its Python side then dies on ``torch.library.register_fake("torchvision::nms")`` because the op schema
was never defined; transformers' video processors, timm and open_clip import it and fail with it. Defining
the two schemas (no kernels) before the first import is enough for everything vtc's tests use (transforms,
not detection ops). The shim runs only in the test set-up, only when torch has no CUDA and torchvision is
installed; on users' machines torchvision works as it is.
"""

from __future__ import annotations

import importlib.util

import torch

SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor qdets, Tensor qscores, float iou_threshold) -> Tensor",
)


def install() -> bool:
    """Define ``torchvision::nms``/``qnms`` when they are missing; ``True`` if the shim was needed."""
    if torch.cuda.is_available() or importlib.util.find_spec("torchvision") is None:
        return False
    try:
        torch.ops.torchvision.nms  # noqa: B018 - raises when the schema does not exist
        return False
    except (AttributeError, RuntimeError):
        pass
    global _LIBRARY
    _LIBRARY = torch.library.Library("torchvision", "DEF")  # kept alive: dropping it unregisters the ops
    for schema in SCHEMAS:
        _LIBRARY.define(schema)
    return True


_LIBRARY = None
