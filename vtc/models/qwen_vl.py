"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL (``qwen2_vl``, ``qwen2_5_vl``, ``qwen3_vl``): a native-resolution ViT.

Rules this adapter follows:

- Media: images (``pixel_values``, ``image_grid_thw``) and videos (``pixel_values_videos``,
  ``video_grid_thw``, and ``second_per_grid_ts`` for Qwen2.5-VL). ``mm_token_type_ids`` (0 text,
  1 image, 2 video, as the processor returns it) is required with pixels: the M-RoPE positions are
  computed from it. Each image and each video is one sample for the compressor, with grid
  ``(t, h / merge, w / merge)`` (``t`` = ``grid_thw[0]``, temporal patches already merged). Tokens are
  in the order ``get_image_features`` / ``get_video_features`` return them: frame-major, row-major over
  the merged grid.
- Encoding goes through the model's own ``model.model.get_image_features`` / ``get_video_features``.
  Qwen3-VL's deepstack features (one tensor per image per level) follow the same selection as the main
  features: kept tokens keep theirs, merged slots get the mean of their members
  (:func:`vtc.models.base.slot_means`, also for methods that override a slot's feature), packed back
  into the output type ``get_image_features`` returns.
- Positions: the full, unpruned M-RoPE positions come from the model's own code:
  ``model.model.get_rope_index`` for ``forward`` (``[3, B, L]``, what the unpatched forward computes)
  and ``model._prepare_position_ids_for_generation`` for ``generate`` (``[4, B, L]``, row 0 the text
  positions). Kept tokens and all text keep their columns' values. A merged slot takes the column of its
  representative (``Compressed.index``), so a token merged over time sits at its representative's
  ``(t, h, w)``: ``temporal_pool``'s at the first frame of its run, ``fastvid``'s at its anchor, ToMe's
  at its B token (tested for every method against a hand-built sequence). Row 0 of a 4-row tensor is then
  recomputed as the compact text position of the pruned sequence (``cumsum(mask) - 1``, as transformers
  does), since it only drives the causal mask. ``model.model.rope_deltas`` is set to
  ``max(kept position) + 1 - valid length`` per row, so that later cache-continuation ``forward`` calls
  (without position ids) continue from the pruned prompt's largest position + 1; ``generate`` itself
  continues from the last column + 1, as it does unpatched. The placeholder counts are checked against
  the grids before any position is computed. ``generate`` gets no ``mm_token_type_ids`` (it validates its
  kwargs against the patched forward's signature, and with position ids given the model does not use it).
- Signals, recorded without switching the tower to eager: the chosen ViT blocks' attention modules get
  a config copy whose ``_attn_implementation`` is a recording function registered through transformers'
  ``AttentionInterface``; it sees the post-RoPE queries and keys of each attention segment, records what
  is needed and delegates to the original implementation (sdpa or eager, tested; a flash implementation
  is then called once per segment, untested here); everything is restored after the call.
  ``keys``: the post-RoPE keys of the last ViT block (the one whose output the merger turns into
  features), averaged over heads, then over the ``merge**2`` patches of each merged token.
  ``text``: the LLM input embeddings of each sample's row, text tokens only.
  ``cls_attn``: Qwen's ViT has no [CLS]. Methods that need the [CLS] row raise a ValueError (at the first
  call with pixels) listing the methods that work without it, unless
  ``vtc.apply(..., cls_substitute="received")``; then they get,
  like methods configured with ``attention="received"`` (HiPrune), the attention each token receives:
  ``softmax(q k^T * scale)`` of the block, averaged over heads and over the queries of its attention
  segment (an image or video frame; for Qwen2.5-VL's windowed blocks, its window), summed over the
  ``merge**2`` patches of each merged token (a segment's row sums to 1). ``layers`` name ViT blocks
  (negative counts from the end). Qwen2.5-VL runs its tower in window order; recorded values are put
  back in token order with the tower's own window index.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from transformers.modeling_outputs import BaseModelOutputWithPooling

from vtc.core.registry import Compressor
from vtc.core.types import Compressed, VisualTokens
from vtc.models.attention import observe_attention
from vtc.models.base import (
    Adapter,
    Encoded,
    assign_rows,
    question_text,
    slot_means,
    stack_padded,
)
from vtc.models.llava import encoder_layer

SCORE_ELEMENTS = 1 << 24  # attention logits computed at once when scoring received attention


def received_attention(query: Tensor, key: Tensor, scaling: float) -> Tensor:
    """Attention each key receives, ``[S]``: softmax rows averaged over heads and queries (q, k: ``[H, S, hd]``)."""
    q, k = query.float(), key.float()
    if k.shape[0] != q.shape[0]:
        k = k.repeat_interleave(q.shape[0] // k.shape[0], dim=0)
    heads, length = q.shape[0], q.shape[1]
    total = q.new_zeros(k.shape[1])
    chunk = max(1, SCORE_ELEMENTS // (heads * k.shape[1]))
    for start in range(0, length, chunk):
        logits = (q[:, start : start + chunk] @ k.transpose(-1, -2)) * scaling
        total += logits.softmax(-1).sum(dim=(0, 1))
    return total / (heads * length)


class _Recorder:
    """What one attention module records: head-averaged keys and/or received attention, per segment."""

    def __init__(self, keys: bool, received: bool) -> None:
        self.want_keys = keys
        self.want_received = received
        self.keys: list[Tensor] = []
        self.received: list[Tensor] = []

    @staticmethod
    def _segments(query: Tensor, key: Tensor, kwargs: dict[str, Any]):
        """``[H, s, hd]`` pieces: one per batch entry, or per ``cu_seq_lens`` segment of a packed call."""
        bounds = kwargs.get("cu_seq_lens_q")
        for b in range(query.shape[0]):
            if bounds is None or query.shape[0] != 1:
                yield query[b], key[b]
                continue
            cuts = bounds.tolist()
            for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
                yield query[b, :, lo:hi], key[b, :, lo:hi]

    def observe(self, query: Tensor, key: Tensor, scaling: float, kwargs: dict[str, Any]) -> None:
        with torch.no_grad():
            for q, k in self._segments(query, key, kwargs):
                if self.want_keys:
                    self.keys.append(k.float().mean(0))
                if self.want_received:
                    self.received.append(received_attention(q, k, scaling))


class TowerProbe:
    """Context manager recording keys / received attention of chosen ViT blocks through the attention interface.

    ``keys`` and ``received`` are sets of block indices. Values come back per patch, in the order the
    tower processes them, concatenated over the call's attention segments.
    """

    def __init__(self, blocks: Any, keys: set[int], received: set[int]) -> None:
        self.modules = {i: blocks[i].attn for i in keys | received}
        self.recorders = {i: _Recorder(i in keys, i in received) for i in self.modules}

    def __enter__(self) -> TowerProbe:
        self._restore = observe_attention({self.modules[i]: self.recorders[i] for i in self.modules})
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def keys(self, block: int) -> Tensor:
        return torch.cat(self.recorders[block].keys)

    def received(self, block: int) -> Tensor:
        return torch.cat(self.recorders[block].received)


class QwenVLAdapter(Adapter):
    """Qwen2-VL and Qwen3-VL (deepstack); Qwen2.5-VL adds its window order in a subclass."""

    model_types = ("qwen2_vl", "qwen3_vl")
    media_keys = {
        "image": ("pixel_values", "image_grid_thw"),
        "video": ("pixel_values_videos", "video_grid_thw"),
    }
    sequence_keys = ("mm_token_type_ids",)
    rope_keys: tuple[str, ...] = ("image_grid_thw", "video_grid_thw")  # media inputs get_rope_index takes

    def tower(self) -> Any:
        return self.model.model.visual

    def vision_layers(self) -> Any:
        return self.tower().blocks

    def touched_attributes(self) -> list[tuple[Any, str]]:
        return [(self.model.model, "rope_deltas")]  # finish() sets the decode-time offset of the pruned prompt

    def merge_size(self) -> int:
        return int(self.model.config.vision_config.spatial_merge_size)

    def token_order(self, grid: Tensor) -> Tensor | None:
        """Merged-token permutation from the tower's processing order to the features' order (None: same)."""
        return None

    def pop_media(self, kwargs: dict[str, Any]) -> dict[str, dict[str, Any]]:
        media = super().pop_media(kwargs)
        if not media:
            return media
        types = kwargs.get("mm_token_type_ids")
        if types is None:
            raise ValueError(
                f"mm_token_type_ids: {self.model.config.model_type} needs it with pixel inputs (0 text, 1 image, "
                "2 video, as the processor returns it) to compute the M-RoPE positions"
            )
        input_ids = kwargs.get("input_ids")
        for modality, inputs in media.items():
            grid_key = self.media_keys[modality][1]
            grid = inputs.get(grid_key)
            if grid is None:
                raise ValueError(f"{grid_key}: needed with {self.media_keys[modality][0]}")
            if input_ids is not None:  # checked before the positions are computed from the grids
                token_id = self.token_id(modality)
                found, needed = int((input_ids == token_id).sum()), int(grid.prod(-1).sum()) // self.merge_size() ** 2
                if found != needed:
                    raise ValueError(
                        f"input_ids: {found} {modality} placeholder tokens (id {token_id}) for {modality}s that give "
                        f"{needed} features ({grid_key} {grid.tolist()})"
                    )
            inputs["mm_token_type_ids"] = types  # for base_positions; encode ignores it
        return media

    def base_positions(self, input_ids: Tensor, attention_mask: Tensor, media: dict, generating: bool) -> Tensor:
        rope: dict[str, Any] = {"attention_mask": attention_mask}
        for inputs in media.values():
            rope["mm_token_type_ids"] = inputs["mm_token_type_ids"]
            rope.update({k: v for k, v in inputs.items() if k in self.rope_keys})
        if generating:  # [4, B, L]: the text row, then the three M-RoPE rows
            return self.model._prepare_position_ids_for_generation(input_ids, {"input_ids": input_ids, **rope})
        positions, _ = self.model.model.get_rope_index(input_ids, **rope)
        return positions  # [3, B, L], what the unpatched forward computes

    def _attention_layers(self, compressor: Compressor) -> list[int]:
        """Blocks whose received attention stands for ``cls_attn`` (Qwen's ViT has no [CLS])."""
        if self.recorded_attention(compressor) is None:
            return []
        info = compressor.info
        depth = len(self.tower().blocks)
        return [encoder_layer(i, depth, f"layers of {info.name}") for i in compressor.encoder_layers]

    def encode(
        self, modality: str, inputs: dict[str, Any], compressor: Compressor, input_ids: Tensor, attention_mask: Tensor
    ) -> Encoded:
        pixel_key, grid_key = self.media_keys[modality][:2]
        grid = inputs[grid_key]
        wanted = set(compressor.info.signals) | set(compressor.info.optional_signals)
        attn_layers = self._attention_layers(compressor)
        blocks = self.tower().blocks
        key_block = len(blocks) - 1
        encode = getattr(self.model.model, f"get_{modality}_features")
        with TowerProbe(blocks, {key_block} if "keys" in wanted else set(), set(attn_layers)) as probe:
            out = encode(**{pixel_key: inputs[pixel_key], grid_key: grid})
        features = list(out.pooler_output)
        counts = [f.shape[0] for f in features]
        merge = self.merge_size()
        grids = [(t, h // merge, w // merge) for t, h, w in grid.tolist()]
        order = self.token_order(grid)
        unit = merge * merge

        def per_token(values: Tensor, reduce: str) -> list[Tensor]:
            pooled = values.view(values.shape[0] // unit, unit, *values.shape[1:])
            pooled = pooled.sum(1) if reduce == "sum" else pooled.mean(1)
            if order is not None:
                pooled = pooled[order.to(pooled.device)]
            return list(pooled.split(counts))

        width = max(counts)
        signals: dict[str, Tensor] = {}
        if attn_layers:
            rows = [stack_padded(per_token(probe.received(i), "sum"), width) for i in attn_layers]
            signals["cls_attn"] = torch.stack(rows, dim=1)
        if "keys" in wanted:
            signals["keys"] = stack_padded(per_token(probe.keys(key_block), "mean"), width)
        rows = assign_rows(input_ids, self.token_id(modality), counts, modality)
        if "text" in wanted:
            signals["text"], signals["text_mask"] = question_text(
                self.model, input_ids, attention_mask, rows, {self.token_id("image"), self.token_id("video")}
            )
        device = features[0].device
        lengths = torch.tensor(counts, device=device)
        tokens = VisualTokens(
            features=stack_padded(features, width),
            mask=torch.arange(width, device=device)[None, :] < lengths[:, None],
            grid=torch.tensor(grids, device=device),
            **{k: v.to(device) for k, v in signals.items()},
        )
        extra: dict[str, Any] = {"output_type": type(out)}
        deepstack = getattr(out, "deepstack_features", None)
        if deepstack is not None:
            extra["deepstack"] = [list(level) for level in deepstack]
        return Encoded(modality, tokens, rows, counts, extra)

    def pack(self, encoded: Encoded, compressed: Compressed) -> BaseModelOutputWithPooling:
        kept = [compressed.features[i, : int(k)] for i, k in enumerate(compressed.counts)]
        deepstack = encoded.extra.get("deepstack")
        if deepstack is None:
            return BaseModelOutputWithPooling(pooler_output=kept)
        levels = [[slot_means(level[i], compressed, i) for i in range(len(kept))] for level in deepstack]
        return encoded.extra["output_type"](pooler_output=kept, deepstack_features=levels)

    @classmethod
    def tower_depth(cls, config: Any) -> int:
        return int(config.vision_config.depth)

    @classmethod
    def llm_stage_problem(cls, config: Any, compressor: Compressor) -> str | None:
        """Qwen3-VL adds deepstack features to the visual tokens after its first LLM layers: drop after those."""
        levels = len(getattr(config.vision_config, "deepstack_visual_indexes", None) or [])
        first = min(compressor.llm_layers)
        if first < levels:
            return (
                f"{compressor.info.name}: {config.model_type} adds deepstack features to the visual tokens after LLM "
                f"layers 0..{levels - 1}; drop tokens after a later layer (layer >= {levels}), got {first}"
            )
        return None

    def finish(self, kwargs: dict[str, Any], generating: bool) -> None:
        positions, mask = kwargs["position_ids"], kwargs["attention_mask"]
        if positions.ndim == 3 and positions.shape[0] == 4:
            positions = positions.clone()
            text = mask.long().cumsum(-1) - 1
            positions[0] = text.masked_fill(mask == 0, 0)
            kwargs["position_ids"] = positions
        rope = positions[-3:] if positions.ndim == 3 else positions[None]
        valid = mask.bool()
        top = rope.masked_fill(~valid[None], torch.iinfo(rope.dtype).min).amax(dim=(0, 2))
        self.model.model.rope_deltas = (top + 1 - valid.sum(1))[:, None]
        if generating:
            # generate validates its kwargs against the patched forward's signature, which does not name
            # mm_token_type_ids; with position_ids given, the model does not use it anyway
            kwargs.pop("mm_token_type_ids", None)


class Qwen25VLAdapter(QwenVLAdapter):
    """Qwen2.5-VL: videos carry ``second_per_grid_ts``; the tower runs in window order."""

    model_types = ("qwen2_5_vl",)
    media_keys = {
        "image": ("pixel_values", "image_grid_thw"),
        "video": ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts"),
    }
    rope_keys = ("image_grid_thw", "video_grid_thw", "second_per_grid_ts")

    def token_order(self, grid: Tensor) -> Tensor:
        tower = self.tower()
        try:
            from transformers.vision_utils import get_vision_window_index

            index, _ = get_vision_window_index(grid, tower.spatial_merge_size, tower.window_size, tower.patch_size)
        except ImportError:  # older transformers: the tower's own method
            index, _ = tower.get_window_index(grid)
        return torch.argsort(index)


ADAPTERS = (QwenVLAdapter, Qwen25VLAdapter)
