#!/usr/bin/env python
"""Train PESTalk with Accelerate from a YAML/JSON config (logic: :mod:`pestalk_hf.training`).

    python hub_scripts/train.py --config configs/default_small.yaml
    accelerate launch hub_scripts/train.py --config configs/default_small.yaml
    python hub_scripts/train.py --config cfg.yaml --resume            # latest checkpoint in output_dir
    python hub_scripts/train.py --config cfg.yaml --eval-only --splits test test_speakers
    python hub_scripts/train.py --config cfg.yaml --set use_frequency_stream=false --set max_steps=400

Writes ``output_dir/checkpoints/checkpoint-N`` (accelerator.save_state), ``metrics.jsonl``, TensorBoard
logs in ``output_dir/logs``, the final model in ``output_dir/final`` (save_pretrained) and, with
``eval_splits`` in the config (or ``--splits``), ``output_dir/eval.json``.
Exit codes: 0 = done; 2 = bad config or arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="training config (.yaml/.yml/.json)")
    p.add_argument("--resume", nargs="?", const="latest", default=None,
                   help="resume from the latest checkpoint in output_dir, or from the given checkpoint folder")
    p.add_argument("--output-dir", default=None, help="override output_dir")
    p.add_argument("--max-steps", type=int, default=None, help="override max_steps")
    p.add_argument("--dataset", default=None, help="override dataset")
    p.add_argument("--splits", nargs="*", default=None, help="evaluate the final model on these splits")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="overrides",
                   help="override one config field; VALUE is read as YAML (false, 3, 1e-3, [a, b]); repeatable")
    p.add_argument("--eval-only", action="store_true", help="skip training; evaluate output_dir/final")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    return p


def parse_overrides(items: list[str]) -> dict:
    """``["a=1", "b=false", "c=1e-3"]`` → ``{"a": 1, "b": False, "c": 0.001}`` (values parsed as YAML)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects FIELD=VALUE, got {item!r}")
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str):
            try:  # PyYAML (YAML 1.1) reads "1e-3" as a string; a number is meant
                parsed = float(parsed)
            except ValueError:
                pass
        out[key.strip()] = parsed
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pestalk_hf.training import evaluate_run, load_training_config, train

    try:
        overrides = parse_overrides(args.overrides)
        overrides.update({k: v for k, v in (("output_dir", args.output_dir), ("max_steps", args.max_steps),
                                            ("dataset", args.dataset)) if v is not None})
        cfg = load_training_config(args.config, **overrides)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.splits is not None:
        cfg.eval_splits = list(args.splits)
    if not args.eval_only:
        resume = False if args.resume is None else (True if args.resume == "latest" else Path(args.resume))
        final = train(cfg, resume=resume, progress=not args.no_progress)
        print(f"final model: {final}")
    if cfg.eval_splits:
        report = evaluate_run(cfg)
        if report is not None:
            print(json.dumps({s: {k: v for k, v in r.items() if k != "emotion"} for s, r in report.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
