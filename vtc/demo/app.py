"""The ``vtc demo`` page: compressors side by side on one image or video.

The page, top to bottom:

- Inputs. An uploaded image or video, or a bundled example (shapes-world scenes and clips, which also fill
  in a suggested question); the question; up to four registered methods, with per-method keyword
  arguments (``visionzip: contextual_fraction=0.1``); the budget, a ratio slider or a token count (adaptive
  methods may choose their own count); frames sampled from a video; answer length.
- One column per method, plus "no compression" as the reference: the picture (or each sampled frame, in a
  gallery) with the tokens drawn over it (kept: clear, dropped: dimmed, merged: coloured by the slot they
  merged into; see :mod:`vtc.demo.overlay`), visual tokens before → after, prefill time and the answer. A
  method that fails while it runs shows its error in its own column; the others still run. A bad input, or
  a method that cannot run on the model (checked before anything runs), is one error banner in the status
  line, and the earlier results are cleared; messages name the user's file, never the server's copy.
- A bar chart of the tokens each method kept and a table of tokens, prefill ms and answers; the raw
  results as JSON (the same object the ``/compare`` API returns).

The handlers are plain functions, tested without a browser: the inputs in :mod:`vtc.demo.media`
(`load_media`, `resolve_media`, ...), the comparison in :mod:`vtc.demo.compare` (`method_specs`,
`run_comparison`, `summary`, ...); `build_app` wires them to Gradio. Every model call goes through one queue with
concurrency 1, so two requests never run the model at once. Gradio is imported inside the functions that
need it, so ``import vtc`` never loads it.
"""

from __future__ import annotations

import os
from typing import Any

from vtc.core.registry import list_methods
from vtc.data.video import VIDEO_SUFFIXES
from vtc.demo.compare import (
    BUDGET_MODES,
    MAX_METHODS,
    REFERENCE,
    TABLE_HEADERS,
    chart_rows,
    column_markdown,
    gallery_columns,
    gallery_items,
    kwargs_help,
    method_specs,
    run_comparison,
    summary,
    table_rows,
)
from vtc.demo.media import (
    DEFAULT_FRAMES,
    EXAMPLES_DIR,
    IMAGE_SUFFIXES,
    MAX_FRAMES,
    load_examples,
    load_media,
    preview,
    resolve_media,
    resolve_question,
)

DEFAULT_MODEL = "vtc-tiny-qwen2vl"
INSTALL_HINT = "the demo needs Gradio: pip install 'vtc[demo]'"


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
    methods = [m.name for m in list_methods("projector")]
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
