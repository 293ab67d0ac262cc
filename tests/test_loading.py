"""Training loaders on a generated EmoStyle-Synth folder standing in for a Hub datasets repo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pestalk_hf.data.loading import (
    BlendshapeCollator,
    PairCollator,
    PairDataset,
    VoiceprintCache,
    decode_example,
    iter_pairs,
    load_clips,
    load_pair_index,
    pair_indices,
)
from pestalk_hf.data.schema import encode_flac, num_frames_for

from .test_synth import small_synth  # noqa: F401  (session fixture: the generated dataset)


@pytest.fixture(scope="module")
def train_clips(small_synth: Path) -> list[dict]:  # noqa: F811
    return list(load_clips(small_synth, "train", streaming=True))


def test_streaming_and_map_style_loading_decode_the_same(small_synth: Path, train_clips: list[dict]):  # noqa: F811
    ex = train_clips[0]
    assert "audio" not in ex and ex["waveform"].dtype == np.float32 and ex["sampling_rate"] == 16000
    assert ex["blendshapes"].dtype == np.float32
    assert ex["blendshapes"].shape == (num_frames_for(len(ex["waveform"])), 52)
    assert isinstance(ex["emotion"], int) and ex["speaker"] and ex["sentence"] and ex["id"]
    table = load_clips(small_synth, "train", streaming=False)
    assert len(table) == len(train_clips) == 16
    row = table[3]
    np.testing.assert_array_equal(row["waveform"], train_clips[3]["waveform"])
    np.testing.assert_array_equal(row["blendshapes"], train_clips[3]["blendshapes"])


def test_regenerating_a_folder_in_place_is_not_served_from_a_stale_cache(tmp_path: Path):
    from pestalk_hf.data.synth import SynthConfig, generate

    cfg = SynthConfig(num_speakers=1, num_sentences=3, emotions=("neutral",), seed=0)
    generate(cfg, tmp_path / "ds")
    before = load_clips(tmp_path / "ds", "train", streaming=False)[0]["waveform"]
    generate(SynthConfig(**{**cfg.__dict__, "seed": 1}), tmp_path / "ds")  # other speaker voice
    after = load_clips(tmp_path / "ds", "train", streaming=False)[0]["waveform"]
    streamed = next(iter(load_clips(tmp_path / "ds", "train")))["waveform"]
    assert np.array_equal(after, streamed) and not np.array_equal(before, after)


def test_decode_example_enforces_the_frame_contract():
    wav = np.sin(np.arange(16000) / 10.0).astype(np.float32) * 0.3  # 1 s → 30 frames
    base = {"id": "x", "audio": {"bytes": encode_flac(wav), "path": "x.flac"}, "fps": 30, "emotion": 0}
    for frames in (29, 30, 32):  # off by up to 2 frames: repaired
        ex = decode_example({**base, "blendshapes": np.full((frames, 52), 0.5).tolist()})
        assert ex["blendshapes"].shape == (30, 52)
    with pytest.raises(ValueError, match="expected 30"):
        decode_example({**base, "blendshapes": np.zeros((40, 52)).tolist()})
    with pytest.raises(ValueError, match="fps"):
        decode_example({**base, "fps": 25, "blendshapes": np.zeros((30, 52)).tolist()})
    one_second_22k = np.sin(np.arange(22050) / 10.0).astype(np.float32) * 0.3
    wav22 = decode_example({**base, "audio": {"bytes": encode_flac(one_second_22k, 22050), "path": None},
                            "blendshapes": np.zeros((30, 52)).tolist()})  # resampled to 16 kHz
    assert len(wav22["waveform"]) == 16000 and wav22["sampling_rate"] == 16000


def test_collator_pads_and_masks(train_clips: list[dict]):
    clips = train_clips[:5]
    batch = BlendshapeCollator()(clips)
    lengths = [len(c["waveform"]) for c in clips]
    frames = [len(c["blendshapes"]) for c in clips]
    b, n = batch["input_values"].shape
    assert (b, n) == (5, max(lengths)) and batch["input_values"].dtype == torch.float32
    assert batch["attention_mask"].dtype == torch.long and batch["attention_mask"].sum(1).tolist() == lengths
    assert batch["labels"].shape == (5, num_frames_for(n), 52) and batch["labels"].shape[1] == max(frames)
    assert batch["labels_mask"].dtype == torch.bool and batch["labels_mask"].sum(1).tolist() == frames
    for i, c in enumerate(clips):
        np.testing.assert_array_equal(batch["labels"][i, : frames[i]].numpy(), c["blendshapes"])
        assert torch.all(batch["labels"][i, frames[i]:] == 0) and torch.all(batch["input_values"][i, lengths[i]:] == 0)
    assert batch["emotion_labels"].tolist() == [c["emotion"] for c in clips]
    assert batch["intensity_level"].tolist() == [c["intensity"] for c in clips]
    assert batch["speaker"] == [c["speaker"] for c in clips] and "voiceprint" not in batch
    with pytest.raises(ValueError, match="empty"):
        BlendshapeCollator()([])


def test_collator_crops_keep_audio_and_labels_aligned(train_clips: list[dict]):
    clip = train_clips[1]
    crop = BlendshapeCollator(max_seconds=1.0, seed=4)
    batch = crop([clip])
    assert batch["input_values"].shape == (1, 16000) and batch["labels"].shape == (1, 30, 52)
    wav = torch.from_numpy(clip["waveform"])
    starts = [s for s in range(0, len(wav) - 16000 + 1, 1600)
              if torch.equal(wav[s:s + 16000], batch["input_values"][0])]
    assert len(starts) == 1  # the window starts on a 0.1 s boundary ...
    f0 = starts[0] * 30 // 16000
    np.testing.assert_array_equal(batch["labels"][0].numpy(), clip["blendshapes"][f0:f0 + 30])  # ... labels follow
    normalized = BlendshapeCollator(normalize=True)([clip])["input_values"][0]
    assert abs(float(normalized.mean())) < 1e-3 and abs(float(normalized.std()) - 1) < 1e-2
    with pytest.raises(ValueError, match="aligned step"):
        BlendshapeCollator(max_seconds=0.01)


def test_pairs_from_a_stream_match_the_pair_index(small_synth: Path, train_clips: list[dict]):  # noqa: F811
    index = load_pair_index(small_synth, "train")
    expected = {(p["neutral_id"], p["emotional_id"]) for p in index}
    got = [(p["neutral"]["id"], p["emotional"]["id"]) for p in iter_pairs(train_clips)]
    assert len(got) == len(set(got)) and set(got) == expected
    # shuffled stream: grouping inside the buffer still finds every pair
    shuffled = load_clips(small_synth, "train").shuffle(seed=1, buffer_size=8)
    assert {(p["neutral"]["id"], p["emotional"]["id"]) for p in iter_pairs(shuffled, buffer_size=64)} == expected
    # a restricting index keeps only the listed pairs
    some = index[:3]
    assert {(p["neutral"]["id"], p["emotional"]["id"]) for p in iter_pairs(train_clips, pair_index=some)} == {
        (p["neutral_id"], p["emotional_id"]) for p in some}
    # a tiny buffer loses pairs but never makes a wrong one
    reversed_stream = train_clips[::-1]  # neutral last: emotional clips must wait in the buffer
    small = list(iter_pairs(reversed_stream, buffer_size=2))
    assert len(small) < len(expected)
    assert all(p["neutral"]["speaker"] == p["emotional"]["speaker"] for p in small)
    ids = [c["id"] for c in train_clips]
    assert sorted(pair_indices(ids, index)) == sorted((ids.index(a), ids.index(b)) for a, b in expected)


def test_pair_dataset_feeds_a_dataloader(small_synth: Path):  # noqa: F811
    pairs = PairDataset(load_clips(small_synth, "validation"), pair_index=load_pair_index(small_synth, "validation"))
    loader = torch.utils.data.DataLoader(pairs, batch_size=4, collate_fn=PairCollator())
    batches = list(loader)
    assert sum(len(b["id"]) for b in batches) == 14  # 2 speakers × 1 sentence × 7 emotions
    first = batches[0]
    assert torch.all(first["emotion_labels"] != 0) and first["labels"].shape[0] == 4
    for emotional, neutral in zip(first["id"], first["pair_id"]):
        # ids are speaker-sentence-emotion-level: the partner is the same speaker and sentence, neutral
        assert emotional.split("-")[:2] == neutral.split("-")[:2] and neutral.split("-")[2] == "neutral"
    n = first["pair_attention_mask"].sum(1)
    assert first["pair_input_values"].shape[1] == int(n.max())
    assert first["pair_labels_mask"].sum(1).tolist() == [num_frames_for(int(k)) for k in n]


def _band_energies(waveform: np.ndarray, sampling_rate: int) -> np.ndarray:
    """A cheap, real voice descriptor: mean log energy in 16 spectral bands."""
    spec = np.abs(np.fft.rfft(waveform[: sampling_rate]))
    return np.log(np.array([b.mean() for b in np.array_split(spec, 16)]) + 1e-6)


def test_voiceprint_cache_computes_once_and_persists(small_synth: Path, tmp_path: Path):  # noqa: F811
    calls = []

    def embed(waveform: np.ndarray, sampling_rate: int) -> np.ndarray:
        calls.append(1)
        return _band_energies(waveform, sampling_rate)

    cache = VoiceprintCache(embed)
    first = [ex["voiceprint"] for ex in load_clips(small_synth, "test").map(cache)]
    assert len(calls) == len(first) == len(cache) == 16 and first[0].shape == (16,)
    again = [ex["voiceprint"] for ex in load_clips(small_synth, "test").map(cache)]
    assert len(calls) == 16 and all(np.array_equal(a, b) for a, b in zip(first, again))
    path = cache.save(tmp_path / "voiceprints.safetensors")
    assert path.read_bytes()[:8] != b"\x80\x04\x95"  # not a pickle
    reloaded = VoiceprintCache(path=path)
    clips = list(load_clips(small_synth, "test").map(reloaded))
    assert all(np.array_equal(c["voiceprint"], f) for c, f in zip(clips, first))
    batch = BlendshapeCollator()(clips[:3])
    assert batch["voiceprint"].shape == (3, 16)
    with pytest.raises(KeyError, match="no voiceprint"):
        reloaded.get("missing-id")


def test_collated_pairs_feed_the_model(small_synth: Path, tiny_config):  # noqa: F811
    """The loader's names and T = ceil(N/16000*30) are exactly what PESTalkModel.forward checks."""
    from pestalk_hf.modeling.modeling_pestalk import PESTalkModel

    model = PESTalkModel(tiny_config).train()
    pairs = list(iter_pairs(load_clips(small_synth, "train")))[:3]
    batch = PairCollator(BlendshapeCollator(max_seconds=1.5, seed=0))(pairs)
    names = ("input_values", "attention_mask", "labels", "labels_mask", "emotion_labels",
             "pair_input_values", "pair_attention_mask")
    out = model(**{k: batch[k] for k in names})
    assert out.blendshapes.shape == batch["labels"].shape and torch.isfinite(out.loss)
    out.loss.backward()
