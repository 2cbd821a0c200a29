"""vtc: visual-token compression for vision-language models.

import vtc
vtc.list_methods()
c = vtc.build("divprune", ratio=0.1)
out = c(vtc.VisualTokens(features))
"""

from vtc.models.environment import check_torchvision

check_torchvision()  # a broken torchvision breaks transformers: say so in one line, before anything else

from vtc.core import (  # noqa: E402
    Budget,
    Compressed,
    MethodInfo,
    Sample,
    Selection,
    VisualTokens,
    apply,
    build,
    list_methods,
    register,
)
from vtc.models.vit import patch_vit  # noqa: E402

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
