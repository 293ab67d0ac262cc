"""`pestalk live` end to end with the default model: a real clip at real-time speed (or PCM over TCP) reaches
real receivers (pylivelinkface, python-osc, a websockets client) and they all get the frames of the recording.
Faults: no microphone, busy ports, an unresolvable host, a source that is overrun or closes mid-session."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import pestalk_hf
from pestalk_hf.cli import EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, main
from pestalk_hf.exporters import read_livelink_csv
from pestalk_hf.live.protocols import livelink_values

from .test_live_outputs import LiveLinkReceiver, VmcReceiver

DEMO = Path(pestalk_hf.__file__).resolve().parent / "assets" / "demo_ljspeech_LJ001-0107.wav"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pipe():
    from pestalk_hf.pipeline import load_pipeline

    return load_pipeline()


def demo_audio() -> np.ndarray:
    from pestalk_hf.audio import load_audio

    return load_audio(str(DEMO))


class WsCollector:
    """A websockets client that connects as soon as the server is up and keeps every message."""

    def __init__(self, port: int) -> None:
        self.port, self.messages = port, []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                ws = connect(f"ws://127.0.0.1:{self.port}/ws", open_timeout=2)
            except OSError:
                time.sleep(0.02)
                continue
            with ws:
                try:
                    while True:
                        self.messages.append(json.loads(ws.recv(timeout=30)))
                except (ConnectionClosed, TimeoutError):
                    return
            return


def test_file_at_real_time_reaches_livelink_vmc_websocket_and_recordings(pipe, tmp_path, capsys):
    ll, vmc = LiveLinkReceiver(), VmcReceiver()
    ws_port = free_port()
    ws = WsCollector(ws_port)
    csv, js = tmp_path / "take.csv", tmp_path / "rec" / "take.json"
    t0 = time.monotonic()
    try:
        code = main(["live", "--file", str(DEMO), "--livelink", f"127.0.0.1:{ll.port}", "--livelink-subject", "Ada",
                     "--vmc", f"127.0.0.1:{vmc.port}", "--websocket", f"127.0.0.1:{ws_port}",
                     "--record", str(csv), "--record", str(js)])
    finally:
        ll.close()
        vmc.close()
        ws.thread.join(10)
    wall = time.monotonic() - t0
    err = capsys.readouterr().err
    assert code == EXIT_OK, err
    audio = demo_audio()
    n_frames = -(-len(audio) * 30 // 16000)
    assert wall >= len(audio) / 16000 * 0.95, "the file was not played at real-time speed"

    recorded = read_livelink_csv(csv)
    assert recorded.shape == (n_frames, 52)
    as_json = json.loads(js.read_text())
    np.testing.assert_allclose(np.array(as_json["weights"]), recorded, atol=2e-6)
    assert recorded[:, 24].max() > 0.1  # jawOpen moves: real speech on the default model
    assert not list(tmp_path.glob(".*tmp"))  # the atomic writers left no temp file

    # Live Link Face: every frame, numbered on the audio clock, values = the recording's
    times, values, numbers = ll.frames()
    np.testing.assert_array_equal(np.sort(numbers), np.arange(n_frames))
    order = np.argsort(numbers)
    np.testing.assert_allclose(times[order], np.arange(n_frames) / 30, atol=1e-9)
    np.testing.assert_allclose(values[order], livelink_values(recorded), atol=2e-6)
    assert ll.faces[0][1].name == "Ada"

    # VMC: one Apply per frame, the 52 ARKit values of that frame
    assert len(vmc.applied) == n_frames
    from pestalk_hf.blendshapes import ARKIT_NAMES

    got = np.array([[a[n] for n in ARKIT_NAMES] for a in vmc.applied])
    np.testing.assert_allclose(got, recorded, atol=2e-6)

    # WebSocket: hello first, then the frames (the client may connect a little after the first frame)
    assert ws.messages and ws.messages[0]["type"] == "hello" and ws.messages[0]["names"] == list(ARKIT_NAMES)
    frames = [m for m in ws.messages if m["type"] == "frame"]
    assert len(frames) >= 0.9 * n_frames
    for m in frames:
        assert m["time"] == pytest.approx(m["index"] / 30, abs=1e-6)
        np.testing.assert_allclose(m["weights"], recorded[m["index"]], atol=1e-4)
    status = [m for m in ws.messages if m["type"] == "status"]
    assert status and status[-1]["ended"] and status[-1]["emotion"] is not None
    assert "median latency" in err and "0 dropped" in err


def _session(pipe, source, recordings=(), queue_seconds=2.0):
    from pestalk_hf.live import LiveSession, make_animator

    animator = make_animator(model=pipe.model, voiceprint_backend=pipe.voiceprint_backend)
    return LiveSession(animator=animator, source=source, recordings=recordings, queue_seconds=queue_seconds,
                       message=lambda text: None)


def _send_pcm(port: int, pcm: bytes, block: int | None = None, close_after: float | None = None) -> threading.Thread:
    def run() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            if block is None:
                conn.sendall(pcm)
                return
            t0 = time.monotonic()
            for k, start in enumerate(range(0, len(pcm), block)):
                if close_after is not None and time.monotonic() - t0 >= close_after:
                    return  # the peer goes away mid-stream
                conn.sendall(pcm[start:start + block])
                time.sleep(max(0.0, t0 + (k + 1) * block / 32000 - time.monotonic()))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_tcp_overrun_drops_and_merges_but_the_audio_clock_stays_exact(pipe, tmp_path):
    """A peer that sends 4 s of PCM at once overruns a 0.3 s queue: blocks are dropped (counted) and merged,
    the model fills the gaps with silence, and there is still exactly one frame per 1/30 s of audio sent."""
    from pestalk_hf.live import TcpPcmSource

    audio = demo_audio()
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    source = TcpPcmSource("127.0.0.1", 0)
    source.open()
    session = _session(pipe, source, recordings=[tmp_path / "tcp.csv"], queue_seconds=0.3)
    sender = _send_pcm(source.port, pcm)
    result = session.run(seconds=15)
    sender.join(5)
    s = result.stats
    assert result.ok and result.reason == "source ended"
    assert s.samples_in == len(audio)
    assert s.dropped_chunks > 0 and s.gap_samples > 0 and s.merged_chunks > 0
    assert s.frames == -(-len(audio) * 30 // 16000) == len(read_livelink_csv(tmp_path / "tcp.csv"))


def test_tcp_peer_at_real_time_then_leaving_mid_stream(pipe, tmp_path):
    from pestalk_hf.live import TcpPcmSource

    audio = demo_audio()
    pcm = (audio * 32767).astype("<i2").tobytes()
    source = TcpPcmSource("127.0.0.1", 0)
    source.open()
    session = _session(pipe, source, recordings=[tmp_path / "tcp.json"])
    sender = _send_pcm(source.port, pcm, block=3200, close_after=2.0)  # 100 ms blocks, gone after 2 s
    result = session.run(seconds=15)
    sender.join(5)
    s = result.stats
    assert result.ok and result.reason == "source ended" and s.dropped_chunks == 0
    assert 1.9 * 16000 <= s.samples_in <= 2.3 * 16000
    saved = json.loads((tmp_path / "tcp.json").read_text())
    assert len(saved["weights"]) == s.frames == -(-s.samples_in * 30 // 16000)
    line = session.status_line()  # what the terminal shows: level, audio time, latency, drops, emotion
    assert re.search(r"in +-?\d+\.\d dB \| +2\.\d s \| latency", line) and "dropped 0 chunks" in line, line


def test_faults_busy_port_unresolvable_host_and_recording_still_written(pipe, tmp_path, capsys):
    rec = tmp_path / "faults.csv"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        code = main(["live", "--file", str(DEMO), "--websocket", f"127.0.0.1:{busy.getsockname()[1]}",
                     "--livelink", "no-such-host.invalid:11111", "--record", str(rec), "--seconds", "1.5", "-q"])
    err = capsys.readouterr().err
    assert code == EXIT_SOME_FAILED, err  # the session ran with what it could open
    assert "port is in use" in err and "cannot resolve the host 'no-such-host.invalid'" in err
    assert "goes on without it" in err
    weights = read_livelink_csv(rec)
    assert 30 <= len(weights) <= 60  # 1.5 s of a real-time file, minus the look-ahead, plus the flush


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["live", "--file", str(DEMO)]) == EXIT_USAGE
    assert "nothing to send the frames to" in capsys.readouterr().err
    assert main(["live", "--file", str(tmp_path / "missing.wav"), "--record", str(tmp_path / "x.csv")]) == EXIT_USAGE
    assert "no such audio file" in capsys.readouterr().err
    assert main(["live", "--file", str(DEMO), "--record", str(tmp_path / "x.mp4")]) == EXIT_USAGE
    assert ".csv" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        assert main(["live", "--tcp", f"127.0.0.1:{busy.getsockname()[1]}", "--record", str(tmp_path / "x.csv")]) == EXIT_USAGE
    assert "port is in use" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["live", "--livelink", "host:notaport"])
    assert "HOST:PORT" in capsys.readouterr().err


def test_no_microphone_is_a_clear_usage_error(tmp_path, capsys):
    """On a machine without PortAudio (or without an input device) the default microphone source says so."""
    code = main(["live", "--record", str(tmp_path / "mic.csv"), "--input-device", "no-such-device-xyz"])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert any(text in err for text in ("PortAudio library", "no input device matches 'no-such-device-xyz'",
                                        "'sounddevice' package")), err
    assert "Traceback" not in err
    assert not (tmp_path / "mic.csv").exists()


def test_make_animator_is_keyword_only(pipe):
    from pestalk_hf.live import make_animator

    with pytest.raises(TypeError):
        make_animator(pipe.model, pipe.voiceprint_backend)  # noqa: too-many-positional on purpose
    with pytest.raises(ValueError, match="unknown streaming mode"):
        make_animator(model=pipe.model, voiceprint_backend=pipe.voiceprint_backend, mode="telepathy")
    animator = make_animator(model=pipe.model, voiceprint_backend=pipe.voiceprint_backend, lookahead_seconds=0.1)
    assert animator.push(np.zeros(1600, dtype=np.float32)).shape[1] == 52


def test_lookahead_mode_file_reaches_livelink_and_vmc_early_with_the_streaming_models_frames(pipe, tmp_path, capsys):
    """``--streaming-mode lookahead``: the bounded look-ahead model, in 10 ms blocks. Every frame reaches the
    pylivelinkface decoder and the python-osc server, on the audio clock, with the values the streaming mode
    computes for the whole clip (not the offline window's), and well under the offline window's 0.3 s wait."""
    import torch

    from pestalk_hf.blendshapes import ARKIT_NAMES

    ll, vmc = LiveLinkReceiver(), VmcReceiver()
    csv = tmp_path / "lookahead.csv"
    t0 = time.monotonic()
    try:
        code = main(["live", "--file", str(DEMO), "--streaming-mode", "lookahead", "--livelink",
                     f"127.0.0.1:{ll.port}", "--vmc", f"127.0.0.1:{vmc.port}", "--record", str(csv)])
    finally:
        ll.close()
        vmc.close()
    wall = time.monotonic() - t0
    err = capsys.readouterr().err
    assert code == EXIT_OK, err
    assert "lookahead mode, 10 ms blocks" in err
    audio = demo_audio()
    n_frames = -(-len(audio) * 30 // 16000)
    assert wall >= len(audio) / 16000 * 0.95, "the file was not played at real-time speed"

    recorded = read_livelink_csv(csv)
    assert recorded.shape == (n_frames, 52)
    assert recorded.min() >= 0.0 and recorded.max() <= 1.0 and recorded[:, 24].max() > 0.1  # jawOpen moves
    # the frames are the streaming mode's: the whole clip through the embedded streaming fine-tune (the model
    # this mode loads without --model) with its masks on (the voiceprint is the one estimated from the first
    # 3 s; the live one converges to it over those seconds)
    from pestalk_hf import DEFAULT_STREAM_MODEL
    from pestalk_hf.pipeline import load_pipeline

    streamed = load_pipeline(DEFAULT_STREAM_MODEL).model
    assert streamed.config.streaming_lookahead_frames == 2 and streamed.config.streaming_left_context_frames == 30
    voiceprint = torch.from_numpy(np.asarray(pipe.voiceprint_backend.embed(audio[:48000]), dtype=np.float32))
    with torch.inference_mode():
        expected = streamed.animate(torch.from_numpy(audio), voiceprint).blendshapes[0].numpy()
        offline = pipe.model.animate(torch.from_numpy(audio), voiceprint).blendshapes[0].numpy()
    # not the offline model's frames, nor those of the offline model merely run with the masks (the two
    # other candidates); the rest of the gap to `expected` is the live voiceprint still converging in the
    # first 3 s, which moves the style track (exact equality with a fixed voiceprint: test_streaming_model)
    from pestalk_hf.streaming import with_streaming_mode

    with torch.inference_mode():
        masked = with_streaming_mode(pipe.model, 2, 30).animate(torch.from_numpy(audio), voiceprint).blendshapes[0].numpy()
    gap = np.abs(recorded - expected)
    assert gap.mean() < 0.01, gap.mean()
    for other in (offline, masked):
        assert np.abs(recorded - other).mean() > 2.5 * gap.mean()
        assert (gap.mean(1) < np.abs(recorded - other).mean(1)).mean() > 0.8  # frame by frame, mostly

    # Live Link Face: every frame once, numbered and timed on the audio clock, values = the recording
    times, values, numbers = ll.frames()
    np.testing.assert_array_equal(np.sort(numbers), np.arange(n_frames))
    order = np.argsort(numbers)
    np.testing.assert_allclose(times[order], np.arange(n_frames) / 30, atol=1e-9)
    np.testing.assert_allclose(values[order], livelink_values(recorded), atol=2e-6)
    # frames arrive as the audio plays (spread over the clip, not in one burst at the end)
    arrivals = np.array([a for a, _ in ll.faces])
    assert len(audio) / 16000 - 0.6 <= arrivals[-1] - arrivals[0] <= len(audio) / 16000 + 0.6
    assert np.all(np.diff(numbers) > 0), "frames were sent out of order"

    # VMC: one Apply per frame with the same 52 values
    assert len(vmc.applied) == n_frames
    got = np.array([[a[n] for n in ARKIT_NAMES] for a in vmc.applied])
    np.testing.assert_allclose(got, recorded, atol=2e-6)

    # latency: the offline window cannot go below its 0.3 s look-ahead + a frame; this mode waits ≤ 112.5 ms
    # (chunk of 3 frames + half an STFT window) + a 10 ms block + compute (generous bound: a loaded CI machine)
    latency = float(re.search(r"median latency (\d+) ms", err).group(1))
    assert latency < 300, err
    assert "0 dropped" in err and "emotion" in err


def test_lookahead_mode_bad_values_are_usage_errors(tmp_path, capsys):
    rec = str(tmp_path / "x.csv")
    base = ["live", "--file", str(DEMO), "--record", rec]
    for bad, says in (("-1", "must be 0-30 frames"), ("31", "must be 0-30 frames"), ("two", "whole number of frames")):
        with pytest.raises(SystemExit) as stop:
            main(base + ["--streaming-mode", "lookahead", "--lookahead-frames", bad])
        assert stop.value.code == EXIT_USAGE
        assert says in capsys.readouterr().err
    assert main(base + ["--streaming-mode", "lookahead", "--chunk-ms", "0"]) == EXIT_USAGE
    assert "the audio block must be 5–1000 ms" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(base + ["--streaming-mode", "telepathy"])
    assert "invalid choice" in capsys.readouterr().err
    # one mode's timing option given to the other mode: refused before any model is loaded
    assert main(base + ["--lookahead-frames", "2"]) == EXIT_USAGE
    assert "--lookahead-frames is for --streaming-mode lookahead" in capsys.readouterr().err
    assert main(base + ["--streaming-mode", "lookahead", "--context-seconds", "3", "--lookahead-seconds", "0.1"]) \
        == EXIT_USAGE
    assert "--context-seconds, --lookahead-seconds is for --streaming-mode offline-window" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_make_animator_lookahead_mode_copies_the_model(pipe):
    from pestalk_hf.live import STREAMING_MODES, make_animator
    from pestalk_hf.streaming import LookaheadStreamingAnimator, StreamingAnimator

    assert STREAMING_MODES == ("offline-window", "lookahead")  # the offline window stays the default
    backend = pipe.voiceprint_backend
    assert isinstance(make_animator(model=pipe.model, voiceprint_backend=backend), StreamingAnimator)
    animator = make_animator(model=pipe.model, voiceprint_backend=backend, mode="lookahead")
    assert isinstance(animator, LookaheadStreamingAnimator) and animator.lookahead_frames == 2
    assert animator.model is not pipe.model and not pipe.model.config.is_streaming  # the pipeline's model untouched
    assert make_animator(model=pipe.model, voiceprint_backend=backend, mode="lookahead",
                         lookahead_frames=0).lookahead_frames == 0
    # a model saved in the streaming mode keeps its own look-ahead
    own = make_animator(model=animator.model, voiceprint_backend=backend, mode="lookahead")
    assert own.lookahead_frames == 2 and own.model is animator.model
    for bad in (-1, 31, 2.5, True):
        with pytest.raises(ValueError, match="lookahead_frames must be"):
            make_animator(model=pipe.model, voiceprint_backend=backend, mode="lookahead", lookahead_frames=bad)
    with pytest.raises(ValueError, match="for the 'lookahead' streaming mode"):
        make_animator(model=pipe.model, voiceprint_backend=backend, lookahead_frames=2)
    # 20 ms blocks: frames leave a chunk (3 frames) at a time once its audio + 12.5 ms is in
    block = np.zeros(320, dtype=np.float32)
    sizes = [len(animator.push(block)) for _ in range(10)]  # 200 ms of audio
    assert sizes.count(3) == sum(sizes) // 3 and sum(sizes) == 3  # the chunk of frames 0-2 once 112.5 ms is in
    assert sizes.index(3) == 5  # 6 blocks = 120 ms ≥ 112.5 ms; 5 blocks = 100 ms is not enough
