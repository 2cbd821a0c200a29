"""Attention signals without eager attention: hooks on ``q_proj``/``k_proj``, or a recording attention function.

For the chosen encoder layers, forward hooks keep the query and key projections; the [CLS] row (or the
attention each token receives) is then recomputed from them for just what is needed, as DESIGN.md
asks: the tower itself keeps running under sdpa. Works for CLIP and SigLIP attention modules
(``q_proj``, ``k_proj``, ``num_heads``, ``head_dim``, ``scale``).

:func:`observe_attention` is the other route, for modules whose q/k only exist after RoPE inside the
attention call (Qwen's ViT, decoder layers): the module gets a config copy whose
``_attn_implementation`` is a function registered through transformers' ``AttentionInterface``; it
hands the post-RoPE query and keys to an observer, then runs the module's own implementation (sdpa or
eager, tested; flash untested here).
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

QUERY_CHUNK = 256


class AttentionProbe:
    """Context manager recording q/k projections of ``modules`` (layer index -> attention module)."""

    def __init__(self, modules: dict[int, Any]) -> None:
        self.modules = modules
        self.q: dict[int, Tensor] = {}
        self.k: dict[int, Tensor] = {}
        self._hooks: list[Any] = []

    def __enter__(self) -> AttentionProbe:
        for layer, attn in self.modules.items():
            self._hooks.append(attn.q_proj.register_forward_hook(self._keep(self.q, layer)))
            self._hooks.append(attn.k_proj.register_forward_hook(self._keep(self.k, layer)))
        return self

    def __exit__(self, *exc: object) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    @staticmethod
    def _keep(store: dict[int, Tensor], layer: int):
        def hook(module: Any, args: Any, output: Tensor) -> None:
            store[layer] = output.detach()

        return hook

    def _heads(self, layer: int, x: Tensor) -> Tensor:
        attn = self.modules[layer]
        b, s, _ = x.shape
        return x.float().view(b, s, attn.num_heads, attn.head_dim).transpose(1, 2)  # [B, H, S, hd]

    def cls_row(self, layer: int) -> Tensor:
        """Head-averaged attention of the first token (the [CLS]) over all tokens, ``[B, S]``."""
        q, k = self._heads(layer, self.q[layer]), self._heads(layer, self.k[layer])
        logits = (q[:, :, :1] @ k.transpose(-1, -2)) * self.modules[layer].scale
        return logits.softmax(-1)[:, :, 0].mean(1)

    def received(self, layer: int) -> Tensor:
        """Attention each token receives, averaged over heads and all queries, ``[B, S]``."""
        q, k = self._heads(layer, self.q[layer]), self._heads(layer, self.k[layer])
        total = q.new_zeros(q.shape[0], k.shape[2])
        for start in range(0, q.shape[2], QUERY_CHUNK):
            logits = (q[:, :, start : start + QUERY_CHUNK] @ k.transpose(-1, -2)) * self.modules[layer].scale
            total += logits.softmax(-1).sum(dim=(1, 2))
        return total / (q.shape[1] * q.shape[2])

    def keys(self, layer: int) -> Tensor:
        """Head-averaged keys, ``[B, S, head_dim]``."""
        return self._heads(layer, self.k[layer]).mean(1)


def attention_rows(probe: AttentionProbe, layers: list[int], mode: str) -> Tensor:
    """``[B, L, S]`` rows for ``layers`` in order: the [CLS] row (``mode="cls"``) or attention received."""
    rows = [probe.cls_row(layer) if mode == "cls" else probe.received(layer) for layer in layers]
    return torch.stack(rows, dim=1)


RECORD_IMPL = "vtc_record"
_OBSERVERS: dict[Any, tuple[Any, Callable]] = {}  # attention module -> (observer, original implementation)


def _recording_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The attention function of observed modules: show q/k to the observer, then run the original."""
    observer, original = _OBSERVERS[module]
    observer.observe(query, key, module.head_dim**-0.5 if scaling is None else scaling, kwargs)
    return original(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)


def observe_attention(observers: dict[Any, Any]) -> Callable[[], None]:
    """Route attention modules (keys) through ``observer.observe(query, key, scaling, kwargs)`` (values).

    ``query [B, H, Lq, hd]``, ``key [B, Hkv, Lk, hd]`` as the module's implementation receives them.
    Returns the function that restores the modules.
    """
    from transformers import AttentionInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if observers:
        AttentionInterface.register(RECORD_IMPL, _recording_attention)
    saved: dict[Any, Any] = {}

    def restore() -> None:
        for attn, config in saved.items():
            attn.config = config
            _OBSERVERS.pop(attn, None)
        saved.clear()

    try:
        for attn, observer in observers.items():
            config = attn.config
            if config._attn_implementation == RECORD_IMPL:
                raise ValueError("model: this attention module is already observed by vtc")
            eager = getattr(sys.modules[type(attn).__module__], "eager_attention_forward", None)
            _OBSERVERS[attn] = (observer, ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, eager))
            saved[attn] = config
            attn.config = copy.copy(config)
            attn.config._attn_implementation = RECORD_IMPL
    except BaseException:
        restore()
        raise
    return restore
