"""The handle ``vtc.apply`` returns: the model's ``forward``/``generate`` wrapped on the instance, the sequence
rewritten once per call for the encoder and projector stages, the LLM stage's hooks, stats, and ``remove()``.

See :mod:`vtc.models.base` for the route; no transformers ``forward`` body is copied.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from vtc.core.registry import Compressor
from vtc.core.types import Compressed
from vtc.models.base import Adapter, placeholder_columns, rewrite_sequence
from vtc.models.calls import cached_length


def keep_all() -> Compressor:
    """The projector stage when a chain has none: every token kept as it is."""
    from vtc.core.registry import build

    return build("uniform", ratio=1.0)



def _delegate(target: Callable, original: Callable) -> Callable:
    """A plain function calling ``target`` that carries ``original``'s name, docstring and signature.

    ``generate`` inspects ``forward``'s signature (which kwargs it accepts, whether it takes
    ``position_ids``), so the wrapper must look like the original.
    """

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return target(*args, **kwargs)

    return functools.update_wrapper(wrapper, original)


def compose(first: Compressed, second: Compressed) -> Compressed:
    """``second`` applied to the slots of ``first``, addressed in ``first``'s source tokens.

    ``index`` becomes the source token of each final slot's representative, ``assign`` maps each source
    token through both, ``sizes`` counts source tokens; features, mask and info are ``second``'s.
    """
    inner = first.assign.clamp_min(0)
    assign = torch.where(first.assign >= 0, second.assign.gather(1, inner), -1)
    index = torch.where(second.index >= 0, first.index.gather(1, second.index.clamp_min(0)), -1)
    sizes = torch.zeros_like(second.sizes).scatter_add_(1, assign.clamp_min(0), (assign >= 0).long())
    return Compressed(
        second.features, second.mask, index, assign, sizes, method=f"{first.method}+{second.method}", info=second.info
    )


class Patch:
    """The handle `vtc.apply` returns: ``stats`` per forward, ``remove()``, and a context manager.

    ``stages`` maps ``encoder``/``projector``/``llm`` to their compressors. The encoder and projector
    stages run when the call carries pixels (the sequence is rewritten once, for both); the LLM stage
    hooks the decoder layers for as long as the patch is on.
    """

    def __init__(self, model: Any, adapter: Adapter, stages: dict[str, Compressor]) -> None:
        if getattr(model, "_vtc_patch", None) is not None:
            raise ValueError("model: vtc is already applied to this model; call .remove() on its handle first")
        self.model = model
        self.adapter = adapter
        self.stages = stages
        self.compressor = stages.get("projector")
        problems = adapter.problems(model.config, stages, adapter.cls_substitute)
        if problems:
            raise ValueError("\n".join(problems))
        adapter.encoder = stages.get("encoder")
        self.llm = None
        if "llm" in stages:
            from vtc.models.llm_stage import LLMStage

            self.llm = LLMStage(adapter.decoder_layers(), stages["llm"], adapter.visual_token_ids())
        self.stats: list[dict[str, Any]] = []
        self._generating: dict[str, Any] | None = None
        self._saved = {name: model.__dict__.get(name) for name in ("forward", "generate")}
        self._saved_attributes = [(obj, name, getattr(obj, name)) for obj, name in adapter.touched_attributes()]
        self._orig_forward: Callable = model.forward
        self._orig_generate: Callable = model.generate
        self._forward_signature = inspect.signature(self._orig_forward)
        model.forward = _delegate(self._forward, self._orig_forward)
        model.generate = _delegate(self._generate, self._orig_generate)
        model._vtc_patch = self

    @property
    def method(self) -> str:
        return "+".join(c.info.name for c in self.stages.values())

    def remove(self) -> None:
        """Restore the model exactly as it was (idempotent)."""
        if getattr(self.model, "_vtc_patch", None) is not self:
            return
        for name, saved in self._saved.items():
            if saved is None:
                self.model.__dict__.pop(name, None)
            else:
                setattr(self.model, name, saved)
        if self.llm is not None:
            self.llm.remove()
        for obj, name, value in self._saved_attributes:
            setattr(obj, name, value)
        self.adapter.encoder = None
        del self.model._vtc_patch

    def __enter__(self) -> Patch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _record(self) -> dict[str, Any]:
        """One forward's stats: ``before``/``after`` (visual tokens in the prompt / entering the LLM, per row),
        per-modality details, and ``stages``: one entry per stage that ran (LLM stages: one per layer)."""
        return {"stage": "+".join(self.stages), "method": self.method, "stages": []}

    def _prepare(self, kwargs: dict[str, Any], media: dict, generating: bool) -> dict[str, Any]:
        """The call rewritten for the compressed media: checks, then per modality encode, compress and mark the
        placeholders to drop, then one rewrite of the sequence; the forward's stats are recorded."""
        input_ids = self._checked_ids(kwargs)
        record = self._record()
        if self.compressor is None and self.adapter.encoder is None:  # LLM stage only: the prompt stays whole
            visual = torch.tensor(sorted(self.adapter.visual_token_ids()), device=input_ids.device)
            counts = torch.isin(input_ids, visual).sum(1).tolist()
            record.update(before=counts, after=list(counts))
            kwargs.update({k: v for inputs in media.values() for k, v in inputs.items()})  # pixels go back in
            self.stats.append(record)
            return kwargs
        attention_mask = kwargs.get("attention_mask")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        positions = kwargs.get("position_ids")
        if positions is None:
            positions = self.adapter.base_positions(input_ids, attention_mask, media, generating)
        keep = attention_mask.bool()  # padding columns go too; the rewrite re-pads to the longest row
        outputs = {}
        for modality, inputs in media.items():
            outputs[modality], record[modality] = self._compress_modality(
                modality, inputs, input_ids, attention_mask, keep
            )
        self._rewrite(kwargs, input_ids, attention_mask, positions, keep, generating)
        kwargs["mm_encoder_outputs"] = outputs
        self._record_stages(record, list(media))
        self.stats.append(record)
        return kwargs

    @staticmethod
    def _checked_ids(kwargs: dict[str, Any]) -> Tensor:
        """The call's ``input_ids``; a call vtc cannot rewrite raises."""
        input_ids = kwargs.get("input_ids")
        if input_ids is None:
            raise ValueError(
                "input_ids: vtc needs input_ids with the media placeholder tokens (inputs_embeds alone "
                "cannot be rewritten)"
            )
        if kwargs.get("inputs_embeds") is not None:
            raise ValueError(
                "inputs_embeds: pass input_ids, not inputs_embeds, with pixel inputs to a vtc-patched model"
            )
        if cached_length(kwargs) > 0:
            raise ValueError("cache: pixel inputs are only accepted at prefill (an empty KV cache)")
        return input_ids

    def _compress_modality(
        self, modality: str, inputs: dict[str, Any], input_ids: Tensor, attention_mask: Tensor, keep: Tensor
    ) -> tuple[Any, dict[str, Any]]:
        """Encode and compress one modality; clears ``keep`` at the placeholders of dropped tokens. Returns the
        packed features for the model and the modality's record (counts per row, each item's token slots)."""
        selector = self.compressor or keep_all()
        encoded = self.adapter.encode(modality, inputs, selector, input_ids, attention_mask)
        compressed = self.adapter.compress(encoded, selector)
        merged = encoded.extra.get("encoder")
        if merged is not None:
            compressed = compose(merged, compressed)
        columns = placeholder_columns(input_ids, self.adapter.token_id(modality), encoded)
        before = [0] * input_ids.shape[0]
        after = [0] * input_ids.shape[0]
        for i, (row, cols) in enumerate(zip(encoded.rows, columns, strict=True)):
            kept = compressed.index[i, : int(compressed.counts[i])]
            drop = torch.ones(cols.numel(), dtype=torch.bool, device=cols.device)
            drop[kept] = False
            keep[row, cols[drop]] = False
            before[row] += cols.numel()
            after[row] += kept.numel()
        if merged is None:
            counts, grids = encoded.tokens.mask.sum(1).tolist(), encoded.tokens.grid.tolist()
        else:  # the encoder merged the tower's tokens: items are described in its source tokens
            counts, grids = [c.numel() for c in columns], encoded.extra["grids"]
        record: dict[str, Any] = {
            "before": before,
            "after": after,
            # per media item (prompt order): its token grid (t, h, w) and the slot of every source
            # token (-1 dropped), for overlays of what was kept or merged
            "items": [
                {"row": row, "grid": grid, "assign": compressed.assign[i, :n].cpu()}
                for i, (row, n, grid) in enumerate(zip(encoded.rows, counts, grids, strict=True))
            ],
        }
        if merged is not None:
            per_row = [0] * input_ids.shape[0]
            for row, n in zip(encoded.rows, merged.counts.tolist(), strict=True):
                per_row[row] += int(n)
            record["encoder"] = per_row
        return self.adapter.pack(encoded, compressed), record

    def _rewrite(self, kwargs: dict[str, Any], input_ids: Tensor, attention_mask: Tensor, positions: Tensor,
                 keep: Tensor, generating: bool) -> None:
        """Drop the columns ``keep`` clears from the call's sequence tensors, in place in ``kwargs``."""
        extras = {k: kwargs[k] for k in self.adapter.sequence_keys if kwargs.get(k) is not None}
        new = rewrite_sequence(
            input_ids, attention_mask, positions, kwargs.get("labels"), keep, self.adapter.pad_token_id(), extras
        )
        kwargs.update(input_ids=new.input_ids, attention_mask=new.attention_mask, position_ids=new.position_ids)
        kwargs.update(new.extras)
        if new.labels is not None:
            kwargs["labels"] = new.labels
        self.adapter.finish(kwargs, generating)

    def _record_stages(self, record: dict[str, Any], modalities: list[str]) -> None:
        """Totals per row over the modalities, and one entry per stage that ran before the LLM."""

        def total(key: str, fallback: str | None = None) -> list[int]:
            return [sum(v) for v in zip(*(record[m].get(key, record[m].get(fallback)) for m in modalities),
                                        strict=True)]

        record["before"], record["after"] = total("before"), total("after")
        entering = record["before"]
        if self.adapter.encoder is not None:
            merged = total("encoder", "before")
            record["stages"].append(self._stage_entry("encoder", entering, merged))
            entering = merged
        if self.compressor is not None:
            record["stages"].append(self._stage_entry("projector", entering, record["after"]))

    def _stage_entry(self, stage: str, before: list[int], after: list[int]) -> dict[str, Any]:
        return {"stage": stage, "method": self.stages[stage].info.name, "before": list(before), "after": list(after)}

    def _forward(self, *args: Any, **kwargs: Any) -> Any:
        bound = self._forward_signature.bind_partial(*args, **kwargs)
        call = dict(bound.arguments)
        call.update(call.pop("kwargs", {}))
        media = self.adapter.pop_media(call)
        record = self._generating
        if media:
            call = self._prepare(call, media, generating=False)
            record = self.stats[-1]
        if self.llm is not None:
            self.llm.begin(call, record)
        return self._orig_forward(**call)

    def _generate(self, inputs: Tensor | None = None, **kwargs: Any) -> Any:
        if inputs is not None:
            kwargs["input_ids"] = inputs
        media = self.adapter.pop_media(kwargs)
        if not media:
            return self._orig_generate(**kwargs)
        if self.compressor is None and self.adapter.encoder is None:  # LLM stage only: the prompt stays whole
            self._prepare(kwargs, media, generating=True)  # records the prompt's counts, puts the pixels back
            self._generating = self.stats[-1]
            try:
                return self._orig_generate(**kwargs)
            finally:
                self._generating = None
        original_ids = kwargs["input_ids"]
        call = self._prepare(kwargs, media, generating=True)
        pruned_width = call["input_ids"].shape[1]
        self._generating = self.stats[-1]  # its first forward step is the prefill the LLM stage records into
        try:
            out = self._orig_generate(**call)
        finally:
            self._generating = None
        sequences = out if isinstance(out, Tensor) else out.sequences
        repeats = sequences.shape[0] // original_ids.shape[0]
        prompt = original_ids.repeat_interleave(repeats, dim=0)
        full = torch.cat([prompt, sequences[:, pruned_width:]], dim=1)  # the caller's prompt, then new tokens
        if isinstance(out, Tensor):
            return full
        out.sequences = full
        return out
