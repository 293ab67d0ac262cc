#!/usr/bin/env python
"""Markdown table of training runs' evaluations (``eval.json`` written by ``hub_scripts/train.py``).

    python hub_scripts/ablation_table.py full=/tmp/abl/full "w/o Φ_E^f"=/tmp/abl/no_freq \\
        "w/o ESMM"=/tmp/abl/no_esmm "w/o L_dis"=/tmp/abl/no_dis --splits test test_speakers

One row per run and split, plus the mean-pose baseline of the first run (the training data's mean pose:
the same for every run trained on the same split). Columns: LBE, PBE, MBE (lower is better), BA (higher),
emotion accuracy, ⟨speaker, emotion⟩ retrieval accuracy (library speakers only), and the speaker-specific
style recovery r against EmoStyle-Synth's known style matrix (see :func:`pestalk_hf.metrics.style_recovery`).
Exit codes: 0 = done; 2 = a run has no eval.json or lacks a split.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

COLUMNS = ("LBE ↓", "PBE ↓", "MBE ↓", "BA ↑", "emotion acc.", "retrieval ⟨spk, emo⟩", "style r (personal)")


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def row_cells(split_report: dict[str, Any], key: str = "model") -> list[str]:
    """The table cells of one split report (``key``: ``model`` or ``mean_pose_baseline``)."""
    m = split_report[key]
    cells = [_fmt(m["lbe"]), _fmt(m["pbe"]), _fmt(m["mbe"]), _fmt(m["ba"], 3)]
    if key != "model":
        return cells + ["–", "–", "–"]
    retrieval = split_report.get("retrieval", {}).get("cell_accuracy")
    style = split_report.get("style_recovery_vs_matrix", {}).get("pearson_r_speaker_specific")
    return cells + [_fmt(split_report["emotion"]["accuracy"], 3), _fmt(retrieval, 3), _fmt(style, 3)]


def build_table(runs: list[tuple[str, Path]], splits: list[str]) -> str:
    reports = {}
    for label, folder in runs:
        path = folder / "eval.json"
        if not path.is_file():
            raise FileNotFoundError(f"{label}: {path} not found (run train.py with eval_splits or --eval-only)")
        reports[label] = json.loads(path.read_text(encoding="utf-8"))
    lines = ["| split | model | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
    for split in splits:
        for label, _ in runs:
            if split not in reports[label]:
                raise KeyError(f"{label}: eval.json has no split {split!r} (has {sorted(reports[label])})")
            lines.append(f"| {split} | {label} | " + " | ".join(row_cells(reports[label][split])) + " |")
        first = reports[runs[0][0]][split]
        if "mean_pose_baseline" in first:
            lines.append(f"| {split} | mean pose | " + " | ".join(row_cells(first, "mean_pose_baseline")) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR", help="training output folders with eval.json")
    p.add_argument("--splits", nargs="+", default=["test", "test_speakers"])
    args = p.parse_args(argv)
    runs = []
    for item in args.runs:
        label, sep, folder = item.partition("=")
        if not sep:
            label, folder = Path(item).name, item
        runs.append((label, Path(folder)))
    try:
        print(build_table(runs, args.splits))
    except (FileNotFoundError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
