#!/usr/bin/env python
"""Generate (and optionally push) EmoStyle-Synth: eSpeak NG speech with known emotional styles.

    python hub_scripts/make_emostyle_synth.py --output emostyle-synth --num-speakers 10 --num-sentences 40
    python hub_scripts/make_emostyle_synth.py -o out --num-proc 2 --push-to-hub user/emostyle-synth
    python hub_scripts/make_emostyle_synth.py -o out --kokoro-fraction 0.5 --kokoro-voices ~/.cache/pestalk_hf/kokoro_voices

``--kokoro-fraction F`` makes a share F of the speakers speak with Kokoro-82M (install extra
``synth``; voice packs: ``python -m pestalk_hf.data.kokoro_tts fetch-voices DIR``).

The logic lives in :mod:`pestalk_hf.data.synth`; this script only parses arguments. The output
reads back with ``datasets.load_dataset(OUT, streaming=True)``.
Exit codes: 0 = written (and pushed); 1 = the push failed; 2 = bad arguments (or Kokoro asked
for but its extra or voice packs are missing).
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", "-o", required=True, help="output folder (data/*.parquet, style_matrix.json, ...)")
    p.add_argument("--num-speakers", type=int, default=10)
    p.add_argument("--num-sentences", type=int, default=40)
    p.add_argument("--levels", default="3", help="MEAD intensity levels of the emotional clips, e.g. '1,2,3'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-proc", type=int, default=1, help="worker processes")
    p.add_argument("--num-test-speakers", type=int, default=None, help="held-out speakers (default ~20%%)")
    p.add_argument("--rows-per-shard", type=int, default=500)
    p.add_argument("--kokoro-fraction", type=float, default=0.0, metavar="F",
                   help="share of speakers that speak with Kokoro-82M instead of eSpeak NG (default 0)")
    p.add_argument("--kokoro-voices", metavar="DIR", default=None,
                   help="folder of Kokoro voice packs (default: $PESTALK_KOKORO_VOICES or ~/.cache/pestalk_hf/kokoro_voices)")
    p.add_argument("--push-to-hub", metavar="REPO", default=None, help="upload the folder as this datasets repo")
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from tqdm.auto import tqdm

    from pestalk_hf.data.kokoro_tts import KokoroUnavailable
    from pestalk_hf.data.synth import SynthConfig, generate, make_plan, push_to_hub

    try:
        config = SynthConfig(
            num_speakers=args.num_speakers, num_sentences=args.num_sentences, seed=args.seed,
            intensity_levels=tuple(int(x) for x in args.levels.split(",") if x.strip()),
            num_test_speakers=args.num_test_speakers, rows_per_shard=args.rows_per_shard,
            kokoro_fraction=args.kokoro_fraction, kokoro_voices_dir=args.kokoro_voices,
        )
        plan = make_plan(config)
        total = len(plan.clips())
    except (ValueError, KokoroUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with tqdm(total=total, unit="clip", desc="EmoStyle-Synth") as bar:
        summary = generate(config, args.output, num_proc=args.num_proc, progress=bar.update)
    for split, s in summary["splits"].items():
        print(f"{split}: {s['clips']} clips, {s['seconds'] / 60:.1f} min")
    for s in plan.speakers:
        if s.tts == "kokoro":
            print(f"{s.name}: Kokoro {s.voice.removeprefix('kokoro:')}, speed {s.base_speed:g}")
    for clip_id, why in summary.get("skipped", {}).items():
        print(f"skipped {clip_id}: {why}", file=sys.stderr)
    print(f"{summary['seconds_of_audio'] / 60:.1f} min of data in {summary['wall_seconds']:.1f} s "
          f"({summary['speed_x_realtime']:.1f} s of data per s, {args.num_proc} process(es)) -> {args.output}")
    if args.push_to_hub:
        try:
            print(push_to_hub(args.output, args.push_to_hub, private=args.private))
        except Exception as err:  # network/auth errors come in many types; report and fail
            print(f"error: push to {args.push_to_hub} failed: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
