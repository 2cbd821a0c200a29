"""Core types, budgets and the method registry."""

from vtc.core.budget import Budget
from vtc.core.registry import Compressor, MethodInfo, build, list_methods, register
from vtc.core.selection import Sample, Selection
from vtc.core.types import Compressed, VisualTokens

__all__ = [
    "Budget",
    "Compressed",
    "Compressor",
    "MethodInfo",
    "Sample",
    "Selection",
    "VisualTokens",
    "build",
    "list_methods",
    "register",
]
