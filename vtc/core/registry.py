"""The method registry: `register`, `list_methods`, `build`, in the style of timm's registry.

A method is a frozen dataclass (its config) with a ``select(sample, budget) -> Selection`` method that
calls a pure tensor function. `build` validates the name, the keywords and the budget, and returns a
`Compressor`, which runs the method over a padded batch sample by sample.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from vtc.core.budget import Budget
from vtc.core.selection import Sample, Selection, assemble, split_samples
from vtc.core.types import SIGNALS, Compressed, VisualTokens

STAGES = ("encoder", "projector", "llm")
DEFAULT_ENCODER_LAYERS = (-2,)  # the layer whose output LLaVA-style models feed the LLM


class Method(Protocol):
    def select(self, sample: Sample, budget: Budget) -> Selection: ...


@dataclass(frozen=True)
class MethodInfo:
    """What the registry knows about a method.

    ``signals``: inputs it needs beyond features; ``optional_signals``: inputs it uses when present.
    ``video``: uses the frame structure of the grid (every method accepts videos as token sets).
    ``static_count``: the output count follows from the grid and budget alone (not the content).
    ``score_based``: ranks tokens by a mass, so ``budget="coverage:p"`` works.
    ``adaptive``: chooses its own count when no budget (or ``budget="adaptive"``) is given.
    ``mean_slots``: a merged slot's features are the plain mean of its tokens (False: the method gives its
    own slot features, e.g. a weighted merge).
    ``batched``: the config has ``select_batch(tokens, budget) -> list[Selection]``, which selects for the
    whole padded batch at once (one kernel call) with exactly the per-sample results; the others run
    ``select`` sample by sample.

    What adapters need, declared (adapters read these, never a method's name or guessed attributes):
    ``encoder_layers``: the config field listing the vision-encoder layers whose attention the method
    reads (``cls_attn``); methods that read it without declaring one read :data:`DEFAULT_ENCODER_LAYERS`.
    ``attention``: the config field choosing ``"cls"`` (the [CLS] row) or ``"received"`` (the attention
    each token receives); without one, ``"cls"``. ``llm_layers``: for the LLM stage, the config field with
    the decoder layer(s) after which tokens are dropped. ``llm_budgets``: the budget kinds the method
    accepts inside a model's LLM (None: any). ``alias``: ``(name, kwarg)``: ``build(name, kwarg=...)``
    means this method (``tome`` with ``r=`` is ``tome_encoder``).
    """

    name: str
    stage: str
    signals: tuple[str, ...]
    optional_signals: tuple[str, ...]
    trainable: bool
    video: bool
    static_count: bool
    score_based: bool
    adaptive: bool
    summary: str
    paper: str
    config: type
    batched: bool = False
    mean_slots: bool = True
    encoder_layers_field: str | None = None
    attention_field: str | None = None
    llm_layers_field: str | None = None
    llm_budgets: tuple[str, ...] | None = None
    alias: tuple[str, str] | None = None

    @property
    def kwargs(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self.config))

    @property
    def reads_cls_attn(self) -> bool:
        return "cls_attn" in self.signals or "cls_attn" in self.optional_signals

    def encoder_layers(self, config: Any) -> tuple[int, ...]:
        """The encoder layers whose attention this configured method reads (empty: none)."""
        if not self.reads_cls_attn:
            return ()
        if self.encoder_layers_field is None:
            return DEFAULT_ENCODER_LAYERS
        layers = getattr(config, self.encoder_layers_field)
        return (layers,) if isinstance(layers, int) else tuple(layers)

    def attention_mode(self, config: Any) -> str:
        """``"cls"`` or ``"received"``: which attention row the configured method scores tokens by."""
        return "cls" if self.attention_field is None else getattr(config, self.attention_field)

    def llm_layers(self, config: Any) -> tuple[int, ...]:
        """The decoder layers after which an LLM-stage method drops tokens (empty for other stages)."""
        if self.llm_layers_field is None:
            return ()
        layers = getattr(config, self.llm_layers_field)
        return (layers,) if isinstance(layers, int) else tuple(layers)


_REGISTRY: dict[str, MethodInfo] = {}


def register(
    name: str,
    *,
    paper: str,
    stage: str = "projector",
    signals: tuple[str, ...] = (),
    optional_signals: tuple[str, ...] = (),
    trainable: bool = False,
    video: bool = False,
    static_count: bool = True,
    score_based: bool = False,
    adaptive: bool = False,
    batched: bool = False,
    mean_slots: bool = True,
    encoder_layers: str | None = None,
    attention: str | None = None,
    llm_layers: str | None = None,
    llm_budgets: tuple[str, ...] | None = None,
    alias: tuple[str, str] | None = None,
) -> Callable[[type], type]:
    """Class decorator adding a frozen-dataclass method config to the registry under ``name``
    (the declarations are described in :class:`MethodInfo`)."""
    if stage not in STAGES:
        raise ValueError(f"stage: expected one of {STAGES}, got {stage!r}")
    if (llm_layers is None) != (stage != "llm"):
        raise ValueError(f"{name}: an LLM-stage method declares llm_layers=FIELD, and only it")
    for s in signals + optional_signals:
        if s not in SIGNALS:
            raise ValueError(f"signals: expected names from {SIGNALS}, got {s!r}")

    def wrap(cls: type) -> type:
        if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:
            raise TypeError(f"{cls.__name__}: register a frozen dataclass")
        if name in _REGISTRY and _REGISTRY[name].config is not cls:
            raise ValueError(f"method {name!r} is already registered")
        if batched and not callable(getattr(cls, "select_batch", None)):
            raise TypeError(f"{cls.__name__}: declared batched=True, so it needs select_batch(tokens, budget)")
        fields = {f.name for f in dataclasses.fields(cls)}
        for declared in (encoder_layers, attention, llm_layers):
            if declared is not None and declared not in fields and not hasattr(cls, declared):
                raise ValueError(f"{name}: declares the config field {declared!r}, which {cls.__name__} lacks")
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        _REGISTRY[name] = MethodInfo(
            name,
            stage,
            signals,
            optional_signals,
            trainable,
            video,
            static_count,
            score_based,
            adaptive,
            summary,
            paper,
            cls,
            batched=batched,
            mean_slots=mean_slots,
            encoder_layers_field=encoder_layers,
            attention_field=attention,
            llm_layers_field=llm_layers,
            llm_budgets=llm_budgets,
            alias=alias,
        )
        return cls

    return wrap


def list_methods(stage: str | None = None) -> list[MethodInfo]:
    """Every registered method (of ``stage``, if given), sorted by name (``import vtc`` registers the built-in
    ones)."""
    return [_REGISTRY[k] for k in sorted(_REGISTRY) if stage is None or _REGISTRY[k].stage == stage]


def resolve_alias(name: str, kwargs: dict[str, Any]) -> str:
    """The registered name ``name`` means with these kwargs (a declared alias, or ``name`` itself)."""
    for info in _REGISTRY.values():
        if info.alias is not None and info.alias[0] == name and info.alias[1] in kwargs:
            return info.name
    return name


def get_info(name: str) -> MethodInfo:
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


class Compressor:
    """A built method with its budget; call it on `VisualTokens` to get `Compressed`."""

    def __init__(self, info: MethodInfo, config: Method, budget: Budget) -> None:
        self.info = info
        self.config = config
        self.budget = budget

    @property
    def encoder_layers(self) -> tuple[int, ...]:
        return self.info.encoder_layers(self.config)

    @property
    def attention_mode(self) -> str:
        return self.info.attention_mode(self.config)

    @property
    def llm_layers(self) -> tuple[int, ...]:
        return self.info.llm_layers(self.config)

    def __repr__(self) -> str:
        return f"Compressor({self.config!r}, budget={self.budget})"

    def __call__(self, tokens: VisualTokens) -> Compressed:
        if not isinstance(tokens, VisualTokens):
            raise ValueError(f"tokens: expected vtc.VisualTokens, got {type(tokens).__name__}")
        if self.info.stage == "encoder":
            raise ValueError(
                f"{self.info.name}: runs inside a vision tower; use vtc.apply(model, ...) or vtc.patch_vit(model, ...)"
            )
        missing = [s for s in self.info.signals if getattr(tokens, s) is None]
        if missing:
            raise ValueError(
                f"{self.info.name}: needs signal(s) {', '.join(missing)} in VisualTokens; "
                f"methods that need none: {', '.join(_methods_without(missing))}"
            )
        if self.info.batched:
            selections = self.config.select_batch(tokens, self.budget)
        else:
            selections = [self.config.select(sample, self.budget) for sample in split_samples(tokens)]
        return assemble(tokens, selections, self.info.name)


def _methods_without(signals: list[str]) -> list[str]:
    return [m.name for m in list_methods() if not set(signals) & set(m.signals)]


def build(
    name: str,
    *,
    ratio: float | None = None,
    count: int | None = None,
    budget: str | Budget | None = None,
    **kwargs: Any,
) -> Compressor:
    """Build method ``name`` with a budget (``ratio=``, ``count=`` or ``budget=``) and its own kwargs.

    Encoder-stage methods take no budget (``tome_encoder`` follows its ``r`` schedule). Declared aliases
    apply: ``"tome"`` given ``r=`` means ``tome_encoder`` (ToMe inside the tower), ``"tome"`` given a
    budget the projector ToMe.
    """
    name = resolve_alias(name, kwargs)
    info = get_info(name)
    unknown = sorted(set(kwargs) - set(info.kwargs))
    if unknown:
        accepted = ", ".join(info.kwargs) or "none"
        raise ValueError(f"{name}: unknown argument(s) {', '.join(unknown)}; accepted: {accepted}")
    parsed = Budget.parse(ratio=ratio, count=count, budget=budget)
    if info.stage == "encoder":
        if parsed is not None:
            raise ValueError(
                f"{name}: runs inside the vision tower on its own schedule (r=); it takes no ratio=, count= or budget="
            )
        return Compressor(info, info.config(**kwargs), Budget("schedule"))
    if parsed is None:
        if not info.adaptive:
            raise ValueError(f"{name}: needs a budget: ratio= in (0, 1], count= >= 1, or budget='coverage:P'")
        parsed = Budget("adaptive")
    if parsed.kind == "coverage" and not info.score_based:
        scored = [m.name for m in list_methods() if m.score_based]
        raise ValueError(f"{name}: budget 'coverage:P' needs a score-based method: {', '.join(scored)}")
    if parsed.kind == "adaptive" and not info.adaptive:
        adaptive = [m.name for m in list_methods() if m.adaptive]
        raise ValueError(f"{name}: budget 'adaptive' needs an adaptive method: {', '.join(adaptive)}")
    return Compressor(info, info.config(**kwargs), parsed)
