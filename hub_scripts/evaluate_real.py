#!/usr/bin/env python
"""Real-speech evaluation of a model: talking faces, phone-labelled speech, emotion (logic: :mod:`pestalk_hf.evaluation_real`).

    python hub_scripts/evaluate_real.py --model pestalk_hf/default_model --assets ../shared/assets \\
        --grid-s1-dataset /tmp/grid_s1_ds --output /tmp/real_eval

Writes ``OUTPUT/real_eval.json`` and ``OUTPUT/real_eval.md`` (model and floors side by side); MediaPipe
labels of the new-speaker videos are cached in ``OUTPUT/cache``. Every section skips with a reason
when its material is missing. Definitions: docs/METRICS.md ("Real-speech evaluation").
Exit codes: 0 = done; 2 = bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def build_parser() -> argparse.ArgumentParser:
    from pestalk_hf import evaluation_real as er

    d = er.RealEvalConfig(output="")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model folder or Hub id (default: the embedded default model)")
    p.add_argument("--output", "-o", required=True, help="folder for real_eval.json, real_eval.md and the label cache")
    p.add_argument("--assets", default=d.assets, help="folder the relative asset paths below are under")
    p.add_argument("--grid-s1-dataset", default=None, help="3D-EmoStyle folder built over video/grid_s1 (test split = held-out clips)")
    p.add_argument("--grid-s1-test-split", default=d.grid_s1_test_split)
    p.add_argument("--grid-s1-train-split", default=d.grid_s1_train_split, help="split for the mean-pose and loudness floors")
    p.add_argument("--grid-s1-videos", default=d.grid_s1_videos, help="GRID s1 videos (align/ word timings)")
    p.add_argument("--grid-s1-sample", type=int, default=d.grid_s1_sample,
                   help="without --grid-s1-dataset: label this many s1 clips for the phone reference (0 = none)")
    p.add_argument("--grid-new-speakers", type=_csv, default=d.grid_new_speakers, help="comma-separated videos of new speakers")
    p.add_argument("--landmarker", default=d.landmarker, help="MediaPipe face_landmarker.task")
    p.add_argument("--arctic", default=d.arctic, help="CMU ARCTIC folder (*.wav, *_phone.lab)")
    p.add_argument("--emodb", default=d.emodb, help="EmoDB folder (labels.csv, *.wav, *.lablaut)")
    p.add_argument("--emodb-test-speakers", type=_csv, default=d.emodb_test_speakers,
                   help="held-out EmoDB speakers (must match those kept out of training)")
    p.add_argument("--ljspeech", default=d.ljspeech, help="LJSpeech folder (metadata.csv, *.flac)")
    p.add_argument("--ljspeech-chapters", type=lambda t: None if t.strip().lower() == "all" else _csv(t),
                   default=d.ljspeech_chapters,
                   help=f"LJSpeech chapters to read, or 'all' (default {','.join(d.ljspeech_chapters)}: "
                        "the chapters the default model's training leaves out)")
    p.add_argument("--sections", type=_csv, default=d.sections, help="any of talking_faces,phones,emotion")
    p.add_argument("--max-clips", type=int, default=None, help="at most this many clips per set (quick runs)")
    p.add_argument("--device", default=None, help="torch device for the model (default: CPU)")
    p.add_argument("--lips-closed-threshold", type=float, default=d.lips_closed_threshold)
    p.add_argument("--pause-tolerance", type=float, default=d.pause_tolerance)
    p.add_argument("--min-pause", type=float, default=d.min_pause_seconds, dest="min_pause_seconds")
    p.add_argument("--no-rest-in-silence", dest="rest_in_silence", action="store_false",
                   help="run the pipeline with rest_in_silence=False (the model's own mouth in pauses)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pestalk_hf import evaluation_real as er

    opts = {k: v for k, v in vars(args).items() if k != "no_progress"}
    try:
        cfg = er.RealEvalConfig(**opts, progress=not args.no_progress)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    er.run_real_evaluation(cfg)
    print((Path(args.output) / "real_eval.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
