"""Post-processing of predicted blendshape tracks: temporal smoothing and procedural eye blinks.

Audio cannot predict blinks (they are not driven by speech), yet a face that never blinks looks
dead, so animators add them; :func:`add_blinks` does it with human statistics.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from .modeling.configuration_pestalk import ARKIT_BLENDSHAPE_NAMES

_BLINK_CHANNELS = [ARKIT_BLENDSHAPE_NAMES.index(n) for n in ("eyeBlinkLeft", "eyeBlinkRight")]


#: Largest smoothing σ accepted, in frames (2 s at 30 fps). Beyond it every curve is flattened to its
#: mean anyway, and the Gaussian kernel (8σ + 1 taps) grows without bound: σ = 2e7 took 184 s and 4.8 GB
#: on a 2 s clip before this limit existed.
MAX_SMOOTHING_FRAMES = 60.0


def check_smoothing(sigma_frames: float) -> float:
    """Validate a smoothing σ (frames): a finite number in ``[0, MAX_SMOOTHING_FRAMES]``."""
    sigma = float(sigma_frames)
    if sigma < 0 or not np.isfinite(sigma):
        raise ValueError(f"smoothing must be a finite number of frames ≥ 0, got {sigma_frames!r}")
    if sigma > MAX_SMOOTHING_FRAMES:
        raise ValueError(
            f"smoothing must be at most {MAX_SMOOTHING_FRAMES:g} frames (2 s at 30 fps; 1–3 is usual), got {sigma_frames!r}"
        )
    return sigma


def smooth(weights: np.ndarray, sigma_frames: float) -> np.ndarray:
    """Gaussian smoothing over time of ``(T, C)`` weights; ``sigma_frames`` = 0 returns them unchanged."""
    sigma_frames = check_smoothing(sigma_frames)
    if sigma_frames == 0 or len(weights) < 2:
        return weights
    return gaussian_filter1d(weights, sigma=sigma_frames, axis=0, mode="nearest").astype(weights.dtype)


def blink_curve(num_frames: int, fps: float, seed: int = 0, mean_interval_s: float = 4.0) -> np.ndarray:
    """A ``(T,)`` blink track in [0, 1].

    Intervals between blinks are drawn from a gamma distribution (mean ``mean_interval_s``, about 15
    blinks a minute, shape 3 so blinks are neither periodic nor clustered); each blink closes in ~70 ms
    and reopens in ~130 ms (eyelids open slower than they close).
    """
    rng = np.random.default_rng(seed)
    curve = np.zeros(num_frames, dtype=np.float32)
    close, reopen = 0.07 * fps, 0.13 * fps
    t = rng.gamma(3.0, mean_interval_s / 3.0) * fps * 0.5  # first blink comes sooner
    while t < num_frames:
        frames = np.arange(max(0, int(t - close) - 1), min(num_frames, int(t + reopen) + 2))
        x = frames - t
        shape = np.where(x < 0, np.clip(1 + x / close, 0, 1), np.clip(1 - x / reopen, 0, 1))
        curve[frames] = np.maximum(curve[frames], shape)
        t += max(rng.gamma(3.0, mean_interval_s / 3.0), 0.4) * fps
    return curve


def add_blinks(weights: np.ndarray, fps: float, seed: int = 0) -> np.ndarray:
    """Overlay procedural blinks on ``eyeBlinkLeft/Right`` of ``(T, 52)`` ARKit weights (max, not sum)."""
    out = weights.copy()
    curve = blink_curve(len(weights), fps, seed)
    for c in _BLINK_CHANNELS:
        out[:, c] = np.maximum(out[:, c], curve)
    return out
