"""LLaVA-NeXT, LLaVA-OneVision and LLaVA-NeXT-Video (``llava_next``, ``llava_onevision``, ``llava_next_video``).

Rules these adapters follow:

- Media. Images (all three): AnyRes ``pixel_values [B, crops, 3, H, W]`` with ``image_sizes`` (OneVision
  also takes ``batch_num_images`` and ``vision_aspect_ratio``). Videos: ``pixel_values_videos [B, F, 3, H, W]``
  for OneVision (bilinear 2x2 pooling per frame, then one ``image_newline`` per video) and NeXT-Video
  (the ``vision_resampler`` pooling, no newline). ``vision_feature_layer`` and
  ``vision_feature_select_strategy`` apply to every modality of the call. Everything is encoded by the
  model's own ``model.model.get_image_features`` / ``get_video_features``; the kept rows of their
  ``pooler_output`` go back through ``mm_encoder_outputs=``.
- One sample per image, one budget over all its visual tokens: the base (low-res) crop's tokens, then
  the unpadded high-res tokens, in the order ``get_image_features`` packs them, newlines left out. Grid
  ``(1, 1, n)``: the base crop and the high-res grid have different shapes, so spatial methods see one
  1-D sequence (``pool`` then pools along it, ``uniform`` spaces along it); an image packed as its base
  crop alone (OneVision with ``batch_num_images > 1``) gets its square grid ``(1, s, s)``.
- Newlines. ``image_newline`` tokens are never given to the compressor. A newline is kept when its row
  keeps at least one token (a slot representative lies in it) and dropped when its whole row was
  pruned or merged away: it is a cheap structure marker that means nothing without its row. The row of
  a newline is the visual tokens between it and the previous newline (or the end of the base crop). An
  image packed as its base crop alone has one trailing newline whose row is the whole crop, and a
  OneVision video's trailing newline has every frame as its row: both are always kept.
- Layout. Which packed positions are newlines, and which crop token each packed token comes from, is
  taken from the model's own ``pack_image_features``: its arguments are recorded during the encoding
  call, and it is called once more with per-crop signal channels instead of features and a marker
  vector instead of ``image_newline``. Unpadding (and OneVision's ``anyres_max`` bilinear downsampling)
  therefore moves the signals exactly as it moves the features. Videos go the same way through the
  model's ``apply_pooling`` (OneVision) or ``vision_resampler`` (NeXT-Video, ``average`` mode; the
  other modes get a 2-D average pool of the same stride).
- Videos: one sample per video, grid ``(F, h', w')`` of the pooled tokens.
- Signals, per tower pass (a crop or a frame), recorded by q/k hooks (:mod:`vtc.models.attention`),
  the tower staying on sdpa:
  ``cls_attn``: CLIP towers (NeXT, NeXT-Video) give the [CLS] row of each pass at the layers a method
  names (or the attention each token receives, for ``attention="received"``); each pass's row is
  divided by its mean over the pass's patch tokens (mean-normalised), so that crops and frames compare,
  then mapped onto the packed tokens as above: base-crop tokens get the base pass's row, high-res
  tokens the row of the crop they were cut from. SigLIP (OneVision) has no [CLS]: a method that needs
  the [CLS] row raises a ValueError listing the methods that work without it, unless
  ``vtc.apply(..., cls_substitute="received")``, which gives it the (mean-normalised) attention each
  token receives instead. ``keys``: the head-averaged keys of the layer that produces the features,
  mapped the same way (pooled like the video features). ``text``: the LLM input embeddings of the
  prompt's text tokens (:func:`vtc.models.base.question_text`).
- Selection: ``compress`` runs the compressor on the visual tokens, then re-addresses its result to
  the placeholder runs and adds each kept newline as a slot of its own (size 1, the model's
  ``image_newline`` row), so that ``index``/``assign`` cover every placeholder token.
- Stats count placeholder tokens, i.e. what the LLM sees: ``before``/``after`` include the newline
  tokens (kept newlines count in ``after``); the budget applies to the visual tokens only, so
  ``after`` can exceed ``ratio * before`` by the kept newlines. Each item's ``Compressed.info`` also
  holds ``newlines`` and ``newlines_kept``.
- OneVision's ``vision_aspect_ratio`` keyword is passed to ``get_image_features``, as the unpatched
  ``generate`` does (the unpatched ``forward`` ignores it and uses the config's value).
- Not done: ``generate`` with ``num_return_sequences``/beams > 1 on OneVision videos whose kept counts
  differ between videos (the pooled-video tensor cannot hold rows of different lengths, so they are
  packed as one row).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers.modeling_outputs import BaseModelOutputWithPooling

from vtc.core.registry import Compressor
from vtc.core.types import Compressed, VisualTokens
from vtc.models.attention import AttentionProbe, attention_rows
from vtc.models.base import Encoded, assign_rows, question_text, stack_padded
from vtc.models.llava import LlavaAdapter, encoder_layer


@dataclass
class Layout:
    """Where one media item's visual and newline tokens sit in its placeholder run.

    ``visual [n]``: placeholder positions of the visual tokens (the compressor's tokens, in order);
    ``newlines [m]``: positions of the newline tokens; ``row [n]``: the newline closing each visual
    token's row (an index into ``newlines``), -1 for none; ``newline_features [m, D]``.
    """

    visual: Tensor
    newlines: Tensor
    row: Tensor
    newline_features: Tensor


def newline_layout(is_newline: Tensor, base: int, features: Tensor) -> Layout:
    """The layout of a packed sequence: tokens before position ``base`` (the base crop) have no newline."""
    positions = torch.arange(is_newline.numel(), device=is_newline.device)
    before = is_newline.long().cumsum(0) - is_newline.long()  # newlines strictly before each position
    visual = positions[~is_newline]
    newlines = positions[is_newline]
    row = before[visual]
    row = torch.where((visual >= base) & (row < newlines.numel()), row, -1)
    return Layout(visual, newlines, row, features[newlines])


def with_newlines(inner: Compressed, layouts: list[Layout], counts: list[int]) -> Compressed:
    """``inner`` (over visual tokens) re-addressed to the placeholder runs, with the kept newlines added.

    A newline is kept when a slot representative lies in its row; it is its own slot of size 1.
    """
    device = inner.features.device
    per_item = []
    for i, (layout, total) in enumerate(zip(layouts, counts, strict=True)):
        k = int(inner.counts[i])
        reps = inner.index[i, :k]
        rows = layout.row.to(device)[reps]
        keep_newline = torch.zeros(layout.newlines.numel(), dtype=torch.bool, device=device)
        keep_newline[rows[rows >= 0]] = True
        positions = torch.cat([layout.visual.to(device)[reps], layout.newlines.to(device)[keep_newline]])
        order = torch.argsort(positions, stable=True)
        new_slot = torch.empty_like(order)
        new_slot[order] = torch.arange(order.numel(), device=device)
        features = torch.cat([inner.features[i, :k], layout.newline_features.to(inner.features)[keep_newline]])
        sizes = torch.cat([inner.sizes[i, :k], inner.sizes.new_ones(int(keep_newline.sum()))])
        n = layout.visual.numel()
        assign = torch.full((total,), -1, dtype=torch.long, device=device)
        src = inner.assign[i, :n]
        assign[layout.visual.to(device)] = torch.where(src >= 0, new_slot[src.clamp_min(0)], -1)
        assign[layout.newlines.to(device)[keep_newline]] = new_slot[k:]
        info = dict(inner.info[i]) if i < len(inner.info) else {}
        info.update(newlines=layout.newlines.numel(), newlines_kept=int(keep_newline.sum()))
        per_item.append((positions[order], features[order], sizes[order], assign, info))
    width = max(p[0].numel() for p in per_item)
    batch, dim = len(per_item), inner.features.shape[-1]
    out = Compressed(
        features=inner.features.new_zeros(batch, width, dim),
        mask=torch.zeros(batch, width, dtype=torch.bool, device=device),
        index=torch.full((batch, width), -1, dtype=torch.long, device=device),
        assign=torch.full((batch, max(counts)), -1, dtype=torch.long, device=device),
        sizes=torch.zeros(batch, width, dtype=torch.long, device=device),
        method=inner.method,
        info=[p[4] for p in per_item],
    )
    for i, (positions, features, sizes, assign, _) in enumerate(per_item):
        k = positions.numel()
        out.features[i, :k] = features
        out.mask[i, :k] = True
        out.index[i, :k] = positions
        out.sizes[i, :k] = sizes
        out.assign[i, : assign.numel()] = assign
    return out


@contextmanager
def recording(owner: Any, name: str, calls: list[inspect.BoundArguments]) -> Iterator[Any]:
    """Record the (bound) arguments of every call to ``owner.<name>`` while inside; yields the original."""
    original = getattr(owner, name)
    signature = inspect.signature(original)
    saved = owner.__dict__.get(name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(signature.bind(*args, **kwargs))
        return original(*args, **kwargs)

    owner.__dict__[name] = spy
    try:
        yield original
    finally:
        if saved is None:
            del owner.__dict__[name]
        else:
            owner.__dict__[name] = saved


@dataclass
class _Plan:
    """Which signals to record for one encoding call."""

    attn_layers: list[int]
    mode: str
    key_layer: int | None
    text: bool
    drop_cls: int


class LlavaNextAdapter(LlavaAdapter):
    model_types = ("llava_next",)
    media_keys = {"image": ("pixel_values", "image_sizes")}
    shared_keys = ("vision_feature_layer", "vision_feature_select_strategy")  # apply to every modality

    def pop_media(self, kwargs: dict[str, Any]) -> dict[str, dict[str, Any]]:
        media = super().pop_media(kwargs)
        if media:
            shared = {k: kwargs.pop(k) for k in self.shared_keys if kwargs.get(k) is not None}
            for k in self.shared_keys:
                kwargs.pop(k, None)
            for inputs in media.values():
                inputs.update(shared)
        if "image" in media and media["image"].get("image_sizes") is None:
            raise ValueError(f"image_sizes: {self.model.config.model_type} needs it with pixel_values (AnyRes)")
        return media

    # -- signals ---------------------------------------------------------------------------------------

    def _plan(self, compressor: Compressor, inputs: dict[str, Any]) -> _Plan:
        cfg = self.model.config
        info = compressor.info
        wanted = set(info.signals) | set(info.optional_signals)
        layers = self.vision_layers()
        strategy = inputs.get("vision_feature_select_strategy", cfg.vision_feature_select_strategy)
        drop_cls = 1 if strategy == "default" else 0
        attn_layers: list[int] = []
        mode = self.recorded_attention(compressor)
        if mode is not None:
            attn_layers = [encoder_layer(i, len(layers), f"layers of {info.name}") for i in compressor.encoder_layers]
        key_layer = None
        if "keys" in wanted:
            feature_layer = inputs.get("vision_feature_layer", cfg.vision_feature_layer)
            last = feature_layer if isinstance(feature_layer, int) else feature_layer[-1]
            key_layer = encoder_layer(last if last < 0 else last - 1, len(layers), "vision_feature_layer")
        return _Plan(attn_layers, mode, key_layer, "text" in wanted, drop_cls)

    def _probe(self, plan: _Plan) -> AttentionProbe:
        layers = self.vision_layers()
        probed = set(plan.attn_layers) | (set() if plan.key_layer is None else {plan.key_layer})
        return AttentionProbe({i: layers[i].self_attn for i in probed})

    @staticmethod
    def _pass_values(probe: AttentionProbe, plan: _Plan, passes: int, tokens: int, device: Any) -> Tensor:
        """Per tower pass and patch token: ``[passes, tokens, L + Dk + 1]`` (attention rows, keys, a 0 marker)."""
        parts = []
        if plan.attn_layers:
            rows = attention_rows(probe, plan.attn_layers, plan.mode)[:, :, plan.drop_cls :]
            rows = rows / rows.mean(-1, keepdim=True).clamp_min(torch.finfo(rows.dtype).tiny)
            parts.append(rows.transpose(1, 2))
        if plan.key_layer is not None:
            parts.append(probe.keys(plan.key_layer)[:, plan.drop_cls :])
        parts = [p.to(device) for p in parts]
        parts.append(torch.zeros(passes, tokens, 1, device=device))
        return torch.cat(parts, dim=-1)

    def _tokens(
        self,
        modality: str,
        plan: _Plan,
        features: list[Tensor],
        values: list[Tensor],
        grids: list[tuple[int, int, int]],
        input_ids: Tensor,
        attention_mask: Tensor,
        counts: list[int],
    ) -> tuple[VisualTokens, list[int]]:
        """Padded ``VisualTokens`` of the items' visual tokens, and each item's batch row."""
        width = max(f.shape[0] for f in features)
        device = features[0].device
        lengths = torch.tensor([f.shape[0] for f in features], device=device)
        signals: dict[str, Tensor] = {}
        n_attn = len(plan.attn_layers)
        if n_attn:
            signals["cls_attn"] = stack_padded([v[:, :n_attn] for v in values], width).transpose(1, 2).contiguous()
        if plan.key_layer is not None:
            signals["keys"] = stack_padded([v[:, n_attn:-1] for v in values], width)
        rows = assign_rows(input_ids, self.token_id(modality), counts, modality)
        if plan.text:
            media_ids = {getattr(self.model.config, f"{m}_token_id", None) for m in ("image", "video")} - {None}
            signals["text"], signals["text_mask"] = question_text(
                self.model, input_ids, attention_mask, rows, media_ids
            )
        tokens = VisualTokens(
            features=stack_padded(features, width),
            mask=torch.arange(width, device=device)[None, :] < lengths[:, None],
            grid=torch.tensor(grids, device=device),
            **{k: v.to(device) for k, v in signals.items()},
        )
        return tokens, rows

    # -- encoding --------------------------------------------------------------------------------------

    def encode(
        self, modality: str, inputs: dict[str, Any], compressor: Compressor, input_ids: Tensor, attention_mask: Tensor
    ) -> Encoded:
        if modality == "video":
            return self._encode_videos(inputs, compressor, input_ids, attention_mask)
        return self._encode_images(inputs, compressor, input_ids, attention_mask)

    def _call_args(self, fn: Any, inputs: dict[str, Any]) -> dict[str, Any]:
        accepted = inspect.signature(fn).parameters
        return {k: v for k, v in inputs.items() if k in accepted}

    def _encode_images(
        self, inputs: dict[str, Any], compressor: Compressor, input_ids: Tensor, attention_mask: Tensor
    ) -> Encoded:
        base = self.model.model
        plan = self._plan(compressor, inputs)
        calls: list[inspect.BoundArguments] = []
        with self._probe(plan) as probe, recording(base, "pack_image_features", calls) as pack:
            out = base.get_image_features(**self._call_args(base.get_image_features, inputs))
        if len(calls) != 1:
            raise RuntimeError(f"{type(base).__name__}.get_image_features: expected one pack_image_features call")
        packed = list(out.pooler_output)
        call = calls[0]
        per_crop = call.arguments["image_features"]
        crops = [f.shape[0] for f in per_crop]
        patch_tokens = per_crop[0].shape[1]
        device = packed[0].device
        values = self._pass_values(probe, plan, sum(crops), patch_tokens, device)
        marker = torch.zeros(values.shape[-1], device=device)
        marker[-1] = 1.0
        call.arguments["image_features"] = list(values.split(crops))
        call.arguments["image_newline"] = marker
        mapped, _ = pack(*call.args, **call.kwargs)
        layouts, features, signals, grids = [], [], [], []
        side = math.isqrt(patch_tokens)
        for i, (item, channels) in enumerate(zip(packed, mapped, strict=True)):
            if channels.shape[0] != item.shape[0]:
                raise RuntimeError(f"image {i}: the signal layout has {channels.shape[0]} tokens, not {item.shape[0]}")
            layout = newline_layout(channels[:, -1] > 0.5, patch_tokens if crops[i] > 1 else 0, item)
            layouts.append(layout)
            features.append(item[layout.visual])
            signals.append(channels[layout.visual])
            n = layout.visual.numel()
            grids.append((1, side, side) if crops[i] == 1 and side * side == n else (1, 1, n))
        counts = [item.shape[0] for item in packed]
        tokens, rows = self._tokens("image", plan, features, signals, grids, input_ids, attention_mask, counts)
        return Encoded("image", tokens, rows, counts, {"layouts": layouts})

    def pool_frames(self, values: Tensor) -> Tensor:
        """Per-frame token values ``[frames, P, C]`` pooled like the video features: ``[frames, P', C]``."""
        raise NotImplementedError

    def _encode_videos(
        self, inputs: dict[str, Any], compressor: Compressor, input_ids: Tensor, attention_mask: Tensor
    ) -> Encoded:
        base = self.model.model
        plan = self._plan(compressor, inputs)
        pixels = inputs["pixel_values_videos"]
        videos, frames = pixels.shape[:2]
        with self._probe(plan) as probe:
            out = base.get_video_features(**self._call_args(base.get_video_features, inputs))
        # per video [n, D]; transformers < 5.19 splits NeXT-Video's features per video as [frames, P', D]
        packed = [item.reshape(-1, item.shape[-1]) for item in out.pooler_output]
        device = packed[0].device
        side = self.grid_side()
        values = self._pass_values(probe, plan, videos * frames, side * side, device)
        pooled = self.pool_frames(values)  # [V*F, P', C]
        per_frame = pooled.shape[1]
        pooled = pooled.reshape(videos, frames * per_frame, -1)
        psides = math.isqrt(per_frame)
        grid = (frames, psides, psides) if psides * psides == per_frame else (frames, 1, per_frame)
        layouts, features, signals = [], [], []
        for i, item in enumerate(packed):
            extra = item.shape[0] - frames * per_frame
            if extra not in (0, 1):
                raise RuntimeError(f"video {i}: {item.shape[0]} tokens for {frames} frames of {per_frame}")
            is_newline = torch.zeros(item.shape[0], dtype=torch.bool, device=device)
            is_newline[frames * per_frame :] = True  # OneVision: one trailing image_newline per video
            layout = newline_layout(is_newline, 0, item)
            layouts.append(layout)
            features.append(item[layout.visual])
            signals.append(pooled[i])
        counts = [item.shape[0] for item in packed]
        grids = [grid] * len(packed)
        tokens, rows = self._tokens("video", plan, features, signals, grids, input_ids, attention_mask, counts)
        return Encoded("video", tokens, rows, counts, {"layouts": layouts})

    # -- selection and packing -------------------------------------------------------------------------

    def compress(self, encoded: Encoded, compressor: Compressor) -> Compressed:
        return with_newlines(compressor(encoded.tokens), encoded.extra["layouts"], encoded.counts)

    def pack(self, encoded: Encoded, compressed: Compressed) -> BaseModelOutputWithPooling:
        kept = [compressed.features[i, : int(k)] for i, k in enumerate(compressed.counts)]
        if encoded.modality == "video":
            return BaseModelOutputWithPooling(pooler_output=self.pack_videos(kept))
        return BaseModelOutputWithPooling(pooler_output=kept)

    def pack_videos(self, kept: list[Tensor]) -> Any:
        return kept


class LlavaNextVideoAdapter(LlavaNextAdapter):
    """NeXT-Video: the NeXT image path, and videos pooled by ``vision_resampler`` (no newline)."""

    model_types = ("llava_next_video",)
    media_keys = {"image": ("pixel_values", "image_sizes"), "video": ("pixel_values_videos",)}

    def pool_frames(self, values: Tensor) -> Tensor:
        cfg = self.model.config
        if cfg.spatial_pool_mode == "average":
            return self.model.model.vision_resampler(values)
        side = self.grid_side()
        stride = cfg.spatial_pool_stride
        grids = values.transpose(1, 2).reshape(values.shape[0], values.shape[2], side, side)
        return F.avg_pool2d(grids, stride, stride).flatten(2).transpose(1, 2)


class LlavaOnevisionAdapter(LlavaNextAdapter):
    """OneVision: SigLIP (no [CLS]), AnyRes images (``anyres_max``), videos pooled 2x2 plus one newline."""

    model_types = ("llava_onevision",)
    media_keys = {
        "image": ("pixel_values", "image_sizes", "batch_num_images", "vision_aspect_ratio"),
        "video": ("pixel_values_videos", "image_sizes_videos"),
    }

    def pool_frames(self, values: Tensor) -> Tensor:
        return self.model.model.apply_pooling(values)

    def pack_videos(self, kept: list[Tensor]) -> Tensor:
        # forward flattens [videos, n, D]; videos whose kept counts differ go as one row
        if len({k.shape[0] for k in kept}) == 1:
            return torch.stack(kept)
        return torch.cat(kept)[None]


ADAPTERS = (LlavaNextAdapter, LlavaOnevisionAdapter, LlavaNextVideoAdapter)
