#!/usr/bin/env python
"""Data pipeline benchmarks: one function per measurement, ``main`` runs them and prints JSON.

    python bench/bench_data.py                      # small defaults (about a minute on 2 cores)
    python bench/bench_data.py --speakers 6 --sentences 10 --num-proc 2

* :func:`bench_synth_generation` — EmoStyle-Synth generation speed (seconds of data per second).
* :func:`bench_streaming_loader` — streaming + decoding + collation throughput (clips/s).
* :func:`bench_video_builder` — 3D-EmoStyle builder throughput (frames/s), from bench_builder.py.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def bench_synth_generation(output: Path, num_speakers: int = 3, num_sentences: int = 4, num_proc: int = 1,
                           seed: int = 0) -> dict[str, Any]:
    """Generate EmoStyle-Synth into ``output``; seconds of data per wall second (includes Parquet writing)."""
    from pestalk_hf.data.synth import SynthConfig, generate

    summary = generate(SynthConfig(num_speakers=num_speakers, num_sentences=num_sentences, seed=seed),
                       output, num_proc=num_proc)
    clips = sum(s["clips"] for s in summary["splits"].values())
    return {"clips": clips, "seconds_of_data": round(summary["seconds_of_audio"], 1),
            "wall_seconds": round(summary["wall_seconds"], 2), "num_proc": num_proc,
            "data_seconds_per_second": round(summary["speed_x_realtime"], 1),
            "clips_per_second": round(clips / summary["wall_seconds"], 1)}


def bench_streaming_loader(path: Path, split: str = "train", batch_size: int = 8, epochs: int = 3) -> dict[str, Any]:
    """Stream a split with ``load_dataset(streaming=True)``, decode (soundfile), collate; clips/s.

    One untimed warm-up batch first (imports torch, opens the shards); each timed epoch re-opens
    the stream, as a training loop does.
    """
    from pestalk_hf.data.loading import BlendshapeCollator, load_clips

    collate = BlendshapeCollator()
    collate(list(load_clips(path, split, streaming=True).take(batch_size)))
    clips, t0 = 0, time.perf_counter()
    for _ in range(epochs):
        batch: list[dict[str, Any]] = []
        for ex in load_clips(path, split, streaming=True):
            batch.append(ex)
            if len(batch) == batch_size:
                collate(batch)
                clips, batch = clips + len(batch), []
        if batch:
            collate(batch)
            clips += len(batch)
    wall = time.perf_counter() - t0
    return {"split": split, "clips": clips, "batch_size": batch_size, "wall_seconds": round(wall, 2),
            "clips_per_second": round(clips / wall, 1)}


def bench_video_builder(**kwargs: Any) -> dict[str, Any]:
    """3D-EmoStyle builder throughput (video frames/s) on the GRID clips; see bench_builder.py."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_builder import ASSETS, bench_builder

    if not (ASSETS / "video" / "grid").is_dir():
        return {"skipped": "needs ../shared/assets/video/grid and the MediaPipe model"}
    return bench_builder(**kwargs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--speakers", type=int, default=3)
    p.add_argument("--sentences", type=int, default=4)
    p.add_argument("--num-proc", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--output", default=None, help="keep the generated dataset here (default: a temp folder)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.output or Path(tmp) / "emostyle-synth")
        results = {
            "synth_generation": bench_synth_generation(out, args.speakers, args.sentences, args.num_proc),
            "streaming_loader": bench_streaming_loader(out, "train", args.batch_size),
            "video_builder": bench_video_builder(),
        }
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
