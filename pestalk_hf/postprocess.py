"""Post-processing of predicted blendshape tracks: the mouth at rest in silence, temporal smoothing and
procedural eye blinks.

Audio cannot predict blinks (they are not driven by speech), yet a face that never blinks looks
dead, so animators add them; :func:`add_blinks` does it with human statistics.

A model that sees ±1 s of context carries the talking posture across short pauses: on the held-out LJ
Speech chapters the stage 3 default left the jaw more than 0.05 open in half of the 0.2–0.3 s pauses,
though it rests at jawOpen ≈ 0.03 on silence. :func:`rest_in_silence` finds the quiet stretches
of the audio itself (relative to the clip's own speech and noise levels, so a noisy room does not read as
speech and a quiet talker as silence) and eases the lower face into the model's own silence pose there.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from .audio import FPS, SAMPLING_RATE, frame_level_db
from .modeling.configuration_pestalk import ARKIT_BLENDSHAPE_NAMES, DEFAULT_LOWER_FACE_NAMES

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


#: Shortest quiet stretch that brings the mouth to rest (s); shorter gaps (stop closures, the dips between
#: words) keep the model's own curves.
SILENCE_MIN_SECONDS = 0.15
#: Frames over which the gate eases in at the start of a quiet stretch and out at its end (67 ms at 30 fps):
#: the mouth takes about as long to settle after speech and to open before it.
SILENCE_RAMP_FRAMES = 2
#: :func:`quiet_threshold_db`: how far from the noise floor towards speech a quiet frame may be, and the
#: bounds on its depth below speech (dB); the reasons are in :func:`quiet_frames`.
QUIET_POSITION, QUIET_MIN_DEPTH_DB, QUIET_MAX_DEPTH_DB = 0.15, 12.0, 40.0


def quiet_frames(waveform: np.ndarray, num_frames: int, sampling_rate: int = SAMPLING_RATE, fps: float = FPS,
                 position: float = QUIET_POSITION, min_depth_db: float = QUIET_MIN_DEPTH_DB,
                 max_depth_db: float = QUIET_MAX_DEPTH_DB) -> np.ndarray:
    """(T,) bool: frames near the clip's noise floor, far below its speech.

    Levels are :func:`pestalk_hf.audio.frame_level_db` (50 ms windows); the speech level is their 95th
    percentile, the noise floor their 5th. A frame is quiet below ``floor + position · (speech − floor)``.
    ``position`` is low on purpose: breaths and the onset of a phrase are quiet but not silent, and real faces
    meet them with the mouth open (GRID's open from ~270 ms before the voice starts); gating them at 0.35
    cost r(jawOpen) on GRID's faces 0.91 → 0.85 (held-out s1) and 0.69 → 0.57 (new speakers), at 0.15
    0.90 and 0.65, while LJ Speech's breath pauses still reach the rest pose 92 % of the time (0.35: 99 %).
    The threshold is never closer than ``min_depth_db`` to the speech level (in audio that is noise almost throughout,
    nothing is quiet) and never required to be more than ``max_depth_db`` below it (digital silence would
    otherwise put the threshold in the noise of a breath)."""
    if num_frames == 0:
        return np.zeros(0, dtype=bool)
    db = frame_level_db(waveform, num_frames, sampling_rate, fps)
    return db < quiet_threshold_db(db, position, min_depth_db, max_depth_db)


def quiet_threshold_db(levels_db: np.ndarray, position: float = QUIET_POSITION,
                       min_depth_db: float = QUIET_MIN_DEPTH_DB, max_depth_db: float = QUIET_MAX_DEPTH_DB) -> float:
    """The level below which a frame is quiet (:func:`quiet_frames`), from frame levels in dB."""
    speech, floor = np.percentile(levels_db, 95), np.percentile(levels_db, 5)
    return float(speech - np.clip((1.0 - position) * (speech - floor), min_depth_db, max_depth_db))


def silence_gate(quiet: np.ndarray, min_frames: int, ramp_frames: int = SILENCE_RAMP_FRAMES) -> np.ndarray:
    """(T,) in [0, 1]: 1 inside runs of at least ``min_frames`` quiet frames, easing in over their first
    ``ramp_frames`` frames and out over their last; 0 elsewhere."""
    quiet = np.asarray(quiet, dtype=bool)
    gate = np.zeros(len(quiet), dtype=np.float32)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]])))
    for start, stop in zip(edges[::2], edges[1::2]):
        if stop - start < max(min_frames, 1):
            continue
        k = np.arange(start, stop)
        gate[start:stop] = np.minimum(np.minimum(k - start + 1, stop - k) / (ramp_frames + 1), 1.0)
    return gate


def rest_in_silence(weights: np.ndarray, waveform: np.ndarray, rest_pose: np.ndarray,
                    sampling_rate: int = SAMPLING_RATE, fps: float = FPS,
                    min_seconds: float = SILENCE_MIN_SECONDS,
                    channels: tuple[str, ...] = DEFAULT_LOWER_FACE_NAMES) -> np.ndarray:
    """``(T, 52)`` weights with the lower face ``channels`` eased towards ``rest_pose`` (52,) in the quiet
    stretches of ``waveform`` (:func:`quiet_frames`) of at least ``min_seconds``. The upper face (the
    emotion, blinks) is left as it is."""
    weights = np.asarray(weights)
    rest_pose = np.asarray(rest_pose, dtype=weights.dtype).reshape(-1)
    if rest_pose.shape[0] != weights.shape[1]:
        raise ValueError(f"rest_pose has {rest_pose.shape[0]} channels, the weights {weights.shape[1]}")
    gate = silence_gate(quiet_frames(waveform, len(weights), sampling_rate, fps),
                        int(np.ceil(min_seconds * fps - 1e-9)))
    return ease_to_rest(weights, gate, rest_pose, channels)


def ease_to_rest(weights: np.ndarray, gate: np.ndarray, rest_pose: np.ndarray,
                 channels: tuple[str, ...] = DEFAULT_LOWER_FACE_NAMES) -> np.ndarray:
    """``(T, 52)`` weights with ``channels`` blended towards ``rest_pose`` (52,) by ``gate`` (T,) in [0, 1]
    (a copy; ``weights`` itself when the gate is 0 throughout)."""
    if not np.any(gate):
        return weights
    idx = [ARKIT_BLENDSHAPE_NAMES.index(n) for n in channels]
    out = np.array(weights, copy=True)
    g = np.asarray(gate, dtype=out.dtype)[:, None]
    out[:, idx] = (1 - g) * out[:, idx] + g * np.asarray(rest_pose, dtype=out.dtype)[None, idx]
    return out


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
