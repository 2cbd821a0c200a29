"""The ``vtc demo`` page: compressors side by side on one image or video.

The page, top to bottom:

- Inputs. An uploaded image or video, or a bundled example (shapes-world scenes and clips, which also fill
  in a suggested question); the question; up to four registered methods, with per-method keyword
  arguments (``visionzip: contextual_fraction=0.1``); the budget, a ratio slider or a token count (adaptive
  methods may choose their own count); frames sampled from a video; answer length.
- One column per method, plus "no compression" as the reference: the picture (or each sampled frame, in a
  gallery) with the tokens drawn over it (kept: clear, dropped: dimmed, merged: coloured by the slot they
  merged into; see :mod:`vtc.demo.overlay`), visual tokens before → after, prefill time and the answer. A
  method that fails shows its error in its own column; the others still run.
- A bar chart of the tokens each method kept and a table of tokens, prefill ms and answers; the raw
  results as JSON (the same object the ``/compare`` API returns).

The handlers are plain functions (`load_media`, `method_specs`, `run_comparison`, `summary`, ...), tested
without a browser; `build_app` wires them to Gradio. Every model call goes through one queue with
concurrency 1, so two requests never run the model at once. Gradio is imported inside the functions that
need it, so ``import vtc`` never loads it.
"""

from __future__ import annotations

import ast
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from vtc.core.spec import MethodSpec
from vtc.data.video import VIDEO_SUFFIXES
from vtc.demo.overlay import contact_sheet, draw_overlays, fit, token_counts

EXAMPLES_DIR = Path(__file__).parent / "examples"
DEFAULT_MODEL = "vtc-tiny-qwen2vl"
REFERENCE = "no compression"
MAX_METHODS = 4
MAX_VIDEO_BYTES = 200 * 1024 * 1024
DEFAULT_FRAMES = 16
MAX_FRAMES = 32
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
BUDGET_MODES = ("ratio", "token count")
INSTALL_HINT = "the demo needs Gradio: pip install 'vtc[demo]'"

Progress = Callable[[float, str], None]


# ----------------------------------------------------------------------------------------------- inputs
@dataclass
class Media:
    """One input: an image, or the frames sampled from a video (``pictures`` in both cases)."""

    kind: str  # "image" or "video"
    pictures: list[Image.Image]
    name: str

    @property
    def pixels(self) -> Any:
        """What the processor takes: the PIL image, or the frames as RGB uint8 arrays."""
        import numpy as np

        if self.kind == "image":
            return self.pictures[0]
        return [np.asarray(p) for p in self.pictures]


def load_examples(folder: Path = EXAMPLES_DIR) -> dict[str, dict]:
    """The bundled examples: name -> {file, media, question, options, answer}."""
    path = folder / "examples.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def example_path(name: str, folder: Path = EXAMPLES_DIR) -> Path:
    examples = load_examples(folder)
    if name not in examples:
        raise ValueError(f"example: unknown example {name!r}; bundled: {', '.join(examples) or 'none'}")
    return folder / examples[name]["file"]


def media_kind(path: str | Path) -> str:
    """``"image"`` or ``"video"`` from the file name, or a clear error for other file types."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    raise ValueError(
        f"media: {Path(path).name} is not a supported file type; expected an image "
        f"({', '.join(s[1:] for s in IMAGE_SUFFIXES)}) or a video ({', '.join(s[1:] for s in VIDEO_SUFFIXES)})"
    )


def load_media(path: str | Path | None, frames: int = DEFAULT_FRAMES, max_frames: int = MAX_FRAMES) -> Media:
    """Read an image (≤ 20 MP) or sample ``frames`` frames (≤ ``max_frames``) from a video (≤ 200 MB)."""
    if not path:
        raise ValueError("media: upload an image or a video, or pick a bundled example")
    path = Path(path)
    kind = media_kind(path)
    if not path.is_file():
        raise ValueError(f"media: no such file {path.name}")
    if kind == "image":
        from vtc.data.image import load_image

        return Media("image", [load_image(str(path), name=path.name)], path.name)
    size = path.stat().st_size
    if size > MAX_VIDEO_BYTES:
        raise ValueError(f"video: {path.name} is {size / 2**20:.0f} MB, over the 200 MB limit")
    frames = int(frames)
    if not 1 <= frames <= max_frames:
        raise ValueError(f"frames: expected 1..{max_frames} frames per video, got {frames}")
    from vtc.data.video import load_video

    try:
        arrays = load_video(path, num_frames=frames)
    except ValueError as err:  # name the user's file, never the server's copy of it
        raise ValueError(str(err).replace(str(path), path.name)) from None
    return Media("video", [Image.fromarray(a).convert("RGB") for a in arrays], path.name)


def resolve_media(upload: str | Path | None, example: str | None, frames: int = DEFAULT_FRAMES,
                  max_frames: int = MAX_FRAMES) -> Media:
    """The uploaded file if there is one, else the chosen bundled example."""
    if upload:
        return load_media(upload, frames, max_frames)
    if example:
        return load_media(example_path(example), frames, max_frames)
    return load_media(None)


def preview(media: Media) -> Image.Image:
    """A still of the input: the image, or a contact sheet of the sampled frames."""
    return fit(media.pictures[0]) if media.kind == "image" else contact_sheet(media.pictures[:16])


def resolve_question(question: str | None, example: str | None) -> str:
    """The typed question, else the example's suggested one."""
    question = (question or "").strip()
    if not question and example:
        question = load_examples().get(example, {}).get("question", "")
    if not question:
        raise ValueError("question: type a question about the image or video")
    return question


def normalise_question(question: str, processor: Any) -> str:
    """The tiny models' word-level vocabulary is lower case with spaced punctuation; others get the text as is."""
    if not hasattr(processor, "build_prompt"):
        return question
    return " ".join(re.sub(r"([?.,:!])", r" \1 ", question.lower()).split())


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


def projector_methods() -> list[str]:
    """The registered methods `vtc.apply` can run on a model (projector stage)."""
    from vtc.core.registry import list_methods

    return [m.name for m in list_methods() if m.stage == "projector"]


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
    text = media_prompt(processor, normalise_question(question, processor), media.kind)
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


def banner(message: str) -> str:
    """The status line for an error that stopped the whole comparison (a bad input, a method that cannot run)."""
    return f"**Error:** {message}"


# ----------------------------------------------------------------------------------------------- Gradio
LEGEND = (
    "Overlays: <b>clear</b> = kept token · <span style='background:#222;color:#ddd;padding:0 4px'>dimmed</span>"
    " = dropped · <span style='background:#e6a23c;padding:0 4px'>colour</span> = merged (one colour per slot)"
)


class ModelCache:
    """Loads the model once, on first use (or now, with ``get()``)."""

    def __init__(self, model_id: str, model: Any = None, processor: Any = None) -> None:
        self.model_id = model_id
        self._pair = (model, processor) if model is not None else None

    def get(self) -> tuple[Any, Any]:
        if self._pair is None:
            from vtc.models.loading import load

            self._pair = load(self.model_id)
        return self._pair


def import_gradio() -> Any:
    """Gradio, with analytics off (the page works offline), or a clear install hint."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return gr


def build_app(model_id: str = DEFAULT_MODEL, *, max_frames: int = MAX_FRAMES, model: Any = None,
              processor: Any = None, preload: bool = False) -> Any:
    """The comparison page as a ``gr.Blocks`` (launch it with :func:`launch`).

    ``model``/``processor``: an already loaded pair (else ``model_id`` is loaded on the first request, or
    now with ``preload``). ``max_frames`` caps the frames sampled from a video.
    """
    gr = import_gradio()
    cache = ModelCache(model_id, model, processor)
    if preload:
        cache.get()
    examples = load_examples()
    methods = projector_methods()
    default_methods = [m for m in ("divprune", "pool", "visionzip") if m in methods]
    frames_default = min(DEFAULT_FRAMES, max_frames)

    def on_example(name: str | None) -> tuple:
        if not name:
            return gr.update(), gr.update(), None
        try:
            still = preview(resolve_media(None, name, frames_default, max_frames))
        except ValueError:
            still = None
        return None, examples[name]["question"], still

    failures: dict[str, str] = {}  # session -> its last comparison's error, for the banner

    def cleared(status_text: str = "") -> list:
        """The results area emptied (earlier results go), with ``status_text`` in the status line."""
        import pandas as pd

        out: list[Any] = [status_text]
        out += [gr.update(visible=i == 0) for i in range(MAX_METHODS + 1)]
        out += [f"### {REFERENCE}" if i == 0 else "" for i in range(MAX_METHODS + 1)]
        out += [gr.update(value=None, visible=False) for _ in range(MAX_METHODS + 1)]
        out += [gr.update(value=pd.DataFrame({"method": [], "tokens": []})), gr.update(value=[])]
        return out

    def on_upload(path: str | None) -> list:
        try:
            still, note = (preview(load_media(path, min(8, max_frames), max_frames)) if path else None), ""
        except ValueError as err:  # a bad input: one banner, earlier results cleared
            still, note = None, banner(str(err))
        return [None, still, *cleared(note)]

    def on_compare(media_file: str | None, example: str | None, question: str, chosen: list[str],
                   kwargs_text: str, budget_mode: str, ratio: float, count: float, adaptive: bool, frames: float,
                   max_new_tokens: float, request: gr.Request, progress: Any = gr.Progress()  # noqa: B008
                   ) -> tuple[dict, dict]:
        try:
            progress(0, desc="reading the input")
            media = resolve_media(media_file, example, int(frames), max_frames)
            question = resolve_question(question, example)
            specs = method_specs(chosen, kwargs_text, budget_mode, ratio, None if count is None else int(count),
                                 adaptive)
            progress(0.05, desc=f"loading {model_id}")
            model_, processor_ = cache.get()
            report = lambda frac, text: progress(0.1 + 0.9 * frac, desc=text)  # noqa: E731
            results = run_comparison(model_, processor_, media, question, specs, int(max_new_tokens), report)
        except (ValueError, ImportError) as err:  # a bad input or a method that cannot run: nothing ran
            if request is not None:
                failures[request.session_hash] = str(err)
            raise gr.Error(str(err)) from None
        return summary(media, question, results, model_id), {"media": media, "results": results}

    def on_failure(request: gr.Request) -> tuple[str, None]:
        message = failures.pop(request.session_hash, "") if request is not None else ""
        return banner(message or "the comparison failed"), None

    # Gradio injects the request by annotation; with postponed annotations it cannot resolve the local `gr`
    on_compare.__annotations__["request"] = on_failure.__annotations__["request"] = gr.Request

    with gr.Blocks(title="vtc demo: visual-token compression") as demo:
        gr.Markdown(
            f"# Visual-token compression, side by side\nModel: `{model_id}`. Pick an image or a video, a "
            f"question and up to {MAX_METHODS} methods; each runs on the same input next to the uncompressed "
            f"reference.\n\n{LEGEND}"
        )
        with gr.Row():
            with gr.Column(scale=1):
                media_in = gr.File(label="your image or video (image ≤ 20 MP, video ≤ 200 MB)",
                                   file_types=list(IMAGE_SUFFIXES + VIDEO_SUFFIXES), type="filepath",
                                   elem_id="media")
                example_in = gr.Dropdown(
                    [(f"{name} ({e['media']})", name) for name, e in examples.items()], value=None,
                    label="…or a bundled example", elem_id="example",
                )
                still = gr.Image(label="input", type="pil", interactive=False, height=220, elem_id="preview")
            with gr.Column(scale=2):
                question_in = gr.Textbox(label="question", placeholder="what colour is the square ?",
                                         elem_id="question")
                methods_in = gr.Dropdown(methods, value=default_methods, multiselect=True, max_choices=MAX_METHODS,
                                         label=f"methods (up to {MAX_METHODS}; 'no compression' is always shown)",
                                         elem_id="methods")
                kwargs_in = gr.Textbox(label="method arguments (optional): one method per line",
                                       placeholder="visionzip: contextual_fraction=0.1\ndart: pivots=4",
                                       lines=2, elem_id="kwargs")
                kwargs_md = gr.Markdown(kwargs_help(default_methods))
                with gr.Row():
                    mode_in = gr.Radio(list(BUDGET_MODES), value="ratio", label="budget")
                    ratio_in = gr.Slider(0.01, 1.0, value=0.25, step=0.01, label="ratio of tokens kept")
                    count_in = gr.Number(value=32, minimum=1, precision=0, label="token count")
                with gr.Row():
                    adaptive_in = gr.Checkbox(value=True, label="adaptive methods choose their own count")
                    frames_in = gr.Slider(1, max_frames, value=frames_default, step=1,
                                          label=f"video frames (≤ {max_frames})")
                    tokens_in = gr.Slider(1, 64, value=16, step=1, label="answer tokens")
                run = gr.Button("Compare", variant="primary", elem_id="compare")
        status = gr.Markdown(elem_id="status")
        blocks, headers, galleries = [], [], []
        with gr.Row(equal_height=False):
            for i in range(MAX_METHODS + 1):
                with gr.Column(visible=i == 0, min_width=180) as column:
                    headers.append(gr.Markdown(f"### {REFERENCE}" if i == 0 else "", elem_id=f"col-{i}"))
                    galleries.append(gr.Gallery(show_label=False, columns=1, height=None, preview=False,
                                                object_fit="contain", elem_id=f"gallery-{i}"))
                blocks.append(column)
        with gr.Row():
            chart = gr.BarPlot(x="method", y="tokens", title="visual tokens per method", y_title="tokens",
                               y_lim=[0, None], elem_id="chart")
            table = gr.Dataframe(headers=TABLE_HEADERS, label="results", interactive=False, wrap=True,
                                 column_widths=["18%", "14%", "16%", "12%", "40%"], elem_id="table")
        with gr.Accordion("raw results (JSON, as the /compare API returns them)", open=False):
            raw = gr.JSON(elem_id="raw")
        state = gr.State()

        def on_render(held: dict | None) -> list:
            import pandas as pd

            if not held:
                return [gr.update()] * (1 + 3 * (MAX_METHODS + 1) + 2)  # status, columns, chart, table
            media, results = held["media"], held["results"]
            out: list[Any] = []
            failed = sum(r.error is not None for r in results)
            out.append(f"**{media.name}** ({media.kind}"
                       + (f", {len(media.pictures)} frames" if media.kind == "video" else "") + f"): "
                       f"{len(results)} columns" + (f", {failed} with errors" if failed else ""))
            for i in range(MAX_METHODS + 1):
                out.append(gr.update(visible=i < len(results)))
            for i in range(MAX_METHODS + 1):
                out.append(column_markdown(results[i]) if i < len(results) else "")
            columns = gallery_columns(media, len(results))
            for i in range(MAX_METHODS + 1):
                items = gallery_items(media, results[i]) if i < len(results) else []
                out.append(gr.update(value=items or None, columns=columns, visible=bool(items)))
            rows = chart_rows(results)
            out.append(gr.update(value=pd.DataFrame(rows, columns=["method", "tokens"]),
                                 sort=[r["method"] for r in rows]))
            out.append(table_rows(results))
            return out

        page = [status, *blocks, *headers, *galleries, chart, table]
        example_in.input(on_example, example_in, [media_in, question_in, still], api_visibility="private")
        media_in.upload(on_upload, media_in, [example_in, still, *page], api_visibility="private",
                        show_progress="hidden")
        methods_in.change(kwargs_help, methods_in, kwargs_md, api_visibility="private")
        compared = run.click(lambda: cleared("running…"), None, page, api_visibility="private",
                             show_progress="hidden").then(
            on_compare,
            [media_in, example_in, question_in, methods_in, kwargs_in, mode_in, ratio_in, count_in, adaptive_in,
             frames_in, tokens_in],
            [raw, state],
            api_name="compare",
            concurrency_limit=1,
            concurrency_id="model",
            show_progress_on=[status],
        )
        compared.success(on_render, state, page, api_visibility="private", show_progress="hidden")
        compared.failure(on_failure, None, [status, raw], api_visibility="private", show_progress="hidden")
    return demo


def launch(demo: Any, host: str = "127.0.0.1", port: int = 7860, share: bool = False, **kwargs: Any) -> Any:
    """Serve the page: one queue (concurrency 1 for the model), 200 MB uploads, local fonts, no SSR."""
    gr = import_gradio()
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    demo.queue(max_size=32, default_concurrency_limit=1)
    return demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size="200mb",
        allowed_paths=[str(EXAMPLES_DIR)],
        ssr_mode=False,
        show_error=True,
        theme=theme,
        **kwargs,
    )
