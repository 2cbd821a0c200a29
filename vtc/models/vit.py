"""The encoder stage: ToMe (``tome_encoder``) inside ViT towers, by hooks on their blocks.

Towers: transformers' CLIP and SigLIP vision towers (``CLIPVisionModel``, ``SiglipVisionModel``, the
towers of the LLaVA family), timm ``VisionTransformer`` and open_clip ``VisionTransformer``. Nothing
of their forwards is copied. Each block gets

- a forward hook on the module that produces its keys (transformers: ``self_attn.k_proj``; timm:
  ``attn.qkv``; open_clip: ``ln_1``, whose output goes through the key rows of ``attn.in_proj``),
  keeping the head-averaged keys of that block;
- a forward pre-hook that, at the input of block ``i`` (``i >= 1``), merges ``r[i-1]`` tokens by
  bipartite soft matching on the keys of block ``i-1`` (:mod:`vtc.methods.tome_encoder`), and hands
  the block ``log(size)`` as an additive attention bias (proportional attention) through the block's
  own mask argument (``attention_mask``, ``attn_mask``).

So the merges sit between blocks rather than between a block's attention and its MLP, as in the
paper: the block whose keys decide a merge still runs its MLP on all its tokens. The last block's
``r`` has no block after it and merges nothing. Leading tokens are protected: the [CLS] (CLIP,
open_clip, timm with a class token) and timm's register tokens. A tower call starts with block 0,
so each call tracks its own sizes and sources; ``snapshots[i]`` holds the state at block ``i``'s input,
i.e. what block ``i``'s output tokens stand for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vtc.core.registry import Compressor, build
from vtc.methods.tome_encoder import MergeState

SUPPORTED_TOWERS = ("transformers CLIP/SigLIP vision towers", "timm VisionTransformer", "open_clip VisionTransformer")


@dataclass
class Tower:
    """How to reach a tower's blocks: the modules, the keys of each block, where the bias goes."""

    blocks: list[nn.Module]
    keys_source: Callable[[nn.Module], tuple[nn.Module, Callable[[Tensor], Tensor]]]
    mask_argument: str
    mask_position: int | None  # positional index of the mask argument in the block's call, if passed so
    bias_shape: Callable[[Tensor, nn.Module], Tensor]  # [B, 1, 1, N] bias -> what the block's mask takes
    protected: int


def _per_batch(bias: Tensor, block: nn.Module) -> Tensor:
    return bias


def _hf_tower(tower: nn.Module) -> Tower:
    inner = getattr(tower, "vision_model", tower)

    def keys(block: nn.Module) -> tuple[nn.Module, Callable[[Tensor], Tensor]]:
        attn = block.self_attn
        return attn.k_proj, lambda out: out.view(*out.shape[:2], attn.num_heads, attn.head_dim).mean(2)

    protected = 1 if hasattr(inner.embeddings, "class_embedding") else 0
    return Tower(list(inner.encoder.layers), keys, "attention_mask", 1, _per_batch, protected)


def _timm_tower(model: nn.Module) -> Tower:
    def keys(block: nn.Module) -> tuple[nn.Module, Callable[[Tensor], Tensor]]:
        attn = block.attn
        return attn.qkv, lambda out: attn.k_norm(
            out.view(*out.shape[:2], 3, attn.num_heads, attn.head_dim)[:, :, 1].transpose(1, 2)
        ).mean(1)

    return Tower(list(model.blocks), keys, "attn_mask", 1, _per_batch, int(getattr(model, "num_prefix_tokens", 0)))


def _open_clip_tower(visual: nn.Module) -> Tower:
    transformer = visual.transformer
    if not getattr(transformer, "batch_first", False):
        raise ValueError("model: open_clip towers with batch_first=False are not supported by the encoder stage")

    def keys(block: nn.Module) -> tuple[nn.Module, Callable[[Tensor], Tensor]]:
        attn = block.attn
        dim, heads = attn.embed_dim, attn.num_heads
        weight = attn.in_proj_weight[dim : 2 * dim]
        bias = None if attn.in_proj_bias is None else attn.in_proj_bias[dim : 2 * dim]
        return block.ln_1, lambda out: F.linear(out, weight, bias).view(*out.shape[:2], heads, dim // heads).mean(2)

    def per_head(bias: Tensor, block: nn.Module) -> Tensor:  # nn.MultiheadAttention: [B * heads, L, S]
        b, n = bias.shape[0], bias.shape[-1]
        return bias.expand(b, block.attn.num_heads, n, n).reshape(b * block.attn.num_heads, n, n)

    protected = 1 if getattr(visual, "class_embedding", None) is not None else 0
    return Tower(list(transformer.resblocks), keys, "attn_mask", 3, per_head, protected)


def tower_of(model: nn.Module) -> Tower:
    """The :class:`Tower` description of a supported ViT; other models raise a ValueError listing them."""
    name = type(model).__name__
    module = type(model).__module__
    inner = getattr(model, "vision_model", model)
    embeddings, encoder = getattr(inner, "embeddings", None), getattr(inner, "encoder", None)
    if module.startswith("transformers.") and hasattr(embeddings, "patch_embedding") and hasattr(encoder, "layers"):
        return _hf_tower(model)
    if module.startswith("timm.") and hasattr(model, "blocks"):
        return _timm_tower(model)
    if module.startswith("open_clip.") and hasattr(model, "visual"):
        return _open_clip_tower(model.visual)
    if module.startswith("open_clip.") and hasattr(model, "transformer"):
        return _open_clip_tower(model)
    raise ValueError(
        f"model: the encoder stage does not support {module}.{name}; supported: {', '.join(SUPPORTED_TOWERS)}"
    )


@dataclass
class Snapshot:
    """What the tokens at one block's input stand for (see :class:`vtc.methods.tome_encoder.MergeState`)."""

    sizes: Tensor
    sources: Tensor
    own: Tensor


@dataclass
class TowerMerging:
    """ToMe hooks on a tower's blocks; a context manager (or ``install()``/``remove()``).

    ``schedule[i]`` tokens merge after block ``i``. ``snapshots`` (block index -> :class:`Snapshot`)
    and ``tokens`` (tokens entering each block) describe the last tower call.
    """

    tower: Tower
    schedule: list[int]
    proportional: bool = True
    snapshots: dict[int, Snapshot] = field(default_factory=dict)
    tokens: list[int] = field(default_factory=list)
    _keys: dict[int, Tensor] = field(default_factory=dict)
    _state: MergeState | None = None
    _hooks: list[Any] = field(default_factory=list)

    def install(self) -> TowerMerging:
        if len(self.schedule) != len(self.tower.blocks):
            raise ValueError(f"r: expected {len(self.tower.blocks)} values (one per block), got {len(self.schedule)}")
        for i, block in enumerate(self.tower.blocks):
            module, to_keys = self.tower.keys_source(block)
            self._hooks.append(module.register_forward_hook(self._keep_keys(i, to_keys)))
            self._hooks.append(block.register_forward_pre_hook(self._before_block(i), with_kwargs=True))
        return self

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def __enter__(self) -> TowerMerging:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _keep_keys(self, i: int, to_keys: Callable[[Tensor], Tensor]):
        def hook(module: nn.Module, args: Any, output: Tensor) -> None:
            self._keys[i] = to_keys(output.detach())

        return hook

    def _before_block(self, i: int):
        def hook(block: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            x = args[0] if args else kwargs["hidden_states"]
            if i == 0:
                self._state = MergeState(x.shape[0], x.shape[1], self.tower.protected, x.device)
                self._keys.clear()
                self.snapshots.clear()
                self.tokens.clear()
            state = self._state
            if i > 0 and self.schedule[i - 1] > 0:
                x = state.merge(x, self._keys.pop(i - 1), self.schedule[i - 1])
            self.snapshots[i] = Snapshot(state.sizes, state.sources, state.own)
            self.tokens.append(x.shape[1])
            args, kwargs = ((x, *args[1:]), kwargs) if args else ((), {**kwargs, "hidden_states": x})
            if self.proportional and bool((state.sizes > 1).any()):
                args, kwargs = self._with_bias(block, args, kwargs, state.attention_bias(x.dtype))
            return args, kwargs

        return hook

    def _with_bias(self, block: nn.Module, args: tuple, kwargs: dict, bias: Tensor) -> tuple[tuple, dict]:
        name, position = self.tower.mask_argument, self.tower.mask_position
        in_args = position is not None and len(args) > position
        mask = args[position] if in_args else kwargs.get(name)
        if mask is not None:
            if mask.dtype == torch.bool:
                mask = torch.zeros(mask.shape, dtype=bias.dtype, device=mask.device).masked_fill(~mask, -torch.inf)
            bias = mask + bias
        bias = self.tower.bias_shape(bias, block)
        if in_args:
            return (*args[:position], bias, *args[position + 1 :]), kwargs
        return args, {**kwargs, name: bias}


class VitPatch:
    """The handle of :func:`patch_vit`: ``stats`` (tokens entering each block, per call), ``remove()``."""

    def __init__(self, model: nn.Module, merging: TowerMerging) -> None:
        self.model = model
        self.merging = merging
        self.stats: list[dict[str, Any]] = []
        self._done = merging.tower.blocks[-1].register_forward_hook(self._record)
        merging.install()
        model._vtc_patch = self

    def _record(self, *args: Any) -> None:
        self.stats.append({"stage": "encoder", "method": "tome_encoder", "tokens": list(self.merging.tokens)})

    def remove(self) -> None:
        if getattr(self.model, "_vtc_patch", None) is not self:
            return
        self.merging.remove()
        self._done.remove()
        del self.model._vtc_patch

    def __enter__(self) -> VitPatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def encoder_merging(compressor: Compressor, tower: Tower) -> TowerMerging:
    """The hooks of an encoder-stage compressor (``tome_encoder``) for ``tower``."""
    config = compressor.config
    return TowerMerging(tower, config.schedule(len(tower.blocks)), config.proportional)


def patch_vit(model: nn.Module, method: str = "tome", **kwargs: Any) -> VitPatch:
    """Merge tokens inside a ViT used on its own: ``vtc.patch_vit(model, "tome", r=8)``.

    ``model``: a timm ``VisionTransformer``, an open_clip ``CLIP`` or its ``VisionTransformer``, or a
    transformers CLIP/SigLIP vision model. ``r``: tokens merged after each block (one number or a
    per-block list); ``proportional``: add ``log(size)`` to the attention logits (default True).
    """
    if getattr(model, "_vtc_patch", None) is not None:
        raise ValueError("model: vtc is already applied to this model; call .remove() on its handle first")
    name = "tome_encoder" if method == "tome" else method
    compressor = build(name, **kwargs)
    if compressor.info.stage != "encoder":
        raise ValueError(
            f"method: patch_vit runs encoder-stage methods (tome); {method!r} runs at stage {compressor.info.stage!r}"
        )
    return VitPatch(model, encoder_merging(compressor, tower_of(model)))
