#!/usr/bin/env python
"""Build the real-speech training mix of the default model (GRID s1 faces + EmoDB emotions).

    python hub_scripts/build_3d_emostyle.py ../shared/assets/video/grid_s1 -o /tmp/grid_s1_ds \
        --landmarker ../shared/assets/mediapipe/face_landmarker.task
    python hub_scripts/make_real_mix.py --grid-dataset /tmp/grid_s1_ds \
        --emodb ../shared/assets/speech/emodb -o /tmp/real_mix

The logic lives in :mod:`pestalk_hf.data.real_mix`. Exit codes: 0 = written; 2 = bad arguments or inputs.
"""

from __future__ import annotations

import argparse
import json
import sys


def _range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        lo = hi = -1.0
    if not 0 < lo <= hi:
        raise argparse.ArgumentTypeError(f"must be MIN,MAX with 0 < MIN <= MAX, got {text!r}")
    return lo, hi


def _factors(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(0.5 <= v <= 2.0 for v in values):
        raise argparse.ArgumentTypeError(f"must be comma-separated factors in [0.5, 2], got {text!r}")
    return values


def _list(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def build_parser() -> argparse.ArgumentParser:
    from pestalk_hf.data.aligner import LJSPEECH_TEST_CHAPTERS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid-dataset", required=True, help="3D-EmoStyle folder built from video/grid_s1")
    p.add_argument("--emodb", default=None, help="EmoDB folder (labels.csv, *.wav, *.lablaut)")
    p.add_argument("--emodb-holdout", default="03,16", help="EmoDB speaker ids kept for evaluation only")
    p.add_argument("--grid-copies", type=int, default=1, help="augmented copies per GRID train clip")
    p.add_argument("--emodb-copies", type=int, default=3, help="augmented copies per EmoDB train clip")
    p.add_argument("--emotion-scale", type=float, default=0.6, help="strength of the emotion prototypes on EmoDB")
    p.add_argument("--tts", action="append", default=[], metavar="SYNTH_DIR",
                   help="neutral EmoStyle-Synth folder made with Kokoro voices (repeatable)")
    p.add_argument("--tts-copies", type=int, default=1, help="augmented copies per TTS clip")
    p.add_argument("--synth", action="append", default=[], metavar="SYNTH_DIR",
                   help="EmoStyle-Synth folder whose train split is mixed in with its own labels (repeatable)")
    p.add_argument("--synth-fraction", type=float, default=1.0, help="random share of each --synth folder's clips")
    p.add_argument("--pause-seconds", type=_range, default=(0.2, 0.6), metavar="MIN,MAX",
                   help="length range of the pauses inserted into augmented copies")
    p.add_argument("--p-pause", type=float, default=0.35, help="share of augmented copies given a pause")
    p.add_argument("--speed-factors", type=_factors, default=None, metavar="F,F,...",
                   help="speed-perturbation factors of the augmented copies (default 0.9,0.95,1.05,1.1); "
                        "> 1 is faster speech")
    p.add_argument("--p-speed", type=float, default=None, help="share of augmented copies speed-perturbed (default 0.5)")
    p.add_argument("--ljspeech", default=None, metavar="LJ_DIR",
                   help="LJSpeech folder (metadata.csv, *.flac): real English read speech, labels built on its forced alignment")
    p.add_argument("--ljspeech-alignment", default=None, metavar="JSON",
                   help="alignment cache to reuse/extend (default: OUTPUT/ljspeech_alignment.json)")
    p.add_argument("--ljspeech-holdout", type=_list, default=LJSPEECH_TEST_CHAPTERS, metavar="CHAPTERS",
                   help=f"LJSpeech chapters kept for evaluation only (default {','.join(LJSPEECH_TEST_CHAPTERS)}: "
                        "the ones evaluate_real.py reads)")
    p.add_argument("--ljspeech-copies", type=int, default=3, help="augmented copies per LJSpeech train clip")
    p.add_argument("--grid-align", default=None, metavar="ALIGN_DIR",
                   help="GRID word alignments (<id>.align, e.g. ../shared/assets/video/grid_s1/align): calibrate the "
                        "built labels' viseme amplitudes on the GRID train clips' real faces (recommended)")
    p.add_argument("--grid-alignment", default=None, metavar="JSON",
                   help="forced-alignment cache of the GRID train clips (default: <output>/grid_alignment.json)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", "-o", required=True)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 < args.synth_fraction <= 1:
        parser.error(f"--synth-fraction must be in (0, 1], got {args.synth_fraction}")
    from pestalk_hf.data.real_mix import RealMixConfig, build_real_mix

    config = RealMixConfig(grid_dataset=args.grid_dataset, emodb_folder=args.emodb,
                           emodb_holdout=_list(args.emodb_holdout),
                           grid_copies=args.grid_copies, emodb_copies=args.emodb_copies,
                           emotion_scale=args.emotion_scale, seed=args.seed,
                           tts_datasets=tuple(args.tts), tts_copies=args.tts_copies,
                           synth_datasets=tuple(args.synth), synth_fraction=args.synth_fraction,
                           ljspeech_folder=args.ljspeech, ljspeech_alignment=args.ljspeech_alignment,
                           ljspeech_copies=args.ljspeech_copies, ljspeech_holdout=args.ljspeech_holdout,
                           grid_align_dir=args.grid_align, grid_alignment=args.grid_alignment,
                           augment={"pause_seconds": args.pause_seconds, "p_pause": args.p_pause,
                                    **({} if args.speed_factors is None else {"speed_factors": args.speed_factors}),
                                    **({} if args.p_speed is None else {"p_speed": args.p_speed})})
    try:
        summary = build_real_mix(config, args.output)
    except (ValueError, FileNotFoundError) as err:
        print(f"make_real_mix: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"counts": summary["counts"], "skipped_boredom": summary["skipped_boredom"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
