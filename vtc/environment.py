"""The one environment problem vtc checks at import: a torchvision that cannot load.

PyPI's Linux torchvision wheels are CUDA builds. Installed beside a CPU-only torch, their compiled ops
(``torchvision/_C``) fail to load, ``import torchvision`` then raises, and transformers, which imports
torchvision for its image and video processors, fails in ``AutoProcessor`` with an error that does not
name the cause. vtc never needs torchvision itself, so the fix is to remove it (or to install the build
made for the installed torch).

The check stays cheap: it does not import torchvision (that would load its datasets, models and triton),
it loads only its compiled ops, as torchvision's own import does first, and only when the ops are not
registered yet. It reports a problem only when that load fails.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util


def _ops_registered() -> bool:
    import torch

    try:
        torch.ops.torchvision.nms  # noqa: B018 - raises when the op's schema was never defined
    except (AttributeError, RuntimeError):
        return False
    return True


def torchvision_problem() -> str | None:
    """One line saying what is wrong and what to run, or None when torchvision is absent or its ops load."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations or _ops_registered():
        return None
    ops = importlib.machinery.PathFinder.find_spec("_C", list(spec.submodule_search_locations))
    if ops is None or not ops.origin:
        return None
    import torch

    try:
        torch.ops.load_library(ops.origin)
    except OSError as err:
        try:
            version = importlib.metadata.version("torchvision")
        except importlib.metadata.PackageNotFoundError:
            version = "(unknown version)"
        reason = " ".join(str(err).split())[:200]
        return (
            f"vtc: torchvision {version} is installed but its compiled ops cannot load beside torch "
            f"{torch.__version__} ({reason}), so transformers fails when it imports torchvision; run "
            "`pip uninstall -y torchvision` (vtc does not need it) or install the torchvision build made for this torch"
        )
    return None


def check_torchvision() -> None:
    """Raise an ImportError with :func:`torchvision_problem`'s line when torchvision is installed but broken."""
    problem = torchvision_problem()
    if problem is not None:
        raise ImportError(problem)
