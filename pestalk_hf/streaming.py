"""Streaming inference: animate audio chunk by chunk with bounded latency and memory.

PESTalk's decoders are non-autoregressive and look at future audio, so a frame can only be final once
some audio after it has arrived. :class:`StreamingAnimator` keeps the last ``context_seconds`` of
audio; on every push it re-runs the model on that window (cut on whole seconds, so the window starts on
the 30 fps grid and on the positional-encoding period) and emits the frames that are at least
``lookahead_seconds`` old. Latency of a frame = chunk duration + lookahead + one window's compute
time (measured by ``bench/bench_pipeline.py``). The voiceprint is estimated from the first
``voiceprint_seconds`` of speech and then frozen, so the style does not flicker.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .voiceprint import VoiceprintBackend


class StreamingAnimator:
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
        self.voiceprint_samples = int(voiceprint_seconds * self.sr)
        self.forward_params = forward_params
        self.buffer = np.zeros(0, dtype=np.float32)
        self.buffer_start = 0  # absolute sample index of buffer[0]; always a whole second
        self.total = 0  # samples received
        self.emitted = 0  # frames emitted
        self.voiceprint: torch.Tensor | None = None
        self._voice_audio: list[np.ndarray] = []

    def _update_voiceprint(self, chunk: np.ndarray) -> None:
        if self.backend is None or (self.voiceprint is not None and self.total > self.voiceprint_samples):
            return
        self._voice_audio.append(chunk)
        audio = np.concatenate(self._voice_audio)
        if np.abs(audio).max(initial=0.0) > 1e-4 and len(audio) >= self.sr // 2:
            self.voiceprint = torch.from_numpy(np.asarray(self.backend.embed(audio), dtype=np.float32))
        if self.total > self.voiceprint_samples:
            self._voice_audio = []

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
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if not np.isfinite(chunk).all():
            raise ValueError("audio chunk contains NaN or Inf samples")
        self.buffer = np.concatenate([self.buffer, chunk])
        self.total += len(chunk)
        self._update_voiceprint(chunk)
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
