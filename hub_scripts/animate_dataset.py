#!/usr/bin/env python
"""Animate every clip of a (streamed) audio dataset and write the results as a dataset.

One machine:   python hub_scripts/animate_dataset.py DATASET --split test --output out/anim
Many GPUs:     accelerate launch --num_processes 8 hub_scripts/animate_dataset.py DATASET --output out/anim
Many nodes:    accelerate launch --num_machines N --machine_rank i ... (Accelerate's own launcher)

DATASET is a local folder or Hub repo id with an ``audio`` column (the 3D-EmoStyle schema works as is).
"""

from __future__ import annotations

import argparse

from pestalk_hf.batch_animation import animate_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", help="local dataset folder or Hub repo id")
    parser.add_argument("--output", required=True, help="output folder (a datasets repo of animations)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--model", default=None, help="model folder or Hub id (default: the embedded default)")
    parser.add_argument("--audio-column", default="audio")
    parser.add_argument("--id-column", default="id")
    parser.add_argument("--max-clips", type=int, default=None, help="per process")
    parser.add_argument("--emotion", default=None)
    parser.add_argument("--intensity", type=float, default=None)
    parser.add_argument("--blinks", action="store_true")
    parser.add_argument("--no-rest-in-silence", dest="rest_in_silence", action="store_false",
                        help="keep the model's own mouth in pauses (as pestalk live does)")
    args = parser.parse_args()
    animate_dataset(
        args.dataset, args.output, split=args.split, model=args.model, audio_column=args.audio_column,
        id_column=args.id_column, max_clips=args.max_clips, emotion=args.emotion, intensity=args.intensity,
        blinks=args.blinks, rest_in_silence=args.rest_in_silence,
    )


if __name__ == "__main__":
    main()
