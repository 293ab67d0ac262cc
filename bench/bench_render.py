"""Benchmark: offscreen render speed and the wall time of writing every animation format.

Usage (from the project root):
    python bench/bench_render.py [--size 512] [--frames 90] [--seconds 10]

Prints one line per case. Render cases time ``Renderer.render`` (pose + normals + draw + readback)
after a short warm-up, as wall-clock fps and as CPU ms per frame (all threads of the process,
including llvmpipe's: the cost on an idle core, useful when other jobs share the machine).
The save case times ``BlendshapeAnimation.save`` of each of the six formats for ``--seconds``
of 30 fps animation with 16 kHz audio (the MP4 re-renders every frame).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from pestalk_hf.animation import BlendshapeAnimation
from pestalk_hf.avatar import Avatar, default_avatar, load_avatar
from pestalk_hf.avatar.render import Renderer

ROOT = Path(__file__).resolve().parents[1]
ICT = ROOT.parent / "shared" / "assets" / "avatars" / "ict_face_arkit52.glb"


def speech_like_weights(frames: int, seed: int = 0) -> np.ndarray:
    """Smooth random curves in [0, 1] (every shape moving), like a model's output."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None] / 30.0
    freq = rng.uniform(0.3, 4.0, size=(1, 52))
    phase = rng.uniform(0, 2 * np.pi, size=(1, 52))
    return (0.5 + 0.5 * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32) * rng.uniform(0.2, 1.0, (1, 52))


def bench_render(avatar: Avatar, name: str, size: int, frames: int) -> None:
    weights = speech_like_weights(frames)
    t0 = time.perf_counter()
    with Renderer(avatar, size=size) as renderer:
        setup = time.perf_counter() - t0
        for w in weights[:3]:
            renderer.render(w)
        t1, c1 = time.perf_counter(), time.process_time()
        for w in weights:
            renderer.render(w)
        elapsed, cpu = time.perf_counter() - t1, time.process_time() - c1
    # process_time includes llvmpipe's threads: cpu ms/frame is what one frame costs on an idle core
    print(f"render {name:<18} {size}x{size} verts={avatar.num_vertices:>6} faces={len(avatar.faces):>6} "
          f"frames={frames} fps={frames / elapsed:6.1f} wall_ms/frame={1000 * elapsed / frames:6.1f} "
          f"cpu_ms/frame={1000 * cpu / frames:6.1f} setup_s={setup:.2f}", flush=True)


def bench_save(seconds: float) -> None:
    frames = int(round(seconds * 30))
    audio = (0.1 * np.sin(2 * np.pi * 180 * np.arange(int(seconds * 16000)) / 16000)).astype(np.float32)
    anim = BlendshapeAnimation(speech_like_weights(frames, seed=1), audio=audio,
                               emotion_probabilities={"neutral": 0.2, "happy": 0.8},
                               style={"speaker": "bench", "emotion": "happy", "similarity": 0.9})
    default_avatar()  # built once per process; not part of the save cost
    with tempfile.TemporaryDirectory() as tmp:
        times = {}
        anim.save(tmp, "warmup", formats=("png",))  # matplotlib's first-use cost is not the writer's
        for fmt in ("csv", "json", "npz", "glb", "png", "mp4"):
            t0 = time.perf_counter()
            anim.save(tmp, "bench", formats=(fmt,))
            times[fmt] = time.perf_counter() - t0
        sizes = {p.suffix[1:]: p.stat().st_size for p in Path(tmp).glob("bench.*")}
    total = sum(times.values())
    detail = " ".join(f"{k}={v:.2f}s/{sizes[k] / 1e6:.2f}MB" for k, v in times.items())
    print(f"save   all formats {seconds:g}s ({frames} frames, default avatar) total_s={total:.2f} {detail}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--ict", type=Path, default=ICT, help="ICT-FaceKit GLB (skipped if missing)")
    args = parser.parse_args()
    print(f"# cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f}", flush=True)
    t0 = time.perf_counter()
    avatar = default_avatar()
    print(f"build  default avatar  build_s={time.perf_counter() - t0:.2f}", flush=True)
    bench_render(avatar, "default", args.size, args.frames)
    if args.ict.is_file():
        bench_render(load_avatar(args.ict), args.ict.stem, args.size, args.frames)
    else:
        print(f"render {args.ict.stem}: skipped ({args.ict} not found)")
    bench_save(args.seconds)


if __name__ == "__main__":
    main()
