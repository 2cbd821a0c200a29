"""Token budgets: how many tokens a compressor keeps per sample.

- ``ratio=r`` with r in (0, 1] keeps ``max(1, round(r * N))`` (round half up) per sample.
- ``count=c`` with integer c >= 1 keeps ``min(c, N)``.
- ``budget="coverage:p"`` with p in (0, 1] keeps the fewest tokens whose attention mass reaches
  ``p`` of the sample's total; only score-based methods can use it.
- ``budget="adaptive"`` lets a method that chooses its own count (e.g. PruMerge) do so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

KINDS = ("ratio", "count", "coverage", "adaptive", "schedule")  # schedule: the method's own (encoder stage)


def _is_real(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class Budget:
    """One budget; build it with :meth:`parse` so that it is validated."""

    kind: str
    value: float | int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"budget: expected one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.kind == "ratio" and not (_is_real(self.value) and 0 < self.value <= 1):
            raise ValueError(f"ratio: expected a number in (0, 1], got {self.value!r}")
        if self.kind == "count" and not (
            isinstance(self.value, int) and not isinstance(self.value, bool) and self.value >= 1
        ):
            raise ValueError(f"count: expected an integer >= 1, got {self.value!r}")
        if self.kind == "coverage" and not (_is_real(self.value) and 0 < self.value <= 1):
            raise ValueError(f"coverage: expected a fraction in (0, 1], e.g. 'coverage:0.9', got {self.value!r}")

    @classmethod
    def parse(
        cls, ratio: float | None = None, count: int | None = None, budget: str | Budget | None = None
    ) -> Budget | None:
        """Build from the ``ratio=``/``count=``/``budget=`` keywords; None if none is given."""
        given = [name for name, v in (("ratio", ratio), ("count", count), ("budget", budget)) if v is not None]
        if len(given) > 1:
            raise ValueError(f"budget: expected one of ratio=, count= or budget=, got {' and '.join(given)}")
        if ratio is not None:
            return cls("ratio", ratio)
        if count is not None:
            return cls("count", count)
        if budget is None or isinstance(budget, Budget):
            return budget
        if not isinstance(budget, str):
            raise ValueError(f"budget: expected a string like 'coverage:0.9', got {budget!r}")
        kind, _, value = budget.partition(":")
        kind = kind.strip()
        if kind == "adaptive" and not value:
            return cls("adaptive")
        if kind not in ("ratio", "count", "coverage") or not value:
            raise ValueError(f"budget: expected 'ratio:R', 'count:C', 'coverage:P' or 'adaptive', got {budget!r}")
        try:
            number: float | int = int(value) if kind == "count" else float(value)
        except ValueError:
            raise ValueError(f"budget: expected a number after '{kind}:', got {budget!r}") from None
        return cls(kind, number)

    def __str__(self) -> str:
        return self.kind if self.value is None else f"{self.kind}:{self.value:g}"

    def resolve(self, n: int, mass: Tensor | None = None) -> int:
        """Tokens to keep out of ``n``; ``mass [n]`` (non-negative scores) is needed for coverage."""
        if self.kind == "ratio":
            return max(1, min(n, math.floor(self.value * n + 0.5)))
        if self.kind == "count":
            return min(self.value, n)
        if self.kind == "coverage":
            if mass is None:
                raise ValueError("budget: 'coverage:P' needs a score-based method (one that ranks tokens by mass)")
            return coverage_count(mass, self.value)
        if self.kind == "schedule":
            raise ValueError("budget: encoder-stage methods follow their own schedule (r=), not a token budget")
        raise ValueError("budget: 'adaptive' is only accepted by methods that choose their own count")


def coverage_count(mass: Tensor, fraction: float) -> int:
    """Fewest tokens whose mass (largest first) reaches ``fraction`` of the total; at least 1."""
    m = mass.detach().double().clamp_min(0).flatten()
    total = float(m.sum())
    if total <= 0:
        return max(1, math.ceil(fraction * m.numel() - 1e-9))
    ordered = torch.sort(m, descending=True, stable=True).values
    cumulative = torch.cumsum(ordered, 0)
    short = int((cumulative < (fraction - 1e-6) * total).sum())  # tolerance: float32 masses
    return max(1, min(m.numel(), short + 1))
