"""Training loaders for 3D-EmoStyle / EmoStyle-Synth: streaming, decoding, collation, pairs, voiceprints.

Why these pieces:

* :func:`load_clips` streams a datasets repo (or a local folder standing in for one) and decodes
  audio with soundfile, because datasets 5.x decodes ``Audio`` with torchcodec/FFmpeg, which these
  machines lack. It also enforces the frame contract the model asserts: T = ceil(N / 16000 × 30).
* :class:`BlendshapeCollator` pads audio and labels to the batch maximum with masks.
* :func:`iter_pairs` / :class:`PairDataset` yield (neutral, emotional) clips of the same speaker and
  sentence for the disentanglement loss, from a stream (grouping inside a bounded buffer) and
  optionally restricted to a saved pair index.
* :class:`VoiceprintCache` memoises an expensive waveform → voiceprint function per clip id and
  persists it as safetensors (no pickle).
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from .schema import EMOTIONS, FPS, NUM_BLENDSHAPES, SAMPLING_RATE, decode_audio_bytes, num_frames_for

NEUTRAL = EMOTIONS.index("neutral")


# ----------------------------------------------------------------------------------------------
# Files next to the shards (pairs.jsonl, style_matrix.json) from a folder or a Hub datasets repo
# ----------------------------------------------------------------------------------------------
def resolve_dataset_file(path_or_repo: str | Path, filename: str, revision: str | None = None) -> Path:
    """Local path of ``filename`` in a dataset folder, or downloaded from the Hub datasets repo."""
    local = Path(path_or_repo)
    if local.is_dir():
        path = local / filename
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        return path
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(str(path_or_repo), filename, repo_type="dataset", revision=revision))


def load_pair_index(path_or_repo: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """The neutral↔emotional pair index (``pairs.jsonl``: ``neutral_id``, ``emotional_id``, ``speaker``,
    ``sentence``, ``emotion``, ``intensity``, ``split``; both builders write it), optionally one split's."""
    lines = resolve_dataset_file(path_or_repo, "pairs.jsonl").read_text(encoding="utf-8").splitlines()
    pairs = [json.loads(line) for line in lines if line.strip()]
    return [p for p in pairs if split is None or p.get("split") == split]


def load_style_matrix(path_or_repo: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """EmoStyle-Synth's known style: (array (speakers, 8, 52), the rest of ``style_matrix.json``)."""
    doc = json.loads(resolve_dataset_file(path_or_repo, "style_matrix.json").read_text(encoding="utf-8"))
    style = np.asarray(doc.pop("style"), dtype=np.float32)
    return style, doc


# ----------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------
def decode_example(example: dict[str, Any], sampling_rate: int = SAMPLING_RATE,
                   frame_tolerance: int = 2, audio_root: str | Path | None = None) -> dict[str, Any]:
    """One schema row → ``waveform`` (N,) float32 at ``sampling_rate``, ``blendshapes`` (T, 52) float32.

    Label length is made exactly ``ceil(N / sr × 30)``: a mismatch of up to ``frame_tolerance``
    frames (rounding in a video pipeline) is fixed by trimming or repeating the last frame; a
    larger one means misaligned data and raises ValueError.

    Audio comes from the row's ``audio.bytes`` (our datasets always embed it). A row's ``audio.path``
    is data too, so it is never opened unless the caller names a dataset folder ``audio_root``: then
    a path (relative to it, or absolute) is read only if, resolved, it is a regular file inside
    ``audio_root`` (so ``/dev/zero``, ``../../etc/...`` or a symlink out are refused with ValueError).
    """
    audio = example["audio"]
    data = audio.get("bytes") if isinstance(audio, dict) else None
    if data is None:
        path = audio.get("path") if isinstance(audio, dict) else None
        if not path:
            raise ValueError(f"clip {example.get('id')!r} has no audio bytes or path")
        data = _read_audio_path(str(path), audio_root, example.get("id"))
    wav, sr = decode_audio_bytes(data)
    if sr != sampling_rate:
        import soxr

        wav = soxr.resample(wav, sr, sampling_rate).astype(np.float32)
    fps = int(example.get("fps", FPS))
    if fps != FPS:
        raise ValueError(f"clip {example.get('id')!r} is at {fps} fps; the model expects {FPS}")
    labels = np.asarray(example["blendshapes"], dtype=np.float32).reshape(-1, NUM_BLENDSHAPES)
    expected = num_frames_for(len(wav), sampling_rate, fps)
    diff = labels.shape[0] - expected
    if abs(diff) > frame_tolerance or labels.shape[0] == 0:
        raise ValueError(f"clip {example.get('id')!r}: {labels.shape[0]} label frames for {len(wav)} samples "
                         f"(expected {expected} = ceil(N/{sampling_rate}*{fps}))")
    if diff > 0:
        labels = labels[:expected]
    elif diff < 0:
        labels = np.concatenate([labels, np.repeat(labels[-1:], -diff, axis=0)])
    out = {k: v for k, v in example.items() if k not in ("audio", "blendshapes")}
    out.update(waveform=wav.astype(np.float32, copy=False), sampling_rate=sampling_rate, blendshapes=labels)
    return out


MAX_AUDIO_FILE_BYTES = 1 << 30
"""Largest audio file :func:`decode_example` reads from a row's ``audio.path`` (inside ``audio_root``)."""


def _read_audio_path(path: str, audio_root: str | Path | None, clip_id: Any) -> bytes:
    if audio_root is None:
        raise ValueError(
            f"clip {clip_id!r} has no audio bytes; its audio.path {path!r} is not read (rows are data, not a "
            "licence to open server files): pass audio_root=<dataset folder> to read paths inside it"
        )
    import stat

    root = Path(audio_root).resolve()
    target = (root / path).resolve()  # an absolute path replaces root, then must still lie inside it
    if root not in target.parents:
        raise ValueError(f"clip {clip_id!r}: audio.path {path!r} is outside the dataset folder {root}")
    try:
        st = target.stat()
    except OSError:
        raise ValueError(f"clip {clip_id!r}: audio.path {path!r} does not exist in the dataset folder") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"clip {clip_id!r}: audio.path {path!r} is not a regular file")
    if st.st_size > MAX_AUDIO_FILE_BYTES:
        raise ValueError(f"clip {clip_id!r}: audio.path {path!r} is larger than {MAX_AUDIO_FILE_BYTES} bytes")
    return target.read_bytes()


def load_clips(path_or_repo: str | Path, split: str = "train", streaming: bool = True, **kwargs: Any) -> Any:
    """Decoded clips of one split of a 3D-EmoStyle-schema dataset (local folder or Hub repo id).

    Streaming returns a ``datasets.IterableDataset`` (so ``.shuffle(buffer_size=...)``,
    ``.take``, DataLoader worker sharding keep working) whose examples carry ``waveform`` and
    ``blendshapes`` arrays (see :func:`decode_example`); non-streaming returns a ``Dataset``
    decoded lazily on access. ``kwargs`` go to ``datasets.load_dataset``.
    """
    import datasets

    ds = datasets.load_dataset(str(path_or_repo), split=split, streaming=streaming, **kwargs)
    if streaming:
        return ds.map(decode_example, remove_columns=["audio"])
    return ds.with_transform(_decode_batch)


def _decode_batch(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
    keys = list(batch)
    rows = [decode_example({k: batch[k][i] for k in keys}) for i in range(len(batch[keys[0]]))]
    return {k: [r[k] for r in rows] for k in rows[0]} if rows else {}


# ----------------------------------------------------------------------------------------------
# Collation
# ----------------------------------------------------------------------------------------------
class BlendshapeCollator:
    """Pads a list of decoded clips into model inputs.

    Returns the model's argument names: ``input_values`` (B, N) float32, ``attention_mask`` (B, N)
    long, ``labels`` (B, T, 52) float32, ``labels_mask`` (B, T) bool, ``emotion_labels`` (B,) long,
    ``voiceprint`` (B, D) when every clip has one; plus ``intensity_level`` (B,) long (the MEAD
    level — not the model's ``intensity`` α) and ``speaker``/``id``/``sentence`` lists.
    T = ceil(N / sr × fps), so it matches what the model computes from ``input_values``.

    ``max_seconds`` crops longer clips to a window starting on a 0.1 s boundary (1600 samples =
    3 frames, the smallest step where audio and labels stay aligned); random with ``seed``,
    from the start otherwise. ``normalize`` applies per-clip zero-mean unit-variance over the
    valid samples (what wav2vec2 feature extractors with ``do_normalize`` do).
    """

    def __init__(self, sampling_rate: int = SAMPLING_RATE, fps: int = FPS, max_seconds: float | None = None,
                 normalize: bool = False, seed: int | None = None) -> None:
        self.sampling_rate, self.fps, self.normalize = sampling_rate, fps, normalize
        self.step = sampling_rate // math.gcd(sampling_rate, fps)  # samples per aligned crop step
        self.max_samples = None
        if max_seconds is not None:
            self.max_samples = int(max_seconds * sampling_rate) // self.step * self.step
            if self.max_samples <= 0:
                raise ValueError(f"max_seconds={max_seconds} is shorter than one aligned step "
                                 f"({self.step / sampling_rate:.3f} s)")
        self.rng = np.random.default_rng(seed) if seed is not None else None

    def _crop(self, wav: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.max_samples is None or len(wav) <= self.max_samples:
            return wav, labels
        steps = (len(wav) - self.max_samples) // self.step
        start = int(self.rng.integers(steps + 1)) * self.step if self.rng is not None else 0
        wav = wav[start:start + self.max_samples]
        f0 = start * self.fps // self.sampling_rate
        return wav, labels[f0:f0 + num_frames_for(len(wav), self.sampling_rate, self.fps)]

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        if not examples:
            raise ValueError("cannot collate an empty batch")
        clips = [self._crop(np.asarray(e["waveform"], np.float32), np.asarray(e["blendshapes"], np.float32))
                 for e in examples]
        n_max = max(len(w) for w, _ in clips)
        t_max = num_frames_for(n_max, self.sampling_rate, self.fps)
        b = len(clips)
        # pad in numpy and hand the buffers to torch once: per-row tensor writes cost far more
        input_values = np.zeros((b, n_max), np.float32)
        attention_mask = np.zeros((b, n_max), np.int64)
        labels = np.zeros((b, t_max, NUM_BLENDSHAPES), np.float32)
        labels_mask = np.zeros((b, t_max), bool)
        for i, (wav, lab) in enumerate(clips):
            expected = num_frames_for(len(wav), self.sampling_rate, self.fps)
            if lab.shape != (expected, NUM_BLENDSHAPES):
                raise ValueError(f"clip {examples[i].get('id')!r}: labels {lab.shape} for {len(wav)} samples, "
                                 f"expected ({expected}, {NUM_BLENDSHAPES}); decode with decode_example first")
            if self.normalize:
                wav = (wav - wav.mean()) / np.sqrt(wav.var() + 1e-7)
            input_values[i, : len(wav)] = wav
            attention_mask[i, : len(wav)] = 1
            labels[i, :expected] = lab
            labels_mask[i, :expected] = True
        batch: dict[str, Any] = {
            "input_values": torch.from_numpy(input_values),
            "attention_mask": torch.from_numpy(attention_mask),
            "labels": torch.from_numpy(labels),
            "labels_mask": torch.from_numpy(labels_mask),
            "emotion_labels": torch.tensor([int(e["emotion"]) for e in examples], dtype=torch.long),
            "intensity_level": torch.tensor([int(e.get("intensity", 1)) for e in examples], dtype=torch.long),
            "speaker": [e.get("speaker", "") for e in examples],
            "id": [e.get("id", "") for e in examples],
            "sentence": [e.get("sentence", "") for e in examples],
        }
        if all(e.get("voiceprint") is not None for e in examples):
            batch["voiceprint"] = torch.as_tensor(np.stack([np.asarray(e["voiceprint"], np.float32)
                                                             for e in examples]))
        return batch


class PairCollator:
    """Collates (neutral, emotional) pairs for the disentanglement loss, in the model's names.

    The emotional clips form the batch (see :class:`BlendshapeCollator`); their neutral partners
    come as ``pair_input_values``/``pair_attention_mask`` (what ``PESTalkModel.forward`` takes for
    L_dis) and ``pair_labels``/``pair_labels_mask``/``pair_id``.
    """

    def __init__(self, collator: BlendshapeCollator | None = None) -> None:
        self.collator = collator or BlendshapeCollator()

    def __call__(self, pairs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator([p["emotional"] for p in pairs])
        neutral = self.collator([p["neutral"] for p in pairs])
        batch.update(pair_input_values=neutral["input_values"], pair_attention_mask=neutral["attention_mask"],
                     pair_labels=neutral["labels"], pair_labels_mask=neutral["labels_mask"], pair_id=neutral["id"])
        return batch


# ----------------------------------------------------------------------------------------------
# Pairs
# ----------------------------------------------------------------------------------------------
def iter_pairs(examples: Iterable[dict[str, Any]], buffer_size: int = 512,
               pair_index: Iterable[dict[str, Any]] | None = None) -> Iterator[dict[str, Any]]:
    """Yield ``{"neutral": ex, "emotional": ex}`` for clips of the same speaker and sentence.

    Works on a stream: clips are grouped by (speaker, sentence) while at most ``buffer_size``
    clips are held (oldest groups are dropped first), so a shuffled stream needs a buffer larger
    than its shuffle buffer to lose few pairs; EmoStyle-Synth shards keep groups together. With
    ``pair_index`` (rows with ``neutral_id``/``emotional_id``, e.g. :func:`load_pair_index`) only the
    listed pairs are yielded. Each emotional clip is paired once.
    """
    if buffer_size < 2:
        raise ValueError("buffer_size must be >= 2")
    allowed = {(p["neutral_id"], p["emotional_id"]) for p in pair_index} if pair_index is not None else None
    groups: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
    held = 0

    def ok(neutral: dict[str, Any], emotional: dict[str, Any]) -> bool:
        return allowed is None or (neutral.get("id"), emotional.get("id")) in allowed

    for ex in examples:
        key = (ex["speaker"], ex["sentence"])
        group = groups.setdefault(key, {"neutral": None, "pending": []})
        groups.move_to_end(key)
        if int(ex["emotion"]) == NEUTRAL:
            if group["neutral"] is None:
                held += 1
            group["neutral"] = ex
            still = []
            for emo in group["pending"]:
                if ok(ex, emo):
                    held -= 1
                    yield {"neutral": ex, "emotional": emo}
                else:
                    still.append(emo)
            group["pending"] = still
        elif group["neutral"] is not None and ok(group["neutral"], ex):
            yield {"neutral": group["neutral"], "emotional": ex}
        else:
            group["pending"].append(ex)
            held += 1
        while held > buffer_size and groups:
            _, old = groups.popitem(last=False)
            held -= len(old["pending"]) + (old["neutral"] is not None)


def pair_indices(ids: Sequence[str], pair_index: Iterable[dict[str, Any]]) -> list[tuple[int, int]]:
    """(neutral row, emotional row) index pairs of a map-style dataset from its ``id`` column."""
    where = {clip_id: i for i, clip_id in enumerate(ids)}
    return [(where[p["neutral_id"]], where[p["emotional_id"]]) for p in pair_index
            if p["neutral_id"] in where and p["emotional_id"] in where]


def _torch_iterable_base() -> type:
    try:
        from torch.utils.data import IterableDataset

        return IterableDataset
    except ImportError:  # pragma: no cover - torch is a dependency
        return object


class PairDataset(_torch_iterable_base()):  # type: ignore[misc]
    """A torch ``IterableDataset`` of (neutral, emotional) pairs over decoded clips.

    ``clips`` is re-iterated on every epoch (e.g. :func:`load_clips` output, optionally shuffled).
    A ``datasets.IterableDataset`` splits its shards across DataLoader workers by itself.
    """

    def __init__(self, clips: Iterable[dict[str, Any]], buffer_size: int = 512,
                 pair_index: Iterable[dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.clips, self.buffer_size = clips, buffer_size
        self.pair_index = list(pair_index) if pair_index is not None else None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter_pairs(self.clips, self.buffer_size, self.pair_index)


# ----------------------------------------------------------------------------------------------
# Voiceprints
# ----------------------------------------------------------------------------------------------
class VoiceprintCache:
    """Per-clip voiceprints computed once by ``embed(waveform, sampling_rate) -> (D,)``, kept by id.

    Use as a stream transform (``clips.map(cache)`` adds ``voiceprint``) or call
    :meth:`get`. :meth:`save` writes safetensors (one tensor per clip id); a cache built with an
    existing ``path`` starts from its contents. Filling happens in the process that calls it, so
    with DataLoader workers fill it in a first pass (or per worker) and save it.
    """

    def __init__(self, embed: Callable[[np.ndarray, int], Any] | None = None, path: str | Path | None = None) -> None:
        self.embed, self.path = embed, Path(path) if path is not None else None
        self._store: dict[str, np.ndarray] = {}
        if self.path is not None and self.path.exists():
            from safetensors.numpy import load_file

            self._store = dict(load_file(str(self.path)))

    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, clip_id: str) -> bool:
        return clip_id in self._store

    def get(self, clip_id: str, waveform: np.ndarray | None = None, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
        """The cached voiceprint of ``clip_id``, computing it from ``waveform`` if needed."""
        if clip_id not in self._store:
            if self.embed is None or waveform is None:
                raise KeyError(f"no voiceprint cached for {clip_id!r} and nothing to compute it with")
            vec = self.embed(np.asarray(waveform, np.float32), sampling_rate)
            if hasattr(vec, "detach"):
                vec = vec.detach().cpu().numpy()
            vec = np.asarray(vec, np.float32).reshape(-1)
            if not np.all(np.isfinite(vec)):
                raise ValueError(f"voiceprint of {clip_id!r} is not finite")
            self._store[clip_id] = vec
        return self._store[clip_id]

    def __call__(self, example: dict[str, Any]) -> dict[str, Any]:
        example["voiceprint"] = self.get(example["id"], example.get("waveform"),
                                         int(example.get("sampling_rate", SAMPLING_RATE)))
        return example

    def save(self, path: str | Path | None = None) -> Path:
        """Write the cache as safetensors (atomically) and return the path."""
        from safetensors.numpy import save_file

        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("no path given and the cache was created without one")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        save_file({k: np.ascontiguousarray(v) for k, v in self._store.items()}, str(tmp))
        tmp.replace(target)
        return target
