"""`pestalk live` outputs against real receivers (no model here: frames are made up, sockets are real).

* Live Link Face: PyPI ``pylivelinkface`` (written by others for the iPhone app's packets) decodes our UDP
  datagrams; we check its 61 values and frame time.
* VMC: a ``python-osc`` UDP server dispatches our bundles.
* WebSocket: a ``websockets`` client receives the hello and the frames; the page and the head are served.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request

import numpy as np
import pytest

pytest.importorskip("pythonosc", reason="needs the live extra: pip install '.[live]' (make test installs it)")
pytest.importorskip("websockets", reason="needs the live extra: pip install '.[live]' (make test installs it)")

from pestalk_hf.blendshapes import ARKIT_INDEX, ARKIT_NAMES, LIVELINK_HEAD_EYE_COLUMNS, livelink_eye_rotations
from pestalk_hf.live.outputs import (
    Frame,
    LiveLinkOutput,
    OutputError,
    OutputWorker,
    VmcOutput,
    WebSocketOutput,
    parse_host_port,
)
from pestalk_hf.live.protocols import VmcMapping, livelink_values


# ------------------------------------------------------------------------------------------------
# receivers (used by the session tests too)
# ------------------------------------------------------------------------------------------------


class LiveLinkReceiver:
    """A UDP socket whose datagrams are decoded by ``pylivelinkface`` (a published decoder, not ours)."""

    def __init__(self) -> None:
        lib = pytest.importorskip("pylivelinkface", reason="needs pylivelinkface (pip install '.[test]')")
        self._decode = lib.PyLiveLinkFace.decode
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.faces: list = []  # (arrival, PyLiveLinkFace)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, socket.timeout):
                continue
            ok, face = self._decode(data)
            assert ok, "pylivelinkface found no face in our packet"
            self.faces.append((time.monotonic(), face))

    def close(self) -> None:
        time.sleep(0.2)
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def frames(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(frame times in s, (N, 61) values, frame numbers) as the decoder read them."""
        faces = [f for _, f in self.faces]
        times = np.array([f._frames / (f.fps / f._denominator) for f in faces])
        values = np.array([f._blend_shapes for f in faces], dtype=np.float32).reshape(-1, 61)
        return times, values, np.array([f._frames for f in faces])


class VmcReceiver:
    """A python-osc UDP server collecting ``/VMC/Ext/Blend/Val`` per ``/VMC/Ext/Blend/Apply``."""

    def __init__(self) -> None:
        pytest.importorskip("pythonosc", reason="needs python-osc (pip install '.[live]')")
        from pythonosc.dispatcher import Dispatcher
        from pythonosc.osc_server import ThreadingOSCUDPServer

        self.applied: list[dict[str, float]] = []
        self._current: dict[str, float] = {}
        self._lock = threading.Lock()
        dispatcher = Dispatcher()
        dispatcher.map("/VMC/Ext/Blend/Val", self._val)
        dispatcher.map("/VMC/Ext/Blend/Apply", self._apply)
        self.server = ThreadingOSCUDPServer(("127.0.0.1", 0), dispatcher)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def _val(self, address: str, name: str, value: float) -> None:
        with self._lock:
            self._current[name] = value

    def _apply(self, address: str) -> None:
        with self._lock:
            self.applied.append(self._current)
            self._current = {}

    def close(self) -> None:
        time.sleep(0.2)
        self.server.shutdown()
        self.server.server_close()


def make_frames(n: int, seed: int = 0, start: int = 0) -> list[Frame]:
    rng = np.random.default_rng(seed)
    now = time.monotonic()
    return [Frame(start + i, (start + i) / 30, rng.random(52, dtype=np.float32), now) for i in range(n)]


def run_worker(output, frames: list[Frame], **kwargs) -> None:
    output.open()
    worker = OutputWorker(output, **kwargs)
    worker.start()
    worker.submit(frames)
    worker.close()


# ------------------------------------------------------------------------------------------------
# Live Link Face
# ------------------------------------------------------------------------------------------------


def test_livelink_packets_decode_with_pylivelinkface():
    rx = LiveLinkReceiver()
    frames = make_frames(12, start=100)
    out = LiveLinkOutput("127.0.0.1", rx.port, subject="MetaHumanTest")
    try:
        run_worker(out, frames, pace=False)
    finally:
        rx.close()
    times, values, numbers = rx.frames()
    assert len(times) == 12 and out.stats.sent == 12
    face = rx.faces[0][1]
    assert face.name == "MetaHumanTest"
    assert face.uuid.endswith(out.device_id) and len(out.device_id) == 36
    assert face._version == 6 and face.fps == 30 and face._denominator == 1
    np.testing.assert_array_equal(numbers, np.arange(100, 112))
    np.testing.assert_allclose(times, [f.time for f in frames], atol=1e-9)
    expected = livelink_values(np.stack([f.weights for f in frames]))
    np.testing.assert_allclose(values, expected, atol=1e-7)
    # by the decoder's own slot names: every one of the 52 holds our shape of that name (JawLeft ≠ JawRight …)
    lib = pytest.importorskip("pylivelinkface")
    for member in list(lib.FaceBlendShape)[:52]:
        ours = ARKIT_INDEX[member.name[0].lower() + member.name[1:]]
        np.testing.assert_allclose(values[:, member.value], [f.weights[ours] for f in frames], atol=1e-7)
    # the eye rotations are those of our Live Link Face CSV (same derivation), in the decoder's eye slots
    csv_rotations = livelink_eye_rotations(np.stack([f.weights for f in frames]))
    for k, name in enumerate(LIVELINK_HEAD_EYE_COLUMNS[3:]):
        np.testing.assert_allclose(values[:, lib.FaceBlendShape[name].value], csv_rotations[:, k], atol=1e-6)
    assert np.all(values[:, [lib.FaceBlendShape[n].value for n in ("HeadYaw", "HeadPitch", "HeadRoll")]] == 0)


def test_livelink_to_an_absent_receiver_and_an_unresolvable_host():
    # nobody listens on this port: UDP is fire-and-forget, the output neither blocks nor fails
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = LiveLinkOutput("127.0.0.1", port)
    t0 = time.monotonic()
    run_worker(out, make_frames(30), pace=False)
    assert time.monotonic() - t0 < 2 and out.stats.sent == 30
    with pytest.raises(OutputError, match="cannot resolve the host 'no-such-host.invalid'"):
        LiveLinkOutput("no-such-host.invalid", 11111).open()
    with pytest.raises(ValueError, match="subject name"):
        LiveLinkOutput("127.0.0.1", 11111, subject="")


# ------------------------------------------------------------------------------------------------
# VMC
# ------------------------------------------------------------------------------------------------


def test_vmc_bundles_decode_with_python_osc():
    rx = VmcReceiver()
    frames = make_frames(8)
    out = VmcOutput("127.0.0.1", rx.port, mapping="arkit")
    try:
        run_worker(out, frames, pace=False)
    finally:
        rx.close()
    assert len(rx.applied) == 8
    for got, frame in zip(rx.applied, frames):
        assert set(got) == set(ARKIT_NAMES)
        np.testing.assert_allclose([got[n] for n in ARKIT_NAMES], frame.weights, atol=1e-6)


def test_vmc_vrm_presets_and_custom_mapping(tmp_path):
    rx = VmcReceiver()
    frames = make_frames(3, seed=1)
    mapping_file = tmp_path / "map.json"
    mapping_file.write_text(json.dumps({"MouthOpen": "jawOpen", "Smile": {"mouthSmileLeft": 0.5, "mouthSmileRight": 0.5}}))
    outs = [VmcOutput("127.0.0.1", rx.port, mapping="vrm0"), VmcOutput("127.0.0.1", rx.port, mapping=str(mapping_file))]
    try:
        run_worker(outs[0], frames, pace=False)
        time.sleep(0.2)
        run_worker(outs[1], frames, pace=False)
    finally:
        rx.close()
    assert len(rx.applied) == 6
    vrm = rx.applied[0]
    assert {"A", "I", "U", "E", "O", "Blink", "Blink_L", "Blink_R", "Joy", "Angry", "Sorrow", "Fun"} == set(vrm)
    w = frames[0].weights
    assert vrm["Blink_L"] == pytest.approx(w[ARKIT_INDEX["eyeBlinkLeft"]], abs=1e-6)
    assert vrm["A"] == pytest.approx(w[ARKIT_INDEX["jawOpen"]], abs=1e-6)
    custom = rx.applied[3]
    assert set(custom) == {"MouthOpen", "Smile"}
    assert custom["Smile"] == pytest.approx(0.5 * (w[ARKIT_INDEX["mouthSmileLeft"]] + w[ARKIT_INDEX["mouthSmileRight"]]), abs=1e-6)
    with pytest.raises(ValueError, match="not an ARKit blendshape name"):
        VmcMapping({"X": "jawopen_typo"})
    with pytest.raises(ValueError, match="unknown VMC name mapping"):
        VmcMapping.named("vrm9")


# ------------------------------------------------------------------------------------------------
# WebSocket
# ------------------------------------------------------------------------------------------------


def test_websocket_frames_page_head_and_client_leaving():
    from websockets.sync.client import connect

    messages: list[str] = []
    out = WebSocketOutput("127.0.0.1", 0, fps=30, emotions=("neutral", "happy"))
    out.warn = messages.append
    out.open()
    worker = OutputWorker(out, pace=False)
    worker.start()
    try:
        base = out.url
        page = urllib.request.urlopen(base, timeout=5).read().decode()
        assert "three" in page and "/ws" in page
        glb = urllib.request.urlopen(base + "head.glb", timeout=5).read()
        assert glb[:4] == b"glTF" and len(glb) > 100_000
        js = urllib.request.urlopen(base + "vendor/three/build/three.module.min.js", timeout=5)
        assert js.headers["Content-Type"].startswith("text/javascript")
        with pytest.raises(urllib.error.HTTPError):  # nothing outside the shipped list is served
            urllib.request.urlopen(base + "../outputs.py", timeout=5)

        leaver = connect(f"ws://127.0.0.1:{out.port}/ws", open_timeout=5)
        with connect(f"ws://127.0.0.1:{out.port}/ws", open_timeout=5) as ws:
            hello = json.loads(ws.recv(timeout=5))
            assert json.loads(leaver.recv(timeout=5))["type"] == "hello"
            assert hello["type"] == "hello" and hello["names"] == list(ARKIT_NAMES) and hello["fps"] == 30
            deadline = time.monotonic() + 5
            while len(out._clients) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            first = make_frames(5)
            worker.submit(first)
            got = [json.loads(ws.recv(timeout=5)) for _ in range(5)]
            leaver.close()  # a client closing mid-session: the others go on
            later = make_frames(5, seed=2, start=5)
            worker.submit(later)
            got += [json.loads(ws.recv(timeout=5)) for _ in range(5)]
        assert [m["index"] for m in got] == list(range(10))
        for m, f in zip(got, first + later):
            assert m["type"] == "frame" and m["time"] == pytest.approx(f.time, abs=1e-6)
            np.testing.assert_allclose(m["weights"], f.weights, atol=5e-5)
        assert any("left" in m for m in messages)
    finally:
        worker.close()


def test_websocket_port_in_use():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(OutputError, match="port is in use"):
            WebSocketOutput("127.0.0.1", port, serve_page=False).open()


def test_slow_receiver_never_blocks_and_drops_are_counted():
    """A worker's queue is bounded: a burst larger than it loses its oldest frames, and submit() returns at once."""

    class Stuck(LiveLinkOutput):
        def send(self, frame):  # a receiver path that takes 50 ms a frame
            time.sleep(0.05)
            super().send(frame)

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        out = Stuck("127.0.0.1", s.getsockname()[1])
        out.open()
        worker = OutputWorker(out, max_queue=10, pace=False)
        worker.start()
        t0 = time.monotonic()
        for k in range(10):
            worker.submit(make_frames(10, start=10 * k))
        assert time.monotonic() - t0 < 0.1  # 100 frames handed over without waiting for the receiver
        worker.close()
    assert out.stats.dropped >= 80 and out.stats.sent + out.stats.dropped == 100


def test_parse_host_port():
    assert parse_host_port("10.0.0.2:11111") == ("10.0.0.2", 11111)
    assert parse_host_port("8765") == ("127.0.0.1", 8765)
    assert parse_host_port("[::1]:39539") == ("::1", 39539)
    with pytest.raises(ValueError, match="port"):
        parse_host_port("host:99999")
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_host_port("host:abc")
