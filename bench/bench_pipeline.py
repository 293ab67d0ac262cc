"""End-to-end speed of the main job with the embedded default model.

    python bench/bench_pipeline.py [--model DIR] [--seconds 10] [--chunk-ms 100]
    python bench/bench_pipeline.py --streaming-only --seconds 30 --chunk-ms 100 --lookahead-frames 2

Prints:
  * end-to-end wall time for ``--seconds`` of speech → every format (CSV, JSON, NPZ, GLB, MP4, PNG),
    split into model inference and writing, and its real-time factor (target < 1, MP4 included); then
    inference with and without ``rest_in_silence`` (median of 3 each, interleaved);
  * render frames/s at 512×512 for the default avatar and ``ict_face_arkit52.glb`` (bench_render);
  * streaming latency per chunk: compute time per push and the end-to-end latency of a frame
    (chunk duration + lookahead + compute), for the offline-window mode and the bounded-look-ahead mode
    (``--lookahead-frames``; the default model put in that mode, or ``--model`` saved in it): frames are
    replayed on the audio clock (chunk k arrives at its end; a push starts when it has arrived and the
    previous one is done), and a frame's latency is its emission time minus the centre of its audio.
The speech is eSpeak NG synthesis (bundled), so the benchmark needs no files.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_render import ICT, bench_render  # noqa: E402

import pestalk_hf  # noqa: E402
from pestalk_hf.avatar import default_avatar, load_avatar  # noqa: E402
from pestalk_hf.data.espeak import synthesize  # noqa: E402
from pestalk_hf.pipeline import load_pipeline  # noqa: E402

TEXT = ("The quick brown fox jumps over the lazy dog, and then it runs all the way home "
        "because the evening is getting cold and dark. ")


def speech(seconds: float) -> np.ndarray:
    wav = synthesize(TEXT * 4).waveform
    while len(wav) < seconds * 16000:
        wav = np.concatenate([wav, wav])
    return wav[: int(seconds * 16000)]


def bench_end_to_end(pipe, seconds: float) -> None:
    audio = speech(seconds)
    pipe({"array": audio[:16000], "sampling_rate": 16000})  # warm-up
    t0 = time.perf_counter()
    anim = pipe({"array": audio, "sampling_rate": 16000})
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        anim.save(out, "bench")
    t2 = time.perf_counter()
    total = t2 - t0
    print(f"end-to-end {seconds:.0f} s speech → all formats: {total:.2f} s (RTF {total / seconds:.3f}); "
          f"inference {t1 - t0:.2f} s, writing {t2 - t1:.2f} s", flush=True)
    # what the mouth at rest in silence (a 1 s silence decode + the level scan) adds, same run
    on, off = [], []
    for _ in range(3):
        for flag, times in ((True, on), (False, off)):
            t = time.perf_counter()
            pipe({"array": audio, "sampling_rate": 16000}, rest_in_silence=flag)
            times.append(time.perf_counter() - t)
    print(f"inference with / without rest_in_silence (median of 3): {statistics.median(on):.3f} / "
          f"{statistics.median(off):.3f} s (RTF {statistics.median(on) / seconds:.4f} / "
          f"{statistics.median(off) / seconds:.4f}, ratio {statistics.median(on) / statistics.median(off):.2f})", flush=True)


def bench_streaming(pipe, seconds: float, chunk_ms: int, lookahead: float) -> None:
    from pestalk_hf.streaming import StreamingAnimator

    audio = speech(seconds)
    chunk = int(16000 * chunk_ms / 1000)
    animator = StreamingAnimator(pipe.model, pipe.voiceprint_backend, lookahead_seconds=lookahead)
    times = []
    for start in range(0, len(audio), chunk):
        t = time.perf_counter()
        animator.push(audio[start:start + chunk])
        times.append(time.perf_counter() - t)
    steady = times[len(times) // 3:]
    p50, p95 = statistics.median(steady), sorted(steady)[int(0.95 * len(steady)) - 1]
    print(f"streaming {chunk_ms} ms chunks, lookahead {lookahead:.2f} s: compute per push p50 {1000 * p50:.0f} ms, "
          f"p95 {1000 * p95:.0f} ms; frame latency ≈ chunk + lookahead + compute = "
          f"{chunk_ms + 1000 * lookahead + 1000 * p50:.0f} ms (p95 {chunk_ms + 1000 * lookahead + 1000 * p95:.0f} ms); "
          f"keeps up with real time: {p95 < chunk_ms / 1000}", flush=True)


def replay_latency(animator, audio: np.ndarray, chunk: int, sr: int = 16000, fps: int = 30) -> dict[str, float]:
    """Push ``audio`` in ``chunk``-sample pieces on a simulated audio clock; per-frame latency in ms.

    Chunk k arrives at ``(k + 1) · chunk / sr``; its push starts at max(arrival, end of the previous push)
    and lasts its measured compute time; each frame it returns leaves then. Latency of frame t =
    leave time − ``(t + 0.5) / fps`` (the centre of the frame's audio)."""
    clock, emitted, latencies, computes = 0.0, 0, [], []
    for k, start in enumerate(range(0, len(audio), chunk)):
        piece = audio[start:start + chunk]
        arrival = (start + len(piece)) / sr
        t0 = time.perf_counter()
        frames = animator.push(piece)
        compute = time.perf_counter() - t0
        clock = max(clock, arrival) + compute
        computes.append(compute)
        latencies += [clock - (t + 0.5) / fps for t in range(emitted, emitted + len(frames))]
        emitted += len(frames)
    steady = latencies[len(latencies) // 5:]  # after the first fifth (warm-up, voiceprint estimate)
    comp = computes[len(computes) // 5:]
    q = lambda xs, p: 1000 * float(np.percentile(xs, p))  # noqa: E731
    return {"latency_p50_ms": q(steady, 50), "latency_p95_ms": q(steady, 95), "latency_max_ms": 1000 * max(steady),
            "compute_p50_ms": q(comp, 50), "compute_p95_ms": q(comp, 95), "frames": emitted}


def bench_streaming_modes(pipe, seconds: float, chunk_ms: int, lookahead: float, lookahead_frames: int) -> None:
    """Both streaming modes on the same speech, replayed on the audio clock (see :func:`replay_latency`)."""
    from pestalk_hf.modeling.modeling_pestalk import streaming_receptive_field
    from pestalk_hf.streaming import make_streaming_animator

    audio = speech(seconds)
    chunk = int(16000 * chunk_ms / 1000)
    model, backend = pipe.model, pipe.voiceprint_backend
    window = replay_latency(make_streaming_animator(model, backend, mode="offline-window", lookahead_seconds=lookahead),
                            audio, chunk)
    print(f"offline-window, {chunk_ms} ms chunks, lookahead {1000 * lookahead:.0f} ms: frame latency p50 "
          f"{window['latency_p50_ms']:.0f} ms, p95 {window['latency_p95_ms']:.0f} ms; compute per push p50 "
          f"{window['compute_p50_ms']:.0f} ms, p95 {window['compute_p95_ms']:.0f} ms", flush=True)
    animator = make_streaming_animator(model, backend, mode="lookahead", lookahead_frames=lookahead_frames)
    field = streaming_receptive_field(animator.config)
    ahead = replay_latency(animator, audio, chunk)
    print(f"lookahead L={animator.lookahead_frames} ({1000 * field['max_lookahead_seconds']:.1f} ms max, "
          f"{1000 * field['mean_lookahead_seconds']:.1f} ms mean incl. the STFT half window), {chunk_ms} ms chunks: "
          f"frame latency p50 {ahead['latency_p50_ms']:.0f} ms, p95 {ahead['latency_p95_ms']:.0f} ms, max "
          f"{ahead['latency_max_ms']:.0f} ms; compute per push p50 {ahead['compute_p50_ms']:.0f} ms, p95 "
          f"{ahead['compute_p50_ms']:.0f} ms; latency model: frame centre → its last needed sample "
          f"{1000 * field['mean_lookahead_seconds'] + 1000 / 60:.0f} ms on average + wait for the audio chunk "
          f"holding it (< {chunk_ms} ms) + compute", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=pestalk_hf.DEFAULT_MODEL)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--chunk-ms", type=int, default=100)
    parser.add_argument("--lookahead", type=float, default=0.3)
    parser.add_argument("--lookahead-frames", type=int, default=2, help="bounded-look-ahead streaming mode: L")
    parser.add_argument("--streaming-only", action="store_true", help="only the two streaming modes")
    args = parser.parse_args()
    pipe = load_pipeline(args.model)
    if args.streaming_only:
        bench_streaming_modes(pipe, args.seconds, args.chunk_ms, args.lookahead, args.lookahead_frames)
        return
    bench_end_to_end(pipe, args.seconds)
    bench_render(default_avatar(), "default", 512, 90)
    if ICT.exists():
        bench_render(load_avatar(ICT), "ict_face_arkit52", 512, 90)
    bench_streaming(pipe, args.seconds, args.chunk_ms, args.lookahead)
    bench_streaming_modes(pipe, args.seconds, args.chunk_ms, args.lookahead, args.lookahead_frames)


if __name__ == "__main__":
    main()
