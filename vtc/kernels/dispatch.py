"""Backend choice for the selection kernels: ``torch`` everywhere, ``triton`` on CUDA (or interpreted).

``auto`` (default) runs Triton when every tensor is on CUDA and triton imports, torch otherwise.
``triton`` forces Triton: on CPU tensors that only works under ``TRITON_INTERPRET=1`` (how the tests
run the kernels). Triton is imported lazily, so ``import vtc`` never imports it.
"""

from __future__ import annotations

import importlib.util
import os

from torch import Tensor

BACKENDS = ("auto", "torch", "triton")
_backend = "auto"


def set_backend(name: str) -> None:
    """Choose ``"torch"``, ``"triton"`` or ``"auto"`` for every kernel call that follows."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {name!r}")
    _backend = name


def get_backend() -> str:
    return _backend


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def use_triton(*tensors: Tensor | None) -> bool:
    """Whether the next kernel call on ``tensors`` goes to Triton."""
    present = [t for t in tensors if t is not None]
    on_cuda = all(t.is_cuda for t in present)
    if _backend == "torch":
        return False
    if _backend == "auto":
        return on_cuda and triton_available()
    if not triton_available():
        raise RuntimeError("backend 'triton' was forced but triton is not installed: pip install 'vtc[kernels]'")
    if not on_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("backend 'triton' on CPU tensors needs TRITON_INTERPRET=1 (the Triton interpreter)")
    return True
