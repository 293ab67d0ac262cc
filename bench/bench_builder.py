"""Benchmark: 3D-EmoStyle builder throughput in video frames per second.

    python bench/bench_builder.py [--repeats 8] [--num-proc 1 2]

Builds the GRID clips of ``../shared/assets/video/grid`` (each listed ``repeats`` times in a manifest
so that there is enough work) with the real MediaPipe bundle, once per ``--num-proc`` value, and
prints JSON: frames labelled, wall seconds and frames/s of the whole build (decode + MediaPipe +
resampling + FLAC + Parquet), plus decode-only frames/s for reference. With ``num_proc > 1`` the wall
time includes starting the worker processes (one import of the package in the fork server).
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"


def bench_builder(
    video_dir: str | Path = ASSETS / "video" / "grid",
    landmarker: str | Path = ASSETS / "mediapipe" / "face_landmarker.task",
    repeats: int = 8,
    num_procs: Sequence[int] = (1, 2),
) -> dict[str, Any]:
    """Time full builds of ``repeats`` × the clips in ``video_dir``; returns a JSON-able dict."""
    from pestalk_hf.data.video_builder import BuildConfig, build_dataset, discover_clips, read_manifest
    from pestalk_hf.data.video_io import iter_video_frames

    clips = discover_clips(video_dir).clips
    if not clips:
        raise ValueError(f"no clips in {video_dir}")
    result: dict[str, Any] = {"clips": len(clips) * repeats, "runs": {}}
    start = time.perf_counter()
    decoded = sum(1 for c in clips for _ in iter_video_frames(c.video_path, max_side=720))
    result["decode_only_frames_per_s"] = round(decoded / (time.perf_counter() - start), 1)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "bench.csv"
        with open(manifest, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", "path", "speaker", "emotion", "intensity", "sentence"])
            for r in range(repeats):
                for c in clips:
                    writer.writerow([f"r{r}_{c.id}", c.video_path, c.speaker, "neutral", 1, c.sentence])
        listed = read_manifest(manifest)
        for num_proc in num_procs:
            summary = build_dataset(
                listed, Path(tmp) / f"out{num_proc}", landmarker,
                BuildConfig(split="train", clips_per_shard=max(1, len(listed.clips) // (2 * num_proc))),
                num_proc=num_proc, progress=False,
            )
            result["runs"][f"num_proc={num_proc}"] = {
                "frames": summary.frames_labelled, "seconds": round(summary.seconds, 2),
                "frames_per_s": round(summary.frames_per_second, 1), "ok": summary.ok,
            }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--num-proc", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(json.dumps(bench_builder(repeats=args.repeats, num_procs=args.num_proc), indent=1))


if __name__ == "__main__":
    main()
