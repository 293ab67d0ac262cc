"""Animate a whole (streamed) audio dataset, one shard of results per process.

Runs under ``accelerate launch`` on any number of GPUs/nodes: each process takes its part of the
stream with ``datasets.distributed.split_dataset_by_node`` and writes
``OUTPUT/data/<split>-<rank>-of-<world>.parquet`` atomically, so the output folder is itself a
``datasets`` repo (``load_dataset(OUTPUT, streaming=True)``). A finished shard is not redone on a rerun.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

RESULT_COLUMNS = ("id", "blendshapes", "fps", "emotion", "emotion_probabilities", "style_speaker",
                  "style_emotion", "style_similarity")


def _audio_bytes(audio: Any) -> Any:
    """Audio cell (Audio(decode=False) dict, bytes or path) → something :func:`load_audio` takes."""
    if isinstance(audio, dict):
        if audio.get("bytes"):
            return audio["bytes"]
        if audio.get("path"):
            return audio["path"]
        if "array" in audio:
            return audio
    return audio


def animate_dataset(
    dataset: str,
    output: str | Path,
    split: str = "train",
    model: str | None = None,
    audio_column: str = "audio",
    id_column: str = "id",
    max_clips: int | None = None,
    **pipeline_params: Any,
) -> Path | None:
    """Animate ``dataset[split]`` into ``output``; returns this process's shard path (None if skipped)."""
    import datasets
    from accelerate import Accelerator
    from datasets.distributed import split_dataset_by_node
    from tqdm.auto import tqdm

    from .audio import AudioError
    from .exporters import atomic_path
    from .pipeline import load_pipeline

    acc = Accelerator()
    shard = Path(output) / "data" / f"{split}-{acc.process_index:05d}-of-{acc.num_processes:05d}.parquet"
    if shard.exists():
        acc.print(f"{shard} exists: skipping (delete it to redo)")
        return None
    ds = datasets.load_dataset(dataset, split=split, streaming=True)
    if isinstance(ds.features.get(audio_column) if ds.features else None, datasets.Audio):
        ds = ds.cast_column(audio_column, datasets.Audio(decode=False))
    ds = split_dataset_by_node(ds, rank=acc.process_index, world_size=acc.num_processes)
    if max_clips is not None:
        ds = ds.take(max_clips)
    pipe = load_pipeline(model, device=acc.device)
    rows, failures = [], 0
    for i, example in enumerate(tqdm(ds, desc=f"animating (rank {acc.process_index})", disable=not acc.is_local_main_process)):
        clip_id = str(example.get(id_column, f"{acc.process_index}-{i}"))
        try:
            anim = pipe(_audio_bytes(example[audio_column]), **pipeline_params)
        except AudioError as err:
            failures += 1
            acc.print(f"skipped {clip_id}: {err}")
            continue
        probs = anim.emotion_probabilities or {}
        style = anim.style or {}
        rows.append({
            "id": clip_id,
            "blendshapes": anim.weights.astype(np.float32).tolist(),
            "fps": int(anim.fps),
            "emotion": max(probs, key=probs.get) if probs else None,
            "emotion_probabilities": [float(probs[e]) for e in pipe.model.config.emotions] if probs else [],
            "style_speaker": style.get("speaker"),
            "style_emotion": style.get("emotion"),
            "style_similarity": float(style.get("similarity") or 0.0),
        })
    shard.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(shard, ".parquet") as tmp:
        datasets.Dataset.from_list(rows, features=result_features()).to_parquet(str(tmp))
    acc.print(f"wrote {len(rows)} animations to {shard} ({failures} skipped)")
    acc.wait_for_everyone()
    return shard


def result_features():
    from datasets import Features, Sequence, Value

    return Features({
        "id": Value("string"),
        "blendshapes": Sequence(Sequence(Value("float32"), length=52)),
        "fps": Value("int32"),
        "emotion": Value("string"),
        "emotion_probabilities": Sequence(Value("float32")),
        "style_speaker": Value("string"),
        "style_emotion": Value("string"),
        "style_similarity": Value("float32"),
    })
