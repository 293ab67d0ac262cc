"""End-to-end latency of ``pestalk live``: from an audio sample entering to its frame leaving the socket.

A speech file (default: the shipped LJ Speech clip repeated to ``--seconds``) is played at real-time speed
through :class:`pestalk_hf.live.FileSource` in blocks of each mode's default size (``pestalk live``'s: 100 ms
for ``offline-window``, 10 ms for ``lookahead``; ``--chunk-ms`` for one size), animated by the streaming
animator that ``pestalk live`` uses (:func:`pestalk_hf.live.make_animator`) and sent as Live Link Face packets
to a UDP receiver on this machine. For every frame, latency = the time its ``sendto`` returned − the time its audio
sample was captured (block arrival − the samples after it in the block), so it counts the block
(chunk) wait, the look-ahead, the queueing and the model's compute, as a microphone user sees it.

The session runs as ``pestalk live`` runs it, with the emotion reading of the status line
(:class:`~pestalk_hf.live.EmotionMeter`, on its own thread; ``--no-emotion-meter`` to leave it out).
Reports p50/p95/max latency, the CPU share of the process (all threads; 100 % = one core), dropped and
merged chunks, frames dropped/stale, and the drift of the latency (median of the last 10 % of frames −
median of the first 10 %). Both streaming modes by default (``--streaming-mode``), one after the other on
the same file: one ``offline-window`` run per ``--lookahead-seconds`` value (default 0.3 s) and one
``lookahead`` run per ``--lookahead-frames`` value (default 2); a summary table of all runs comes last::

    python bench/bench_live.py --seconds 20
    python bench/bench_live.py --seconds 60 --json out/bench_live.json          # both modes
    python bench/bench_live.py --streaming-mode lookahead --lookahead-frames 0 2 5
    python bench/bench_live.py --streaming-mode offline-window --lookahead-seconds 0.3 0.1
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pestalk_hf  # noqa: E402
from pestalk_hf.audio import SAMPLING_RATE, load_audio  # noqa: E402

DEMO = Path(pestalk_hf.__file__).resolve().parent / "assets" / "demo_ljspeech_LJ001-0107.wav"


class CountingReceiver:
    """A UDP socket that only counts datagrams (a stand-in for Unreal: it reads as fast as they come)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port, self.count, self._stop = self.sock.getsockname()[1], 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sock.recv(65536)
                self.count += 1
            except (TimeoutError, socket.timeout):
                continue

    def close(self) -> None:
        time.sleep(0.3)
        self._stop.set()
        self.thread.join(2)
        self.sock.close()


def speech_file(seconds: float, folder: Path, audio_path: Path | None) -> Path:
    """``audio_path`` as is, or the demo clip repeated (with 0.3 s pauses) to ``seconds``, as a 16 kHz WAV."""
    import soundfile as sf

    if audio_path is not None:
        return audio_path
    clip = load_audio(str(DEMO))
    piece = np.concatenate([clip, np.zeros(int(0.3 * SAMPLING_RATE), dtype=np.float32)])
    audio = np.tile(piece, int(np.ceil(seconds * SAMPLING_RATE / len(piece))))[: int(seconds * SAMPLING_RATE)]
    path = folder / "bench_live.wav"
    sf.write(path, audio, SAMPLING_RATE, subtype="PCM_16")
    return path


def run_once(pipe, path: Path, *, mode: str, timing: dict, chunk_ms: float, pace: bool, emotion: bool,
             rest_in_silence: bool = True) -> dict:
    """One real-time session of ``mode``; ``timing``: that mode's :func:`~pestalk_hf.live.make_animator` options."""
    from pestalk_hf.live import EmotionMeter, FileSource, LiveLinkOutput, LiveSession, make_animator

    receiver = CountingReceiver()
    out = LiveLinkOutput("127.0.0.1", receiver.port)
    out.open()
    source = FileSource(path, block_seconds=chunk_ms / 1000)
    source.open()
    animator = make_animator(model=pipe.model, voiceprint_backend=pipe.voiceprint_backend, mode=mode,
                             rest_in_silence=rest_in_silence, **timing)
    # as `pestalk live` runs it (its own thread); the session only feeds it when the animator keeps no
    # emotion estimate of its own (the lookahead mode does)
    meter = EmotionMeter(pipe.model) if emotion else None
    session = LiveSession(animator=animator, source=source, outputs=[out], pace=pace, emotion_meter=meter,
                          emotions=tuple(pipe.model.config.emotions), message=lambda text: None)
    cpu0, wall0 = time.process_time(), time.monotonic()
    result = session.run()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    receiver.close()
    lat = np.array(out.stats.latencies) * 1000
    tenth = max(1, len(lat) // 10)
    s = result.stats
    return {
        "mode": mode, **timing, "chunk_ms": chunk_ms, "paced": pace, "emotion_meter": emotion,
        "audio_s": round(s.samples_in / SAMPLING_RATE, 2), "wall_s": round(wall, 2),
        "frames": s.frames, "frames_expected": -(-s.samples_in * 30 // SAMPLING_RATE), "received": receiver.count,
        "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 1), "p95": round(float(np.percentile(lat, 95)), 1),
                       "max": round(float(lat.max()), 1), "min": round(float(lat.min()), 1)},
        "latency_drift_ms": round(float(np.median(lat[-tenth:]) - np.median(lat[:tenth])), 1),
        "cpu_share_of_one_core": round(cpu / wall, 3),
        "model_share_of_wall": round(s.model_seconds / wall, 3),
        "dropped_chunks": s.dropped_chunks, "merged_chunks": s.merged_chunks,
        "frames_dropped": out.stats.dropped, "frames_stale": out.stats.stale,
    }


def describe(r: dict) -> str:
    """The run's settings in a few words (the first column of the summary)."""
    if r["mode"] == "lookahead":
        what = f"lookahead, L = {r.get('lookahead_frames', 'model')} frames"
    else:
        what = f"offline-window, {r.get('lookahead_s', 0.3):.2f} s look-ahead"
    return f"{what}, {r['chunk_ms']:g} ms blocks"


def main() -> None:
    from pestalk_hf.live.session import DEFAULT_CHUNK_MS, STREAMING_MODES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the real-time run (default 60)")
    parser.add_argument("--streaming-mode", choices=STREAMING_MODES, nargs="+", default=list(STREAMING_MODES),
                        help="modes to measure, in this order (default: all)")
    parser.add_argument("--lookahead-seconds", type=float, nargs="+", default=[0.3],
                        help="offline-window: one run per value (default 0.3)")
    parser.add_argument("--context-seconds", type=int, default=2, help="offline-window: context (default 2)")
    parser.add_argument("--lookahead-frames", type=int, nargs="+", default=[2],
                        help="lookahead: one run per value (default 2)")
    parser.add_argument("--chunk-ms", type=float, default=None,
                        help="audio block for every run (default: each mode's own, " + ", ".join(
                            f"{k} {v:g} ms" for k, v in DEFAULT_CHUNK_MS.items()) + ")")
    parser.add_argument("--no-pace", action="store_true", help="send each burst at once (lower p50, jerkier)")
    parser.add_argument("--no-emotion-meter", action="store_true", help="without the status line's emotion reading")
    parser.add_argument("--no-rest-in-silence", action="store_true", help="as pestalk live --no-rest-in-silence")
    parser.add_argument("--model", default=None,
                        help="model folder for every run (default: each mode's embedded model, as pestalk live: the "
                             "offline default for offline-window, its streaming fine-tune for lookahead)")
    parser.add_argument("--audio", type=Path, default=None, help="speech file (default: the demo clip repeated)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    from pestalk_hf.pipeline import load_pipeline

    runs = []
    for mode in dict.fromkeys(args.streaming_mode):  # each mode once, in the order given
        if mode == "offline-window":
            runs += [(mode, {"context_seconds": args.context_seconds, "lookahead_seconds": s})
                     for s in args.lookahead_seconds]
        else:
            runs += [(mode, {"lookahead_frames": n}) for n in args.lookahead_frames]
    from pestalk_hf.live import default_model

    pipes = {mode: load_pipeline(args.model or default_model(mode)) for mode, _ in runs}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        path = speech_file(args.seconds, Path(tmp), args.audio)
        for mode, timing in runs:
            chunk_ms = DEFAULT_CHUNK_MS[mode] if args.chunk_ms is None else args.chunk_ms
            r = run_once(pipes[mode], path, mode=mode, timing=timing, chunk_ms=chunk_ms, pace=not args.no_pace,
                         emotion=not args.no_emotion_meter, rest_in_silence=not args.no_rest_in_silence)
            r["load_average_1min_after"] = round(os.getloadavg()[0], 2)
            results.append(r)
            lat = r["latency_ms"]
            print(f"{describe(r)}, {r['audio_s']:.0f} s of audio: latency p50 {lat['p50']:.0f} ms, "
                  f"p95 {lat['p95']:.0f} ms, max {lat['max']:.0f} ms; drift {r['latency_drift_ms']:+.0f} ms; "
                  f"CPU {r['cpu_share_of_one_core']:.0%} of one core (model {r['model_share_of_wall']:.0%} of wall); "
                  f"{r['frames']}/{r['frames_expected']} frames, {r['received']} received; dropped chunks "
                  f"{r['dropped_chunks']}, merged {r['merged_chunks']}, frames dropped {r['frames_dropped']}, "
                  f"stale {r['frames_stale']}", flush=True)
    meta = {"cpu_count": os.cpu_count(), "torch_threads": __import__("torch").get_num_threads(),
            "load_average": os.getloadavg(),
            "model": args.model or {mode: Path(default_model(mode)).name for mode in pipes}}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "runs": results}, indent=2))
    print(json.dumps({"meta": meta, "runs": results}, indent=2))
    width = max(len(describe(r)) for r in results)
    print(f"\n{'run':<{width}}  p50 ms  p95 ms  max ms  CPU (1 core)  load")
    for r in results:
        lat = r["latency_ms"]
        print(f"{describe(r):<{width}}  {lat['p50']:6.0f}  {lat['p95']:6.0f}  {lat['max']:6.0f}  "
              f"{r['cpu_share_of_one_core']:11.0%}  {r['load_average_1min_after']:4.1f}")


if __name__ == "__main__":
    main()
