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

Bounded memory for any file (issue 11): the sample rate, channel count and declared length are read
from the container (libsndfile's header / PyAV's stream metadata) *before* any sample is decoded, and
a file over ``max_seconds`` or :data:`MAX_DECODED_VALUES` is refused at once. Decoding then runs in
blocks: each block is checked, mixed to mono and resampled to 16 kHz before the next one is read, so
only the 16 kHz mono result is ever held whole, and decoding stops as soon as the limit is passed (for
files whose header gives no length, or lies about it). A file that decodes to much less than its
header declares (a cut-off download) is refused as truncated instead of animating a fragment.

``dtype="int16"`` returns the same waveform as 16-bit PCM (``round(x · 32768)``, read back as
``x / 32768``, the convention of integer input above): half the memory of float32, which keeps a
4 h clip's waveform at 0.46 GB instead of 0.92 GB. Decoding then writes int16 straight into the
result buffer, so no float32 copy of the whole clip ever exists. For 16-bit sources (most WAV and
FLAC files) it is lossless; otherwise the rounding is below -96 dBFS. The pipeline uses it, and the
model and voiceprint backends take int16 clips and convert one window at a time.
"""

from __future__ import annotations

import io
import math
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

MAX_FILE_CHANNELS = 64
"""Files (or bytes) with more channels than this are refused before decoding."""

MAX_SAMPLE_RATE = 768_000
"""Files declaring a higher sampling rate than this (Hz) are refused before decoding."""

MAX_DECODED_VALUES = 2**30
"""Cap on samples × channels decoded from one file or byte string, whatever ``max_seconds`` says
(about 3.1 h of 48 kHz stereo, 1 h of 48 kHz 5.1): it bounds the decoding time of a tiny, highly
compressed upload that declares a huge rate × channel count."""

MAX_DECODE_SECONDS = 4 * 3600.0
"""Longest file decoded when ``max_seconds`` is None (the 16 kHz mono result is then ≤ 0.9 GB)."""

TRUNCATION_RATIO = 0.9
"""A file whose decodable audio is shorter than this fraction of the length its header declares
(and more than :data:`TRUNCATION_MIN_SECONDS` short) is refused as truncated."""
TRUNCATION_MIN_SECONDS = 0.25

_TEXT_FORMATS = {"tty", "ansi", "bin", "idf", "xbin", "srt", "ass", "webvtt", "subviewer", "microdvd"}
_BLOCK_VALUES = 1 << 20  # samples × channels per decoded block (4 MB of float32)
_UNKNOWN_FRAMES = 1 << 62  # libsndfile reports SF_COUNT_MAX when a header gives no length

AudioSource = Union[str, os.PathLike, bytes, bytearray, np.ndarray, Mapping, Any]

PCM16_SCALE = 32768.0
"""int16 sample ``k`` stands for ``k / PCM16_SCALE`` (the full-scale convention of integer PCM)."""
_OUTPUT_DTYPES = {"float32": np.float32, "int16": np.int16}


class AudioError(ValueError):
    """The audio given to :func:`load_audio` cannot be used (unreadable, empty, silent, too short, ...)."""


def load_audio(
    source: AudioSource,
    sampling_rate: int | None = None,
    *,
    max_seconds: float | None = None,
    copy: bool = True,
    dtype: str = "float32",
) -> np.ndarray:
    """Load ``source`` as a 16 kHz mono float32 waveform in [-1, 1] (or its int16 PCM, ``dtype="int16"``).

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
        max_seconds: if given, reject clips longer than this. For files and bytes it is checked
            against the container's declared length before decoding, and decoding stops once it is
            passed; a positive number (``0`` or a negative value is a ``ValueError``, not "no limit").
        copy: for raw samples that are already 1-D float32 at 16 kHz within [-1, 1], ``False`` returns
            the input array itself instead of a copy (no extra memory for long clips); the default
            ``True`` always returns a new array. With ``dtype="int16"`` the same holds for 1-D int16
            input at 16 kHz.
        dtype: ``"float32"`` (default) or ``"int16"``: 16-bit PCM of the same waveform, sample ``k``
            meaning ``k / 32768`` (half the memory; see the module docstring).

    Returns:
        ``np.ndarray`` of shape ``(num_samples,)``, dtype float32 (peak <= 1) or int16. Float input that
        exceeds [-1, 1] is peak-normalised rather than clipped, so its waveform shape is kept.

    Raises:
        AudioError: undecodable/corrupt/empty input, no audio track, NaN/Inf samples, silence
            (peak < :data:`SILENCE_PEAK`), shorter than :data:`MIN_SAMPLES` after resampling,
            longer than ``max_seconds``, more than :data:`MAX_DECODED_VALUES` samples × channels,
            truncated (decodes to much less than its header declares), unsupported dtype or number
            of dimensions.
        FileNotFoundError: ``source`` is a path that does not exist.
        ValueError: ``max_seconds`` is not a positive number.
    """
    max_seconds = check_max_seconds(max_seconds)
    if dtype not in _OUTPUT_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_OUTPUT_DTYPES)}, got {dtype!r}")
    pcm16 = dtype == "int16"
    if pcm16 and (isinstance(source, np.ndarray) and source.dtype == np.int16 and source.ndim == 1
                  and _check_rate(sampling_rate) == SAMPLING_RATE):
        # already what was asked for (e.g. the voiceprint step re-validating the pipeline's waveform)
        seconds = len(source) / SAMPLING_RATE
        _check_length(seconds, max_seconds)
        return _finish_mono(source.copy() if copy else source, seconds)
    decoded = _read_source(source, sampling_rate, max_seconds, pcm16)
    if isinstance(decoded, _Mono):
        return _finish_mono(decoded.samples, decoded.seconds)
    samples, rate = decoded
    mono = _finish(samples, rate, max_seconds, copy)
    return float_to_pcm16(mono) if pcm16 else mono


def float_to_pcm16(samples: np.ndarray) -> np.ndarray:
    """float samples in [-1, 1] → int16 PCM (``round(x · 32768)``, clipped), converted block by block so
    only the int16 result is allocated whole."""
    out = np.empty(len(samples), dtype=np.int16)
    for start in range(0, len(samples), _BLOCK_VALUES):
        block = samples[start : start + _BLOCK_VALUES] * np.float32(PCM16_SCALE)
        np.clip(np.rint(block, out=block), -PCM16_SCALE, PCM16_SCALE - 1, out=block)
        out[start : start + _BLOCK_VALUES] = block
    return out


def pcm16_to_float(samples: Any) -> Any:
    """int16 PCM (numpy array or torch tensor) → float32 ``k / 32768``; float input is returned unchanged.

    Used one window at a time by the model and the voiceprint backends on the pipeline's int16 clips."""
    if _is_torch_tensor(samples):
        return samples.float() / PCM16_SCALE if samples.dtype == _torch().int16 else samples
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / np.float32(PCM16_SCALE)
    return samples


def frame_level_db(waveform: Any, num_frames: int, sampling_rate: int = SAMPLING_RATE, fps: float = FPS,
                   window_s: float = 0.05, block_frames: int = 3000, first_frame: int = 0,
                   first_sample: int = 0) -> np.ndarray:
    """(T,) mean energy in dBFS (floored at -120) of a ``window_s`` window centred on each frame time k/fps.

    ``waveform``: ``(N,)`` float in [-1, 1] or int16 PCM. Processed ``block_frames`` frames at a time, so
    a 4 h clip never needs a float64 copy of itself (one block is 100 s: 13 MB). A piece of a longer
    stream: ``waveform[0]`` is its sample ``first_sample`` and the frames are ``first_frame …`` (windows
    are cut to the samples given)."""
    x = np.asarray(waveform).reshape(-1)
    scale = 1.0 / PCM16_SCALE if x.dtype == np.int16 else 1.0
    half = max(1, int(round(window_s * sampling_rate / 2)))
    frames = np.arange(first_frame, first_frame + num_frames)
    centres = np.round(frames / fps * sampling_rate).astype(np.int64) - first_sample
    out = np.empty(num_frames, dtype=np.float64)
    for f0 in range(0, num_frames, block_frames):
        c = centres[f0 : f0 + block_frames]
        s0, s1 = min(max(int(c[0]) - half, 0), len(x)), min(max(int(c[-1]) + half, 0), len(x))
        seg = x[s0:s1].astype(np.float64) * scale
        csum = np.concatenate([[0.0], np.cumsum(seg * seg)])
        lo, hi = np.clip(c - half - s0, 0, len(seg)), np.clip(c + half - s0, 0, len(seg))
        out[f0 : f0 + len(c)] = (csum[hi] - csum[lo]) / np.maximum(hi - lo, 1)
    return 10 * np.log10(np.maximum(out, 1e-12))


def decode_to_mono(data: bytes, *, max_seconds: float | None = None, what: str = "audio bytes") -> np.ndarray:
    """Encoded bytes (WAV, FLAC, OGG, MP3, …) → ``(N,)`` float32 mono at :data:`SAMPLING_RATE`, with the
    same safeguards as :func:`load_audio`: rate, channels and declared length are checked from the
    header before any sample is decoded, decoding runs block by block and stops at ``max_seconds``
    (default :data:`MAX_DECODE_SECONDS`) or :data:`MAX_DECODED_VALUES`, truncated files are refused.

    Unlike :func:`load_audio` it does not judge the content (no silence gate, no minimum length, no
    peak normalisation): stored dataset clips are returned as recorded. Raises :class:`AudioError`.
    """
    return _decode_bytes(bytes(data), what, check_max_seconds(max_seconds), False).samples


def check_max_seconds(max_seconds: Any) -> float | None:
    """``None`` (no limit) or a finite number > 0 → float; anything else → ``ValueError``/``TypeError``."""
    if max_seconds is None:
        return None
    if isinstance(max_seconds, (bool, np.bool_)) or not isinstance(max_seconds, (int, float, np.integer, np.floating)):
        raise TypeError(f"max_seconds must be a number of seconds, got {type(max_seconds).__name__} {max_seconds!r}")
    value = float(max_seconds)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"max_seconds must be a positive number of seconds, got {max_seconds!r}")
    return value


# --------------------------------------------------------------------------------------------------
# source dispatch
# --------------------------------------------------------------------------------------------------


def _read_source(source: AudioSource, sampling_rate: int | None, max_seconds: float | None,
                 pcm16: bool = False) -> _Mono | tuple[np.ndarray, int]:
    """Encoded sources → :class:`_Mono` (decoded block by block to 16 kHz mono, int16 if ``pcm16``);
    raw samples → (float32 samples shaped (N, C), rate)."""
    if isinstance(source, (str, os.PathLike)):
        return _decode_file(Path(source), max_seconds, pcm16)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode_bytes(bytes(source), "audio bytes", max_seconds, pcm16)
    if isinstance(source, Mapping):
        return _read_mapping(source, sampling_rate, max_seconds, pcm16)
    if isinstance(source, np.ndarray) or _is_torch_tensor(source):
        return _to_channels_last(_to_float32(_as_numpy(source))), _check_rate(sampling_rate)
    raise AudioError(
        f"unsupported audio source of type {type(source).__name__}; expected a path, bytes, a numpy "
        "array or torch tensor (with sampling_rate), or a dict with 'array'/'raw' and 'sampling_rate'"
    )


def _read_mapping(source: Mapping, sampling_rate: int | None, max_seconds: float | None,
                  pcm16: bool) -> _Mono | tuple[np.ndarray, int]:
    for key in ("array", "raw"):
        if source.get(key) is not None:
            rate = source.get("sampling_rate", sampling_rate)
            if rate is None:
                raise AudioError(f"audio dict with {key!r} needs a 'sampling_rate' entry")
            return _to_channels_last(_to_float32(_as_numpy(source[key]))), _check_rate(rate)
    if source.get("bytes") is not None:
        return _decode_bytes(bytes(source["bytes"]), f"audio bytes of {source.get('path')!r}", max_seconds, pcm16)
    if source.get("path") is not None:
        return _decode_file(Path(source["path"]), max_seconds, pcm16)
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


def _check_length(seconds: float, limit: float | None) -> None:
    if limit is not None and seconds > limit:
        raise AudioError(f"audio is {seconds:.2f} s long; the limit is {limit:g} s")


def _finish(samples: np.ndarray, rate: int, max_seconds: float | None, copy: bool = True) -> np.ndarray:
    """Validate raw (N, C) float32 samples, mix to mono, resample to 16 kHz, then :func:`_finish_mono`."""
    if samples.shape[0] == 0:
        raise AudioError("audio contains no samples")
    # checked block by block: a whole-clip boolean mask would cost N bytes for nothing
    if not all(np.isfinite(samples[i : i + _BLOCK_VALUES]).all() for i in range(0, samples.shape[0], _BLOCK_VALUES)):
        raise AudioError("audio contains NaN or infinite sample values")
    seconds = samples.shape[0] / rate
    _check_length(seconds, max_seconds)
    # Mono input needs no mixing: the float64 mean would cost two copies of a 1 h clip (0.7 GB) to
    # return the same values. With copy=False (the voiceprint step re-validating a loaded waveform)
    # the caller's float32 array itself is returned when nothing else changes.
    if samples.shape[1] == 1:
        mono = samples[:, 0].copy() if copy and rate == SAMPLING_RATE else samples[:, 0]  # resampling copies anyway
    else:
        mono = samples.mean(axis=1, dtype=np.float64).astype(np.float32)
    if rate != SAMPLING_RATE:
        import soxr

        mono = soxr.resample(mono, rate, SAMPLING_RATE, quality="HQ").astype(np.float32, copy=False)
    return _finish_mono(mono, seconds)


def _finish_mono(mono: np.ndarray, seconds: float) -> np.ndarray:
    """Length and silence checks on 16 kHz mono samples, then peak normalisation of hot float input.

    The silence gate measures the peak *after removing the clip's mean* (its DC offset), so a constant
    offset (a DC-coupled input with no signal, a stuck ADC) is silence, not a loud clip. int16 samples
    (``dtype="int16"``) are checked in place, in units of full scale; they cannot exceed it.
    """
    if mono.shape[0] < MIN_SAMPLES:
        raise AudioError(
            f"audio is too short: {mono.shape[0]} samples at {SAMPLING_RATE} Hz "
            f"({1000 * seconds:.1f} ms); at least one {FPS} fps frame ({MIN_SAMPLES} samples) is needed"
        )
    unit = PCM16_SCALE if mono.dtype == np.int16 else 1.0
    high, low = float(mono.max()) / unit, float(mono.min()) / unit
    dc = float(mono.mean(dtype=np.float64)) / unit
    ac_peak = max(high - dc, dc - low)
    if ac_peak < SILENCE_PEAK:
        offset = f", once a constant DC offset of {dc:+.3g} is removed" if abs(dc) >= SILENCE_PEAK else ""
        raise AudioError(
            f"audio is silent (peak amplitude {ac_peak:.2e} < {SILENCE_PEAK:g}, i.e. below -80 dBFS{offset})"
        )
    if mono.dtype == np.int16:
        return np.ascontiguousarray(mono)
    peak = max(high, -low)
    if peak > 1.0:
        mono = mono / np.float32(peak)
    return np.ascontiguousarray(mono, dtype=np.float32)


# --------------------------------------------------------------------------------------------------
# decoding (block by block, limits checked before and during)
# --------------------------------------------------------------------------------------------------


class _Mono:
    """Decoded 16 kHz mono samples of an encoded source, and its length in seconds at its own rate."""

    __slots__ = ("samples", "seconds")

    def __init__(self, samples: np.ndarray, seconds: float) -> None:
        self.samples, self.seconds = samples, seconds


def _check_header(what: str, rate: Any, channels: Any, seconds: float | None, max_seconds: float | None) -> None:
    """Refuse from the container's metadata alone, before any sample is decoded."""
    if rate is not None and not 0 < rate <= MAX_SAMPLE_RATE:
        raise AudioError(f"{what} declares a sampling rate of {rate} Hz; at most {MAX_SAMPLE_RATE} Hz is supported")
    if channels is not None and not 0 < channels <= MAX_FILE_CHANNELS:
        raise AudioError(f"{what} declares {channels} channels; at most {MAX_FILE_CHANNELS} are supported")
    if seconds is None:
        return
    _check_length(seconds, max_seconds if max_seconds is not None else MAX_DECODE_SECONDS)
    if rate and channels and seconds * rate * channels > MAX_DECODED_VALUES:
        raise AudioError(
            f"{what} holds too much audio data: {seconds:.2f} s × {rate} Hz × {channels} channels is more than "
            f"the {MAX_DECODED_VALUES:,} samples × channels one input may decode to"
        )


class _MonoSink:
    """Takes decoded (n, C) float32 blocks; checks them, mixes to mono and resamples to 16 kHz per block,
    and stops the decoding (an :class:`AudioError`) as soon as a limit is passed.

    With ``pcm16`` the result is held as int16 (:data:`PCM16_SCALE`) from the first block on. Hot float
    files (a float WAV beyond full scale, resampling overshoot) are peak-normalised as in the float32
    path: blocks are stored as ``x / scale`` with ``scale`` the running peak (≥ 1), and the samples
    already stored are rescaled in place whenever the peak grows by more than 5 % (and once at the end).
    """

    def __init__(self, what: str, rate: int, channels: int, max_seconds: float | None,
                 declared_seconds: float | None, pcm16: bool = False) -> None:
        _check_header(what, rate, channels, None, max_seconds)
        self.what, self.rate, self.channels = what, int(rate), int(channels)
        self.limit = max_seconds if max_seconds is not None else MAX_DECODE_SECONDS
        self.max_frames = MAX_DECODED_VALUES // self.channels
        self.frames = 0
        expected = min(declared_seconds if declared_seconds is not None else 1.0, self.limit)
        self._buffer = np.empty(int(expected * SAMPLING_RATE) + 1024, dtype=np.int16 if pcm16 else np.float32)
        self._filled = 0
        self._pcm16 = pcm16
        self._scale = 1.0  # pcm16: stored samples are round(x / scale · 32768)
        self._peak = 0.0
        self._resampler = None
        if self.rate != SAMPLING_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(self.rate, SAMPLING_RATE, 1, dtype="float32", quality="HQ")

    def add(self, block: np.ndarray, rate: int | None = None) -> None:
        if rate is not None and rate != self.rate:
            raise AudioError(f"{self.what}: the sampling rate changes within the stream ({self.rate} → {rate} Hz)")
        if block.ndim != 2 or block.shape[1] != self.channels:
            raise AudioError(f"{self.what}: the channel count changes within the stream")
        if block.shape[0] == 0:
            return
        self.frames += block.shape[0]
        if self.frames / self.rate > self.limit:
            raise AudioError(
                f"audio is longer than the limit of {self.limit:g} s (decoding stopped after "
                f"{self.frames / self.rate:.2f} s)"
            )
        if self.frames > self.max_frames:
            raise AudioError(
                f"{self.what} holds too much audio data: more than {MAX_DECODED_VALUES:,} samples × channels "
                f"({self.channels} channels at {self.rate} Hz); decoding stopped"
            )
        if not np.isfinite(block).all():
            raise AudioError("audio contains NaN or infinite sample values")
        # mono files need no mixing (a float64 mean would be two more block-sized temporaries)
        mono = block[:, 0] if self.channels == 1 else block.mean(axis=1, dtype=np.float64).astype(np.float32)
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono)
        self._append(mono)

    def _append(self, mono: np.ndarray) -> None:
        if self._pcm16 and len(mono):
            self._peak = max(self._peak, float(np.abs(mono).max()))
            if self._peak > self._scale:
                self._rescale(self._peak * 1.05)  # headroom: a slowly rising peak costs few rescales
            mono = float_to_pcm16(mono / np.float32(self._scale) if self._scale != 1.0 else mono)
        end = self._filled + len(mono)
        if end > len(self._buffer):
            grown = np.empty(max(end, 2 * len(self._buffer)), dtype=self._buffer.dtype)
            grown[: self._filled] = self._buffer[: self._filled]
            self._buffer = grown
        self._buffer[self._filled : end] = mono
        self._filled = end

    def _rescale(self, scale: float) -> None:
        """pcm16: re-express the stored samples as ``x / scale`` (in place, block by block)."""
        factor = np.float32(self._scale / scale)
        for start in range(0, self._filled, _BLOCK_VALUES):
            block = self._buffer[start : min(start + _BLOCK_VALUES, self._filled)]
            block[:] = np.clip(np.rint(block * factor), -PCM16_SCALE, PCM16_SCALE - 1)  # the end rescale grows ≤ 5 %
        self._scale = scale

    def finish(self, declared_seconds: float | None) -> _Mono:
        if self.frames == 0:
            raise AudioError("audio contains no samples")
        if self._resampler is not None:
            self._append(self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
        if self._pcm16 and self._scale > 1.0:
            self._rescale(max(self._peak, 1.0))  # hot input ends at peak 1, as the float32 path's
        seconds = self.frames / self.rate
        if (declared_seconds is not None and seconds < TRUNCATION_RATIO * declared_seconds
                and declared_seconds - seconds > TRUNCATION_MIN_SECONDS):
            raise AudioError(
                f"{self.what} is truncated or damaged: its header declares {declared_seconds:.2f} s of audio "
                f"but only {seconds:.2f} s could be decoded"
            )
        samples = self._buffer[: self._filled]
        if len(self._buffer) > self._filled + self._filled // 8 + 4096:
            samples = samples.copy()  # do not keep a much larger buffer alive
        return _Mono(samples, seconds)


class _NoLength(Exception):
    """soundfile opened the file but cannot stream it safely: let PyAV decode it."""


def _decode_file(path: Path, max_seconds: float | None, pcm16: bool) -> _Mono:
    if not path.exists():
        raise FileNotFoundError(f"audio file not found: {path}")
    if path.is_dir():
        raise AudioError(f"{path} is a directory, not an audio file")
    if not path.is_file():
        raise AudioError(f"{path} is not a regular file (a device, pipe or socket cannot be read as audio)")
    if path.stat().st_size == 0:
        raise AudioError(f"audio file is empty (0 bytes): {path}")
    return _decode(str(path), str(path), max_seconds, pcm16)


def _decode_bytes(data: bytes, what: str, max_seconds: float | None, pcm16: bool) -> _Mono:
    if not data:
        raise AudioError(f"{what} are empty (0 bytes)")
    return _decode(data, what, max_seconds, pcm16)


def _decode(src: str | bytes, what: str, max_seconds: float | None, pcm16: bool) -> _Mono:
    """Try soundfile, then PyAV; raise one AudioError naming both failures.

    An :class:`AudioError` from soundfile (a limit, NaN samples, truncation) is final: the file *was*
    understood, so PyAV is not asked to decode it again.
    """
    try:
        return _decode_soundfile(src, what, max_seconds, pcm16)
    except AudioError:
        raise
    except Exception as sf_error:  # libsndfile reports format problems with several exception types
        sf_reason = f"{type(sf_error).__name__}: {sf_error}"
    return _decode_av(src, what, sf_reason, max_seconds, pcm16)


def _decode_soundfile(src: str | bytes, what: str, max_seconds: float | None, pcm16: bool) -> _Mono:
    import soundfile as sf

    handle = io.BytesIO(src) if isinstance(src, bytes) else src
    with sf.SoundFile(handle) as f:
        rate, channels = int(f.samplerate), int(f.channels)
        if not 0 <= f.frames < _UNKNOWN_FRAMES:
            # no length in the header (e.g. a streamed FLAC): libsndfile's reader fails at the end of
            # such files after decoding all of them, so PyAV (which streams them fine) decodes it
            raise _NoLength("the header gives no length")
        declared = f.frames / rate if rate > 0 else None
        _check_header(what, rate, channels, declared, max_seconds)
        sink = _MonoSink(what, rate, channels, max_seconds, declared, pcm16)
        block = max(1, _BLOCK_VALUES // channels)
        while True:
            data = f.read(block, dtype="float32", always_2d=True)
            if len(data) == 0:
                break
            sink.add(data)
    return sink.finish(declared)


def _decode_av(src: str | bytes, what: str, sf_reason: str, max_seconds: float | None,
               pcm16: bool) -> _Mono:
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
            if container.format.name in _TEXT_FORMATS:  # FFmpeg shows any text file as a "video" of text
                raise AudioError(f"cannot decode {what}: not an audio file (it holds text)")
            if container.format.name.endswith("_pipe") or container.format.name == "image2":
                raise AudioError(f"{what} is an image, not audio")
            kind = "video without an audio track" if container.streams.video else "no audio track"
            raise AudioError(f"{what} has {kind}")
        stream = container.streams.audio[0]
        # the audio stream's own metadata (a container's duration may be a longer video track's)
        declared = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
        _check_header(what, stream.rate or None, getattr(stream, "channels", None) or None, declared, max_seconds)
        # Packed float32, reshaped to (n, C) so that every channel is averaged equally. Not planar
        # ("fltp"): PyAV 18's to_ndarray of 8-channel planar frames crashes the interpreter.
        resampler = av.AudioResampler(format="flt")
        sink: _MonoSink | None = None

        def take(out) -> None:
            nonlocal sink
            channels = len(out.layout.channels)
            if channels == 0:
                raise AudioError(f"{what} has an audio track with an unknown channel layout")
            samples = out.to_ndarray().reshape(-1, channels)  # (1, n·C) interleaved → (n, C)
            if sink is None:
                sink = _MonoSink(what, out.sample_rate, channels, max_seconds, declared, pcm16)
            sink.add(np.asarray(samples, dtype=np.float32), out.sample_rate)

        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    take(out)
            for out in resampler.resample(None):
                take(out)
        except (av.FFmpegError, ValueError) as error:
            if isinstance(error, AudioError):
                raise
            raise AudioError(f"cannot decode the audio track of {what} (corrupt?): {error}") from None
    if sink is None:
        raise AudioError(f"{what} has an audio track with no decodable samples")
    return sink.finish(declared)
