#!/usr/bin/env python
"""Build (and optionally push) the 3D-EmoStyle dataset from talking-face videos.

    python hub_scripts/build_3d_emostyle.py VIDEO_DIR --output OUT --landmarker face_landmarker.task
    python hub_scripts/build_3d_emostyle.py --manifest clips.csv --output OUT --landmarker ... --num-proc 2
    python hub_scripts/build_3d_emostyle.py VIDEO_DIR --output OUT --landmarker ... --shard 0/4   # machine 0 of 4

Rerunning the same command resumes: finished shards are kept, unfinished ones are redone.
The logic lives in :mod:`pestalk_hf.data.video_builder`; this script only parses arguments.

Exit codes: 0 = built (skipped clips are listed, not fatal); 1 = some shards failed or the push failed
(rerun to resume);
2 = bad arguments, manifest or output folder.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EXIT_OK, EXIT_SHARDS_FAILED, EXIT_BAD_INPUT = 0, 1, 2
MAX_LISTED_SKIPS = 20


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video_dir", nargs="?", help="folder of videos (MEAD layout or flat folders)")
    p.add_argument("--manifest", help="CSV with columns path,speaker,emotion,intensity,sentence [,id,audio_path,source]")
    p.add_argument("--output", "-o", required=True, help="output folder (data/*.parquet, report.jsonl, pairs.jsonl, README.md)")
    p.add_argument("--landmarker", default=os.environ.get("PESTALK_FACE_LANDMARKER"),
                   help="MediaPipe face_landmarker.task bundle (default: $PESTALK_FACE_LANDMARKER)")
    p.add_argument("--num-proc", type=int, default=1, help="worker processes on this machine (one shard each)")
    p.add_argument("--shard", default="0/1", help="i/n: build every n-th shard starting at i (multi-machine)")
    p.add_argument("--clips-per-shard", type=int, default=50)
    p.add_argument("--max-missing-face-fraction", type=float, default=0.2,
                   help="skip clips with more face-less frames than this fraction")
    p.add_argument("--max-gap-seconds", type=float, default=0.5, help="skip clips that lose the face for longer")
    p.add_argument("--max-av-mismatch", type=float, default=1.0, help="skip clips whose audio and video lengths differ more (s)")
    p.add_argument("--max-side", type=int, default=720, help="downscale frames to this longest side (0 = never)")
    p.add_argument("--max-faces", type=int, default=2, help="faces MediaPipe may return; the largest is kept")
    p.add_argument("--views", default="front", help="MEAD camera views to include, comma-separated")
    p.add_argument("--split", help="put every clip in this split (tiny inputs); default: speaker/sentence rule")
    p.add_argument("--test-speakers", help="comma-separated held-out speakers (default: hash rule)")
    p.add_argument("--test-speaker-fraction", type=float, default=0.1)
    p.add_argument("--test-sentence-fraction", type=float, default=0.1)
    p.add_argument("--push-to-hub", metavar="REPO", help="upload the folder to this Hub datasets repo when done")
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pestalk_hf.data import video_builder as vb

    try:
        if bool(args.video_dir) == bool(args.manifest):
            raise ValueError("give exactly one input: VIDEO_DIR or --manifest CSV")
        if not args.landmarker:
            raise ValueError("--landmarker PATH/face_landmarker.task is required (or set $PESTALK_FACE_LANDMARKER)")
        if not Path(args.landmarker).is_file():
            raise ValueError(f"--landmarker: file not found: {args.landmarker}")
        shard = vb.parse_shard_spec(args.shard)
        config = vb.BuildConfig(
            clips_per_shard=args.clips_per_shard, max_missing_face_fraction=args.max_missing_face_fraction,
            max_gap_seconds=args.max_gap_seconds, max_av_mismatch_seconds=args.max_av_mismatch,
            max_side=args.max_side, max_faces=args.max_faces, split=args.split,
            test_speakers=tuple(s.strip() for s in args.test_speakers.split(",")) if args.test_speakers else None,
            test_speaker_fraction=args.test_speaker_fraction, test_sentence_fraction=args.test_sentence_fraction,
        )
        if args.manifest:
            clips = vb.read_manifest(args.manifest)
        else:
            clips = vb.discover_clips(args.video_dir, views=tuple(v.strip() for v in args.views.split(",")))
        if not clips.clips:
            raise ValueError(f"no video clips found in {args.manifest or args.video_dir}")
        summary = vb.build_dataset(
            clips, args.output, args.landmarker, config, num_proc=args.num_proc, shard=shard,
            progress=not args.no_progress,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    print(
        f"3D-EmoStyle: {summary.ok} clips ok, {summary.skipped} skipped, {summary.pairs} neutral/emotional pairs; "
        f"splits {summary.splits}; shards: {summary.shards_built} built now, {summary.shards_done_before} already "
        f"done, {summary.shards_total} in the plan; {summary.frames_labelled} frames in {summary.seconds:.1f} s "
        f"({summary.frames_per_second:.1f} frames/s) -> {args.output}"
    )
    for clip_id, reason in list(summary.skip_reasons.items())[:MAX_LISTED_SKIPS]:
        print(f"  skipped {clip_id}: {reason}")
    if len(summary.skip_reasons) > MAX_LISTED_SKIPS:
        print(f"  ... {len(summary.skip_reasons) - MAX_LISTED_SKIPS} more in {Path(args.output) / 'report.jsonl'}")
    if summary.failed_shards:
        for name, reason in summary.failed_shards.items():
            print(f"error: shard {name} failed: {reason}", file=sys.stderr)
        print("finished shards are kept; rerun the same command to resume", file=sys.stderr)
        return EXIT_SHARDS_FAILED
    if args.push_to_hub:
        if shard != (0, 1):
            print("warning: pushing a partial (--shard) build; push from the merged folder instead", file=sys.stderr)
        try:
            url = vb.push_to_hub(args.output, args.push_to_hub, private=args.private)
        except Exception as exc:  # noqa: BLE001 - network/auth: the built folder stays valid
            print(f"error: push to {args.push_to_hub} failed ({type(exc).__name__}: {exc}); the folder is "
                  "complete, rerun with --push-to-hub to retry (nothing is rebuilt)", file=sys.stderr)
            return EXIT_SHARDS_FAILED
        print(f"pushed to {url}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
