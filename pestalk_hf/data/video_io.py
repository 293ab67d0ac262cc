"""Video and audio decoding with PyAV (bundled FFmpeg libraries; no system ``ffmpeg`` binary needed).

Real footage is messy, so decoding reports problems as :class:`MediaError` (a ``ValueError``) with a
human-readable reason instead of leaking FFmpeg exceptions: the dataset builder turns these into
"skipped: <reason>" report entries and carries on with the next clip.

Timing conventions: every decoded video frame carries its presentation time in seconds (``pts ×
time_base``), so variable-frame-rate files are handled by resampling on those times rather than by
assuming a constant rate. Times are reported relative to the container's start so that video and
audio share one clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import numpy as np


class MediaError(ValueError):
    """A media file cannot be used (missing, corrupt, no stream of the needed kind)."""


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame: ``time`` in seconds on the container clock, ``rgb`` as (H, W, 3) uint8, C-contiguous."""

    time: float
    rgb: np.ndarray


def _open(path: str | Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"file not found: {path}")
    try:
        return av.open(str(path))
    except av.FFmpegError as exc:  # corrupt header, unknown format, truncated file...
        raise MediaError(f"cannot open media file ({type(exc).__name__}: {exc})") from exc


def _container_start(container: av.container.InputContainer) -> float:
    # container.start_time is in AV_TIME_BASE (microseconds); None for some raw formats.
    return (container.start_time or 0) / 1_000_000


def _scaled_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Output size that keeps the aspect ratio, fits ``max_side`` and stays even (for yuv420)."""
    if max_side <= 0 or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


def iter_video_frames(path: str | Path, max_side: int = 0) -> Iterator[VideoFrame]:
    """Decode the first video stream frame by frame as RGB.

    ``max_side`` > 0 downscales large frames (e.g. 1920×1080 MEAD) before landmarking: the face
    landmarker works on a 256×256 face crop, so 720 px is plenty and conversion is several times
    cheaper. Frames without a timestamp get one from their index and the stream's average rate.
    Raises :class:`MediaError` if the file has no video stream or the bitstream is corrupt; frames
    yielded before a mid-stream error are not retracted (callers decide what a partial decode means).
    """
    container = _open(path)
    try:
        if not container.streams.video:
            raise MediaError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate) if stream.average_rate else 25.0
        start = _container_start(container)
        size = None
        index = 0
        try:
            for frame in container.decode(stream):
                if size is None:
                    size = _scaled_size(frame.width, frame.height, max_side)
                t = frame.time if frame.time is not None else index / rate + start
                # PyAV pads rows to an alignment; MediaPipe silently finds no face in strided arrays.
                rgb = np.ascontiguousarray(frame.to_ndarray(width=size[0], height=size[1], format="rgb24"))
                yield VideoFrame(time=float(t) - start, rgb=rgb)
                index += 1
        except av.FFmpegError as exc:
            raise MediaError(f"corrupt video stream after {index} frames ({type(exc).__name__}: {exc})") from exc
    finally:
        container.close()


def decode_audio(path: str | Path, sampling_rate: int = 16000) -> tuple[np.ndarray, float]:
    """Decode the first audio stream to mono float32 at ``sampling_rate``.

    Returns ``(waveform, start)`` where ``start`` is the first sample's time in seconds on the
    container clock (relative to the container start, like :func:`iter_video_frames`). Channels are
    averaged after resampling (FFmpeg's own stereo→mono downmix sums channels and can clip).
    Raises :class:`MediaError` for a missing/corrupt audio stream or an empty decode.
    """
    container = _open(path)
    try:
        if not container.streams.audio:
            raise MediaError("no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", rate=sampling_rate)
        chunks: list[np.ndarray] = []
        first_time: float | None = None
        try:
            for frame in container.decode(stream):
                if first_time is None and frame.time is not None:
                    first_time = float(frame.time)
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().mean(axis=0))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().mean(axis=0))
        except av.FFmpegError as exc:
            raise MediaError(f"corrupt audio stream ({type(exc).__name__}: {exc})") from exc
        start = _container_start(container)
    finally:
        container.close()
    if not chunks or sum(len(c) for c in chunks) == 0:
        raise MediaError("no audio samples decoded (truncated or corrupt file?)")
    wav = np.concatenate(chunks).astype(np.float32)
    return np.clip(wav, -1.0, 1.0), (first_time if first_time is not None else start) - start
