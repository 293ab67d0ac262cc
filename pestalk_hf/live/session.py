"""A live session: audio source → model thread → output workers, on the audio clock.

Threads and queues::

    source thread ──(bounded queue of audio blocks)──▶ model thread ──(per-output bounded queues)──▶ senders
    (PortAudio callback, file pacer, TCP reader)        animator.push()                          (one thread each)

* **Audio clock.** Every block is stamped with the number of samples that came before it; frame ``i`` has
  time ``i / fps`` on that clock, whatever the wall clock does, so timestamps cannot drift.
* **Overload.** The audio callback only does ``put_nowait``: if the model has fallen so far behind that
  the queue is full, the block is dropped (counted: ``dropped chunks``) and the model later fills its
  place with silence, keeping the clock exact. When several blocks are waiting the model takes them all
  and runs once (counted: ``merged chunks``), so it catches up instead of queueing.
* **Receivers.** The model thread hands frames to each output's :class:`~pestalk_hf.live.outputs.OutputWorker`
  without waiting; a slow or absent receiver only loses its own frames.
* **Emotion so far.** Read from the animator when it keeps one (``animator.emotion_probabilities``); otherwise
  :class:`EmotionMeter` re-classifies the last seconds of speech on a slow clock and smooths the result.

The animator is built by :func:`make_animator`, the one place a ``--streaming-mode`` choice is made.
"""

from __future__ import annotations

import math
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import SAMPLING_RATE
from .outputs import Frame, Output, OutputError, OutputWorker, WebSocketOutput
from .sources import AudioSource, SourceError

#: Streaming modes of :func:`make_animator` (names as :func:`pestalk_hf.streaming.make_streaming_animator`'s).
#: ``offline-window`` (the default): :class:`pestalk_hf.streaming.StreamingAnimator` re-runs the offline model on
#: the last ``context_seconds`` and emits frames ``lookahead_seconds`` old (latency ≈ block + 0.3 s + compute).
#: ``lookahead``: :class:`pestalk_hf.streaming.LookaheadStreamingAnimator` runs the model in its bounded
#: look-ahead mode (every layer sees at most ``lookahead_frames`` frames ahead; latency ≈ block +
#: (L + 1) / 30 s + 12.5 ms + compute), by default on :data:`pestalk_hf.DEFAULT_STREAM_MODEL`, the embedded
#: model fine-tuned with the streaming masks (:func:`default_model`). The offline window stays the default
#: mode: it keeps the offline model's full quality (the streaming fine-tune reads emotions less well: EmoDB
#: held-out 58 → 43 %, MODEL_CARD.md).
STREAMING_MODES: tuple[str, ...] = ("offline-window", "lookahead")
#: Audio block per mode (ms) when none is given: the look-ahead mode emits a chunk of L + 1 frames as soon
#: as its audio is in, so small blocks cut the wait; the offline window re-runs 2 s per push, so it takes 100 ms.
DEFAULT_CHUNK_MS: dict[str, float] = {"offline-window": 100.0, "lookahead": 10.0}
#: Look-ahead (frames at 30 fps) of the ``lookahead`` mode when the model was not saved in the streaming mode.
DEFAULT_LOOKAHEAD_FRAMES = 2
#: Largest look-ahead accepted (1 s): beyond it the offline window is the better choice.
MAX_LOOKAHEAD_FRAMES = 30


def default_model(mode: str) -> str:
    """The embedded model folder a streaming mode runs when no model is given: the offline default for
    ``offline-window``, its streaming fine-tune (:data:`pestalk_hf.DEFAULT_STREAM_MODEL`) for ``lookahead``."""
    from .. import DEFAULT_MODEL, DEFAULT_STREAM_MODEL

    if mode not in STREAMING_MODES:
        raise ValueError(f"unknown streaming mode {mode!r}; choose one of {', '.join(STREAMING_MODES)}")
    return DEFAULT_STREAM_MODEL if mode == "lookahead" else DEFAULT_MODEL


def make_animator(*, model: Any, voiceprint_backend: Any, mode: str = "offline-window", context_seconds: int = 2,
                  lookahead_seconds: float = 0.3, lookahead_frames: int | None = None,
                  left_context_frames: int | None = 30, forward: dict[str, Any] | None = None,
                  rest_in_silence: bool = False) -> Any:
    """The streaming animator of ``mode``: an object with ``push((n,) float32 16 kHz) -> (k, 52)`` and
    ``flush() -> (k, 52)`` (see :class:`pestalk_hf.streaming.StreamingAnimator` and
    :class:`pestalk_hf.streaming.LookaheadStreamingAnimator`).

    ``context_seconds`` / ``lookahead_seconds`` are the ``offline-window`` mode's; ``lookahead_frames`` /
    ``left_context_frames`` the ``lookahead`` mode's (``lookahead_frames=None``: the model's own when it was
    saved in the streaming mode, else :data:`DEFAULT_LOOKAHEAD_FRAMES`; the original model is never changed,
    a copy is put in the mode). ``forward`` holds the model's inference overrides (``force_emotion``,
    ``force_speaker``, ``intensity``, ``style_top_k``) as :meth:`AudioToBlendshapePipeline._sanitize_parameters`
    returns them. ``rest_in_silence``: wrap it in :class:`pestalk_hf.streaming.RestInSilenceStream` (the mouth
    at rest in the stream's silences; ``pestalk live`` does unless ``--no-rest-in-silence``).
    """
    if mode not in STREAMING_MODES:
        raise ValueError(f"unknown streaming mode {mode!r}; choose one of {', '.join(STREAMING_MODES)}")
    from ..streaming import RestInSilenceStream

    animator = _make_mode_animator(model, voiceprint_backend, mode, context_seconds, lookahead_seconds,
                                   lookahead_frames, left_context_frames, forward)
    return RestInSilenceStream(animator) if rest_in_silence else animator


def _make_mode_animator(model: Any, voiceprint_backend: Any, mode: str, context_seconds: int, lookahead_seconds: float,
                        lookahead_frames: int | None, left_context_frames: int | None,
                        forward: dict[str, Any] | None) -> Any:
    from ..streaming import make_streaming_animator

    if mode == "offline-window":
        if lookahead_frames is not None:
            raise ValueError("lookahead_frames is for the 'lookahead' streaming mode; "
                             "the offline window takes lookahead_seconds")
        return make_streaming_animator(model, voiceprint_backend, mode=mode, context_seconds=context_seconds,
                                       lookahead_seconds=lookahead_seconds, **(forward or {}))
    if lookahead_frames is None and not model.config.is_streaming:
        lookahead_frames = DEFAULT_LOOKAHEAD_FRAMES
    if lookahead_frames is not None and (isinstance(lookahead_frames, bool) or not isinstance(lookahead_frames, int)
                                         or not 0 <= lookahead_frames <= MAX_LOOKAHEAD_FRAMES):
        raise ValueError(f"lookahead_frames must be a whole number of frames in 0–{MAX_LOOKAHEAD_FRAMES}, "
                         f"got {lookahead_frames!r}")
    # a bounded left context makes the sliding window exact (no context_seconds cap needed)
    return make_streaming_animator(model, voiceprint_backend, mode=mode, lookahead_frames=lookahead_frames,
                                   left_context_frames=left_context_frames, **(forward or {}))


class EmotionMeter:
    """Emotion read from the voice so far, on a slow clock and off the latency path.

    Every ``every_seconds`` of audio, a thread of its own classifies the last ``window_seconds`` with
    ``model.animate`` and blends the probabilities into a running estimate (exponential moving average with
    weight ``smoothing`` on the past), so the reading does not flicker from one second to the next. The model
    thread only hands it audio (:meth:`update`: a copy into a bounded buffer); if a classification is still
    running when the next is due, that one is skipped. Silent windows (peak below 1e-3) are skipped too.
    """

    def __init__(self, model: Any, *, window_seconds: float = 3.0, every_seconds: float = 2.0,
                 smoothing: float = 0.6) -> None:
        self.model, self.smoothing = model, float(smoothing)
        self.window, self.every = int(window_seconds * SAMPLING_RATE), int(every_seconds * SAMPLING_RATE)
        self.emotions = tuple(model.config.emotions)
        self._audio: deque[np.ndarray] = deque()
        self._held = self._since = 0
        self._lock = threading.Lock()
        self._due = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.probabilities: np.ndarray | None = None

    def update(self, audio: np.ndarray) -> None:
        """Add audio (called by the model thread; returns at once)."""
        with self._lock:
            self._audio.append(audio)
            self._held += len(audio)
            self._since += len(audio)
            while self._held - len(self._audio[0]) >= self.window:
                self._held -= len(self._audio.popleft())
            if self._since >= self.every and self._held >= SAMPLING_RATE:
                self._since = 0
                self._due.set()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pestalk-live-emotion", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        import torch

        while True:
            self._due.wait()
            with self._lock:
                self._due.clear()
                if self._closed:
                    return
                window = np.concatenate(self._audio)[-self.window:]
            if np.abs(window).max(initial=0.0) < 1e-3:
                continue
            with torch.inference_mode():
                out = self.model.animate(torch.from_numpy(window).to(self.model.device), None,
                                         chunk_seconds=math.ceil(len(window) / SAMPLING_RATE), overlap_seconds=0)
                probs = torch.softmax(out.emotion_logits[0].float(), -1).cpu().numpy()
            self.probabilities = probs if self.probabilities is None else (
                self.smoothing * self.probabilities + (1 - self.smoothing) * probs)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._due.set()
        if self._thread is not None:
            self._thread.join(10)

    def reading(self) -> dict[str, float] | None:
        probs = self.probabilities
        if probs is None:
            return None
        return {name: float(p) for name, p in zip(self.emotions, probs)}


@dataclass
class SessionStats:
    """What a session measured (the status line, the summary and ``bench/bench_live.py`` read these)."""

    samples_in: int = 0
    chunks_in: int = 0
    dropped_chunks: int = 0
    merged_chunks: int = 0
    gap_samples: int = 0
    frames: int = 0
    model_seconds: float = 0.0  # wall time spent in animator.push/flush
    level_db: float = -120.0
    started: float = field(default_factory=time.monotonic)


@dataclass
class SessionResult:
    """The end of a session: why it ended, what it wrote, what it measured."""

    reason: str  # "source ended", "time limit", "interrupted", or an error message
    ok: bool  # False when a source, the model or an output failed during the session
    weights: np.ndarray  # (T, 52) every frame the model made
    recordings: list[Path]
    stats: SessionStats
    outputs: list[Output]
    emotion: dict[str, float] | None
    problems: list[str]


class LiveSession:
    """Run ``source`` through ``animator`` into ``outputs`` until the source ends, ``seconds`` pass or
    :meth:`stop` is called (Ctrl-C in the CLI); then write the recordings.

    Args:
        animator: from :func:`make_animator`.
        source: an :class:`~pestalk_hf.live.sources.AudioSource` (not yet started).
        outputs: opened :class:`~pestalk_hf.live.outputs.Output` objects (the CLI opens them, reports those that
            fail and passes the rest).
        recordings: paths ending in ``.csv`` (Live Link Face CSV) or ``.json``, written when the session ends
            through the project's exporters (temp file, then rename).
        emotion_meter: an :class:`EmotionMeter` (or None) used when the animator keeps no emotion estimate.
        queue_seconds: bound of the audio queue, in seconds of audio.
        message: where one-line notices go (default: stderr).
    """

    def __init__(self, *, animator: Any, source: AudioSource, outputs: Sequence[Output] = (),
                 recordings: Sequence[str | Path] = (), fps: int = 30, emotion_meter: EmotionMeter | None = None,
                 emotions: Sequence[str] = (), queue_seconds: float = 2.0, pace: bool = True, max_age: float = 2.0,
                 message: Callable[[str], None] | None = None) -> None:
        self.animator, self.source, self.fps = animator, source, int(fps)
        self.outputs = list(outputs)
        self.recordings = [Path(p) for p in recordings]
        for path in self.recordings:
            if path.suffix.lower() not in (".csv", ".json"):
                raise ValueError(f"a recording must end in .csv (Live Link Face CSV) or .json, got {path}")
        self.emotion_meter, self.emotions = emotion_meter, tuple(emotions)
        self.message = message or (lambda text: print(f"pestalk: {text}", file=sys.stderr, flush=True))
        for out in self.outputs:
            out.warn = self.message
        self.workers = [OutputWorker(o, fps=self.fps, pace=pace, max_age=max_age) for o in self.outputs]
        block = max(1, int(round(source.block_seconds * SAMPLING_RATE)))
        self._queue: queue.Queue = queue.Queue(maxsize=max(2, int(round(queue_seconds * SAMPLING_RATE / block))))
        self.stats = SessionStats()
        self._timeline: deque[tuple[int, int, float]] = deque()  # (start, end, arrival) of recent blocks
        self._frames: list[np.ndarray] = []
        self._source_done = threading.Event()
        self._stop = threading.Event()
        self._source_reason: str | None = None
        self._model_error: str | None = None
        self._model_thread: threading.Thread | None = None
        self.problems: list[str] = []

    # -- the audio thread ----------------------------------------------------------------------
    def _on_audio(self, samples: np.ndarray, arrival: float) -> None:
        """Called by the source for every block. Never blocks: a full queue drops the block."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if not np.isfinite(samples).all():
            samples = np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0)
        start = self.stats.samples_in
        self.stats.samples_in += len(samples)
        self.stats.chunks_in += 1
        rms = float(np.sqrt(np.mean(np.square(samples), dtype=np.float64))) if len(samples) else 0.0
        self.stats.level_db = 20 * math.log10(max(rms, 1e-6))
        try:
            self._queue.put_nowait((start, samples, arrival))
        except queue.Full:
            self.stats.dropped_chunks += 1

    def _on_source_end(self, reason: str | None) -> None:
        self._source_reason = reason
        self._source_done.set()

    # -- the model thread ----------------------------------------------------------------------
    def _captured(self, sample: int) -> float:
        """When ``sample`` was captured: its block's arrival minus the samples after it in the block."""
        timeline = self._timeline
        while len(timeline) > 1 and timeline[0][1] <= sample:
            timeline.popleft()
        start, end, arrival = timeline[0]
        return arrival - max(0, end - sample) / SAMPLING_RATE

    def _emit(self, weights: np.ndarray) -> None:
        if not len(weights):
            return
        weights = np.clip(np.asarray(weights, dtype=np.float32), 0.0, 1.0)
        self._frames.append(weights)
        frames = []
        for row in weights:
            index = self.stats.frames
            self.stats.frames += 1
            frames.append(Frame(index, index / self.fps, row, self._captured(index * SAMPLING_RATE // self.fps)))
        for worker in self.workers:
            worker.submit(frames)

    def _model_loop(self) -> None:
        import torch

        expected = 0
        try:
            with torch.inference_mode():
                while not self._stop.is_set():
                    try:
                        batch = [self._queue.get(timeout=0.05)]
                    except queue.Empty:
                        if self._source_done.is_set():
                            break
                        continue
                    while True:  # take everything that is waiting: one model run catches up
                        try:
                            batch.append(self._queue.get_nowait())
                        except queue.Empty:
                            break
                    self.stats.merged_chunks += len(batch) - 1
                    pieces = []
                    for start, samples, arrival in batch:
                        if start > expected:  # blocks were dropped: silence keeps the audio clock exact
                            pieces.append(np.zeros(start - expected, dtype=np.float32))
                            self.stats.gap_samples += start - expected
                        pieces.append(samples)
                        expected = start + len(samples)
                        self._timeline.append((start, expected, arrival))
                    audio = np.concatenate(pieces)
                    t0 = time.perf_counter()
                    frames = self.animator.push(audio)
                    self.stats.model_seconds += time.perf_counter() - t0
                    self._emit(frames)
                    if self.emotion_meter is not None and not hasattr(self.animator, "emotion_probabilities"):
                        self.emotion_meter.update(audio)
                missing = self.stats.samples_in - expected  # blocks dropped after the last one taken
                if missing > 0 and not self._stop.is_set():
                    self.stats.gap_samples += missing
                    self._timeline.append((expected, expected + missing, time.monotonic()))
                    t0 = time.perf_counter()
                    frames = self.animator.push(np.zeros(missing, dtype=np.float32))
                    self.stats.model_seconds += time.perf_counter() - t0
                    self._emit(frames)
                if self._timeline:
                    t0 = time.perf_counter()
                    frames = self.animator.flush()
                    self.stats.model_seconds += time.perf_counter() - t0
                    self._emit(frames)
        except Exception as error:  # noqa: BLE001 - reported; the recording of what was made is still written
            self._model_error = f"the model failed: {type(error).__name__}: {' '.join(str(error).split())}"[:500]

    # -- status --------------------------------------------------------------------------------
    def emotion(self) -> dict[str, float] | None:
        probs = getattr(self.animator, "emotion_probabilities", None)  # an animator that tracks emotion itself
        if probs is not None and len(probs):
            return ({str(k): float(v) for k, v in probs.items()} if isinstance(probs, dict)
                    else {n: float(p) for n, p in zip(self.emotions, probs)})
        return self.emotion_meter.reading() if self.emotion_meter is not None else None

    def latency(self, last: int = 30) -> float | None:
        """Median latency (s) of the last ``last`` frames sent, over the outputs that sent any."""
        values = [lat for o in self.outputs for lat in list(o.stats.latencies)[-last:]]
        return float(np.median(values)) if values else None

    def status_line(self) -> str:
        s = self.stats
        lat = self.latency()
        emotion = self.emotion()
        top = f"{max(emotion, key=emotion.get)} {max(emotion.values()):.0%}" if emotion else "…"
        dropped = s.dropped_chunks + sum(o.stats.dropped + o.stats.stale for o in self.outputs)
        return (f"in {s.level_db:6.1f} dB | {s.samples_in / SAMPLING_RATE:6.1f} s | latency "
                + (f"{lat * 1000:4.0f} ms" if lat is not None else "   – ms")
                + f" | dropped {s.dropped_chunks} chunks, {dropped - s.dropped_chunks} frames | merged {s.merged_chunks}"
                + f" | emotion {top}")

    def _status_message(self) -> dict[str, Any]:
        lat = self.latency()
        return {"emotion": self.emotion(), "latency_ms": None if lat is None else round(lat * 1000, 1),
                "dropped_chunks": self.stats.dropped_chunks, "level_db": round(self.stats.level_db, 1)}

    # -- running -------------------------------------------------------------------------------
    def stop(self) -> None:
        """End the session soon (thread-safe): the source stops, the frames made so far are sent."""
        self._stop.set()

    def run(self, *, seconds: float | None = None, status: Callable[[str], None] | None = None,
            status_every: float = 0.5) -> SessionResult:
        """Run until the source ends, ``seconds`` of wall time pass, or :meth:`stop`; return the result.

        ``status`` receives :meth:`status_line` every ``status_every`` seconds (the CLI prints it in place).
        KeyboardInterrupt ends the session like :meth:`stop` (recordings are written).
        """
        for worker in self.workers:
            worker.start()
        self._model_thread = threading.Thread(target=self._model_loop, name="pestalk-live-model", daemon=True)
        self._model_thread.start()
        self.stats.started = time.monotonic()
        reason = "source ended"
        try:
            try:
                self.source.start(self._on_audio, self._on_source_end)
            except SourceError as error:  # e.g. the device went away between open() and start()
                self._on_source_end(str(error))
            deadline = None if seconds is None else time.monotonic() + seconds
            next_status = time.monotonic()
            while True:
                if self._source_done.wait(0.05):
                    break
                if self._stop.is_set():
                    reason = "stopped"
                    break
                if not self._model_thread.is_alive():
                    break
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    reason = "time limit"
                    break
                if now >= next_status:
                    next_status = now + status_every
                    if status is not None:
                        status(self.status_line())
                    for out in self.outputs:
                        if isinstance(out, WebSocketOutput):
                            out.send_status(self._status_message())
        except KeyboardInterrupt:
            reason = "interrupted"
        finally:
            self.source.stop()
        return self._finish(reason)

    def _finish(self, reason: str) -> SessionResult:
        try:
            self._source_done.set()  # the model thread drains the queue, flushes and ends
            while self._model_thread.is_alive():
                self._model_thread.join(0.2)
        except KeyboardInterrupt:  # a second Ctrl-C: stop the model at once, keep what it made
            self._stop.set()
            self._model_thread.join(5)
        for out in self.outputs:
            if isinstance(out, WebSocketOutput):
                out.send_status({**self._status_message(), "ended": True})
        for worker in self.workers:
            worker.close()
        if self.emotion_meter is not None:
            self.emotion_meter.close()
        ok = True
        if self._source_reason:
            self.problems.append(self._source_reason)
            reason, ok = self._source_reason, False
        if self._model_error:
            self.problems.append(self._model_error)
            reason, ok = self._model_error, False
        for worker in self.workers:
            if worker.failed:
                self.problems.append(worker.failed)
                ok = False
        weights = np.concatenate(self._frames) if self._frames else np.zeros((0, 52), dtype=np.float32)
        written = self._write_recordings(weights)
        return SessionResult(reason=reason, ok=ok and len(written) == len(self.recordings), weights=weights,
                             recordings=written, stats=self.stats, outputs=self.outputs, emotion=self.emotion(),
                             problems=self.problems)

    def _write_recordings(self, weights: np.ndarray) -> list[Path]:
        """Write each recording through :class:`~pestalk_hf.animation.BlendshapeAnimation` (atomic writers)."""
        if not self.recordings:
            return []
        from ..animation import BlendshapeAnimation

        if not len(weights):
            self.problems.append("no frames were made: no recording written")
            return []
        animation = BlendshapeAnimation(weights=weights, fps=self.fps, emotion_probabilities=self.emotion())
        written = []
        for path in self.recordings:
            try:
                (animation.to_livelink_csv if path.suffix.lower() == ".csv" else animation.to_json)(path)
            except OSError as error:
                self.problems.append(f"cannot write the recording {path}: {error.strerror or error}")
                continue
            written.append(path)
        return written


def open_outputs(outputs: Sequence[Output], message: Callable[[str], None]) -> tuple[list[Output], list[str]]:
    """Open each output; one that fails is reported and left out. Returns (opened, failure messages)."""
    opened, failed = [], []
    for out in outputs:
        out.warn = message
        try:
            out.open()
        except OutputError as error:
            failed.append(str(error))
            message(f"{error}; the session goes on without it")
            continue
        opened.append(out)
    return opened, failed
