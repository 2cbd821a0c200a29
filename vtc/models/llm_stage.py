"""The LLM stage: drop visual tokens inside the language model after chosen decoder layers (FastV, PyramidDrop).

How it hooks a stock decoder (no forward copied):

- Layer ``K``'s attention module is observed (:func:`vtc.models.attention.observe_attention`): at
  prefill, its post-RoPE query of each row's last valid token and its keys give that one query's
  attention over the sequence (softmax with the row's padding masked, averaged over heads). No full
  attention matrix is formed and the model stays on sdpa (or eager).
- A forward hook on layer ``K`` ranks the visual tokens by that attention (the method's ``select``
  through the usual :class:`~vtc.core.registry.Compressor`) and returns only the kept columns of its
  output. Text tokens are always kept.
- Forward pre-hooks on the layers after ``K`` give them the matching columns of what the decoder loop
  hands every layer: ``position_embeddings`` (cos/sin, so kept tokens keep their original positions,
  M-RoPE included), ``position_ids`` and the attention mask. The mask is rebuilt for the kept columns
  from the causal order of the original columns and the call's 2-D padding mask, in the format of the
  attention implementation (bool for sdpa, additive float for eager).
- The KV cache of layers ``<= K`` holds the whole prompt, that of later layers only the kept columns.
  At decode steps the later layers get a mask over (kept prompt columns + generated tokens). Nothing
  else changes: ``generate()``'s own attention mask, positions and rope deltas refer to the full prompt.

Rows of a batch may keep different numbers of tokens (different media or budgets). The pruned batch
is as wide as its widest row; narrower rows fill up with dropped columns that the mask hides (keys
nobody attends to). Layers ``< K`` and layer ``K`` itself run exactly as unpatched; if no row drops a
token, nothing is changed at all. Supported attention implementations: sdpa, eager. ``labels`` are
refused (the logits after the stage cover the kept columns only), and so are caches other than the
default dynamic one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from vtc.core.registry import Compressor
from vtc.core.types import VisualTokens
from vtc.models.attention import observe_attention
from vtc.models.calls import cache_of

MASK_FORMATS = ("sdpa", "eager")


def take_columns(t: Tensor, cols: Tensor) -> Tensor:
    """Columns ``cols [B, L']`` of ``t [..., B or 1, L, d]`` (sequence at dim -2, batch at dim -3)."""
    batch = cols.shape[0]
    if t.shape[-3] != batch:
        t = t.expand(*t.shape[:-3], batch, *t.shape[-2:])
    index = cols[..., None].expand(*t.shape[:-3], batch, cols.shape[1], t.shape[-1])
    return t.gather(-2, index)


@dataclass
class Pruned:
    """The columns a layer sees: ``cols [B, W]`` (original column of each position) and ``alive [B, W]``."""

    cols: Tensor
    alive: Tensor


@dataclass
class CallState:
    """One forward call: its visual columns, padding, and the last stage layer's scores."""

    visual: Tensor  # [B, L] visual token columns of the prompt
    padding: Tensor  # [B, L_total] the call's 2-D attention mask (1 valid)
    prefill: bool
    scores: Tensor | None = None  # [B, W] last-query attention at the current stage layer


class LLMStage:
    """Hooks for one LLM-stage compressor on a decoder's layers; ``begin()`` before each forward call."""

    def __init__(self, layers: nn.ModuleList, compressor: Compressor, visual_ids: set[int]) -> None:
        self.layers = layers
        self.compressor = compressor
        self.visual_ids = sorted(visual_ids)
        self.stage_layers = compressor.llm_layers  # checked against the depth by Adapter.problems
        depth = len(layers)
        impl = layers[0].self_attn.config._attn_implementation
        if impl not in MASK_FORMATS:
            raise ValueError(
                f"{compressor.info.name}: the LLM stage supports attention implementations {', '.join(MASK_FORMATS)}; "
                f"this model uses {impl!r} (load it with attn_implementation='sdpa')"
            )
        self.mask_format = impl
        self.state: CallState | None = None
        self.prefill_cols: dict[int, Pruned] = {}  # stage layer -> the prompt columns after it (prefill and decode)
        self.prompt_length = 0
        self.records: list[dict[str, Any]] = []
        self._hooks: list[Any] = []
        self._restore = observe_attention({layers[k].self_attn: _QueryObserver(self, k) for k in self.stage_layers})
        for k in self.stage_layers:
            self._hooks.append(layers[k].register_forward_hook(self._after_stage(k)))
        for i in range(self.stage_layers[0] + 1, depth):
            self._hooks.append(layers[i].register_forward_pre_hook(self._before_layer(i), with_kwargs=True))

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        self._restore()

    # -- per call -------------------------------------------------------------------------------------

    def begin(self, call: dict[str, Any], record: dict[str, Any] | None) -> None:
        """Look at a forward call's inputs: a prefill with visual tokens arms the stage, a decode step
        continues the last prefill, anything else leaves the model alone."""
        self.state = None
        input_ids = call.get("input_ids")
        cache = cache_of(call)
        past = cache.get_seq_length() if cache is not None else 0
        mask = call.get("attention_mask")
        if past == 0:
            if input_ids is None:
                return
            visual = torch.isin(input_ids, torch.tensor(self.visual_ids, device=input_ids.device))
            if not bool(visual.any()):
                self.prefill_cols = {}
                return
            if call.get("labels") is not None:
                raise ValueError(
                    f"labels: not supported with the LLM-stage method {self.compressor.info.name} (the logits after "
                    "its layer cover the kept tokens only)"
                )
            if mask is None:
                mask = torch.ones_like(input_ids)
            self.prefill_cols = {}
            self.prompt_length = input_ids.shape[1]
            self.state = CallState(visual, mask.bool(), prefill=True)
            self.records = [] if record is None else record.setdefault("stages", [])
            return
        if not self.prefill_cols:
            return
        if type(cache).__name__ != "DynamicCache":
            raise ValueError(
                f"cache: the LLM stage needs the default DynamicCache, got {type(cache).__name__}"
            )
        batch = next(iter(self.prefill_cols.values())).cols.shape[0]
        width = call["input_ids"].shape[1] if call.get("input_ids") is not None else call["inputs_embeds"].shape[1]
        if mask is None:
            mask = torch.ones(
                batch, past + width, dtype=torch.bool, device=next(iter(self.prefill_cols.values())).cols.device
            )
        self.state = CallState(torch.zeros(0), mask.bool(), prefill=False)

    # -- hooks ----------------------------------------------------------------------------------------

    def _current(self, layer: int) -> Pruned | None:
        """The prompt columns ``layer`` sees (None: all): those after the last stage layer before it."""
        done = [k for k in self.stage_layers if k < layer and k in self.prefill_cols]
        return self.prefill_cols[done[-1]] if done else None

    def observe(self, layer: int, query: Tensor, key: Tensor, scaling: float) -> None:
        state = self.state
        if state is None or not state.prefill:
            return
        with torch.no_grad():
            seen = self._current(layer)
            batch, width = query.shape[0], query.shape[2]
            cols = seen.cols if seen is not None else torch.arange(width, device=query.device).expand(batch, width)
            alive = seen.alive if seen is not None else torch.ones_like(cols, dtype=torch.bool)
            valid = alive & state.padding.gather(1, cols)
            last = torch.where(valid, torch.arange(width, device=query.device), -1).amax(1)  # [B]
            q = query[torch.arange(batch), :, last].float()  # [B, H, hd]
            k = key.float()
            if k.shape[1] != q.shape[1]:
                k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
            logits = torch.einsum("bhd,bhkd->bhk", q, k) * scaling
            logits = logits.masked_fill(~valid[:, None, :], -torch.inf)
            state.scores = logits.softmax(-1).mean(1)  # [B, W]

    def _after_stage(self, layer: int):
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            state = self.state
            if state is None or not state.prefill:
                return None
            hidden = output[0] if isinstance(output, tuple) else output
            pruned = self._select(layer, hidden)
            if pruned is None:
                return None
            self.prefill_cols[layer] = pruned
            hidden = hidden.gather(1, pruned.positions[..., None].expand(-1, -1, hidden.shape[-1]))
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        return hook

    def _select(self, layer: int, hidden: Tensor) -> _Selected | None:
        """Rank and keep visual tokens per row; None when every row keeps them all."""
        state = self.state
        seen = self._current(layer)
        batch, width = hidden.shape[:2]
        cols = seen.cols if seen is not None else torch.arange(width, device=hidden.device).expand(batch, width)
        alive = seen.alive if seen is not None else torch.ones_like(cols, dtype=torch.bool)
        visual = state.visual.gather(1, cols) & alive
        counts = visual.sum(1)
        keep = alive.clone()
        before, after = counts.tolist(), counts.tolist()
        kept_cols = [cols[b, visual[b]].tolist() for b in range(batch)]
        rows = [b for b in range(batch) if before[b] > 0]
        if rows:
            n = int(counts.max())
            features = hidden.new_zeros(len(rows), n, hidden.shape[-1]).float()
            scores = torch.zeros(len(rows), n, device=hidden.device)
            row_mask = torch.zeros(len(rows), n, dtype=torch.bool, device=hidden.device)
            positions = []
            for i, b in enumerate(rows):
                where = visual[b].nonzero()[:, 0]
                positions.append(where)
                features[i, : where.numel()] = hidden[b, where].float()
                scores[i, : where.numel()] = state.scores[b, where]
                row_mask[i, : where.numel()] = True
            tokens = VisualTokens(features=features, mask=row_mask, query_attn=scores)
            compressed = self.compressor(tokens)
            for i, b in enumerate(rows):
                kept = compressed.index[i, : int(compressed.counts[i])]
                dropped = torch.ones(positions[i].numel(), dtype=torch.bool, device=hidden.device)
                dropped[kept] = False
                keep[b, positions[i][dropped]] = False
                after[b] = int(kept.numel())
                kept_cols[b] = cols[b, positions[i][kept.sort().values]].tolist()
        self.records.append(
            {
                "stage": "llm",
                "method": self.compressor.info.name,
                "layer": layer,
                "before": before,
                "after": after,
                "kept": kept_cols,  # per row: the prompt columns of the visual tokens kept after this layer
            }
        )
        if after == before:
            return None
        return _Selected.of(cols, keep)

    def _before_layer(self, layer: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            state = self.state
            if state is None:
                return None
            if state.prefill:
                seen = self._current(layer)
                if seen is None:
                    return None
                kwargs = dict(kwargs)
                kwargs["position_embeddings"] = tuple(take_columns(t, seen.cols) for t in kwargs["position_embeddings"])
                if isinstance(kwargs.get("position_ids"), Tensor) and kwargs["position_ids"].ndim == 2:
                    ids = kwargs["position_ids"].expand(seen.cols.shape[0], -1)
                    kwargs["position_ids"] = ids.gather(1, seen.cols)
                kwargs["attention_mask"] = self._mask(
                    seen.cols, seen.alive, seen.cols, kwargs["position_embeddings"][0]
                )
                return args, kwargs
            seen = self._current(layer)
            if seen is None:
                return None
            hidden = args[0] if args else kwargs["hidden_states"]
            total = state.padding.shape[1]
            new = torch.arange(self.prompt_length, total, device=hidden.device).expand(seen.cols.shape[0], -1)
            key_cols = torch.cat([seen.cols, new], dim=1)
            key_alive = torch.cat([seen.alive, torch.ones_like(new, dtype=torch.bool)], dim=1)
            query_cols = new[:, new.shape[1] - hidden.shape[1] :]
            kwargs = {**kwargs, "attention_mask": self._mask(key_cols, key_alive, query_cols, hidden)}
            return args, kwargs

        return hook

    def _mask(self, key_cols: Tensor, key_alive: Tensor, query_cols: Tensor, like: Tensor) -> Tensor:
        """``[B, 1, Q, K]`` mask: a query sees valid, alive keys at or before its original column, and itself."""
        padding = self.state.padding
        visible = (key_cols[:, None, :] <= query_cols[:, :, None]) & (key_alive & padding.gather(1, key_cols))[
            :, None, :
        ]
        visible |= key_cols[:, None, :] == query_cols[:, :, None]
        visible = visible[:, None]
        if self.mask_format == "sdpa":
            return visible
        dtype = like.dtype if like.is_floating_point() else torch.float32
        return torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill(
            ~visible, torch.finfo(dtype).min
        )


@dataclass
class _Selected(Pruned):
    """Columns after a stage plus ``positions [B, W']``: where they sit in the stage layer's sequence."""

    positions: Tensor | None = None

    @classmethod
    def of(cls, cols: Tensor, keep: Tensor) -> _Selected:
        counts = keep.sum(1)
        width = int(counts.max())
        batch = cols.shape[0]
        positions = torch.zeros(batch, width, dtype=torch.long, device=cols.device)
        alive = torch.zeros(batch, width, dtype=torch.bool, device=cols.device)
        for b in range(batch):
            kept = keep[b].nonzero()[:, 0]
            filler = (~keep[b]).nonzero()[:, 0][: width - kept.numel()]  # dropped columns, hidden by the mask
            row = torch.sort(torch.cat([kept, filler])).values
            positions[b] = row
            alive[b] = keep[b, row]
        return cls(cols.gather(1, positions), alive, positions)


class _QueryObserver:
    """Observer of a stage layer's attention: hands the post-RoPE q/k to the stage."""

    def __init__(self, stage: LLMStage, layer: int) -> None:
        self.stage = stage
        self.layer = layer

    def observe(self, query: Tensor, key: Tensor, scaling: float, kwargs: dict[str, Any]) -> None:
        self.stage.observe(self.layer, query, key, scaling)
