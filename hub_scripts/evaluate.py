#!/usr/bin/env python
"""Evaluate predicted blendshape tracks against a 3D-EmoStyle / EmoStyle-Synth split.

    python hub_scripts/evaluate.py --predictions preds/ --references data/emostyle_synth \
        --split test --avatar ../shared/assets/avatars/ict_face_arkit52.glb --output metrics.json

``--predictions``: a folder of ``<clip id>.npz`` files holding ``weights`` (T, 52), or one ``.npz``
whose keys are clip ids and values (T, 52) arrays. ``--references``: a dataset folder or Hub repo
read with ``datasets.load_dataset(..., streaming=True)`` (columns ``id``, ``blendshapes``, and
``speaker``/``emotion`` when present). ``--style-matrix``: EmoStyle-Synth's known styles (found
next to the data by default) for ``style_recovery_vs_matrix``. ``--avatar``: an ARKit-rigged GLB for the vertex metrics
(LVE/EVE/FDD); without it only LBE/PBE/MBE/BA are computed. Definitions: docs/METRICS.md and
:mod:`pestalk_hf.metrics`; the logic lives there (:func:`pestalk_hf.metrics.evaluate_predictions`).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pestalk_hf.metrics import evaluate_predictions

__all__ = ["evaluate_predictions", "load_predictions", "iter_references", "main"]

REFERENCE_COLUMNS = ("id", "blendshapes", "speaker", "emotion")


def load_predictions(path: str | Path) -> dict[str, np.ndarray]:
    """Clip id → (T, 52) weights from a folder of ``<id>.npz`` (key ``weights``), one ``.npz``, or the
    animations dataset ``hub_scripts/animate_dataset.py`` writes (Parquet shards with ``id`` and ``blendshapes``)."""
    path = Path(path)
    out: dict[str, np.ndarray] = {}
    shards = sorted(path.glob("data/*.parquet")) if path.is_dir() else []
    if shards:
        import pyarrow.parquet as pq

        for shard in shards:
            table = pq.read_table(shard, columns=["id", "blendshapes"])
            for clip_id, weights in zip(table.column("id").to_pylist(), table.column("blendshapes").to_pylist()):
                out[str(clip_id)] = np.asarray(weights, dtype=np.float32).reshape(-1, 52)
    elif path.is_dir():
        for file in sorted(path.glob("*.npz")):
            with np.load(file, allow_pickle=False) as data:
                if "weights" not in data:
                    raise ValueError(f"{file} has no 'weights' array (keys: {list(data.keys())})")
                out[file.stem] = np.asarray(data["weights"], dtype=np.float32)
    elif path.suffix == ".npz" and path.is_file():
        with np.load(path, allow_pickle=False) as data:
            out = {key: np.asarray(data[key], dtype=np.float32) for key in data.keys()}
    else:
        raise ValueError(f"--predictions must be a folder of .npz files, one .npz file or an animate_dataset.py "
                         f"output folder: {path}")
    if not out:
        raise ValueError(f"no predictions found in {path}")
    return out


def iter_references(references: str, split: str) -> tuple[Iterator[Mapping[str, Any]], list[str] | None]:
    """Stream the reference rows (only the columns the metrics need, so audio is never decoded).

    Returns the row iterator and the emotion names when ``emotion`` is a ClassLabel.
    """
    from datasets import load_dataset

    ds = load_dataset(references, split=split, streaming=True)
    columns = [c for c in REFERENCE_COLUMNS if ds.features is None or c in ds.features]
    ds = ds.select_columns(columns)
    emotion_feature = ds.features.get("emotion") if ds.features is not None else None
    names = list(getattr(emotion_feature, "names", []) or []) or None
    return iter(ds), names


def _json_safe(value: Any) -> Any:
    """NaN → None, so the output is strict JSON."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--predictions", required=True, help="folder of <id>.npz (key 'weights'), one .npz, "
                        "or an animate_dataset.py output folder")
    parser.add_argument("--references", required=True, help="dataset folder or Hub repo id")
    parser.add_argument("--split", default="test")
    parser.add_argument("--avatar", default=None, help="ARKit-rigged GLB for LVE/EVE/FDD")
    parser.add_argument("--output", default="metrics.json")
    parser.add_argument("--frame-weighted", action="store_true", help="pool frames over clips (FaceFormer-style)")
    parser.add_argument(
        "--style-matrix", default=None,
        help="EmoStyle-Synth style_matrix.json for style recovery (default: <references>/style_matrix.json if present)",
    )
    args = parser.parse_args(argv)
    style_path = Path(args.style_matrix) if args.style_matrix else Path(args.references) / "style_matrix.json"
    if args.style_matrix and not style_path.is_file():
        raise SystemExit(f"--style-matrix {style_path} does not exist")
    style_matrix = json.loads(style_path.read_text()) if style_path.is_file() else None

    predictions = load_predictions(args.predictions)
    rows, emotion_names = iter_references(args.references, args.split)
    result = evaluate_predictions(
        predictions, rows, args.avatar, emotion_names=emotion_names, style_matrix=style_matrix,
        frame_weighted=args.frame_weighted,
    )
    result["config"] = {
        "predictions": str(args.predictions),
        "references": args.references,
        "split": args.split,
        "avatar": args.avatar,
        "frame_weighted": args.frame_weighted,
        "style_matrix": str(style_path) if style_matrix is not None else None,
        "definitions": "docs/METRICS.md",
    }
    result = _json_safe(result)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["metrics"], indent=2))
    return result


if __name__ == "__main__":
    main()
