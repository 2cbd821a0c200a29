"""LLaVA-1.5 (``llava``): a CLIP tower, [CLS] dropped, one 2-D grid of patch tokens per image.

Signals: ``cls_attn`` from the tower's [CLS] query and keys at the layers a method names (encoder layer
indices, e.g. ``-2`` for the layer whose output LLaVA uses), or the attention each token receives for
methods configured with ``attention="received"``; ``keys`` are the head-averaged keys of the layer
that produces the features; ``text`` is the LLM input embeddings of the prompt's text tokens.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor
from transformers.modeling_outputs import BaseModelOutputWithPooling

from vtc.core.registry import Compressor
from vtc.core.types import Compressed, VisualTokens
from vtc.models.attention import AttentionProbe, attention_rows
from vtc.models.base import Adapter, Encoded, assign_rows, question_text


def encoder_layer(index: int, num_layers: int, what: str) -> int:
    """A layer index (negative counts from the end) checked against the tower's depth."""
    if not -num_layers <= index < num_layers:
        raise ValueError(f"{what}: expected an encoder layer index in [-{num_layers}, {num_layers}), got {index}")
    return index % num_layers


class LlavaAdapter(Adapter):
    model_types = ("llava",)
    media_keys = {"image": ("pixel_values", "image_sizes", "vision_feature_layer", "vision_feature_select_strategy")}

    def vision_layers(self) -> Any:
        return self.model.model.vision_tower.encoder.layers

    def grid_side(self) -> int:
        cfg = self.model.config.vision_config
        return cfg.image_size // cfg.patch_size

    def encode(
        self, modality: str, inputs: dict[str, Any], compressor: Compressor, input_ids: Tensor, attention_mask: Tensor
    ) -> Encoded:
        cfg = self.model.config
        feature_layer = inputs.get("vision_feature_layer", cfg.vision_feature_layer)
        strategy = inputs.get("vision_feature_select_strategy", cfg.vision_feature_select_strategy)
        layers = self.vision_layers()
        wanted = set(compressor.info.signals) | set(compressor.info.optional_signals)
        mode = self.recorded_attention(compressor)
        attn_layers = []
        if mode is not None:
            attn_layers = [encoder_layer(i, len(layers), f"layers of {compressor.info.name}")
                           for i in compressor.encoder_layers]
        last = feature_layer if isinstance(feature_layer, int) else feature_layer[-1]
        key_layer = encoder_layer(last if last < 0 else last - 1, len(layers), "vision_feature_layer")
        probed = set(attn_layers) | ({key_layer} if "keys" in wanted else set())
        merging = self._merging(feature_layer)
        with AttentionProbe({i: layers[i].self_attn for i in probed}) as probe, merging or nullcontext():
            out = self.model.model.get_image_features(
                pixel_values=inputs["pixel_values"],
                vision_feature_layer=feature_layer,
                vision_feature_select_strategy=strategy,
                **({"image_sizes": inputs["image_sizes"]} if "image_sizes" in inputs else {}),
            )
        features = list(out.pooler_output)
        counts = [f.shape[0] for f in features]
        if len(set(counts)) != 1:
            raise ValueError(f"pixel_values: images give different token counts {counts}; pass one size per call")
        drop_cls = 1 if strategy == "default" else 0
        side = self.grid_side()
        grid = (1, side, side) if drop_cls and side * side == counts[0] else (1, 1, counts[0])
        extra: dict[str, Any] = {}
        if merging is not None:  # the tower merged tokens: describe them in the tower's source tokens
            k = feature_layer % (len(layers) + 1)  # hidden state k: the embeddings (0) or block k-1's output
            snapshot = merging.inputs[0] if k == 0 else merging.snapshots[k - 1]
            sources = snapshot.sources[:, drop_cls:] - drop_cls
            extra["grids"] = [[1, side, side] if side * side == sources.shape[1] else [1, 1, sources.shape[1]]] * len(
                features
            )
            extra["encoder"] = Compressed(
                torch.stack(features),
                torch.ones(len(features), counts[0], dtype=torch.bool, device=sources.device),
                snapshot.own[:, drop_cls:] - drop_cls,
                sources,
                snapshot.sizes[:, drop_cls:].round().long(),
                method=self.encoder.info.name,
            )
            grid = (1, 1, counts[0])
            for i in attn_layers:
                if merging.inputs[i].sizes.shape[1] != counts[0] + drop_cls:
                    raise ValueError(
                        f"layers of {compressor.info.name}: with tome_encoder, attention can be read only where the "
                        f"tower has the feature layer's tokens; layer {i} has {merging.inputs[i].sizes.shape[1]}"
                    )
        signals: dict[str, Tensor] = {}
        if attn_layers:
            signals["cls_attn"] = attention_rows(probe, attn_layers, mode)[:, :, drop_cls:]
        if "keys" in wanted:
            signals["keys"] = probe.keys(key_layer)[:, drop_cls:]
        placeholders = counts if merging is None else [extra["encoder"].assign.shape[1]] * len(counts)
        rows = assign_rows(input_ids, self.token_id(modality), placeholders, modality)
        if "text" in wanted:
            signals["text"], signals["text_mask"] = question_text(
                self.model, input_ids, attention_mask, rows, {self.token_id(modality)}
            )
        tokens = VisualTokens(
            features=torch.stack(features),
            grid=torch.tensor([grid] * len(features), device=features[0].device),
            **signals,
        )
        return Encoded(modality, tokens, rows, placeholders, extra)

    def _merging(self, feature_layer: Any) -> Any:
        """The encoder stage's hooks on the tower for one call (an inactive context when there is none)."""
        from vtc.models.vit import encoder_merging, tower_of

        if self.encoder is None:
            return None
        if not isinstance(feature_layer, int):
            raise ValueError(
                f"vision_feature_layer: {self.encoder.info.name} needs a single feature layer, got {feature_layer!r}"
            )
        return encoder_merging(self.encoder, tower_of(self.model.model.vision_tower))

    @classmethod
    def supports_encoder_stage(cls, config: Any) -> bool:
        return config.model_type in cls.model_types and cls is LlavaAdapter

    def pack(self, encoded: Encoded, compressed: Compressed) -> BaseModelOutputWithPooling:
        kept = [compressed.features[i, : int(k)] for i, k in enumerate(compressed.counts)]
        return BaseModelOutputWithPooling(pooler_output=kept)


ADAPTERS = (LlavaAdapter,)
