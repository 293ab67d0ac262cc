"""`pestalk live --web` in a real headless browser (Debian's Chromium driven by Playwright, as the Space test):
the page loads the default head and three.js from the package, connects to the WebSocket, and while a real
clip streams at real-time speed (PCM over TCP, through the real `pestalk live --web` command) the head's
morph-target influences change; no console errors."""

from __future__ import annotations

import threading
import time
import urllib.request

import numpy as np

from pestalk_hf.exporters import read_livelink_csv

from .test_space_browser import browser, watched_page  # noqa: F401  (browser: fixture)

INFLUENCES = """() => {
  const s = window.pestalk;
  if (!s || !s.meshes.length) return null;
  const m = s.meshes[0], d = m.morphTargetDictionary;
  return {jaw: m.morphTargetInfluences[d.jawOpen], sum: m.morphTargetInfluences.reduce((a, b) => a + b, 0),
          shown: s.framesShown, lastShown: s.lastShown, received: s.framesReceived, status: s.status};
}"""


def test_web_page_plays_the_stream_on_the_head(browser, tmp_path, capsys):  # noqa: F811
    """`pestalk live --tcp PORT --web`: the page is opened first, then a peer streams the clip at real-time speed."""
    from pestalk_hf.cli import EXIT_OK, main

    from .test_live_session import _send_pcm, demo_audio, free_port

    tcp_port, web_port = free_port(), free_port()
    rec = tmp_path / "web.csv"
    outcome: dict = {}
    cli = threading.Thread(target=lambda: outcome.update(code=main(
        ["live", "--tcp", f"127.0.0.1:{tcp_port}", "--web", "--websocket", f"127.0.0.1:{web_port}",
         "--record", str(rec), "-q"])), daemon=True)
    cli.start()
    url = f"http://127.0.0.1:{web_port}/"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the page is served once the model is loaded and the outputs are open
        try:
            urllib.request.urlopen(url, timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    page, problems = watched_page(browser, 320, 320)
    try:
        page.goto(url, wait_until="load")
        page.wait_for_function("() => window.pestalk && window.pestalk.headLoaded && window.pestalk.connected",
                               timeout=30_000)
        rest = page.evaluate(INFLUENCES)
        assert rest["sum"] == 0 and rest["received"] == 0  # the neutral head before any frame
        audio = demo_audio()
        sender = _send_pcm(tcp_port, (audio * 32767).astype("<i2").tobytes(), block=3200)
        samples = []
        deadline = time.monotonic() + 15
        while cli.is_alive() and time.monotonic() < deadline:
            page.wait_for_timeout(150)
            samples.append(page.evaluate(INFLUENCES))
        sender.join(5)
        cli.join(10)
        page.wait_for_timeout(300)
        final = page.evaluate(INFLUENCES)
    finally:
        page.close()
    err = capsys.readouterr().err
    assert outcome.get("code") == EXIT_OK, err
    n_frames = len(read_livelink_csv(rec))
    assert n_frames == -(-len(audio) * 30 // 16000)
    jaw = np.array([s["jaw"] for s in samples])
    sums = np.array([s["sum"] for s in samples])
    # the page received the frames (all but those an overloaded machine dropped as stale: at least half) …
    assert 0.5 * n_frames <= final["received"] <= n_frames, (final, err)
    # … and showed them on its animation frames (with software WebGL a few per second; the newest due one each)
    assert final["shown"] >= 5 and final["lastShown"] >= final["received"] - 5
    assert jaw.max() > 0.1 and np.ptp(jaw) > 0.1, f"jawOpen did not move on the page: {jaw.round(3)}"
    assert len(np.unique(sums.round(4))) >= 5, "the morph-target influences did not change while the audio streamed"
    assert final["status"] and final["status"]["ended"]
    assert problems == [], "\n".join(problems)
