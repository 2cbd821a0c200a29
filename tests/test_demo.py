"""The demo (issue F) without a browser: overlays, input handling, per-method columns, the app over HTTP.

A random-init model in the embedded ``vtc-tiny-qwen2vl`` layout stands in for the trained one: the tests
check token counts, overlays and errors, and only that answers are strings.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
from PIL import Image

from vtc.core.spec import MethodSpec
from vtc.data import image as image_module
from vtc.demo import app, compare
from vtc.demo import media as inputs
from vtc.demo.overlay import (
    DIM_ALPHA,
    draw_overlays,
    frame_slice,
    slot_color,
    token_counts,
)

# gradio's own queue code trips pandas 3 deprecation warnings
pytestmark = [
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """``(folder, model, processor)``: a random-init tiny Qwen2-VL saved and loaded like an embedded model."""
    from vtc.models.loading import load
    from vtc.tiny.model import TinyProcessor, build_tokenizer, new_model

    folder = tmp_path_factory.mktemp("tiny-qwen2vl")
    tokenizer = build_tokenizer()
    new_model("qwen2_vl", tokenizer).save_pretrained(folder)
    TinyProcessor(tokenizer, "qwen2_vl").save_pretrained(folder)
    model, processor = load(str(folder))
    return folder, model, processor


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------------- overlay
def test_token_counts_kept_merged_dropped():
    counts = token_counts([0, -1, 1, 1, 2, -1, 1, 3])
    assert (counts.total, counts.kept, counts.merged, counts.merge_slots, counts.dropped) == (8, 3, 3, 1, 2)
    assert counts.slots == 4
    assert counts.describe() == "3 kept · 3 merged into 1 · 2 dropped"
    assert token_counts(list(range(5))).describe() == "5 kept · 0 dropped"


def test_overlay_keeps_dims_and_colours_cells():
    picture = Image.new("RGB", (64, 32), (200, 200, 200))
    # grid 1 x 2 x 4: cell 0 kept, 1 dropped, 2 and 3 merged into slot 5, row 2: all kept
    assign = [0, -1, 5, 5, 1, 2, 3, 4]
    (out,) = draw_overlays([picture], assign, (1, 2, 4), max_side=64)
    assert out.size == (64, 32)
    assert out.getpixel((8, 8)) == (200, 200, 200)  # kept: clear
    dim = round(200 * (255 - DIM_ALPHA) / 255)
    assert all(abs(c - dim) <= 2 for c in out.getpixel((24, 8)))  # dropped: dimmed
    merged_a, merged_b = out.getpixel((40, 8)), out.getpixel((56, 8))
    assert merged_a == merged_b != (200, 200, 200)  # merged: one colour for the slot
    colour = slot_color(5)
    assert all((m - 200) * (c - 200) >= 0 for m, c in zip(merged_a, colour, strict=True))  # tinted towards it
    assert out.getpixel((8, 24)) == (200, 200, 200)
    assert slot_color(5) != slot_color(6)


def test_overlay_video_frames_follow_temporal_slices():
    frames = [Image.new("RGB", (32, 32), (100, 150, 200)) for _ in range(4)]
    assign = [0, 1, 2, 3] + [-1, -1, -1, -1]  # grid 2 x 2 x 2: first slice kept, second dropped
    out = draw_overlays(frames, assign, (2, 2, 2), max_side=32)
    assert len(out) == 4
    assert [frame_slice(i, 4, 2) for i in range(4)] == [0, 0, 1, 1]
    assert out[1].getpixel((4, 4)) == (100, 150, 200)
    assert out[2].getpixel((4, 4)) < (100, 150, 200)
    with pytest.raises(ValueError, match="expected 2x2x2 = 8 tokens"):
        draw_overlays(frames, assign[:-1], (2, 2, 2))


# ----------------------------------------------------------------------------------------------- inputs
def test_examples_are_small_and_complete():
    examples = inputs.load_examples()
    assert {e["media"] for e in examples.values()} == {"image", "video"}
    total = 0
    for name, entry in examples.items():
        path = inputs.example_path(name)
        assert path.is_file() and entry["question"].endswith("?") and entry["answer"] in entry["options"]
        total += path.stat().st_size
    assert total < 300_000


def test_parse_kwargs():
    text = "visionzip: contextual_fraction=0.1, layers=(-2,)\ntome metric=keys; dart: pivots=4"
    assert compare.parse_kwargs(text) == {
        "visionzip": {"contextual_fraction": 0.1, "layers": (-2,)},
        "tome": {"metric": "keys"},
        "dart": {"pivots": 4},
    }
    assert compare.parse_kwargs("") == {}
    with pytest.raises(ValueError, match="cannot read the arguments of 'dart'"):
        compare.parse_kwargs("dart: 4")
    with pytest.raises(ValueError, match="cannot read"):
        compare.parse_kwargs("dart: pivots=[")


def test_method_specs_budgets():
    specs = compare.method_specs(["divprune", "prumerge"], "", "ratio", 0.1, 32, adaptive=True)
    assert [(s.name, s.budget) for s in specs] == [("divprune", {"ratio": 0.1}), ("prumerge", {"budget": "adaptive"})]
    specs = compare.method_specs(["divprune", "prumerge"], "divprune:", "token count", 0.1, 20, adaptive=False)
    assert [s.budget for s in specs] == [{"count": 20}, {"count": 20}]
    assert [s.describe_budget() for s in specs] == ["20 tokens", "20 tokens"]
    with pytest.raises(ValueError, match="at most 4 methods"):
        compare.method_specs(["divprune", "pool", "tome", "random", "uniform"])
    with pytest.raises(ValueError, match="arguments for visionzip, which is not among the chosen"):
        compare.method_specs(["divprune"], "visionzip: contextual_fraction=0.1")
    assert "contextual_fraction" in compare.kwargs_help(["visionzip"])


def test_media_limits_and_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="upload an image or a video, or pick a bundled example"):
        inputs.resolve_media(None, None)
    with pytest.raises(ValueError, match="notes.txt is not a supported file type"):
        inputs.load_media(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="no such file"):
        inputs.load_media(tmp_path / "missing.png")
    big = tmp_path / "big.png"
    Image.new("RGB", (40, 30)).save(big)
    assert inputs.load_media(big).kind == "image"
    monkeypatch.setattr(image_module, "MAX_IMAGE_PIXELS", 1000)  # the limit shared with vtc compare and vtc eval
    with pytest.raises(ValueError, match="40x30 pixels, over the 20 MP limit"):
        inputs.load_media(big)
    clip = inputs.example_path("clip-first")
    with pytest.raises(ValueError, match="expected 1..8 frames per video, got 9"):
        inputs.load_media(clip, frames=9, max_frames=8)
    monkeypatch.setattr(inputs, "MAX_VIDEO_BYTES", 1000)
    with pytest.raises(ValueError, match="over the 200 MB limit"):
        inputs.load_media(clip)
    with pytest.raises(ValueError, match="question: type a question"):
        inputs.resolve_question("  ", None)
    assert inputs.resolve_question("", "scene-colour") == inputs.load_examples()["scene-colour"]["question"]


def test_broken_video_is_a_clear_error(tmp_path):
    pytest.importorskip("av")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    with pytest.raises(ValueError, match="video: cannot decode"):
        inputs.load_media(broken)


# ----------------------------------------------------------------------------------------------- running
def test_comparison_on_an_image(tiny):
    _, model, processor = tiny
    media = inputs.resolve_media(None, "scene-colour")
    specs = compare.method_specs(["divprune", "pool", "visionzip", "prumerge"], "", "ratio", 0.25, adaptive=True)
    steps = []
    results = compare.run_comparison(model, processor, media, "What colour is the square?", specs, 3,
                                 lambda frac, text: steps.append(frac))
    assert [r.label for r in results] == [compare.REFERENCE, "divprune", "pool", "visionzip", "prumerge"]
    assert all(r.error is None for r in results), [r.error for r in results]
    counts = {r.label: (r.before, r.after) for r in results}
    assert counts[compare.REFERENCE] == (196, 196)
    assert counts["divprune"] == counts["pool"] == counts["visionzip"] == (196, 49)
    prumerge = results[-1]
    assert prumerge.adaptive and 1 <= prumerge.after < 196
    assert "received" in prumerge.note and "received" in results[3].note  # no [CLS] on Qwen: retried
    assert all(isinstance(r.answer, str) and r.prefill_ms > 0 for r in results)
    assert all(len(r.overlays) == 1 and r.overlays[0].size == (448, 448) for r in results)
    assert results[1].legend == "49 kept · 147 dropped"
    assert results[2].legend == "0 kept · 196 merged into 49 · 0 dropped"
    assert steps[0] == 0 and steps[-1] == 1.0 and len(steps) == 7  # warm-up, 5 columns, done
    # outputs: the table, the chart and the JSON the API returns
    rows = compare.table_rows(results)
    assert rows[1][:4] == ["divprune", "ratio 0.25", "196 → 49", rows[1][3]]
    assert [c["tokens"] for c in compare.chart_rows(results)][:3] == [196, 49, 49]
    data = json.loads(json.dumps(compare.summary(media, "q", results, "tiny")))
    assert data["results"][4]["chosen"] == prumerge.after and data["results"][1]["chosen"] is None
    assert "visual tokens: **196 → 49**" in compare.column_markdown(results[1])
    assert f"(chose {prumerge.after})" in compare.column_markdown(prumerge)


def test_methods_that_cannot_run_stop_everything_with_one_line_each(tiny, monkeypatch):
    _, model, processor = tiny
    media = inputs.resolve_media(None, "scene-left-of")
    ran = []
    monkeypatch.setattr(compare, "run_method", lambda *a, **k: ran.append(a))
    specs = [MethodSpec("nope", {"ratio": 0.5}), MethodSpec("divprune", {"ratio": 0.5}, {"bogus": 1}),
             MethodSpec("hiprune", {"ratio": 0.5}), MethodSpec("divprune", {"count": 10})]
    with pytest.raises(ValueError, match="cannot run") as err:
        compare.run_comparison(model, processor, media, "which shape is left of the yellow diamond ?", specs, 2)
    message = str(err.value)
    assert "nope:0.5: unknown method 'nope'" in message and "unknown argument(s) bogus" in message
    assert "hiprune:0.5: hiprune: reads encoder layer(s) [8]" in message and "divprune:count=10" not in message
    assert ran == []


def test_one_failing_method_stays_in_its_column(tiny, monkeypatch):
    """A method that fails while it runs shows its error in its own column; the others still run."""
    from vtc.methods.random import Random

    _, model, processor = tiny
    media = inputs.resolve_media(None, "scene-left-of")

    def explode(self, sample, budget):
        raise RuntimeError("selection failed")

    monkeypatch.setattr(Random, "select", explode)
    specs = [MethodSpec("random", {"ratio": 0.5}), MethodSpec("divprune", {"count": 10})]
    results = compare.run_comparison(model, processor, media, "which shape is left of the yellow diamond ?", specs, 2)
    assert results[1].error == "RuntimeError: selection failed"
    assert results[1].overlays == [] and results[1].after is None
    assert (results[2].error, results[2].after) == (None, 10)
    assert results[0].error is None
    assert "**error:** RuntimeError: selection failed" in compare.column_markdown(results[1])
    assert compare.table_rows(results)[1][2:4] == ["-", "-"]
    assert [c["method"] for c in compare.chart_rows(results)] == [compare.REFERENCE, "divprune"]


def test_comparison_on_a_video(tiny):
    pytest.importorskip("av")
    _, model, processor = tiny
    media = inputs.resolve_media(None, "clip-first", frames=8)
    assert media.kind == "video" and len(media.pictures) == 8
    results = compare.run_comparison(model, processor, media, "which direction did the green square move ?",
                                 compare.method_specs(["divprune"], "", "ratio", 0.25), 2)
    # 8 frames at 112 px: 4 temporal slices x 7 x 7 tokens
    assert [(r.before, r.after) for r in results] == [(196, 196), (196, 49)]
    assert all(len(r.overlays) == 8 for r in results)
    assert compare.gallery_items(media, results[1])[7][1] == "frame 8"


def test_llava_rejects_video(tiny, tmp_path):
    from tiny_models import tiny_llava, tiny_llava_processor

    media = inputs.resolve_media(None, "clip-entered", frames=8)
    with pytest.raises(ValueError, match="takes no video input"):
        compare.prepare_inputs(tiny_llava(), tiny_llava_processor(), media, "q")


# ----------------------------------------------------------------------------------------------- app + API
def test_app_over_http_with_gradio_client(tiny):
    pytest.importorskip("gradio")
    client_mod = pytest.importorskip("gradio_client")
    folder, model, processor = tiny
    demo = app.build_app(str(folder), model=model, processor=processor, max_frames=16)
    port = free_port()
    app.launch(demo, port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = client_mod.Client(f"http://127.0.0.1:{port}/", verbose=False)
        image = client_mod.handle_file(str(inputs.example_path("scene-colour")))
        data = client.predict(image, None, "what colour is the square ?", ["divprune", "pool"], "", "ratio", 0.25,
                              32, True, 16, 3, api_name="/compare")
        assert [(r["method"], r["before"], r["after"]) for r in data["results"]] == [
            (compare.REFERENCE, 196, 196), ("divprune", 196, 49), ("pool", 196, 49)]
        assert all(isinstance(r["answer"], str) and r["error"] is None for r in data["results"])
        # a bundled example by name, a token count, and an error that names its cause
        data = client.predict(None, "scene-left-of", "", ["tome"], "", "token count", 0.25, 20, True, 16, 2,
                              api_name="/compare")
        assert data["question"] == inputs.load_examples()["scene-left-of"]["question"]
        assert data["results"][1]["after"] == 20
        with pytest.raises(Exception, match="upload an image or a video"):
            client.predict(None, None, "q", ["tome"], "", "ratio", 0.25, 20, True, 16, 2, api_name="/compare")
    finally:
        demo.close()


# ----------------------------------------------------------------------------------------------- CLI
def test_cli_defaults_and_errors(monkeypatch, capsys, tmp_path):
    from vtc.demo import cli

    args = cli.parser().parse_args([])
    assert (args.model, args.host, args.port, args.share, args.max_frames) == (
        "vtc-tiny-qwen2vl", "127.0.0.1", 7860, False, 32)
    served = {}
    monkeypatch.setattr(app, "build_app", lambda model_id, **kw: served.update(model=model_id, **kw) or "blocks")
    monkeypatch.setattr(app, "launch", lambda demo, host, port, share: served.update(host=host, port=port,
                                                                                       share=share))
    from vtc.cli import main as vtc_main

    assert vtc_main(["demo", "--model", "some/model", "--port", "7999", "--max-frames", "8"]) == 0
    assert served == {"model": "some/model", "max_frames": 8, "preload": True, "host": "127.0.0.1",
                      "port": 7999, "share": False}
    monkeypatch.setattr(app, "build_app", lambda *a, **kw: (_ for _ in ()).throw(ValueError("model: nope")))
    assert cli.main([]) == 2
    assert "model: nope" in capsys.readouterr().err

    def missing():
        raise ImportError(app.INSTALL_HINT)

    monkeypatch.setattr(app, "import_gradio", missing)
    assert cli.main([]) == 2
    assert "pip install 'vtc[demo]'" in capsys.readouterr().err


def test_import_vtc_does_not_load_gradio():
    code = "import sys, vtc, vtc.demo.app, vtc.demo.cli, vtc.demo.overlay; print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
