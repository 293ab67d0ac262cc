"""The Space in a real headless browser: Debian's Chromium driven by Playwright (no browser download).

Loads the page, uploads real speech, presses "Animate", waits for the video and the 3D view, takes
screenshots and checks that the WebGL canvas shows a head (not the clear colour), that the head
moves (the GLB's morph-target animation plays), and that the browser console stayed free of errors.

CI installs (see .ci/run): ``apt-get install -y chromium`` and ``pip install playwright``; never
``playwright install`` (no downloads). ``PESTALK_CHROMIUM`` overrides the browser path.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

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


@pytest.fixture(scope="module")
def space_url(tiny_model_dir, tmp_path_factory):  # noqa: F811  (pytest fixture injection)
    app = load_app()
    limits = app.SpaceLimits(max_audio_seconds=10.0, video_size=128, output_ttl_seconds=5.0)
    demo = app.build_demo(str(tiny_model_dir), limits=limits, workdir=tmp_path_factory.mktemp("browser_work"))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **app.launch_kwargs(limits))
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


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
    page = browser.new_page(viewport={"width": 900, "height": 900})
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.add_init_script(HIDE_WEBGPU)
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
    finally:
        page.close()
    assert problems == [], "\n".join(problems)
