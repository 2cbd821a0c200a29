"""Test-environment shim: make PyPI's CUDA torchvision importable on a CPU-only torch.

PyPI's Linux torchvision wheel is a CUDA build. On a CPU-only machine its compiled ops fail to load, and
its Python side then dies on ``torch.library.register_fake("torchvision::nms")`` because the op schema
was never defined; transformers' video processors, timm and open_clip import it and fail with it. Defining
the two schemas (no kernels) before the first import is enough for everything vtc's tests use (transforms,
not detection ops).

The shim lives only in the test environment: ``make test`` installs torchvision into its own venv
(``.venv-test``) and runs ``python tests/torchvision_shim.py --install-pth`` there, which puts this module
and a ``.pth`` file into that venv's site-packages, so that every process of the venv (subprocesses and
torchrun workers included) defines the schemas just before it first imports torchvision. The interpreter
that users and ``make main`` run never gets torchvision or the shim. ``install()`` does nothing when torch
has CUDA or torchvision is absent.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import shutil
import sys
import sysconfig
from pathlib import Path

PTH_NAME = "vtc_tests_torchvision_shim.pth"

SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor qdets, Tensor qscores, float iou_threshold) -> Tensor",
)


def install() -> bool:
    """Define ``torchvision::nms``/``qnms`` when they are missing; ``True`` if the shim was needed."""
    import torch

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


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """Runs :func:`install` when ``torchvision`` is first looked up, then steps aside (finds nothing itself)."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "torchvision":
            sys.meta_path.remove(self)
            install()
        return None


def install_lazily() -> None:
    """Install the shim at the first ``import torchvision`` (interpreter start-up stays free of torch).

    ``VTC_TESTS_NO_TORCHVISION_SHIM=1`` leaves it out (tests of what users see without it)."""
    if os.environ.get("VTC_TESTS_NO_TORCHVISION_SHIM") == "1":
        return
    if not any(isinstance(f, _BeforeTorchvision) for f in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTorchvision())


def install_pth() -> Path:
    """Copy this module into the running interpreter's site-packages with a ``.pth`` that calls
    :func:`install_lazily` at start-up; refuses outside a virtual environment."""
    if sys.prefix == sys.base_prefix:
        raise SystemExit("torchvision_shim: --install-pth only installs into a virtual environment (the test venv)")
    site = Path(sysconfig.get_paths()["purelib"])
    shutil.copyfile(__file__, site / "torchvision_shim.py")
    pth = site / PTH_NAME
    pth.write_text("import torchvision_shim; torchvision_shim.install_lazily()\n")
    return pth


if __name__ == "__main__":
    if sys.argv[1:] != ["--install-pth"]:
        raise SystemExit("usage: python tests/torchvision_shim.py --install-pth")
    print(f"torchvision shim: {install_pth()}")
