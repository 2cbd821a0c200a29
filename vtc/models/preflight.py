"""Checks before the first sample: can every (model, method) pair run, and do the questions fit the model?

``vtc eval``, ``vtc compare`` and the demo call :func:`check_pairs` with the models' configs (no weights
needed) and the method specs. Every problem gets one message (``model × method: why``) and the caller
runs nothing. Checked per pair, through the adapter's :meth:`~vtc.models.base.Adapter.problems`: the
model type is supported; the method's stage is supported on it; LLM-stage layers fall inside the LLM
(leaving a layer after them) with a budget the method accepts there; the encoder layers a method reads
exist in the tower; [CLS] attention is available or substituted by the rule of :mod:`vtc.models.run`.
Per model: the number of answer options of the data fits the model (``max_options``, when its processor
declares one). What can only fail per sample (a corrupt video) stays a per-sample error.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from vtc.core.spec import MethodSpec
from vtc.models.registry import adapter_class
from vtc.models.run import cls_substitute_for


def pair_problems(config: Any, spec: MethodSpec) -> list[str]:
    """Why ``spec`` cannot run on a model with ``config`` (empty: it can)."""
    compressor = spec.build()
    if compressor is None:
        return []
    stages = {compressor.info.stage: compressor}
    return adapter_class(config).problems(config, stages, cls_substitute_for(config, compressor))


def check_pairs(models: dict[str, Any], specs: Iterable[MethodSpec], *, option_counts: Iterable[int] = (),
                max_options: dict[str, int | None] | None = None) -> list[str]:
    """One message per problem over every (model, spec) pair; ``models`` maps a model's name to its config.

    ``option_counts``: the numbers of answer options the data's questions have; ``max_options``: per model,
    the most options its prompt format can offer (None or absent: no limit).
    """
    specs = list(specs)
    counts = sorted(set(option_counts))
    problems = []
    for name, config in models.items():
        try:
            adapter_class(config)
        except ValueError as err:
            problems.append(f"{name}: {err}")
            continue
        for spec in specs:
            try:
                problems += [f"{name} × {spec.label}: {p}" for p in pair_problems(config, spec)]
            except ValueError as err:  # the spec itself cannot be built
                problems.append(f"{name} × {spec.label}: {err}")
        limit = (max_options or {}).get(name)
        over = [n for n in counts if limit is not None and n > limit]
        if over:
            problems.append(
                f"{name}: the data has questions with {', '.join(map(str, over))} options; this model's prompt "
                f"format offers at most {limit} (letters {'ABCDEFGHIJKLMNOPQRSTUVWXYZ'[:limit]})"
            )
    return problems
