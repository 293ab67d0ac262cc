"""Streaming inference: animate audio chunk by chunk with bounded latency and memory.

PESTalk's decoders are non-autoregressive and look at future audio, so a frame can only be final once
some audio after it has arrived. :class:`StreamingAnimator` keeps the last ``context_seconds`` of
audio; on every push it re-runs the model on that window (cut on whole seconds, so the window starts on
the 30 fps grid and on the positional-encoding period) and emits the frames that are at least
``lookahead_seconds`` old. Latency of a frame = chunk duration + lookahead + one window's compute
time (measured by ``bench/bench_pipeline.py``). The voiceprint is estimated from the first
``voiceprint_seconds`` of speech and then frozen, so the style does not flicker.

:class:`LookaheadStreamingAnimator` uses the model's streaming mode instead (``streaming_lookahead_frames``
in the config, :mod:`pestalk_hf.modeling.lookahead`): every layer sees at most the rest of the frame's
chunk of ``L + 1`` frames, so a chunk is final as soon as its audio (plus half an STFT window, 12.5 ms)
has arrived; its latency is chunk + L/30 s + 12.5 ms + compute instead of chunk + 300 ms + compute.
Emotion and style run on a slower clock (:class:`~pestalk_hf.modeling.modeling_pestalk.StreamingStyleTracker`).
:func:`make_streaming_animator` picks either; :class:`RestInSilenceStream` wraps either and rests the mouth in
the stream's silences, causally (the offline pipeline's :func:`pestalk_hf.postprocess.rest_in_silence`).
"""

from __future__ import annotations

import copy
import math
from collections import deque
from typing import Any

import numpy as np
import torch

from .audio import PCM16_SCALE, frame_level_db
from .modeling.modeling_pestalk import StreamingStyleTracker, streaming_chunk_ready_samples, streaming_receptive_field
from .postprocess import SILENCE_MIN_SECONDS, SILENCE_RAMP_FRAMES, ease_to_rest, quiet_threshold_db
from .voiceprint import VoiceprintBackend


class _VoiceprintEstimator:
    """Voiceprint from the first ``seconds`` of the stream, then frozen (so the style does not flicker).

    ``every_seconds``: re-embed the audio so far at most this often (None = on every update); the speaker
    embedding of up to ``seconds`` of audio costs tens of ms, too much for every 10 ms audio block."""

    def __init__(self, backend: VoiceprintBackend | None, sampling_rate: int, seconds: float,
                 every_seconds: float | None = None) -> None:
        self.backend, self.sr, self.samples = backend, sampling_rate, int(seconds * sampling_rate)
        self.every = 0 if every_seconds is None else int(every_seconds * sampling_rate)
        self.voiceprint: torch.Tensor | None = None
        self.total = 0
        self._embedded_at = 0
        self._audio: list[np.ndarray] = []

    def update(self, chunk: np.ndarray) -> None:
        self.total += len(chunk)
        if self.backend is None or (self.voiceprint is not None and self.total > self.samples):
            return
        self._audio.append(chunk)
        last = self.total > self.samples  # the final estimate is always made
        due = self.voiceprint is None or self.total - self._embedded_at >= self.every or last
        audio = np.concatenate(self._audio)
        if due and np.abs(audio).max(initial=0.0) > 1e-4 and len(audio) >= self.sr // 2:
            self.voiceprint = torch.from_numpy(np.asarray(self.backend.embed(audio), dtype=np.float32))
            self._embedded_at = self.total
        if last:
            self._audio = []


def _append_chunk(animator: Any, chunk: np.ndarray) -> None:
    """Both animators' intake: check the samples, append to ``buffer``, count, feed the voiceprint."""
    chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
    if not np.isfinite(chunk).all():
        raise ValueError("audio chunk contains NaN or Inf samples")
    animator.buffer = np.concatenate([animator.buffer, chunk])
    animator.total += len(chunk)
    animator._voice.update(chunk)


class StreamingAnimator:
    """Offline model on a sliding window ("offline-window" mode): ``push(chunk) -> (k, 52)``, ``flush()``."""

    def __init__(
        self,
        model,
        voiceprint_backend: VoiceprintBackend | None = None,
        context_seconds: int = 2,
        lookahead_seconds: float = 0.3,
        voiceprint_seconds: float = 3.0,
        **forward_params,
    ) -> None:
        cfg = model.config
        if int(context_seconds) < 2:
            raise ValueError(f"context_seconds must be an integer ≥ 2, got {context_seconds!r}")
        if not 0 <= lookahead_seconds < context_seconds - 1:
            raise ValueError(f"lookahead_seconds must be in [0, context_seconds - 1), got {lookahead_seconds!r}")
        self.model, self.backend = model, voiceprint_backend
        self.sr, self.fps = cfg.sampling_rate, cfg.fps
        self.context = int(context_seconds) * self.sr
        self.lookahead = int(round(lookahead_seconds * self.sr))
        self.forward_params = forward_params
        self.buffer = np.zeros(0, dtype=np.float32)
        self.buffer_start = 0  # absolute sample index of buffer[0]; always a whole second
        self.total = 0  # samples received
        self.emitted = 0  # frames emitted
        self._voice = _VoiceprintEstimator(voiceprint_backend, self.sr, voiceprint_seconds)

    @property
    def voiceprint(self) -> torch.Tensor | None:
        """The voiceprint in use (estimated from the first ``voiceprint_seconds``), None before."""
        return self._voice.voiceprint

    def _frames_until(self, end_frame: int) -> np.ndarray:
        """Run the model on the current window; return frames [emitted, end_frame)."""
        if end_frame <= self.emitted or len(self.buffer) < math.ceil(self.sr / self.fps):
            return np.zeros((0, self.model.config.num_blendshapes), dtype=np.float32)
        device = self.model.device
        window = torch.from_numpy(self.buffer).to(device)
        out = self.model.animate(
            window, None if self.voiceprint is None else self.voiceprint.to(device),
            chunk_seconds=max(1, len(self.buffer) // self.sr + 1), overlap_seconds=0, **self.forward_params,
        ).blendshapes[0].float().cpu().numpy()
        first = self.buffer_start * self.fps // self.sr
        lo, hi = self.emitted - first, min(end_frame - first, len(out))
        frames = out[max(lo, 0):hi]
        self.emitted = first + hi
        return frames

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Add 16 kHz mono samples; returns the ``(k, 52)`` frames that became final (k may be 0)."""
        _append_chunk(self, chunk)
        ready = max(0, self.total - self.lookahead) * self.fps // self.sr
        frames = self._frames_until(ready)
        # Keep only the last `context` samples (cut on whole seconds), but never drop unemitted audio.
        keep_from = max(0, self.total - self.context)
        keep_from = min(keep_from, self.emitted * self.sr // self.fps)
        keep_from -= keep_from % self.sr
        if keep_from > self.buffer_start:
            self.buffer = self.buffer[keep_from - self.buffer_start:]
            self.buffer_start = keep_from
        return frames

    def flush(self) -> np.ndarray:
        """End of stream: the remaining frames up to ceil(total / sr × fps)."""
        end = -(-self.total * self.fps // self.sr)
        return self._frames_until(end)


def with_streaming_mode(model, lookahead_frames: int, left_context_frames: int | None = 30, **fields: Any):
    """A copy of ``model`` (weights copied, the original untouched) in the bounded-look-ahead streaming mode.

    The mode's masks have no weights, so any mel PESTalk runs in it; a model fine-tuned with the masks
    on (``configs/default_stream.yaml``) loses less quality. ``fields``: other ``streaming_*`` config fields.
    """
    streamed = copy.deepcopy(model)
    cfg = streamed.config
    updates = {"streaming_lookahead_frames": lookahead_frames, "streaming_left_context_frames": left_context_frames}
    for key, value in fields.items():
        if not key.startswith("streaming_"):
            raise TypeError(f"with_streaming_mode takes streaming_* config fields, got {key!r}")
        updates[key] = value
    for key, value in updates.items():
        setattr(cfg, key, value)
    cfg.validate()
    return streamed


@torch.no_grad()
def estimate_mel_prior(model, dataset: str, split: str = "train", max_clips: int = 300, every: int = 10) -> list[float]:
    """Mean log-mel per bin over clips of a dataset (every ``every``-th clip, at most ``max_clips``): the
    ``streaming_mel_prior`` that starts the streaming mode's running normalisation (use the data the
    model was trained on). Returns ``num_mel_bins`` floats."""
    from .data.loading import load_clips

    if max_clips < 1 or every < 1:
        raise ValueError("max_clips and every must be ≥ 1")
    frontend = model.content_encoder.frames.mel if hasattr(model.content_encoder, "frames") else model.emotion_extractor.mel.mel
    total, frames, used = None, 0, 0
    for i, row in enumerate(load_clips(dataset, split=split, streaming=True)):
        if i % every:
            continue
        mel = frontend(torch.from_numpy(np.asarray(row["waveform"], np.float32))[None].to(model.device))[0].double()
        total = mel.sum(0) if total is None else total + mel.sum(0)
        frames, used = frames + mel.shape[0], used + 1
        if used >= max_clips:
            break
    if total is None:
        raise ValueError(f"split {split!r} of {dataset} has no clips")
    return (total / frames).tolist()


def _as_long(value: Any) -> torch.Tensor | None:
    return None if value is None else torch.tensor([int(value)], dtype=torch.long)


class LookaheadStreamingAnimator:
    """Streaming inference with the model's bounded look-ahead mode ("lookahead" mode).

    The model must be in the streaming mode (``config.streaming_lookahead_frames`` = L; see
    :func:`with_streaming_mode`). Frames come out one chunk of ``L + 1`` frames at a time, as soon as the
    audio the chunk depends on has arrived (:func:`streaming_chunk_ready_samples`): the first frame of a
    chunk waits for L more frames of audio, the last for none, each for 12.5 ms of STFT margin.

    Once a chunk is complete every layer's values for its frames are final (no later audio reaches them).
    With a bounded ``streaming_left_context_frames`` (the exact mode, ``context_seconds=None``) each
    Conformer block and decoder layer therefore keeps what later chunks read of it (attention keys and
    values of the last ``left`` frames, the depthwise conv's last inputs: ``model.new_streaming_cache``), and
    on every push that completes chunks only the mel front ends run on a sliding audio window (starting on
    a whole second, so the positional-encoding period and the chunk grid stay absolute, and early enough for
    the running normalisation: ``front_end_left_samples`` of :func:`streaming_receptive_field`); the layers
    run on the new frames alone (``model.encode_step`` / ``decode_step``). The frames are exactly those of
    ``model(whole_clip)`` in the same mode, with the same voiceprint, and a chunk costs the same whatever
    the receptive field (issue 13: recomputing the 74 frames of left context per chunk was most of the
    latency). With an unbounded left context, ``context_seconds`` caps the window and every push runs the
    whole model on it (approximate).

    Emotion and style: :class:`StreamingStyleTracker` (running estimate over the last seconds, smoothed,
    with hysteresis, cross-faded). ``emotion`` / ``emotion_probabilities`` give the current estimate.

    Args:
        model: a :class:`~pestalk_hf.PESTalkModel` in the streaming mode.
        voiceprint_backend: estimates the voiceprint from the first ``voiceprint_seconds`` (then frozen).
        voiceprint: a fixed ``(voiceprint_dim,)`` voiceprint instead (known speaker; tests).
        context_seconds: window cap in whole seconds (None = exactly the receptive field).
        forward_params: ``force_emotion``, ``force_speaker``, ``intensity``, ``style_top_k``.
    """

    def __init__(
        self,
        model,
        voiceprint_backend: VoiceprintBackend | None = None,
        *,
        voiceprint: torch.Tensor | np.ndarray | None = None,
        context_seconds: int | None = None,
        voiceprint_seconds: float = 3.0,
        **forward_params: Any,
    ) -> None:
        cfg = model.config
        if not cfg.is_streaming:
            raise ValueError("LookaheadStreamingAnimator needs a model in the streaming mode "
                             "(config.streaming_lookahead_frames set; see with_streaming_mode)")
        unknown = set(forward_params) - {"force_emotion", "force_speaker", "intensity", "style_top_k"}
        if unknown:
            raise TypeError(f"unexpected streaming arguments: {sorted(unknown)}")
        self.field = streaming_receptive_field(cfg)
        if context_seconds is None and self.field["left_samples"] is None:
            raise ValueError("with streaming_left_context_frames=None the receptive field is unbounded: "
                             "give context_seconds (approximate) or bound the left context")
        if context_seconds is not None and int(context_seconds) < 1:
            raise ValueError(f"context_seconds must be a whole number ≥ 1, got {context_seconds!r}")
        self.model, self.config = model, cfg
        self.sr, self.fps = cfg.sampling_rate, cfg.fps
        self.chunk = cfg.streaming_lookahead_frames + 1
        self.context = None if context_seconds is None else int(context_seconds) * self.sr
        self._voice = _VoiceprintEstimator(voiceprint_backend, self.sr, voiceprint_seconds, every_seconds=0.5)
        self._fixed_voiceprint = None
        if voiceprint is not None:
            vp = torch.as_tensor(np.asarray(voiceprint, dtype=np.float32)).reshape(-1)
            if vp.shape != (cfg.voiceprint_dim,) or not torch.isfinite(vp).all():
                raise ValueError(f"voiceprint must be {cfg.voiceprint_dim} finite numbers")
            self._fixed_voiceprint = vp[None].to(model.device)
        intensity = forward_params.get("intensity")
        self.tracker = StreamingStyleTracker(
            model, self._fixed_voiceprint, _as_long(forward_params.get("force_emotion")),
            _as_long(forward_params.get("force_speaker")),
            None if intensity is None else torch.tensor([float(intensity)]), forward_params.get("style_top_k"),
        )
        self.buffer = np.zeros(0, dtype=np.float32)
        self.buffer_start = 0  # absolute sample of buffer[0]; always a whole second
        self.total = 0
        self.emitted = 0  # frames emitted (a multiple of the chunk until flush)
        # approximate mode (context_seconds): per frame from _cache_start on, E (F,), C (F,), projected style
        self._cache: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._cache_start = 0
        # exact mode: every Conformer block and decoder layer keeps its state between chunks
        # (model.encode_step / decode_step), so a chunk costs the mel front ends on the window plus the
        # layers on its own frames only, not on the whole receptive field
        self._layer_cache = model.new_streaming_cache() if self.context is None else None
        self._finished = False

    # ------------------------------------------------------------------ public state
    @property
    def lookahead_frames(self) -> int:
        return self.chunk - 1

    @property
    def voiceprint(self) -> torch.Tensor | None:
        """The voiceprint in use ``(voiceprint_dim,)``: the fixed one, else the estimate, None before it."""
        return self._fixed_voiceprint[0] if self._fixed_voiceprint is not None else self._voice.voiceprint

    @property
    def emotion(self) -> str | None:
        """The held emotion (hysteresis), None before the first chunk."""
        held = self.tracker.held
        return None if held is None else self.config.emotions[int(held[0])]

    @property
    def emotion_probabilities(self) -> dict[str, float]:
        """Smoothed running emotion probabilities (empty before the first chunk)."""
        p = self.tracker.probabilities
        return {} if p is None else {n: float(v) for n, v in zip(self.config.emotions, p[0].tolist())}

    def algorithmic_latency_seconds(self) -> dict[str, float]:
        """Wait for audio after a frame's end before it can be computed (excluding chunking and compute):
        ``max`` (first frame of a chunk) and ``mean`` over a chunk."""
        return {"max": float(self.field["max_lookahead_seconds"]), "mean": float(self.field["mean_lookahead_seconds"])}

    # ------------------------------------------------------------------ streaming
    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Add 16 kHz mono samples; returns the ``(k, 52)`` frames that became final (k may be 0)."""
        if self._finished:
            raise RuntimeError("push() after flush(): start a new animator for a new stream")
        _append_chunk(self, chunk)
        next_chunk = self.emitted // self.chunk
        while streaming_chunk_ready_samples(self.config, next_chunk) <= self.total:
            next_chunk += 1
        end = next_chunk * self.chunk
        frames = self._frames_until(end) if end > self.emitted else self._empty()
        self._trim()
        return frames

    def flush(self) -> np.ndarray:
        """End of stream: the remaining frames up to ceil(total / sr × fps) (the last chunk may be short)."""
        self._finished = True
        return self._frames_until(self.config.num_frames(self.total))

    # ------------------------------------------------------------------ internals
    def _empty(self) -> np.ndarray:
        return np.zeros((0, self.config.num_blendshapes), dtype=np.float32)

    def _trim(self) -> None:
        """Drop audio and cached frames no future frame needs (audio cut on whole seconds)."""
        if self.context is None:  # the layers' caches hold the rest
            need = math.floor(self.emitted * self.sr / self.fps) - int(self.field["front_end_left_samples"])
            first_cached = self.emitted
        else:
            need = self.total - self.context
            first_cached = self.emitted - self.context * self.fps // self.sr
        keep_from = max(0, min(need, self.emitted * self.sr // self.fps))
        keep_from -= keep_from % self.sr
        if keep_from > self.buffer_start:
            self.buffer = self.buffer[keep_from - self.buffer_start:]
            self.buffer_start = keep_from
        if first_cached > self._cache_start:
            del self._cache[: first_cached - self._cache_start]
            self._cache_start = first_cached

    @torch.no_grad()
    def _frames_until(self, end: int) -> np.ndarray:
        """Frames [emitted, end) from the current window."""
        cfg, model, device = self.config, self.model, self.model.device
        if end <= self.emitted or len(self.buffer) < math.ceil(self.sr / self.fps):
            return self._empty()
        if self._fixed_voiceprint is None and self._voice.voiceprint is not None:
            self.tracker.voiceprint = self._voice.voiceprint[None].to(device)
        f0 = self.buffer_start * self.fps // self.sr  # whole seconds: exact
        window = torch.from_numpy(self.buffer).to(device=device, dtype=model.dtype)[None]
        num_frames = cfg.num_frames(window.shape[1])
        mask = torch.ones(1, num_frames, dtype=torch.bool, device=device)
        if self._layer_cache is not None:
            emotion, content = model.encode_step(window, f0, self.emitted - f0, self._layer_cache, end - self.emitted)
        else:  # context_seconds: the whole window through the encoders (approximate mode)
            emotion, content = model.encode(window, mask, frame_offset=f0)
            emotion, content = emotion[:, self.emitted - f0: end - f0], content[:, self.emitted - f0: end - f0]
        # style track over the new chunks
        styles, start = [], self.emitted
        while start < end:
            c = start // self.chunk
            stop = min(end, (c + 1) * self.chunk)
            part = slice(start - self.emitted, stop - self.emitted)
            styles.append(model.style_projection(self.tracker.step(c, emotion[:, part]).to(emotion.dtype)))
            start = stop
        style = torch.cat(styles, 1)
        if self._layer_cache is not None:
            out, decoder_first = model.decode_step(emotion, content, style, self._layer_cache)[0], self.emitted
        else:  # approximate mode: E, C and the projected style are kept per frame for the decoders' window
            self._cache.extend(zip(emotion[0], content[0], style[0]))
            decoder_first = self._cache_start
            e, c_, s = (torch.stack(x)[None] for x in zip(*self._cache))
            out = model.decode(e, c_, s, torch.ones(1, e.shape[1], dtype=torch.bool, device=device), offset=decoder_first)[0]
        if cfg.clamp_output:
            out = out.clamp(0.0, 1.0)
        frames = out[self.emitted - decoder_first:].float().cpu().numpy()
        self.emitted = end
        return frames


def make_streaming_animator(
    model,
    voiceprint_backend: VoiceprintBackend | None = None,
    *,
    mode: str = "offline-window",
    lookahead_frames: int | None = None,
    left_context_frames: int | None = 30,
    **kwargs: Any,
):
    """One factory for both streaming modes; both return an object with ``push(chunk) -> (k, 52)`` and
    ``flush() -> (k, 52)``.

    * ``mode="offline-window"``: :class:`StreamingAnimator` (the offline model on a sliding window; kwargs
      ``context_seconds``, ``lookahead_seconds``, ``voiceprint_seconds`` and the forward parameters).
    * ``mode="lookahead"``: :class:`LookaheadStreamingAnimator`. A model already in the streaming mode is
      used as is; otherwise ``lookahead_frames`` (and ``left_context_frames``) put a copy of it in that
      mode (:func:`with_streaming_mode`). kwargs: ``voiceprint``, ``context_seconds``,
      ``voiceprint_seconds`` and the forward parameters.
    """
    if mode == "offline-window":
        if lookahead_frames is not None:
            raise ValueError("lookahead_frames is for mode='lookahead'; the offline window takes lookahead_seconds")
        return StreamingAnimator(model, voiceprint_backend, **kwargs)
    if mode == "lookahead":
        if lookahead_frames is not None:
            if model.config.is_streaming and model.config.streaming_lookahead_frames == lookahead_frames:
                pass  # already in that mode (e.g. a fine-tuned streaming model)
            else:
                model = with_streaming_mode(model, int(lookahead_frames), left_context_frames)
        elif not model.config.is_streaming:
            raise ValueError("mode='lookahead' needs lookahead_frames or a model saved in the streaming mode")
        return LookaheadStreamingAnimator(model, voiceprint_backend, **kwargs)
    raise ValueError(f"mode must be 'offline-window' or 'lookahead', got {mode!r}")


class RestInSilenceStream:
    """A streaming animator (``push``/``flush``, either mode) whose lower face rests in the stream's silences.

    The causal counterpart of :func:`pestalk_hf.postprocess.rest_in_silence`: the levels of the audio pushed so
    far give the frame levels (50 ms windows) and, from the last ``history_seconds``, the floor and speech
    levels and the quiet threshold (:func:`pestalk_hf.postprocess.quiet_threshold_db`; nothing is gated before
    ``warmup_seconds`` of audio). A stream cannot know that a quiet stretch will last, so the mouth starts to
    close once ``min_seconds`` of it have passed (offline it closes from the stretch's start), and opens
    over the quiet frames whose successors' levels have already arrived before speech resumes. The rest pose
    is the model's face on silence for the stream's voiceprint (:meth:`PESTalkModel.silence_pose`), computed
    once the voiceprint is known. Other attributes are those of the wrapped animator.
    """

    def __init__(self, animator: Any, history_seconds: float = 10.0, warmup_seconds: float = 1.0,
                 min_seconds: float = SILENCE_MIN_SECONDS, ramp_frames: int = SILENCE_RAMP_FRAMES,
                 window_seconds: float = 0.05) -> None:
        cfg = animator.model.config
        self.animator = animator
        self.sr, self.fps, self.window = cfg.sampling_rate, cfg.fps, window_seconds
        self.half = max(1, int(round(window_seconds * self.sr / 2)))
        self.warmup = max(1, int(round(warmup_seconds * self.fps)))
        self.min_frames = max(1, int(math.ceil(min_seconds * self.fps - 1e-9)))
        self.ramp = int(ramp_frames)
        self._audio = np.zeros(0, dtype=np.float32)  # the samples the next frames' windows still need
        self._audio_start = 0  # absolute index of _audio[0]
        self._levels: deque[float] = deque(maxlen=max(1, int(round(history_seconds * self.fps))))  # dB
        self._measured = 0  # frames whose level is known
        self._run = 0  # quiet frames in a row up to the last measured one
        self._runs: deque[int] = deque()  # quiet run (0 = not quiet) of the frames _emitted, _emitted + 1, …
        self._emitted = 0
        self._rest: np.ndarray | None = None
        self._rest_voiced = False  # computed with the stream's voiceprint (not the placeholder)

    def __getattr__(self, name: str) -> Any:  # emotion, voiceprint, latency figures … of the wrapped animator
        return getattr(self.__dict__["animator"], name)

    def push(self, chunk: np.ndarray) -> np.ndarray:
        frames = self.animator.push(chunk)
        self._measure(np.asarray(chunk).reshape(-1))
        return self._gate(frames)

    def flush(self) -> np.ndarray:
        frames = self.animator.flush()
        self._measure(np.zeros(0, dtype=np.float32), final=True)
        return self._gate(frames)

    # ------------------------------------------------------------------ internals
    def _measure(self, samples: np.ndarray, final: bool = False) -> None:
        """Levels and quiet runs of the frames whose window is complete (all remaining ones when ``final``)."""
        x = samples.astype(np.float32) / np.float32(PCM16_SCALE) if samples.dtype == np.int16 else samples
        self._audio = np.concatenate([self._audio, x.astype(np.float32, copy=False)])
        total = self._audio_start + len(self._audio)
        if final:  # every frame of the stream (the model's count), windows cut at its end
            last = math.ceil(total * self.fps / self.sr) - 1
        else:  # the last frame whose whole window has arrived
            last = math.floor((total - self.half) * self.fps / self.sr)
            if round(last * self.sr / self.fps) + self.half > total:
                last -= 1
        n = last + 1 - self._measured
        if n <= 0:
            return
        levels = frame_level_db(self._audio, n, self.sr, self.fps, self.window, first_frame=self._measured,
                                first_sample=self._audio_start)
        for k, level in enumerate(levels, start=self._measured):
            self._levels.append(float(level))
            quiet = len(self._levels) >= self.warmup and level < quiet_threshold_db(np.asarray(self._levels))
            self._run = self._run + 1 if quiet else 0
            if k >= self._emitted:  # a frame already sent (its level came late) is not kept
                self._runs.append(self._run)
        self._measured += n
        keep = int(round(self._measured / self.fps * self.sr)) - self.half - self._audio_start
        if keep > 0:
            self._audio, self._audio_start = self._audio[keep:], self._audio_start + keep

    def _weight(self, i: int) -> float:
        """Gate of frame ``_emitted + i`` (0 while its level is unknown)."""
        if i >= len(self._runs) or self._runs[i] < self.min_frames:
            return 0.0
        w = min(1.0, (self._runs[i] - self.min_frames + 1) / (self.ramp + 1))
        for j in range(i + 1, min(i + self.ramp, len(self._runs) - 1) + 1):
            if self._runs[j] == 0:
                return min(w, (j - i) / (self.ramp + 1))
        return w

    def _rest_pose(self) -> np.ndarray:
        voice = self.animator.voiceprint
        if self._rest is None or (voice is not None and not self._rest_voiced):
            model = self.animator.model
            vp = None if voice is None else voice.reshape(-1).to(model.device)
            with torch.no_grad():
                out = model.animate(torch.zeros(self.sr, device=model.device), vp, return_silence_pose=True)
            self._rest, self._rest_voiced = out.silence_pose[0].float().cpu().numpy(), voice is not None
        return self._rest

    def _gate(self, frames: np.ndarray) -> np.ndarray:
        w = np.array([self._weight(i) for i in range(len(frames))], dtype=np.float32)
        for _ in range(min(len(frames), len(self._runs))):
            self._runs.popleft()
        self._emitted += len(frames)  # any frame sent before its level was measured: skipped by _measure
        return ease_to_rest(frames, w, self._rest_pose()) if w.any() else frames
