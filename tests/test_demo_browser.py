"""The demo page in a real headless browser (playwright driving the system Chromium).

Loads the page, picks a bundled example, runs a comparison and checks the token counts shown in each
column and in the table; the full-page screenshot is kept as a test artifact (pytest's tmp folder, copied to
``$VTC_DEMO_SCREENSHOT``, default ``/tmp/demo_screenshot.png``). Skips when playwright or Chromium is missing.
"""

from __future__ import annotations

import os
import shutil
import socket

import pytest

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--disable-features=Translate,MediaRouter,OptimizationHints",
    "--no-first-run",
    "--mute-audio",
]

# gradio's own queue code trips pandas 3 deprecation warnings
pytestmark = [
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]


def chromium_path() -> str | None:
    for candidate in (os.environ.get("VTC_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("gradio", reason="the demo needs gradio: pip install 'vtc[demo]'")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install playwright")
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set VTC_CHROMIUM to a Chromium binary)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The demo on a free local port, with a random-init tiny Qwen2-VL in the embedded layout."""
    pytest.importorskip("gradio", reason="the demo needs gradio: pip install 'vtc[demo]'")
    from vtc.demo import app
    from vtc.tiny.model import TinyProcessor, build_tokenizer, new_model

    folder = tmp_path_factory.mktemp("tiny-qwen2vl")
    tokenizer = build_tokenizer()
    new_model("qwen2_vl", tokenizer).save_pretrained(folder)
    TinyProcessor(tokenizer, "qwen2_vl").save_pretrained(folder)
    demo = app.build_app(str(folder), preload=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app.launch(demo, port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_compare_an_example_in_the_browser(browser, served, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(served, wait_until="domcontentloaded")
        page.locator("#compare").wait_for(timeout=30_000)
        page.locator("#example input").click()
        page.get_by_role("option", name="scene-colour (image)").click()
        question = page.locator("#question textarea")
        page.wait_for_function("document.querySelector('#question textarea').value.length > 0", timeout=10_000)
        assert question.input_value() == "what colour is the square ?"
        page.locator("#preview img").first.wait_for(timeout=10_000)
        page.locator("#compare").click()  # default methods: divprune, pool, visionzip at ratio 0.25
        page.get_by_text("196 → 49").first.wait_for(timeout=60_000)
        page.locator("#gallery-3 img").first.wait_for(timeout=10_000)
        columns = [page.locator(f"#col-{i}").inner_text() for i in range(4)]
        assert [c.splitlines()[0] for c in columns] == ["no compression", "divprune", "pool", "visionzip"]
        assert "visual tokens: 196 → 196" in columns[0]
        assert all("visual tokens: 196 → 49" in c for c in columns[1:])
        assert "49 kept · 147 dropped" in columns[1]
        assert "merged into 49" in columns[2]
        assert not page.locator("#col-4").is_visible()
        table = page.locator("#table").inner_text()
        assert table.count("196 → 49") == 3 and "196 → 196" in table
        assert page.locator("#chart").is_visible()
        page.wait_for_timeout(500)  # let the chart finish drawing
        shot = tmp_path / "demo_screenshot.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        shutil.copy(shot, os.environ.get("VTC_DEMO_SCREENSHOT", "/tmp/demo_screenshot.png"))

        # a broken upload: one banner that names the user's file (not the server's copy), earlier results gone
        broken = tmp_path / "holiday clip.mp4"
        broken.write_bytes(b"not a video at all")
        page.locator("#media input[type=file]").set_input_files(str(broken))
        page.get_by_text("Error: video: cannot decode holiday clip.mp4").wait_for(timeout=30_000)
        status = page.locator("#status").inner_text()
        assert "/tmp" not in status and "gradio" not in status, status
        page.wait_for_function("!document.querySelector('#col-1') || document.querySelector('#col-1')"
                               ".offsetParent === null", timeout=10_000)
        assert not page.locator("#col-1").is_visible() and "196 → 49" not in page.locator("#table").inner_text()
        # comparing it anyway: the same banner, no result columns, no error badge over the reference column
        page.locator("#compare").click()
        page.wait_for_function("document.querySelector('#status').innerText.includes('Error: video: cannot decode')"
                               " && !document.querySelector('#status').innerText.includes('running')",
                               timeout=30_000)
        assert "/tmp" not in page.locator("#status").inner_text()
        page.wait_for_function("document.querySelector('#col-0').innerText.trim() === 'no compression'",
                               timeout=10_000)  # the reference header alone: no answer, no timer, no error badge
        assert not page.locator("#col-1").is_visible()
        assert page.locator("#col-0 .error").count() == 0
    finally:
        page.close()
