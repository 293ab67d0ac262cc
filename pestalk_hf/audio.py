"""Audio input at the package boundary: anything a user hands us → 16 kHz mono float32 in [-1, 1].

Every entry point (pipeline, CLI, Space, dataset builders, voiceprint backends) goes through
:func:`load_audio`, so the model only ever sees one kind of waveform and users get one kind of error
(:class:`AudioError`, a ``ValueError``) with a message that says what is wrong with *their* input.

Decoding uses libraries that ship their own codecs, never an external ``ffmpeg`` binary:

* ``soundfile`` (libsndfile) first: WAV (8/16/24/32-bit int, 32/64-bit float), FLAC, OGG/Vorbis and,
  with libsndfile >= 1.1, MP3;
* PyAV (``av``, bundled FFmpeg libraries) as the fallback: MP3, AAC/M4A, and the audio track of
  MP4/MOV/MKV videos.

Resampling uses soxr (high-quality polyphase, what librosa uses by default); channels are mixed to
mono by averaging (not by FFmpeg's downmix matrix), so a 6-channel file counts every channel equally.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

import numpy as np

SAMPLING_RATE = 16000
"""Output sampling rate of :func:`load_audio` (Hz); the model's input rate."""

FPS = 30
MIN_SAMPLES = -(-SAMPLING_RATE // FPS)  # ceil(16000 / 30) = 534
"""Shortest accepted clip: one 30 fps animation frame (534 samples = 33.4 ms at 16 kHz)."""

SILENCE_PEAK = 1e-4
"""Clips whose absolute peak is below this (-80 dBFS, about 3 LSB of 16-bit audio) are rejected as
silence: no voice can drive a face from them, and voiceprints of silence are meaningless."""

MAX_CHANNELS = 16
"""Upper bound on the channel count of a 2-D array; used to tell the channel axis from the time axis."""

AudioSource = Union[str, os.PathLike, bytes, bytearray, np.ndarray, Mapping, Any]


class AudioError(ValueError):
    """The audio given to :func:`load_audio` cannot be used (unreadable, empty, silent, too short, ...)."""


def load_audio(
    source: AudioSource,
    sampling_rate: int | None = None,
    *,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Load ``source`` as a 16 kHz mono float32 waveform in [-1, 1].

    Args:
        source: one of
            * a path (``str`` / ``os.PathLike``) to an audio file or a video with an audio track;
            * encoded file contents as ``bytes``;
            * a numpy array or torch tensor of samples (``sampling_rate`` required). Shapes: ``(N,)``;
              or 2-D, where the **shorter axis is the channel axis** and must have at most
              :data:`MAX_CHANNELS` entries, so both ``(N, C)`` (soundfile) and ``(C, N)``
              (torch/torchaudio) work. Integer samples are scaled to [-1, 1] by their type's full
              range (``int16 / 32768``; unsigned types are centred first); floats are taken as is;
            * a dict ``{"array" | "raw": samples, "sampling_rate": sr}`` (transformers / datasets
              decoded audio) or ``{"bytes": ..., "path": ...}`` (datasets ``Audio(decode=False)``).
        sampling_rate: rate of raw samples (arrays/tensors). Ignored for encoded sources (files, bytes),
            whose header states the rate; the output is always :data:`SAMPLING_RATE`.
        max_seconds: if given, reject clips longer than this (checked before resampling).

    Returns:
        ``np.ndarray`` of shape ``(num_samples,)``, dtype float32, peak <= 1. Float input that
        exceeds [-1, 1] is peak-normalised rather than clipped, so its waveform shape is kept.

    Raises:
        AudioError: undecodable/corrupt/empty input, no audio track, NaN/Inf samples, silence
            (peak < :data:`SILENCE_PEAK`), shorter than :data:`MIN_SAMPLES` after resampling,
            longer than ``max_seconds``, unsupported dtype or number of dimensions.
        FileNotFoundError: ``source`` is a path that does not exist.
    """
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0, got {max_seconds!r}")
    samples, rate = _read_source(source, sampling_rate)
    return _finish(samples, rate, max_seconds)


# --------------------------------------------------------------------------------------------------
# source dispatch
# --------------------------------------------------------------------------------------------------


def _read_source(source: AudioSource, sampling_rate: int | None) -> tuple[np.ndarray, int]:
    """Return (float32 samples shaped (N, C), rate) for any supported source kind."""
    if isinstance(source, (str, os.PathLike)):
        return _decode_file(Path(source))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode_bytes(bytes(source), what="audio bytes")
    if isinstance(source, Mapping):
        return _read_mapping(source, sampling_rate)
    if isinstance(source, np.ndarray) or _is_torch_tensor(source):
        return _to_channels_last(_to_float32(_as_numpy(source))), _check_rate(sampling_rate)
    raise AudioError(
        f"unsupported audio source of type {type(source).__name__}; expected a path, bytes, a numpy "
        "array or torch tensor (with sampling_rate), or a dict with 'array'/'raw' and 'sampling_rate'"
    )


def _read_mapping(source: Mapping, sampling_rate: int | None) -> tuple[np.ndarray, int]:
    for key in ("array", "raw"):
        if source.get(key) is not None:
            rate = source.get("sampling_rate", sampling_rate)
            if rate is None:
                raise AudioError(f"audio dict with {key!r} needs a 'sampling_rate' entry")
            return _to_channels_last(_to_float32(_as_numpy(source[key]))), _check_rate(rate)
    if source.get("bytes") is not None:
        return _decode_bytes(bytes(source["bytes"]), what=f"audio bytes of {source.get('path')!r}")
    if source.get("path") is not None:
        return _decode_file(Path(source["path"]))
    raise AudioError(
        f"audio dict has keys {sorted(source)}; expected 'array' or 'raw' (+ 'sampling_rate'), "
        "or 'bytes' / 'path'"
    )


def _is_torch_tensor(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "torch" and hasattr(obj, "detach")


def _as_numpy(samples: Any) -> np.ndarray:
    if _is_torch_tensor(samples):
        tensor = samples.detach().cpu()
        if tensor.is_floating_point() and tensor.dtype not in (_torch().float32, _torch().float64):
            tensor = tensor.float()  # bfloat16/float16 have no (exact) numpy counterpart
        return tensor.numpy()
    return np.asarray(samples)


def _torch():
    import torch

    return torch


def _check_rate(rate: Any) -> int:
    if rate is None:
        raise AudioError("sampling_rate is required when passing raw samples (array or tensor)")
    try:
        value = float(rate)
    except (TypeError, ValueError):
        raise AudioError(f"sampling_rate must be a positive integer, got {rate!r}") from None
    if not (value > 0 and value.is_integer()):
        raise AudioError(f"sampling_rate must be a positive integer, got {rate!r}")
    return int(value)


# --------------------------------------------------------------------------------------------------
# sample conversion
# --------------------------------------------------------------------------------------------------


def _to_float32(samples: np.ndarray) -> np.ndarray:
    """Integer PCM → [-1, 1] by the type's full scale; floats unchanged; anything else is rejected."""
    kind = samples.dtype.kind
    if kind == "f":
        return samples.astype(np.float32, copy=False)
    if kind in "iu":
        bits = samples.dtype.itemsize * 8
        half = float(2 ** (bits - 1))
        wide = samples.astype(np.float64)
        if kind == "u":
            wide -= half
        return (wide / half).astype(np.float32)
    raise AudioError(
        f"unsupported sample dtype {samples.dtype}; expected integer PCM or floating point samples"
    )


def _to_channels_last(samples: np.ndarray) -> np.ndarray:
    """(N,), (N, C) or (C, N) → (N, C); the shorter axis of a 2-D array is the channel axis."""
    if samples.ndim == 1:
        return samples[:, None]
    if samples.ndim != 2:
        raise AudioError(
            f"audio array must be 1-D (samples) or 2-D (samples × channels), got shape {samples.shape}"
        )
    channel_axis = int(np.argmin(samples.shape))
    if samples.shape[channel_axis] > MAX_CHANNELS:
        raise AudioError(
            f"cannot tell the channel axis of an array of shape {samples.shape}: the shorter axis "
            f"(channels) must have at most {MAX_CHANNELS} entries"
        )
    return samples if channel_axis == 1 else samples.T


def _finish(samples: np.ndarray, rate: int, max_seconds: float | None) -> np.ndarray:
    """Validate decoded (N, C) float32 samples, mix to mono, resample to 16 kHz, normalise."""
    if samples.shape[0] == 0:
        raise AudioError("audio contains no samples")
    if not np.isfinite(samples).all():
        raise AudioError("audio contains NaN or infinite sample values")
    seconds = samples.shape[0] / rate
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(f"audio is {seconds:.2f} s long; the limit is {max_seconds:g} s")
    mono = samples.mean(axis=1, dtype=np.float64).astype(np.float32)
    if rate != SAMPLING_RATE:
        import soxr

        mono = soxr.resample(mono, rate, SAMPLING_RATE, quality="HQ").astype(np.float32, copy=False)
    if mono.shape[0] < MIN_SAMPLES:
        raise AudioError(
            f"audio is too short: {mono.shape[0]} samples at {SAMPLING_RATE} Hz "
            f"({1000 * seconds:.1f} ms); at least one {FPS} fps frame ({MIN_SAMPLES} samples) is needed"
        )
    peak = float(np.abs(mono).max())
    if peak < SILENCE_PEAK:
        raise AudioError(
            f"audio is silent (peak amplitude {peak:.2e} < {SILENCE_PEAK:g}, i.e. below -80 dBFS)"
        )
    if peak > 1.0:
        mono = mono / np.float32(peak)
    return np.ascontiguousarray(mono, dtype=np.float32)


# --------------------------------------------------------------------------------------------------
# decoding
# --------------------------------------------------------------------------------------------------


def _decode_file(path: Path) -> tuple[np.ndarray, int]:
    if not path.exists():
        raise FileNotFoundError(f"audio file not found: {path}")
    if path.is_dir():
        raise AudioError(f"{path} is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"audio file is empty (0 bytes): {path}")
    return _decode(str(path), what=str(path))


def _decode_bytes(data: bytes, what: str) -> tuple[np.ndarray, int]:
    if not data:
        raise AudioError(f"{what} are empty (0 bytes)")
    return _decode(data, what=what)


def _decode(src: str | bytes, what: str) -> tuple[np.ndarray, int]:
    """Try soundfile, then PyAV; raise one AudioError naming both failures."""
    try:
        return _decode_soundfile(src)
    except Exception as sf_error:  # libsndfile reports format problems with several exception types
        sf_reason = f"{type(sf_error).__name__}: {sf_error}"
    return _decode_av(src, what, sf_reason)


def _decode_soundfile(src: str | bytes) -> tuple[np.ndarray, int]:
    import soundfile as sf

    handle = io.BytesIO(src) if isinstance(src, bytes) else src
    samples, rate = sf.read(handle, dtype="float32", always_2d=True)
    return samples, int(rate)


def _decode_av(src: str | bytes, what: str, sf_reason: str) -> tuple[np.ndarray, int]:
    import av

    try:
        container = av.open(io.BytesIO(src) if isinstance(src, bytes) else src, mode="r")
    except (av.FFmpegError, OSError, ValueError) as error:
        raise AudioError(
            f"cannot decode {what}: not an audio file, or corrupt "
            f"(soundfile: {sf_reason}; PyAV: {error})"
        ) from None
    with container:
        if not container.streams.audio:
            kind = "video without an audio track" if container.streams.video else "no audio track"
            raise AudioError(f"{what} has {kind}")
        stream = container.streams.audio[0]
        # Planar float keeps every channel separate so that _finish can average them equally.
        resampler = av.AudioResampler(format="fltp")
        chunks: list[np.ndarray] = []
        rate = stream.rate
        try:
            for frame in container.decode(stream):
                rate = frame.sample_rate
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
        except (av.FFmpegError, ValueError) as error:
            raise AudioError(f"cannot decode the audio track of {what} (corrupt?): {error}") from None
    if not chunks or not rate:
        raise AudioError(f"{what} has an audio track with no decodable samples")
    samples = np.concatenate(chunks, axis=1).T  # (C, n) chunks → (N, C)
    return np.ascontiguousarray(samples, dtype=np.float32), int(rate)
