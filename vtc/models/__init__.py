"""Model adapters, one per family, chosen by ``model.config.model_type``; `apply`, loading and checks."""

from __future__ import annotations

from vtc.models.apply import apply
from vtc.models.base import Adapter
from vtc.models.loading import load
from vtc.models.registry import adapter_class, adapter_for, supported_model_types

__all__ = ["Adapter", "adapter_class", "adapter_for", "apply", "load", "supported_model_types"]
