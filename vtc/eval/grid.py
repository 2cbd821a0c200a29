"""The method grid of one run: which compression methods, at which budgets.

``--methods`` is a comma-separated list, or a YAML/JSON file. Items:

- ``none``: no compression, and ``text-only``: the question and options without the image or video (both
  always in the grid, first: the reference and the control of what the text alone gives away).
- ``name:0.25``: a ratio; ``name:count=64``: a token count; ``name:adaptive``: the method's own count.
- ``name``: the method at each ratio of ``--ratios`` (default ``0.25,0.11``).
- ``default``: a few representative methods (:data:`DEFAULT_METHODS`: diversity, [CLS]-attention with
  merging, and an LLM-stage method) at each ratio; ``all``: every registered projector-stage method.

A file holds a list of such strings and/or mappings ``{name: divprune, ratio: 0.25, <method kwargs>}``
(``count:`` or ``budget: adaptive`` instead of ``ratio``), either at the top level or under
``methods:``; it may set ``ratios:`` too.

The iso-token baseline: for every ratio or count used by another method, ``pool`` at that budget is
added (plain downsampling, which published studies found to beat many methods, so every table shows it).
With ``--video-baselines`` the video baselines ``frames`` (fewer frames) and ``temporal_pool`` (pooling
over time) join ``pool`` at every budget. Adaptive budgets have no iso-token baseline. Order: ``none``,
``text-only``, then per budget (first use) ``pool`` (and the video baselines), then the other methods in
the order given. Labels: ``none``, ``pool:0.25``, ``divprune:count=64``,
``prumerge:adaptive``, with method kwargs appended as ``[k=v,...]``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vtc.core.registry import list_methods
from vtc.core.spec import BUDGET_KEYS, CONTROLS, TEXT_ONLY, MethodSpec, parse_spec

BASELINE = "pool"
VIDEO_BASELINES = ("frames", "temporal_pool")  # --video-baselines: fewer frames, temporal pooling
BASELINES = (BASELINE, *VIDEO_BASELINES)


def baseline_of(spec: MethodSpec) -> str | None:
    """The label of ``spec``'s iso-token ``pool`` baseline (None for ``none``, pool and adaptive budgets)."""
    if spec.is_control or spec.name == BASELINE or spec.budget_key is None:
        return None
    return MethodSpec(BASELINE, dict(spec.budget)).label


NONE = MethodSpec("none")
CONTROL_SPECS = [NONE, MethodSpec(TEXT_ONLY)]
# the built-in grid: diversity (DivPrune), [CLS] attention plus merging (VisionZip), the LLM stage (FastV)
DEFAULT_METHODS = ("divprune", "visionzip", "fastv")


def parse_item(item: str, ratios: list[float]) -> list[MethodSpec]:
    """One ``--methods`` item (module docstring) as grid entries."""
    name, _, budget = item.strip().partition(":")
    name = name.strip()
    if name in ("all", "default"):
        if budget:
            raise ValueError(f"methods: '{name}' takes the ratios of --ratios, not a budget of its own")
        names = [m.name for m in list_methods("projector")] if name == "all" else DEFAULT_METHODS
        return [MethodSpec(n, {"ratio": r}) for n in names for r in ratios]
    if budget or name in CONTROLS:
        return [parse_spec(item)]
    return [MethodSpec(name, {"ratio": r}) for r in ratios]


def parse_mapping(entry: dict, ratios: list[float]) -> list[MethodSpec]:
    entry = dict(entry)
    if "name" not in entry:
        raise ValueError(f"methods: a mapping entry needs a name, got {entry}")
    name = str(entry.pop("name"))
    budget = {k: entry.pop(k) for k in BUDGET_KEYS if k in entry}
    if name in CONTROLS:
        return [MethodSpec(name)]
    if budget:
        if "ratio" in budget:
            budget["ratio"] = float(budget["ratio"])
        return [MethodSpec(name, budget, entry)]
    return [MethodSpec(name, {"ratio": r}, entry) for r in ratios]


def read_config(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        return json.loads(text)
    try:
        import yaml
    except ImportError:
        raise ValueError(f"methods: reading {path} needs PyYAML (pip install pyyaml), or write it as JSON") from None
    return yaml.safe_load(text)


def parse_methods(spec: str, ratios: list[float]) -> list[MethodSpec]:
    """The entries ``--methods`` names (a list or a YAML/JSON file), before completion."""
    path = Path(spec)
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        if not path.is_file():
            raise ValueError(f"methods: no such config file {path}")
        config = read_config(path)
        if isinstance(config, dict):
            ratios = [float(r) for r in config.get("ratios", ratios)]
            config = config.get("methods", [])
        if not isinstance(config, list):
            raise ValueError(f"methods: {path} should hold a list of methods (or one under 'methods:')")
        out = []
        for entry in config:
            out += parse_mapping(entry, ratios) if isinstance(entry, dict) else parse_item(str(entry), ratios)
        return out
    return [s for item in spec.split(",") if item.strip() for s in parse_item(item, ratios)]


def complete_grid(specs: list[MethodSpec], video_baselines: bool = False) -> list[MethodSpec]:
    """The controls first, then per budget the ``pool`` baseline (and with ``video_baselines`` the frame
    baselines) and the methods at it (module docstring)."""
    groups: dict[str | None, list[MethodSpec]] = {}
    baselines = BASELINES if video_baselines else (BASELINE,)
    for spec in specs:
        if spec.is_control:
            continue
        key = spec.budget_key
        if key is not None and key not in groups:
            groups[key] = [MethodSpec(name, dict(spec.budget)) for name in baselines]
        groups.setdefault(key, []).append(spec)
    grid, seen = list(CONTROL_SPECS), {s.label for s in CONTROL_SPECS}
    for key in sorted(groups, key=lambda k: k is None):  # adaptive budgets last, others in order of use
        for spec in groups[key]:
            if spec.label not in seen:
                seen.add(spec.label)
                grid.append(spec)
    return grid


def validate(grid: list[MethodSpec]) -> None:
    """Build every entry once, so bad names, budgets or stages fail before any model loads (one line each)."""
    problems = []
    for spec in grid:
        try:
            compressor = spec.build()
        except ValueError as err:
            problems.append(f"{spec.label}: {err}")
            continue
        if compressor is not None and compressor.info.stage not in ("projector", "llm"):
            problems.append(f"{spec.label}: runs at stage {compressor.info.stage!r}; vtc eval runs projector- and "
                            "LLM-stage methods (vtc.apply with a budget)")
    if problems:
        raise ValueError("methods:\n" + "\n".join(f"  {p}" for p in problems))


def with_defaults(specs: list[MethodSpec], defaults: dict[str, dict]) -> list[MethodSpec]:
    """Entries without kwargs of their own get ``defaults[name]`` (e.g. layers that fit a tiny tower)."""
    return [MethodSpec(s.name, s.budget, dict(defaults[s.name])) if s.name in defaults and not s.kwargs else s
            for s in specs]


def build_grid(spec: str, ratios: list[float], defaults: dict[str, dict] | None = None,
               video_baselines: bool = False) -> list[MethodSpec]:
    """Parse, complete and validate ``--methods`` (``defaults``: kwargs for entries that give none;
    ``video_baselines``: add ``frames`` and ``temporal_pool`` beside ``pool`` at every budget)."""
    grid = complete_grid(with_defaults(parse_methods(spec, ratios), defaults or {}), video_baselines)
    validate(grid)
    return grid
