"""The demo's comparison, without Gradio: the chosen methods and their budgets, one run per column through
:func:`vtc.models.run.run` (checked first with :mod:`vtc.models.preflight`), and what the page shows of them."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from vtc.core.spec import MethodSpec
from vtc.demo.media import Media
from vtc.demo.overlay import draw_overlays, fit, token_counts

REFERENCE = "no compression"
MAX_METHODS = 4
BUDGET_MODES = ("ratio", "token count")

Progress = Callable[[float, str], None]


# ----------------------------------------------------------------------------------------------- methods
def _literal(node: ast.expr) -> Any:
    """A Python literal, or a bare word as a string (``metric=keys``)."""
    if isinstance(node, ast.Name):
        return node.id
    return ast.literal_eval(node)


def parse_kwargs(text: str | None) -> dict[str, dict[str, Any]]:
    """Per-method keyword arguments, one method per line or ``;``: ``name: key=value, key=value``.

    Values are Python literals (``0.1``, ``(-2,)``, ``'keys'``) or bare words (``metric=keys``).
    """
    out: dict[str, dict[str, Any]] = {}
    for raw in re.split(r"[;\n]", text or ""):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z_][\w\-]*)\s*:?\s*(.*)", line)
        if not match:
            raise ValueError(f"kwargs: cannot read {line!r}; write one method per line as 'name: key=value, ...'")
        name, rest = match.groups()
        try:
            call = ast.parse(f"f({rest})", mode="eval").body
            if not isinstance(call, ast.Call) or call.args or any(k.arg is None for k in call.keywords):
                raise SyntaxError("positional arguments")
            values = {k.arg: _literal(k.value) for k in call.keywords}
        except (SyntaxError, ValueError):
            raise ValueError(
                f"kwargs: cannot read the arguments of {name!r} ({rest!r}); write key=value pairs with Python "
                "literals, e.g. 'visionzip: contextual_fraction=0.1, layers=(-2,)'"
            ) from None
        out.setdefault(name, {}).update(values)
    return out


def method_specs(methods: Sequence[str] | None, kwargs_text: str | None = "", budget_mode: str = "ratio",
                 ratio: float = 0.25, count: int | None = 32, adaptive: bool = True) -> list[MethodSpec]:
    """The chosen methods (at most four) with their kwargs and budget; unknown names fail later, in their column."""
    from vtc.core.registry import get_info

    methods = [m for m in (methods or []) if m and m != REFERENCE]
    if len(methods) > MAX_METHODS:
        raise ValueError(f"methods: pick at most {MAX_METHODS} methods, got {len(methods)}")
    if len(set(methods)) != len(methods):
        raise ValueError("methods: each method can be picked once")
    if budget_mode not in BUDGET_MODES:
        raise ValueError(f"budget: expected one of {BUDGET_MODES}, got {budget_mode!r}")
    per_method = parse_kwargs(kwargs_text)
    stray = sorted(set(per_method) - set(methods))
    if stray:
        raise ValueError(f"kwargs: arguments for {', '.join(stray)}, which is not among the chosen methods")
    specs = []
    for name in methods:
        try:
            is_adaptive = get_info(name).adaptive
        except ValueError:
            is_adaptive = False
        if is_adaptive and adaptive:
            budget: dict[str, Any] = {"budget": "adaptive"}
        elif budget_mode == "token count":
            if count is None or int(count) < 1:
                raise ValueError(f"budget: expected a token count >= 1, got {count}")
            budget = {"count": int(count)}
        else:
            budget = {"ratio": float(ratio)}
        specs.append(MethodSpec(name, budget, per_method.get(name, {})))
    return specs


def kwargs_help(methods: Sequence[str] | None) -> str:
    """Markdown: the keyword arguments each chosen method accepts, with their defaults."""
    import dataclasses

    from vtc.core.registry import get_info

    lines = []
    for name in methods or []:
        try:
            info = get_info(name)
        except ValueError as err:
            lines.append(f"- {err}")
            continue
        fields = [f"`{f.name}={f.default!r}`" for f in dataclasses.fields(info.config)]
        extra = " · adaptive" if info.adaptive else ""
        lines.append(f"- **{name}**{extra}: {', '.join(fields) or 'no arguments'}")
    return "\n".join(lines) or "Pick methods to see their arguments."


# ----------------------------------------------------------------------------------------------- running
@dataclass
class MethodResult:
    """One column of the comparison."""

    label: str
    budget: str
    before: int | None = None
    after: int | None = None
    prefill_ms: float | None = None
    answer: str = ""
    error: str | None = None
    adaptive: bool = False
    note: str = ""
    legend: str = ""
    overlays: list[Image.Image] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (no pictures)."""
        return {
            "method": self.label,
            "budget": self.budget,
            "before": self.before,
            "after": self.after,
            "chosen": self.after if self.adaptive else None,
            "prefill_ms": None if self.prefill_ms is None else round(self.prefill_ms, 2),
            "answer": self.answer,
            "tokens": self.legend,
            "note": self.note,
            "error": self.error,
        }


def _error_text(err: Exception) -> str:
    return str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"


def run_method(model: Any, processor: Any, media: Media, inputs: Any, spec: MethodSpec | None, n_visual: int,
               max_new_tokens: int = 16) -> MethodResult:
    """One column: ``spec`` (``None``: no compression) on the prepared inputs. Errors land in the result."""
    from vtc.models.run import run

    spec = spec or MethodSpec("none")
    if spec.is_none:
        result = MethodResult(REFERENCE, spec.describe_budget(), before=n_visual)
    else:
        result = MethodResult(spec.name, spec.describe_budget(), adaptive=spec.budget.get("budget") == "adaptive")
    try:
        ran = run(model, inputs, spec, max_new_tokens=max_new_tokens)
        result.prefill_ms, result.note = ran.prefill_ms, ran.note
        result.before, result.after = ran.before[0], ran.after[0]
        item = None if ran.stats is None else ran.stats[media.kind]["items"][0]
        result.answer = processor.batch_decode(ran.new_tokens, skip_special_tokens=True)[0].strip()
    except Exception as err:  # one method's failure stays in its column
        result.error = _error_text(err)
        return result
    try:
        if item is None:
            result.overlays = [fit(p) for p in media.pictures]
            result.legend = f"{n_visual} kept"
        else:
            assign = item["assign"].tolist()
            result.overlays = draw_overlays(media.pictures, assign, item["grid"])
            result.legend = token_counts(assign).describe()
    except Exception as err:  # the numbers stand even if the drawing fails
        result.overlays = [fit(p) for p in media.pictures]
        result.note = "; ".join(filter(None, [result.note, f"overlay unavailable: {_error_text(err)}"]))
    return result


def check_methods(model: Any, specs: Sequence[MethodSpec]) -> None:
    """Every chosen method can run on this model (:mod:`vtc.models.preflight`): else one ValueError with one
    line per problem, before anything runs."""
    from vtc.models.preflight import check_pairs

    problems = check_pairs({"model": model.config}, specs)
    if problems:
        lines = [p.removeprefix("model × ") for p in problems]
        raise ValueError("cannot run: " + "; ".join(lines))


def prepare_inputs(model: Any, processor: Any, media: Media, question: str) -> tuple[Any, int]:
    """The processor's inputs for one image or video and the question, and the number of visual tokens."""
    from vtc.models.prompt import media_prompt
    from vtc.models.registry import check_media
    from vtc.models.run import visual_counts

    check_media(model.config, media.kind)
    text = media_prompt(processor, question, media.kind)  # the tiny processor normalises case and punctuation
    inputs = processor(**{f"{media.kind}s": [media.pixels]}, text=text, return_tensors="pt")
    return inputs, visual_counts(model, inputs["input_ids"])[0]


def run_comparison(model: Any, processor: Any, media: Media, question: str, specs: Sequence[MethodSpec],
                   max_new_tokens: int = 16, progress: Progress | None = None,
                   warmup: bool = True) -> list[MethodResult]:
    """"No compression" and then each method on the same inputs, one column each.

    ``warmup``: one untimed forward first, so that the reference column does not pay for first-call set-up.
    """
    check_methods(model, specs)
    inputs, n_visual = prepare_inputs(model, processor, media, question)
    if warmup:
        import torch

        if progress is not None:
            progress(0.0, "warming up")
        with torch.no_grad():
            model(**inputs)
    columns: list[MethodSpec | None] = [None, *specs]
    results = []
    for i, spec in enumerate(columns):
        if progress is not None:
            progress(i / len(columns), f"{spec.name if spec else REFERENCE}: prefill and answer")
        results.append(run_method(model, processor, media, inputs, spec, n_visual, max_new_tokens))
    if progress is not None:
        progress(1.0, "done")
    return results


# ----------------------------------------------------------------------------------------------- outputs
def summary(media: Media, question: str, results: Sequence[MethodResult], model_id: str = "") -> dict[str, Any]:
    """The JSON the page shows and the ``/compare`` API returns."""
    return {
        "model": model_id,
        "media": media.kind,
        "file": media.name,
        "frames": len(media.pictures) if media.kind == "video" else None,
        "question": question,
        "results": [r.as_dict() for r in results],
    }


def tokens_text(result: MethodResult) -> str:
    if result.before is None or result.after is None:
        return "-"
    return f"{result.before} → {result.after}"


def table_rows(results: Sequence[MethodResult]) -> list[list[Any]]:
    """Rows of the results table: method, budget, tokens, prefill ms, answer (or the error)."""
    rows = []
    for r in results:
        ms = "-" if r.prefill_ms is None else f"{r.prefill_ms:.1f}"
        rows.append([r.label, r.budget, tokens_text(r), ms, f"error: {r.error}" if r.error else r.answer])
    return rows


TABLE_HEADERS = ["method", "budget", "visual tokens", "prefill ms", "answer"]


def chart_rows(results: Sequence[MethodResult]) -> list[dict[str, Any]]:
    """Tokens each method kept (methods that failed are left out)."""
    return [{"method": r.label, "tokens": r.after} for r in results if r.error is None and r.after is not None]


def column_markdown(result: MethodResult) -> str:
    """The header of one method's column: tokens before → after, prefill time and the answer (or the error)."""
    lines = [f"### {result.label}", f"budget: {result.budget}"]
    if result.error:
        lines.append(f"**error:** {result.error}")
        return "\n\n".join(lines)
    chosen = f" (chose {result.after})" if result.adaptive else ""
    lines.append(f"visual tokens: **{tokens_text(result)}**{chosen}")
    lines.append(f"prefill: **{result.prefill_ms:.1f} ms**")
    lines.append(f"answer: **{result.answer or '(empty)'}**")
    if result.legend:
        lines.append(f"<small>{result.legend}</small>")
    if result.note:
        lines.append(f"<small>{result.note}</small>")
    return "\n\n".join(lines)


def gallery_columns(media: Media, n_columns: int) -> int:
    """Thumbnails per row in each method's gallery: one image; video frames as wide as the columns allow."""
    if media.kind == "image":
        return 1
    return {1: 4, 2: 4, 3: 3}.get(n_columns, 2)


def gallery_items(media: Media, result: MethodResult) -> list[tuple[Image.Image, str]]:
    if media.kind == "image":
        return [(p, media.name) for p in result.overlays]
    return [(p, f"frame {i + 1}") for i, p in enumerate(result.overlays)]


