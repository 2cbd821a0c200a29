"""What every model adapter shares: the media it encodes, the sequence rewrite, and the patch handle.

The route (DESIGN.md, transformers >= 5.18): when a patched model is called with pixel inputs, the
adapter encodes the media itself through the model's own ``get_image_features``, runs the compressor,
drops the placeholder tokens of the pruned visual tokens from ``input_ids`` (and the attention mask,
labels and position ids), and calls the original ``forward``/``generate`` with
``mm_encoder_outputs=`` holding the kept features. Kept tokens and the text after them keep their
original positions. No transformers ``forward`` body is copied: only ``forward`` and ``generate`` are
wrapped on the instance, and ``remove()`` deletes the wrappers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from vtc.core.registry import Compressor, list_methods
from vtc.core.types import Compressed, VisualTokens


@dataclass
class Encoded:
    """One modality of one call, encoded: tokens for the compressor, and where they sit in the prompt.

    ``rows[i]`` is the batch row holding media item ``i`` (items in prompt order), ``counts[i]`` its
    number of placeholder tokens. ``extra`` holds what the adapter needs to pack the kept features.
    """

    modality: str
    tokens: VisualTokens
    rows: list[int]
    counts: list[int]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Rewritten:
    input_ids: Tensor
    attention_mask: Tensor
    position_ids: Tensor
    labels: Tensor | None
    extras: dict[str, Tensor] = field(default_factory=dict)


def _left_padded(attention_mask: Tensor) -> bool:
    """Whether padding sits on the left (some row starts with padding and every row ends valid)."""
    return bool((attention_mask[:, 0] == 0).any()) and bool((attention_mask[:, -1] == 1).all())


def rewrite_sequence(
    input_ids: Tensor,
    attention_mask: Tensor,
    position_ids: Tensor,
    labels: Tensor | None,
    keep: Tensor,
    pad_token_id: int,
    extras: dict[str, Tensor] | None = None,
) -> Rewritten:
    """Drop the columns where ``keep [B, L]`` is False, per row, and re-pad on the original side.

    ``position_ids`` is ``[B, L]`` or ``[R, B, L]`` (Qwen's M-RoPE rows); the kept columns keep their
    values. Padding gets ``pad_token_id``, mask 0, label -100, position 0, and 0 in ``extras`` (other
    ``[B, L]`` tensors that follow the sequence, e.g. Qwen's ``mm_token_type_ids``).
    """
    extras = extras or {}
    batch = input_ids.shape[0]
    left = _left_padded(attention_mask)
    lengths = keep.sum(1)
    width = int(lengths.max())
    pos = position_ids if position_ids.ndim == 3 else position_ids[None]
    new_ids = input_ids.new_full((batch, width), pad_token_id)
    new_mask = attention_mask.new_zeros((batch, width))
    new_pos = pos.new_zeros((pos.shape[0], batch, width))
    new_labels = None if labels is None else labels.new_full((batch, width), -100)
    new_extras = {name: t.new_zeros((batch, width)) for name, t in extras.items()}
    for b in range(batch):
        cols = keep[b].nonzero()[:, 0]
        n = cols.numel()
        dst = slice(width - n, width) if left else slice(0, n)
        new_ids[b, dst] = input_ids[b, cols]
        new_mask[b, dst] = attention_mask[b, cols]
        new_pos[:, b, dst] = pos[:, b, cols]
        if new_labels is not None:
            new_labels[b, dst] = labels[b, cols]
        for name, t in extras.items():
            new_extras[name][b, dst] = t[b, cols]
    if position_ids.ndim == 2:
        new_pos = new_pos[0]
    return Rewritten(new_ids, new_mask, new_pos, new_labels, new_extras)


def placeholder_columns(input_ids: Tensor, token_id: int, encoded: Encoded) -> list[Tensor]:
    """Column indices of each media item's placeholder run, items taken in prompt order per row."""
    columns: list[Tensor] = []
    taken = [0] * input_ids.shape[0]
    row_cols = [(input_ids[b] == token_id).nonzero()[:, 0] for b in range(input_ids.shape[0])]
    for row, count in zip(encoded.rows, encoded.counts, strict=True):
        cols = row_cols[row][taken[row] : taken[row] + count]
        if cols.numel() != count:
            raise ValueError(
                f"input_ids: row {row} has {row_cols[row].numel()} {encoded.modality} placeholder tokens "
                f"(id {token_id}), fewer than its {encoded.modality}s need"
            )
        taken[row] += count
        columns.append(cols)
    for row, cols in enumerate(row_cols):
        if taken[row] != cols.numel():
            raise ValueError(
                f"input_ids: row {row} has {cols.numel()} {encoded.modality} placeholder tokens (id {token_id}), "
                f"but its {encoded.modality}s give {taken[row]} features"
            )
    return columns


def assign_rows(input_ids: Tensor, token_id: int, counts: list[int], modality: str) -> list[int]:
    """The batch row of each media item, given each item's placeholder count, in prompt order."""
    per_row = (input_ids == token_id).sum(1).tolist()
    rows, row, used = [], 0, 0
    for count in counts:
        while row < len(per_row) and used + count > per_row[row]:
            if used != per_row[row]:
                break
            row, used = row + 1, 0
        if row >= len(per_row) or used + count > per_row[row]:
            raise ValueError(
                f"input_ids: the {modality} placeholder tokens (id {token_id}) per row, {per_row}, do not match "
                f"the {len(counts)} {modality}(s) given, which need {counts} tokens each"
            )
        rows.append(row)
        used += count
    if sum(counts) != sum(per_row):
        raise ValueError(
            f"input_ids: {sum(per_row)} {modality} placeholder tokens (id {token_id}) for {modality}s that give "
            f"{sum(counts)} features"
        )
    return rows


def question_text(
    model: Any, input_ids: Tensor, attention_mask: Tensor, rows: list[int], media_ids: set[int]
) -> tuple[Tensor, Tensor]:
    """The LLM input embeddings of each item's row, text tokens only: ``text [M, T, D]``, ``mask [M, T]``."""
    embed = model.get_input_embeddings()
    is_text = attention_mask.bool()
    for token_id in media_ids:
        is_text &= input_ids != token_id
    lengths = is_text.sum(1)
    width = max(1, int(lengths.max()))
    with torch.no_grad():
        embeds = embed(input_ids)
    text = embeds.new_zeros((len(rows), width, embeds.shape[-1]))
    mask = torch.zeros((len(rows), width), dtype=torch.bool, device=input_ids.device)
    for i, row in enumerate(rows):
        n = int(lengths[row])
        text[i, :n] = embeds[row, is_text[row]]
        mask[i, :n] = True
    return text, mask


def slot_means(values: Tensor, compressed: Compressed, item: int) -> Tensor:
    """Per-token ``values [n, ...]`` of media item ``item`` reduced like its features: the mean of each slot.

    For tensors that must follow the same selection and merges as the features (e.g. Qwen3-VL's
    deepstack features).
    """
    k = int(compressed.counts[item])
    assign = compressed.assign[item, : values.shape[0]]
    kept = assign >= 0
    acc = torch.float64 if values.dtype == torch.float64 else torch.float32
    sums = values.new_zeros((k, *values.shape[1:]), dtype=acc).index_add_(0, assign[kept], values[kept].to(acc))
    sizes = compressed.sizes[item, :k].to(acc).view(k, *([1] * (values.ndim - 1)))
    return (sums / sizes).to(values.dtype)


def methods_without_cls() -> str:
    """Methods that run on towers without [CLS]: none needed, or they ask for received attention."""
    names = []
    for info in list_methods():
        if "cls_attn" not in info.signals:
            names.append(info.name)
        elif info.attention_field is not None:
            names.append(f"{info.name} ({info.attention_field}='received')")
    return ", ".join(names)


def stack_padded(pieces: list[Tensor], width: int) -> Tensor:
    """``[M, width, ...]`` with each piece (``[n_i, ...]``) at the start of its row, zeros after."""
    out = pieces[0].new_zeros((len(pieces), width, *pieces[0].shape[1:]))
    for i, piece in enumerate(pieces):
        out[i, : piece.shape[0]] = piece
    return out


CLS_SUBSTITUTES = (None, "received")
ENCODER_STAGE_MODELS = ("llava",)
CLS_TOWERS = ("clip_vision_model",)  # vision towers whose first token is a [CLS]


class Adapter:
    """One model family. Subclasses know their media inputs, encoders and positions.

    ``media_keys``: per modality, the call's keyword arguments that carry it (the first one, its pixels,
    says whether the modality is present). ``sequence_keys``: other ``[B, L]`` arguments that follow the
    token sequence. ``cls_substitute``: what to give methods that ask for ``cls_attn`` when the tower
    has no [CLS] (``None``: a clear error; ``"received"``: the attention each token receives).
    """

    model_types: tuple[str, ...] = ()
    media_keys: dict[str, tuple[str, ...]] = {}
    sequence_keys: tuple[str, ...] = ()

    def __init__(self, model: Any, cls_substitute: str | None = None) -> None:
        if cls_substitute not in CLS_SUBSTITUTES:
            raise ValueError(f"cls_substitute: expected None or 'received', got {cls_substitute!r}")
        self.model = model
        self.cls_substitute = cls_substitute
        self.encoder: Compressor | None = None  # the encoder-stage compressor, set by Patch

    def token_id(self, modality: str) -> int:
        return getattr(self.model.config, f"{modality}_token_id")

    def pad_token_id(self) -> int:
        pad = getattr(self.model.config.get_text_config(), "pad_token_id", None)
        return 0 if pad is None else int(pad)

    def pop_media(self, kwargs: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Remove each modality's pixel inputs from ``kwargs``; modalities without pixels are skipped."""
        media = {}
        for modality, keys in self.media_keys.items():
            pixels = kwargs.get(keys[0])
            if pixels is None:
                continue
            media[modality] = {k: kwargs.pop(k) for k in keys if kwargs.get(k) is not None}
            for k in keys:
                kwargs.pop(k, None)
        return media

    def base_positions(self, input_ids: Tensor, attention_mask: Tensor, media: dict, generating: bool) -> Tensor:
        """Positions the unpatched model would use for the full sequence."""
        if generating:
            return self.model._prepare_position_ids_for_generation(
                input_ids, {"input_ids": input_ids, "attention_mask": attention_mask}
            )
        return torch.arange(input_ids.shape[1], device=input_ids.device).expand(input_ids.shape[0], -1)

    def encode(
        self, modality: str, inputs: dict[str, Any], compressor: Compressor, input_ids: Tensor, attention_mask: Tensor
    ) -> Encoded:
        raise NotImplementedError

    def compress(self, encoded: Encoded, compressor: Compressor) -> Compressed:
        """Run ``compressor`` on ``encoded.tokens``; the result's ``index``/``assign`` address each item's
        placeholder run (by default the tokens are exactly the placeholders). Adapters whose placeholder
        runs hold tokens the compressor should not see (e.g. LLaVA-NeXT's row newlines) override this."""
        return compressor(encoded.tokens)

    def pack(self, encoded: Encoded, compressed: Compressed) -> Any:
        raise NotImplementedError

    def finish(self, kwargs: dict[str, Any], generating: bool) -> None:
        """Last touch on the rewritten call (e.g. compact text positions, rope deltas); default none."""

    def touched_attributes(self) -> list[tuple[Any, str]]:
        """``(object, attribute)`` pairs the adapter sets while patched; ``remove()`` puts their values back."""
        return []

    def visual_token_ids(self) -> set[int]:
        """Placeholder ids of every modality the model takes."""
        return {self.token_id(modality) for modality in self.media_keys}

    def decoder_layers(self) -> Any:
        return self.model.model.language_model.layers

    def vision_layers(self) -> Any:
        """The vision tower's blocks, in order."""
        raise NotImplementedError(f"{type(self).__name__}: vision_layers")

    # -- what a model of this family can run, from its config alone (checked before any forward) ----------

    @classmethod
    def has_cls(cls, config: Any) -> bool:
        """Whether the vision tower's first token is a [CLS] (CLIP) rather than a patch (SigLIP, Qwen's ViT)."""
        return getattr(config.vision_config, "model_type", None) in CLS_TOWERS

    @classmethod
    def tower_depth(cls, config: Any) -> int:
        """Blocks of the vision tower (the layers methods' ``encoder_layers`` index)."""
        return int(config.vision_config.num_hidden_layers)

    @classmethod
    def llm_depth(cls, config: Any) -> int:
        return int(config.get_text_config().num_hidden_layers)

    @classmethod
    def supports_encoder_stage(cls, config: Any) -> bool:
        return False

    @classmethod
    def llm_stage_problem(cls, config: Any, compressor: Compressor) -> str | None:
        """A family's own limit on the LLM stage's layers (e.g. Qwen3-VL's deepstack); default none."""
        return None

    @classmethod
    def problems(cls, config: Any, stages: dict[str, Compressor], cls_substitute: str | None) -> list[str]:
        """Why these stages cannot run on a model with this config: one message per problem (empty: fine).

        Checked: the stage is supported; LLM-stage layers leave a decoder layer after them and fit the
        family's limits, with a budget the method accepts there; the encoder layers a method reads exist;
        a method that needs [CLS] attention gets it, or ``cls_substitute`` stands in for it.
        """
        out = []
        model_type = config.model_type
        for stage, compressor in stages.items():
            info = compressor.info
            if stage == "encoder" and not cls.supports_encoder_stage(config):
                out.append(
                    f"{info.name}: the encoder stage is not supported on {model_type}; it runs on "
                    f"{', '.join(ENCODER_STAGE_MODELS)} (CLIP or SigLIP towers)"
                )
            if stage == "llm":
                depth, layers = cls.llm_depth(config), compressor.llm_layers
                if layers[-1] >= depth - 1:
                    out.append(
                        f"{info.name}: layer(s) {layers} must leave a decoder layer after them; this LLM has layers "
                        f"0..{depth - 1}, so use indices <= {depth - 2}"
                    )
                family = cls.llm_stage_problem(config, compressor)
                if family is not None:
                    out.append(family)
                if info.llm_budgets is not None and compressor.budget.kind not in info.llm_budgets:
                    out.append(
                        f"{info.name}: inside the LLM its budget is a {' or '.join(info.llm_budgets)} (e.g. ratio=0.5, "
                        f"kept at each layer), got {compressor.budget}"
                    )
            layers = compressor.encoder_layers
            if layers:
                depth = cls.tower_depth(config)
                outside = [i for i in layers if not -depth <= i < depth]
                if outside:
                    out.append(
                        f"{info.name}: reads encoder layer(s) {outside}, but the {model_type} vision tower has {depth} "
                        f"layers (indices {-depth}..{depth - 1}); pass layers= that fit"
                    )
            needs_cls = "cls_attn" in info.signals and compressor.attention_mode != "received"
            if needs_cls and not cls.has_cls(config) and cls_substitute is None:
                out.append(
                    f"{info.name}: needs [CLS] attention (cls_attn), but the {model_type} vision tower "
                    f"({config.vision_config.model_type}) has no [CLS] token; pass cls_substitute='received' to "
                    "vtc.apply to score tokens by the attention they receive, or use a method that works without "
                    f"cls_attn: {methods_without_cls()}"
                )
        return out

    def recorded_attention(self, compressor: Compressor) -> str | None:
        """The attention to record as the compressor's ``cls_attn``: ``"cls"``, ``"received"``, or None when
        it does not read one (or reads it optionally and this tower cannot give it)."""
        if not compressor.info.reads_cls_attn:
            return None
        mode = compressor.attention_mode
        if mode == "received" or self.has_cls(self.model.config):
            return mode
        return "received" if self.cls_substitute == "received" else None
