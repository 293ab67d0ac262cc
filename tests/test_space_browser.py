"""The Space in a real headless browser: Debian's Chromium driven by Playwright (no browser download).

Loads the page, uploads real speech, presses "Animate", waits for the video and the 3D view, takes
screenshots and checks that the WebGL canvas shows a head (not the clear colour), that the head
moves (the GLB's morph-target animation plays), and that the browser console stayed free of errors.

CI installs (see .ci/run): ``apt-get install -y chromium`` and ``pip install playwright``; never
``playwright install`` (no downloads). ``PESTALK_CHROMIUM`` overrides the browser path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .test_space import emodb_clip, free_port, load_app, tiny_model_dir  # noqa: F401  (tiny_model_dir: fixture)

CHROMIUM = os.environ.get("PESTALK_CHROMIUM", "/usr/bin/chromium")
# Software WebGL (SwiftShader via ANGLE): these machines have no GPU and no display.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
]
# Babylon.js (gr.Model3D) tries WebGPU first and logs a console *error* when a GPU-less browser
# offers navigator.gpu but no adapter, then falls back to WebGL2. Hiding navigator.gpu makes this
# browser behave like one without WebGPU, so any console error left is a real one.
HIDE_WEBGPU = "delete Navigator.prototype.gpu;"
VIDEO_SIZE = 512  # the Space's default: the video must be shown at its own size, not upscaled
SHOTS = Path(os.environ.get("PESTALK_SPACE_SHOTS", "/tmp/space_shots"))  # screenshots for a person to look at


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file() and not shutil.which(CHROMIUM):
        pytest.skip(f"needs Chromium at {CHROMIUM} (Debian: apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs Playwright for Python (pip install playwright)")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def watched_page(browser, width: int, height: int) -> tuple[Any, list[str]]:
    """A new page (WebGPU hidden, see HIDE_WEBGPU) and the list its console errors and page errors go to."""
    page = browser.new_page(viewport={"width": width, "height": height})
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.add_init_script(HIDE_WEBGPU)
    return page, problems


@contextlib.contextmanager
def launched_space(model_dir: Path, workdir: Path, **limits: Any) -> Iterator[str]:
    """The Space on 127.0.0.1 with these :class:`SpaceLimits` fields; yields its URL."""
    app = load_app()
    space_limits = app.SpaceLimits(**limits)
    demo = app.build_demo(str(model_dir), limits=space_limits, workdir=workdir)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **app.launch_kwargs(space_limits))
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def space_url(tiny_model_dir, tmp_path_factory):  # noqa: F811  (pytest fixture injection)
    with launched_space(tiny_model_dir, tmp_path_factory.mktemp("browser_work"), max_audio_seconds=10.0,
                        video_size=VIDEO_SIZE, output_ttl_seconds=5.0) as url:
        yield url


def screenshot_canvas(page, path: Path) -> np.ndarray:
    """Screenshot the page (saved to ``path``) and return the 3D canvas's pixels cropped from it.

    One capture serves both: with software WebGL every capture waits for a freshly rendered frame.
    """
    from PIL import Image

    page.locator("#head3d canvas").scroll_into_view_if_needed()
    box = page.locator("#head3d canvas").bounding_box()
    page.screenshot(path=str(path), timeout=90_000)
    with Image.open(path) as img:
        crop = img.convert("RGB").crop((round(box["x"]), round(box["y"]), round(box["x"] + box["width"]),
                                        round(box["y"] + box["height"])))
    return np.asarray(crop).astype(np.float32)


def head_fraction(pixels: np.ndarray) -> float:
    """Share of the canvas centre that differs clearly from the background, i.e. shows the model.

    The background is read from the canvas's bottom corners (the label overlay sits top left, and
    the viewer's clear colour is not exactly the requested one after colour management).
    """
    h, w, _ = pixels.shape
    k = max(4, min(h, w) // 20)
    background = np.median(np.concatenate([pixels[-k:, :k].reshape(-1, 3), pixels[-k:, -k:].reshape(-1, 3)]), axis=0)
    centre = pixels[h // 4: 3 * h // 4, w // 4: 3 * w // 4]
    return float((np.abs(centre - background).sum(axis=-1) > 40).mean())


def test_upload_animate_and_see_the_head(browser, space_url, tmp_path):
    wav = emodb_clip("13a02Fa.wav")
    page, problems = watched_page(browser, 900, 900)
    try:
        page.goto(space_url, wait_until="networkidle")
        page.locator("#speech input[type=file]").set_input_files(str(wav))
        page.locator("#speech audio").first.wait_for(state="attached", timeout=30_000)  # upload finished
        page.click("#animate")
        page.wait_for_selector("#video video", timeout=120_000)
        duration = page.wait_for_function(
            "() => { const v = document.querySelector('#video video'); return v && v.readyState >= 1 && v.duration; }",
            timeout=60_000).json_value()
        assert duration == pytest.approx(2.0, abs=0.15)  # the 2 s clip, with its audio track
        # the video is rendered at 512 px and shown at that size (not a smaller render upscaled)
        size = page.evaluate("() => { const v = document.querySelector('#video video');"
                             " return [v.videoWidth, v.videoHeight, v.getBoundingClientRect().width]; }")
        assert size[:2] == [VIDEO_SIZE, VIDEO_SIZE] and size[2] <= VIDEO_SIZE + 1, size
        # arrival check said the clip is fine, no error panel, no "Error" badge
        assert "ready to animate" in page.locator("#speech_status .pestalk-msg.ok").inner_text()
        assert page.locator("#error_panel .pestalk-msg").count() == 0
        assert visible_error_badges(page) == 0
        # the curves image carries no panel label over it (it hid the plot's title)
        assert page.locator("#curves img").count() == 1
        labels = page.evaluate("""() => [...document.querySelectorAll('#curves label')].filter(e => {
            const r = e.getBoundingClientRect(); return r.width > 2 && r.height > 2
                && getComputedStyle(e).visibility !== 'hidden'; }).map(e => e.textContent.trim())""")
        assert labels == [], labels
        page.wait_for_selector("#head3d canvas", timeout=60_000)

        # the GLB loads asynchronously: wait until the canvas shows a head
        shot = tmp_path / "space.png"
        deadline, pixels = time.monotonic() + 90, screenshot_canvas(page, shot)
        while head_fraction(pixels) < 0.3 and time.monotonic() < deadline:
            page.wait_for_timeout(1000)
            pixels = screenshot_canvas(page, shot)
        assert head_fraction(pixels) >= 0.3, f"3D canvas blank ({head_fraction(pixels):.3f} of its centre drawn)"
        # the morph-target animation plays: the head changes between two moments
        page.wait_for_timeout(700)
        later = screenshot_canvas(page, tmp_path / "space_later.png")
        assert head_fraction(later) >= 0.3
        changed = float((np.abs(later - pixels).sum(axis=-1) > 30).mean())
        assert changed > 0.002, f"the head did not move between screenshots ({changed:.4f} of pixels changed)"
        assert shot.stat().st_size > 10_000
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "good_path.png"), full_page=True)
    finally:
        page.close()
    assert problems == [], "\n".join(problems)


def visible_error_badges(page) -> int:
    """Elements that read just "Error" (Gradio's per-output status badge after a raised gr.Error)."""
    return page.evaluate("""() => [...document.querySelectorAll('body *')].filter(e =>
        e.children.length === 0 && e.textContent.trim() === 'Error' && e.getClientRects().length > 0).length""")


def _bad_uploads(folder: Path) -> dict[str, tuple[Path, str]]:
    """name → (file, what the message must say)."""
    import soundfile as sf

    empty = folder / "empty.wav"
    empty.write_bytes(b"")
    notes = folder / "notes.wav"  # a text file named like audio
    notes.write_text("this is not speech " * 50)
    t = np.arange(12 * 16000) / 16000  # 12 s > the 10 s limit of this Space
    long = folder / "long.wav"
    sf.write(long, (0.3 * np.sin(2 * np.pi * 160 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32), 16000)
    return {
        "empty": (empty, r"empty \(0 bytes\).*empty\.wav"),
        "not_audio": (notes, r"cannot be used: .*notes\.wav"),
        "too_long": (long, r"12\.00 s long; the limit is 10 s"),
    }


@pytest.mark.parametrize("case", ["empty", "not_audio", "too_long"])
def test_bad_upload_message_stays_next_to_the_input(browser, space_url, tmp_path, case):
    """A bad upload is named next to the speech input as soon as it arrives; the message is still there
    20 s later; "Animate" then shows one error panel and no "Error" badge on the outputs."""
    import re

    path, pattern = _bad_uploads(tmp_path)[case]
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    page.add_init_script(HIDE_WEBGPU)
    try:
        page.goto(space_url, wait_until="networkidle")
        page.locator("#speech input[type=file]").set_input_files(str(path))
        arrived = time.monotonic()
        message = page.locator("#speech_status .pestalk-msg.bad")
        message.wait_for(state="visible", timeout=30_000)  # checked on arrival, before any click
        assert re.search(pattern, message.inner_text()), message.inner_text()
        # next to the input: directly below the speech box, in the same column
        speech, box = page.locator("#speech").bounding_box(), message.bounding_box()
        assert 0 <= box["y"] - (speech["y"] + speech["height"]) < 60 and abs(box["x"] - speech["x"]) < 40, (speech, box)

        page.click("#animate")
        panel = page.locator("#error_panel .pestalk-msg.bad")
        panel.wait_for(state="visible", timeout=60_000)
        assert re.search(pattern, panel.inner_text()), panel.inner_text()
        assert page.locator(".pestalk-msg.bad").count() == 2  # the input's message and the one panel
        assert visible_error_badges(page) == 0
        page.wait_for_timeout(max(0.0, 20.0 - (time.monotonic() - arrived)) * 1000 + 500)
        assert message.is_visible() and panel.is_visible()  # still there 20 s later (no vanishing toast)
        assert re.search(pattern, message.inner_text())
        assert visible_error_badges(page) == 0
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"bad_{case}.png"), full_page=True)
    finally:
        page.close()
