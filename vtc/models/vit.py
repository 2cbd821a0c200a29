"""The encoder stage: ToMe (``tome_encoder``) inside ViT towers, by hooks on their blocks.

Towers: transformers' CLIP and SigLIP vision towers (``CLIPVisionModel``, ``SiglipVisionModel``, the
towers of the LLaVA family), timm ``VisionTransformer`` and open_clip ``VisionTransformer``. Nothing
of their forwards is copied. Each block gets

- a forward hook on the module that produces its keys (transformers: ``self_attn.k_proj``; timm:
  ``attn.qkv``; open_clip: ``ln_1``, whose output goes through the key rows of ``attn.in_proj``),
  keeping the head-averaged keys of that block;
- where the merge goes, by ``placement`` (see :mod:`vtc.methods.tome_encoder`):

  - ``"block"`` (the paper's, the default): a hook cannot shorten a block's residual stream between
    its attention and its MLP, so the block gets a small wrapper, per block class, that calls the
    block's own submodules in its own order (norm, attention, residual; merge ``r[i]`` tokens on this
    block's keys; norm, MLP, residual), as the paper's own patch does. At ``r=0`` it equals the
    unpatched block bit for bit (tested). Known classes: transformers ``CLIPEncoderLayer`` and
    ``SiglipEncoderLayer``, timm ``vision_transformer.Block``, open_clip ``ResidualAttentionBlock``.
  - ``"between"``: a forward pre-hook that, at the input of block ``i`` (``i >= 1``), merges
    ``r[i-1]`` tokens on the keys of block ``i-1``; no forward is replaced, the block that decides a
    merge still runs its MLP on all tokens, and the last block merges nothing.

  Either way the block gets ``log(size)`` as an additive attention bias (proportional attention)
  through its own mask argument (``attention_mask``, ``attn_mask``).

Leading tokens are protected: the [CLS] (CLIP, open_clip, timm with a class token) and timm's register
tokens. A tower call starts with block 0, so each call tracks its own sizes and sources;
``inputs[i]`` is the state of the tokens block ``i``'s attention sees, ``snapshots[i]`` what block
``i``'s output tokens stand for (the same in ``"between"`` placement).
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
class Branches:
    """A block's call taken apart, for the ``"block"`` placement: the block's input and mask from its call
    arguments, and its two residual branches run through its own submodules."""

    unpack: Callable[[tuple, dict], tuple[Tensor, Tensor | None, dict]]  # args, kwargs -> x, mask, other kwargs
    attention: Callable[[nn.Module, Tensor, Tensor | None, dict], Tensor]  # what the block adds before its MLP
    mlp: Callable[[nn.Module, Tensor], Tensor]  # what the MLP branch adds


def _hf_unpack(args: tuple, kwargs: dict) -> tuple[Tensor, Tensor | None, dict]:
    kwargs = dict(kwargs)
    x = args[0] if args else kwargs.pop("hidden_states")
    mask = args[1] if len(args) > 1 else kwargs.pop("attention_mask", None)
    return x, mask, kwargs


HF_BRANCHES = Branches(
    _hf_unpack,
    lambda block, x, mask, rest: block.self_attn(hidden_states=block.layer_norm1(x), attention_mask=mask, **rest)[0],
    lambda block, x: block.mlp(block.layer_norm2(x)),
)


def _timm_unpack(args: tuple, kwargs: dict) -> tuple[Tensor, Tensor | None, dict]:
    x = args[0] if args else kwargs["x"]
    return x, args[1] if len(args) > 1 else kwargs.get("attn_mask"), {}


TIMM_BRANCHES = Branches(
    _timm_unpack,
    lambda block, x, mask, rest: block.drop_path1(block.ls1(block.attn(block.norm1(x), attn_mask=mask))),
    lambda block, x: block.drop_path2(block.ls2(block.mlp(block.norm2(x)))),
)


def _open_clip_unpack(args: tuple, kwargs: dict) -> tuple[Tensor, Tensor | None, dict]:
    names = ("q_x", "k_x", "v_x", "attn_mask")
    call = {**dict(zip(names, args, strict=False)), **kwargs}
    if call.get("k_x") is not None or call.get("v_x") is not None:
        raise ValueError("tome_encoder: placement='block' merges self-attention blocks only (no k_x/v_x)")
    return call["q_x"], call.get("attn_mask"), {}


OPEN_CLIP_BRANCHES = Branches(
    _open_clip_unpack,
    lambda block, x, mask, rest: block.ls_1(block.attention(q_x=block.ln_1(x), attn_mask=mask)),
    lambda block, x: block.ls_2(block.mlp(block.ln_2(x))),
)


def _block_classes() -> dict[type, Branches]:
    """The block classes the ``"block"`` placement knows, by their declared type (libraries that are not
    installed contribute none)."""
    from transformers.models.clip.modeling_clip import CLIPEncoderLayer
    from transformers.models.siglip.modeling_siglip import SiglipEncoderLayer

    known: dict[type, Branches] = {CLIPEncoderLayer: HF_BRANCHES, SiglipEncoderLayer: HF_BRANCHES}
    try:
        from timm.models.vision_transformer import Block

        known[Block] = TIMM_BRANCHES
    except ImportError:
        pass
    try:
        from open_clip.transformer import ResidualAttentionBlock

        known[ResidualAttentionBlock] = OPEN_CLIP_BRANCHES
    except ImportError:
        pass
    return known


def block_branches(block: nn.Module) -> Branches:
    """The branches of a known block class; others raise a ValueError naming the known ones."""
    known = _block_classes()
    if type(block) not in known:
        names = ", ".join(f"{c.__module__}.{c.__name__}" for c in known)
        raise ValueError(
            f"tome_encoder: placement='block' does not know blocks of class {type(block).__module__}."
            f"{type(block).__name__} (known: {names}); use placement='between', which only hooks the blocks"
        )
    return known[type(block)]


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
    """ToMe on a tower's blocks; a context manager (or ``install()``/``remove()``).

    ``schedule[i]`` tokens merge in block ``i`` (``"block"`` placement) or at the input of block ``i+1``
    (``"between"``). ``inputs``/``snapshots`` (block index -> :class:`Snapshot`: what the tokens block
    ``i``'s attention sees / its output tokens stand for) and ``tokens`` (tokens entering each block)
    describe the last tower call.
    """

    tower: Tower
    schedule: list[int]
    proportional: bool = True
    placement: str = "block"
    inputs: dict[int, Snapshot] = field(default_factory=dict)
    snapshots: dict[int, Snapshot] = field(default_factory=dict)
    tokens: list[int] = field(default_factory=list)
    _keys: dict[int, Tensor] = field(default_factory=dict)
    _state: MergeState | None = None
    _hooks: list[Any] = field(default_factory=list)
    _wrapped: list[tuple[nn.Module, Any]] = field(default_factory=list)

    def install(self) -> TowerMerging:
        if len(self.schedule) != len(self.tower.blocks):
            raise ValueError(f"r: expected {len(self.tower.blocks)} values (one per block), got {len(self.schedule)}")
        branches = [block_branches(b) for b in self.tower.blocks] if self.placement == "block" else None
        for i, block in enumerate(self.tower.blocks):
            module, to_keys = self.tower.keys_source(block)
            self._hooks.append(module.register_forward_hook(self._keep_keys(i, to_keys)))
            if branches is None:
                self._hooks.append(block.register_forward_pre_hook(self._before_block(i), with_kwargs=True))
            else:
                self._wrapped.append((block, block.__dict__.get("forward")))
                block.forward = self._merging_block(i, block, branches[i])
        return self

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        for block, saved in self._wrapped:
            if saved is None:
                block.__dict__.pop("forward", None)
            else:
                block.forward = saved
        self._wrapped.clear()

    def __enter__(self) -> TowerMerging:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _keep_keys(self, i: int, to_keys: Callable[[Tensor], Tensor]):
        def hook(module: nn.Module, args: Any, output: Tensor) -> None:
            self._keys[i] = to_keys(output.detach())

        return hook

    def _start(self, x: Tensor) -> None:
        """A new tower call (block 0): fresh sizes and sources."""
        self._state = MergeState(x.shape[0], x.shape[1], self.tower.protected, x.device)
        self._keys.clear()
        self.inputs.clear()
        self.snapshots.clear()
        self.tokens.clear()

    def _snapshot(self) -> Snapshot:
        state = self._state
        return Snapshot(state.sizes, state.sources, state.own)

    def _merging_block(self, i: int, block: nn.Module, branches: Branches) -> Callable[..., Tensor]:
        """Block ``i``'s forward in ``"block"`` placement: attention branch, merge, MLP branch."""

        def forward(*args: Any, **kwargs: Any) -> Tensor:
            x, mask, rest = branches.unpack(args, kwargs)
            if i == 0:
                self._start(x)
            state = self._state
            self.inputs[i] = self._snapshot()
            self.tokens.append(x.shape[1])
            if self.proportional and bool((state.sizes > 1).any()):
                mask = self._combined_mask(block, mask, state.attention_bias(x.dtype))
            x = x + branches.attention(block, x, mask, rest)
            if self.schedule[i] > 0:
                x = state.merge(x, self._keys.pop(i), self.schedule[i])
            self.snapshots[i] = self._snapshot()
            return x + branches.mlp(block, x)

        return forward

    def _combined_mask(self, block: nn.Module, mask: Tensor | None, bias: Tensor) -> Tensor:
        """The block's own mask (if any) plus the proportional-attention bias, in the shape the block takes."""
        if mask is not None:
            if mask.dtype == torch.bool:
                mask = torch.zeros(mask.shape, dtype=bias.dtype, device=mask.device).masked_fill(~mask, -torch.inf)
            bias = mask + bias
        return self.tower.bias_shape(bias, block)

    def _before_block(self, i: int):
        def hook(block: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            x = args[0] if args else kwargs["hidden_states"]
            if i == 0:
                self._start(x)
            state = self._state
            if i > 0 and self.schedule[i - 1] > 0:
                x = state.merge(x, self._keys.pop(i - 1), self.schedule[i - 1])
            self.inputs[i] = self.snapshots[i] = self._snapshot()
            self.tokens.append(x.shape[1])
            args, kwargs = ((x, *args[1:]), kwargs) if args else ((), {**kwargs, "hidden_states": x})
            if self.proportional and bool((state.sizes > 1).any()):
                args, kwargs = self._with_bias(block, args, kwargs, state.attention_bias(x.dtype))
            return args, kwargs

        return hook

    def _with_bias(self, block: nn.Module, args: tuple, kwargs: dict, bias: Tensor) -> tuple[tuple, dict]:
        name, position = self.tower.mask_argument, self.tower.mask_position
        in_args = position is not None and len(args) > position
        bias = self._combined_mask(block, args[position] if in_args else kwargs.get(name), bias)
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
    return TowerMerging(tower, config.schedule(len(tower.blocks)), config.proportional, config.placement)


def patch_vit(model: nn.Module, method: str = "tome", **kwargs: Any) -> VitPatch:
    """Merge tokens inside a ViT used on its own: ``vtc.patch_vit(model, "tome", r=8)``.

    ``model``: a timm ``VisionTransformer``, an open_clip ``CLIP`` or its ``VisionTransformer``, or a
    transformers CLIP/SigLIP vision model. ``r``: tokens merged in each block (one number or a per-block
    list); ``proportional``: add ``log(size)`` to the attention logits (default True); ``placement``:
    ``"block"`` (the paper's, default) or ``"between"`` (module docstring).
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
