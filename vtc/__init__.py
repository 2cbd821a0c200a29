"""vtc: visual-token compression for vision-language models.

import vtc
vtc.list_methods()
c = vtc.build("divprune", ratio=0.1)
out = c(vtc.VisualTokens(features))
h = vtc.apply(model, "visionzip", ratio=0.25)

Importing vtc loads the registry and its methods; ``vtc.apply`` and ``vtc.patch_vit`` load the model
adapters (and transformers) when first used.
"""

from vtc.environment import check_torchvision

check_torchvision()  # a broken torchvision breaks transformers: say so in one line, before anything else

import vtc.methods  # noqa: E402, F401  (fills the registry, a leaf the package fills as timm's does)
from vtc.core import (  # noqa: E402
    Budget,
    Compressed,
    MethodInfo,
    Sample,
    Selection,
    VisualTokens,
    build,
    list_methods,
    register,
)

__version__ = "0.1.0"

__all__ = [
    "Budget",
    "Compressed",
    "MethodInfo",
    "Sample",
    "Selection",
    "VisualTokens",
    "apply",
    "build",
    "list_methods",
    "patch_vit",
    "register",
]


def __getattr__(name: str) -> object:
    """``vtc.apply`` and ``vtc.patch_vit``, from the model layer, loaded on first use."""
    if name == "apply":
        from vtc.models.apply import apply

        return apply
    if name == "patch_vit":
        from vtc.models.vit import patch_vit

        return patch_vit
    raise AttributeError(f"module 'vtc' has no attribute {name!r}")
