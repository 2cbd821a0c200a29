"""Running a model with and without compression: the one path that ``vtc compare``, ``vtc eval``, the demo
and the benchmarks take.

:func:`run` patches the model with a method spec (``none``: unpatched), times one forward over the prompt
(the prefill), then decodes greedily, and reports the visual tokens of every row before and after.

Towers without [CLS] (SigLIP, Qwen's ViT) follow one rule, :func:`cls_substitute_for`: a method that
scores tokens by [CLS] attention gets the attention each token receives instead
(``cls_substitute="received"``), and the run says so in its ``note``. Methods that already ask for
received attention, and towers with a [CLS], run as they are.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from vtc.core.registry import Compressor
from vtc.core.spec import MethodSpec
from vtc.models.apply import apply
from vtc.models.registry import adapter_class, adapter_for

CLS_NOTE = "no [CLS] in this vision tower: cls_attn replaced by received attention (the attention each token gets)"


def cls_substitute_for(config: Any, compressor: Compressor | None) -> str | None:
    """``"received"`` where ``compressor`` reads [CLS] attention that this model's tower cannot give, else None."""
    if compressor is None or not compressor.info.reads_cls_attn or compressor.attention_mode == "received":
        return None
    return None if adapter_class(config).has_cls(config) else "received"


def tokens_after(stats: dict) -> list[int]:
    """Visual tokens per row after compression: entering the LLM, or after the last LLM-stage layer
    (LLM-stage methods: the layers before it still see them all)."""
    llm = [e for e in stats.get("stages", []) if e["stage"] == "llm"]
    return list(llm[-1]["after"] if llm else stats["after"])


@dataclass
class Run:
    """One method on one batch: generated ids, timings, and visual tokens per row."""

    spec: MethodSpec
    sequences: Tensor  # [B, prompt + new]: the caller's prompt, then the new tokens
    prompt_width: int
    prefill_ms: float  # one forward over the whole batch
    generate_ms: float  # greedy generate over the whole batch
    before: list[int]  # visual tokens in each row's prompt
    after: list[int]  # visual tokens each row's LLM kept (tokens_after)
    stats: dict | None  # the handle's record of the prefill (None for none)
    note: str = ""

    @property
    def new_tokens(self) -> Tensor:
        return self.sequences[:, self.prompt_width :]


def visual_counts(model: Any, input_ids: Tensor) -> list[int]:
    """Visual placeholder tokens per row of ``input_ids``."""
    ids = torch.tensor(sorted(adapter_for(model).visual_token_ids()), device=input_ids.device)
    return torch.isin(input_ids, ids).sum(1).tolist()


def run(model: Any, inputs: dict[str, Any], spec: MethodSpec, *, max_new_tokens: int,
        forward_kwargs: dict[str, Any] | None = None, generate_kwargs: dict[str, Any] | None = None,
        sync: Callable[[], None] | None = None) -> Run:
    """``spec`` on ``inputs`` (a processor's output): a timed prefill, then greedy decoding.

    ``sync`` (e.g. ``torch.cuda.synchronize``) runs around the timed sections. The patch is removed
    afterwards whatever happens.
    """
    sync = sync or (lambda: None)
    compressor = spec.build()
    before = visual_counts(model, inputs["input_ids"])
    substitute = cls_substitute_for(model.config, compressor)
    handle = None if compressor is None else apply(model, compressor, cls_substitute=substitute)
    try:
        with torch.no_grad():
            sync()
            start = time.perf_counter()
            model(**inputs, **(forward_kwargs or {}))
            sync()
            prefill = time.perf_counter() - start
            stats = None
            if handle is not None:
                if not handle.stats:
                    raise ValueError(f"{spec.label}: the model ran without compressing any visual tokens")
                stats = handle.stats[0]
            start = time.perf_counter()
            sequences = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                       **(generate_kwargs or {}))
            sync()
            generated = time.perf_counter() - start
    finally:
        if handle is not None:
            handle.remove()
    after = before if stats is None else tokens_after(stats)
    return Run(spec, sequences, inputs["input_ids"].shape[1], prefill * 1000, generated * 1000, before, after,
               stats, CLS_NOTE if substitute else "")
