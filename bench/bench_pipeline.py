"""End-to-end speed of the main job with the embedded default model.

    python bench/bench_pipeline.py [--model DIR] [--seconds 10] [--chunk-ms 100]

Prints:
  * end-to-end wall time for ``--seconds`` of speech → every format (CSV, JSON, NPZ, GLB, MP4, PNG),
    split into model inference and writing, and its real-time factor (target < 1, MP4 included);
  * render frames/s at 512×512 for the default avatar and ``ict_face_arkit52.glb`` (bench_render);
  * streaming latency per chunk: compute time per push and the end-to-end latency of a frame
    (chunk duration + lookahead + compute).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=pestalk_hf.DEFAULT_MODEL)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--chunk-ms", type=int, default=100)
    parser.add_argument("--lookahead", type=float, default=0.3)
    args = parser.parse_args()
    pipe = load_pipeline(args.model)
    bench_end_to_end(pipe, args.seconds)
    bench_render(default_avatar(), "default", 512, 90)
    if ICT.exists():
        bench_render(load_avatar(ICT), "ict_face_arkit52", 512, 90)
    bench_streaming(pipe, args.seconds, args.chunk_ms, args.lookahead)


if __name__ == "__main__":
    main()
