"""vtc: visual-token compression for vision-language models.

import vtc
vtc.list_methods()
c = vtc.build("divprune", ratio=0.1)
out = c(vtc.VisualTokens(features))
"""

from vtc.core import (
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
from vtc.models.vit import patch_vit

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
