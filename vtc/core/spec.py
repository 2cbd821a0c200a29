"""A method as a user writes it: a name, a budget and the method's own keyword arguments.

One parser and one validator for every front end (``vtc compare``, ``vtc eval``, the demo, ``vtc bench``).
Text form, as ``--methods`` items take it:

- ``none``: no compression (the reference); ``text-only``: the control without the image or video
  (what the question and options alone give away). Both are controls, not methods: they build nothing.
- ``name:0.25``: a ratio; ``name:count=64``: a token count; ``name:adaptive``: the method's own count.
- ``name``: the method at the caller's default budget (a ratio or a count).

Labels (the names results are filed under): ``none``, ``pool:0.25``, ``divprune:count=64``,
``prumerge:adaptive``, with method kwargs appended as ``[k=v,...]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vtc.core.registry import Compressor, build

NONE = "none"
TEXT_ONLY = "text-only"
CONTROLS = (NONE, TEXT_ONLY)
BUDGET_KEYS = ("ratio", "count", "budget")


@dataclass(frozen=True)
class MethodSpec:
    """One method with its budget (``ratio``/``count``/``budget`` kwargs) and method kwargs; ``none`` for none."""

    name: str
    budget: dict = field(default_factory=dict, hash=False)
    kwargs: dict = field(default_factory=dict, hash=False)

    @property
    def is_none(self) -> bool:
        return self.name == NONE

    @property
    def is_control(self) -> bool:
        """``none`` or ``text-only``: a reference run, no compressor."""
        return self.name in CONTROLS

    @property
    def label(self) -> str:
        if self.is_control:
            return self.name
        if "ratio" in self.budget:
            text = f"{self.name}:{self.budget['ratio']:g}"
        elif "count" in self.budget:
            text = f"{self.name}:count={self.budget['count']}"
        else:
            text = f"{self.name}:{self.budget.get('budget', 'adaptive')}"
        if self.kwargs:
            text += "[" + ",".join(f"{k}={v}" for k, v in sorted(self.kwargs.items())) + "]"
        return text

    @property
    def budget_key(self) -> str | None:
        """``"ratio=0.25"`` / ``"count=64"``: what an iso-token baseline shares; None for other budgets."""
        if "ratio" in self.budget:
            return f"ratio={self.budget['ratio']:g}"
        if "count" in self.budget:
            return f"count={self.budget['count']}"
        return None

    def describe_budget(self) -> str:
        """``"ratio 0.25"``, ``"64 tokens"``, ``"adaptive"``, or ``"all tokens"`` for none."""
        if self.is_none:
            return "all tokens"
        if self.name == TEXT_ONLY:
            return "no visual tokens"
        if "ratio" in self.budget:
            return f"ratio {self.budget['ratio']:g}"
        if "count" in self.budget:
            return f"{self.budget['count']} tokens"
        return str(self.budget.get("budget", "adaptive"))

    def build(self) -> Compressor | None:
        """The compressor (None for the controls); bad names, kwargs or budgets raise a ValueError."""
        return None if self.is_control else build(self.name, **self.budget, **self.kwargs)


def parse_budget(text: str, item: str) -> dict[str, Any]:
    """``"0.25"`` / ``"count=64"`` / ``"adaptive"`` as budget kwargs."""
    text = text.strip()
    if text == "adaptive":
        return {"budget": "adaptive"}
    try:
        if text.startswith("count="):
            return {"count": int(text[6:])}
        return {"ratio": float(text)}
    except ValueError:
        raise ValueError(
            f"methods: cannot read the budget of {item!r} (expected name:0.25, name:count=64 or name:adaptive)"
        ) from None


def parse_spec(item: str, default: dict[str, Any] | None = None, kwargs: dict[str, Any] | None = None) -> MethodSpec:
    """One text item (module docstring); a bare name gets ``default`` (e.g. ``{"ratio": 0.25}``)."""
    name, _, budget = item.strip().partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"methods: an empty method name in {item!r}")
    if name in CONTROLS:
        return MethodSpec(name)
    if budget:
        return MethodSpec(name, parse_budget(budget, item), dict(kwargs or {}))
    return MethodSpec(name, dict(default or {}), dict(kwargs or {}))


def parse_specs(text: str, default: dict[str, Any] | None = None) -> list[MethodSpec]:
    """A comma-separated list of items (module docstring)."""
    specs = [parse_spec(item, default) for item in text.split(",") if item.strip()]
    if not specs:
        raise ValueError("methods: expected a comma-separated list of method names")
    return specs


def check_specs(specs: list[MethodSpec]) -> list[str]:
    """Build every spec once: one message per spec that cannot be built (unknown name, kwargs, budget)."""
    problems = []
    for spec in specs:
        try:
            spec.build()
        except (ValueError, TypeError) as err:
            problems.append(f"{spec.label}: {err}")
    return problems
