"""hub_scripts/animate_dataset.py logic: a streamed dataset in, a dataset of animations out."""

from __future__ import annotations

import datasets
import numpy as np

from pestalk_hf.batch_animation import animate_dataset
from pestalk_hf.data.synth import SynthConfig, generate

from .test_pipeline import tiny_model_dir  # noqa: F401  (fixture)


def test_animate_a_streamed_dataset_into_a_dataset(tmp_path, tiny_model_dir):  # noqa: F811
    data = tmp_path / "synth"
    generate(SynthConfig(num_speakers=2, num_sentences=2, emotions=("neutral", "happy"), seed=1), data)
    out = tmp_path / "anim"
    shard = animate_dataset(str(data), out, split="train", model=str(tiny_model_dir), max_clips=3, blinks=True)
    assert shard is not None and shard.exists()
    rows = list(datasets.load_dataset(str(out), split="train", streaming=True))
    source = {r["id"]: r for r in datasets.load_dataset(str(data), split="train", streaming=True).take(3)}
    assert [r["id"] for r in rows] == list(source)
    for row in rows:
        weights = np.asarray(row["blendshapes"], dtype=np.float32)
        assert weights.shape == (len(source[row["id"]]["blendshapes"]), 52)  # same frame count as the labels
        assert 0 <= weights.min() and weights.max() <= 1 and row["fps"] == 30
        assert abs(sum(row["emotion_probabilities"]) - 1) < 1e-4 and row["style_speaker"] in ("ann", "bob")
    # a rerun does not redo a finished shard
    assert animate_dataset(str(data), out, split="train", model=str(tiny_model_dir), max_clips=3) is None
