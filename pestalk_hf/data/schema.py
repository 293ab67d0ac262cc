"""The one row schema shared by 3D-EmoStyle (from videos) and EmoStyle-Synth (from eSpeak NG).

One row per clip. Audio is stored as 16 kHz mono FLAC bytes in an ``Audio(decode=False)`` column,
because datasets 5.x decodes ``Audio`` with torchcodec/FFmpeg, which these machines do not have;
:func:`decode_audio_bytes` decodes with soundfile instead.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import soundfile as sf
from datasets import Audio, ClassLabel, Features, Sequence, Value

from ..audio import decode_to_mono
from ..modeling.configuration_pestalk import ARKIT_BLENDSHAPE_NAMES, MEAD_EMOTIONS

SAMPLING_RATE = 16000
FPS = 30
NUM_BLENDSHAPES = len(ARKIT_BLENDSHAPE_NAMES)
EMOTIONS: tuple[str, ...] = MEAD_EMOTIONS

FEATURES = Features(
    {
        "id": Value("string"),
        "audio": Audio(sampling_rate=SAMPLING_RATE, decode=False),
        # (T, 52) float32 in ARKit alphabetical order; a list of rows so T may vary per clip.
        "blendshapes": Sequence(Sequence(Value("float32"), length=NUM_BLENDSHAPES)),
        "fps": Value("int32"),
        "speaker": Value("string"),
        "emotion": ClassLabel(names=list(EMOTIONS)),
        "intensity": Value("int32"),
        "sentence": Value("string"),
        "source": Value("string"),
    }
)


def encode_flac(waveform: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> bytes:
    """Encode a mono float waveform in [-1, 1] as 16-bit FLAC bytes."""
    buf = io.BytesIO()
    sf.write(buf, np.asarray(waveform, dtype=np.float32), sampling_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


MAX_CLIP_SECONDS = 600.0
"""Longest clip :func:`decode_audio_bytes` decodes by default (dataset rows are sentences, not hours)."""


def decode_audio_bytes(data: bytes, max_seconds: float | None = MAX_CLIP_SECONDS) -> tuple[np.ndarray, int]:
    """Decode a row's audio bytes (FLAC/WAV/…) → ``((N,) float32 mono waveform, 16000)``.

    Row bytes are untrusted (a downloaded dataset): :func:`pestalk_hf.audio.decode_to_mono` reads
    the header and refuses a rate, channel count or length over the limits before decoding anything,
    then decodes block by block (mixing to mono and resampling to 16 kHz per block), so a tiny
    upload declaring hours of 192 kHz × 8-channel audio costs nothing. Raises
    :class:`pestalk_hf.audio.AudioError` (a ``ValueError``).
    """
    return decode_to_mono(data, max_seconds=max_seconds, what="the row's audio bytes"), SAMPLING_RATE


def make_row(
    *,
    id: str,
    waveform: np.ndarray,
    blendshapes: np.ndarray,
    speaker: str,
    emotion: str,
    intensity: int = 1,
    sentence: str = "",
    source: str = "",
    fps: int = FPS,
) -> dict[str, Any]:
    """Build one row (validated) ready for :data:`FEATURES`."""
    blendshapes = np.asarray(blendshapes, dtype=np.float32)
    if blendshapes.ndim != 2 or blendshapes.shape[1] != NUM_BLENDSHAPES:
        raise ValueError(f"blendshapes must be (T, {NUM_BLENDSHAPES}), got {blendshapes.shape}")
    if emotion not in EMOTIONS:
        raise ValueError(f"unknown emotion {emotion!r}; expected one of {EMOTIONS}")
    return {
        "id": id,
        "audio": {"bytes": encode_flac(waveform), "path": f"{id}.flac"},
        "blendshapes": blendshapes.tolist(),
        "fps": int(fps),
        "speaker": speaker,
        "emotion": EMOTIONS.index(emotion),
        "intensity": int(intensity),
        "sentence": sentence,
        "source": source,
    }


def write_parquet_shard(rows: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Write rows to one Parquet shard atomically (temp name, then rename). Returns the row count.

    An interrupted write never leaves a file at ``path``, so resumable builders can treat an
    existing shard as finished.
    """
    from datasets import Dataset

    rows = list(rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    ds = Dataset.from_list(rows, features=FEATURES) if rows else Dataset.from_dict(
        {k: [] for k in FEATURES}, features=FEATURES
    )
    ds.to_parquet(str(tmp))
    tmp.replace(path)
    return len(rows)


def num_frames_for(num_samples: int, sampling_rate: int = SAMPLING_RATE, fps: int = FPS) -> int:
    """T = ceil(N / sampling_rate * fps) in exact integer arithmetic: the label frame count the
    model expects for N audio samples (float rounding would be off by one at exact multiples)."""
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    return (num_samples * fps + sampling_rate - 1) // sampling_rate
