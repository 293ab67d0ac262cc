"""Real-world audio augmentation for training clips: noise, rooms, gain, telephone, codecs, speed.

Each function takes a mono float32 waveform at 16 kHz and returns a new one; :func:`speed_perturb` also
resamples the label track so audio and blendshapes stay aligned. :func:`augment_clip` draws one random
chain (deterministic for a seeded ``numpy.random.Generator``). Everything is numpy/scipy/soxr/PyAV —
no extra dependency — so the same code runs in the dataset builders and in a training loop.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .schema import ARKIT_BLENDSHAPE_NAMES, FPS, SAMPLING_RATE, num_frames_for


def apply_gain(waveform: np.ndarray, gain_db: float) -> np.ndarray:
    """Scale by ``gain_db`` and clip to [-1, 1] (a hot microphone clips; that is part of the world)."""
    return np.clip(waveform * np.float32(10.0 ** (gain_db / 20.0)), -1.0, 1.0).astype(np.float32)


def coloured_noise(num_samples: int, rng: np.random.Generator, exponent: float = 0.0) -> np.ndarray:
    """Unit-RMS noise with power spectrum ∝ 1/f^exponent (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(num_samples))
    freqs = np.fft.rfftfreq(num_samples)
    freqs[0] = freqs[1] if num_samples > 1 else 1.0
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2.0), n=num_samples)
    return (noise / (np.sqrt(np.mean(noise**2)) + 1e-12)).astype(np.float32)


def add_noise(waveform: np.ndarray, snr_db: float, rng: np.random.Generator, exponent: float = 0.0) -> np.ndarray:
    """Add coloured noise at ``snr_db`` relative to the speech power: the mean power of the louder half
    of the 20 ms frames, so leading and trailing silence do not make the noise too loud."""
    wav = np.asarray(waveform, np.float32)
    frame = SAMPLING_RATE // 50
    n = max(len(wav) // frame, 1)
    frames = (wav[: n * frame].astype(np.float64) ** 2).reshape(n, -1).mean(1) if len(wav) >= frame else \
        np.array([np.mean(wav.astype(np.float64) ** 2)]) if len(wav) else np.zeros(1)
    power = float(np.sort(frames)[len(frames) // 2:].mean())
    if power <= 0:
        return wav.copy()
    noise = coloured_noise(len(wav), rng, exponent) * np.float32(np.sqrt(power / 10.0 ** (snr_db / 10.0)))
    return np.clip(wav + noise, -1.0, 1.0).astype(np.float32)


def synthetic_room_impulse(rt60: float, rng: np.random.Generator, sampling_rate: int = SAMPLING_RATE,
                           direct_to_reverb_db: float = 3.0) -> np.ndarray:
    """A room impulse response: a direct path, then exponentially decaying noise (−60 dB at ``rt60``)
    with a few discrete early reflections — the standard statistical model of a diffuse room."""
    length = max(int(rt60 * sampling_rate), 16)
    t = np.arange(length) / sampling_rate
    tail = rng.standard_normal(length) * np.exp(-6.908 * t / rt60)  # ln(1000) = 6.908 → −60 dB
    tail[: int(0.002 * sampling_rate)] = 0.0
    for _ in range(4):
        k = int(rng.uniform(0.003, 0.03) * sampling_rate)
        if k < length:
            tail[k] += rng.uniform(-0.7, 0.7)
    tail *= 10.0 ** (-direct_to_reverb_db / 20.0) / (np.sqrt(np.sum(tail**2)) + 1e-12)
    rir = tail
    rir[0] = 1.0
    return rir.astype(np.float32)


def add_reverb(waveform: np.ndarray, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """Convolve with :func:`synthetic_room_impulse`; same length and peak-safe."""
    from scipy.signal import fftconvolve

    wav = np.asarray(waveform, np.float32)
    out = fftconvolve(wav, synthetic_room_impulse(rt60, rng))[: len(wav)]
    peak = np.abs(out).max() if len(out) else 0.0
    scale = min(1.0, 0.99 / peak) if peak > 0 else 1.0
    return (out * scale).astype(np.float32)


def telephone(waveform: np.ndarray, low_hz: float = 300.0, high_hz: float = 3400.0) -> np.ndarray:
    """Narrow-band telephone speech: 4th-order Butterworth band-pass, then through 8 kHz and back."""
    import soxr
    from scipy.signal import butter, sosfilt

    sos = butter(4, [low_hz, high_hz], btype="bandpass", fs=SAMPLING_RATE, output="sos")
    narrow = soxr.resample(sosfilt(sos, np.asarray(waveform, np.float64)).astype(np.float32), SAMPLING_RATE, 8000)
    out = soxr.resample(narrow, 8000, SAMPLING_RATE)
    return _fit_length(out, len(waveform))


def lossy_codec(waveform: np.ndarray, codec: str = "mp3", bitrate: int = 32000) -> np.ndarray:
    """Encode and decode with a lossy codec through PyAV (``mp3``, ``aac`` or ``libopus``)."""
    import av
    import soxr

    container = {"mp3": "mp3", "aac": "adts", "libopus": "ogg"}[codec]
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container) as out:
        rate = 48000 if codec == "libopus" else SAMPLING_RATE
        stream = out.add_stream(codec, rate=rate)
        stream.bit_rate = bitrate
        stream.layout = "mono"
        data = np.asarray(waveform, np.float32)
        if rate != SAMPLING_RATE:
            data = soxr.resample(data, SAMPLING_RATE, rate)
        frame = av.AudioFrame.from_ndarray(data[None, :], format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    buf.seek(0)
    with av.open(buf) as inp:
        chunks = [f.to_ndarray().astype(np.float32).reshape(-1) for f in inp.decode(audio=0)]
        rate = inp.streams.audio[0].rate
    decoded = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if rate != SAMPLING_RATE:
        decoded = soxr.resample(decoded, rate, SAMPLING_RATE)
    # MP3/AAC encoders add priming samples at the start: drop them so audio and labels stay aligned
    delay = max(len(decoded) - len(waveform), 0) if codec != "libopus" else 0
    return _fit_length(decoded[min(delay, 1105):], len(waveform))


def speed_perturb(waveform: np.ndarray, labels: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Play ``factor`` × faster (pitch and formants shift with it, as a different vocal tract would):
    the waveform is resampled and the (T, C) labels are re-sampled on the new, shorter time axis."""
    import soxr

    wav = soxr.resample(np.asarray(waveform, np.float32), SAMPLING_RATE * factor, SAMPLING_RATE).astype(np.float32)
    labels = np.asarray(labels, np.float32)
    t_new = num_frames_for(len(wav))
    src = np.clip((np.arange(t_new) + 0.5) * factor - 0.5, 0, len(labels) - 1)  # new frame k at time k·factor
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, len(labels) - 1)
    frac = (src - lo)[:, None].astype(np.float32)
    return wav, labels[lo] * (1 - frac) + labels[hi] * frac


# 1600 samples = 3 frames at 30 fps and 16 kHz: the smallest step where audio and labels stay aligned
_ALIGNED_STEP = SAMPLING_RATE // np.gcd(SAMPLING_RATE, FPS)
_LOWER_FACE = np.array([n.startswith(("jaw", "mouth", "cheek", "noseSneer")) for n in ARKIT_BLENDSHAPE_NAMES])


def insert_pause(waveform: np.ndarray, labels: np.ndarray, rest: np.ndarray, rng: np.random.Generator,
                 seconds: float, where: str = "random") -> tuple[np.ndarray, np.ndarray]:
    """Insert ``seconds`` (rounded to 0.1 s) of silence at the start, the end or a random 0.1 s boundary
    (``where``: "start", "end", "inside", "random"); the lower face goes to the ``rest`` pose (52,) over
    it, with 3-frame ramps from and back to the speech, the upper face holds its value. The silence is
    digital zero or faint noise (−70 to −50 dBFS) with equal odds: speech data rarely holds either, and a
    model that never saw them keeps the mouth open in silence."""
    wav, lab = np.asarray(waveform, np.float32), np.asarray(labels, np.float32)
    steps = max(int(round(seconds * SAMPLING_RATE / _ALIGNED_STEP)), 1)
    n_frames = steps * _ALIGNED_STEP * FPS // SAMPLING_RATE
    if where == "random":
        where = str(rng.choice(["start", "end", "inside"]))
    boundaries = len(wav) // _ALIGNED_STEP
    k = {"start": 0, "end": boundaries}.get(where, int(rng.integers(1, max(boundaries, 2))))
    cut_s, cut_f = k * _ALIGNED_STEP, min(k * _ALIGNED_STEP * FPS // SAMPLING_RATE, len(lab))
    gap = np.zeros(steps * _ALIGNED_STEP, np.float32)
    if rng.random() < 0.5:
        gap = (rng.standard_normal(len(gap)) * 10 ** (rng.uniform(-70, -50) / 20)).astype(np.float32)
    before = lab[max(cut_f - 1, 0)] if len(lab) else rest
    after = lab[min(cut_f, len(lab) - 1)] if len(lab) else rest
    t = np.arange(n_frames, dtype=np.float32)
    ramp = np.clip(np.minimum(t + 1, n_frames - t) / 3.0, 0.0, 1.0)[:, None]  # 0 → 1 → 0 over the pause
    hold = np.where((t < n_frames / 2)[:, None], before[None], after[None])
    pause = np.where(_LOWER_FACE[None], hold * (1 - ramp) + np.asarray(rest, np.float32)[None] * ramp, hold)
    wav = np.concatenate([wav[:cut_s], gap, wav[cut_s:]])
    lab = np.concatenate([lab[:cut_f], pause.astype(np.float32), lab[cut_f:]])
    return wav, lab[: num_frames_for(len(wav))]


def _fit_length(waveform: np.ndarray, length: int) -> np.ndarray:
    out = np.zeros(length, np.float32)
    n = min(length, len(waveform))
    out[:n] = waveform[:n]
    return out


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of :func:`augment_clip` (each step is applied independently)."""

    speed_factors: Sequence[float] = (0.9, 0.95, 1.05, 1.1)
    p_speed: float = 0.5
    p_noise: float = 0.5
    snr_db: tuple[float, float] = (5.0, 30.0)
    p_reverb: float = 0.35
    rt60: tuple[float, float] = (0.15, 0.7)
    p_telephone: float = 0.1
    p_codec: float = 0.15
    gain_db: tuple[float, float] = (-12.0, 6.0)
    p_pause: float = 0.35
    pause_seconds: tuple[float, float] = (0.2, 0.6)


def augment_clip(waveform: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                 config: AugmentConfig = AugmentConfig(), rest: np.ndarray | None = None,
                 ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One random chain over a clip: (waveform, labels, names of the steps applied). Pauses are only
    inserted when the ``rest`` pose (52,) is given."""
    steps: list[str] = []
    wav, lab = np.asarray(waveform, np.float32), np.asarray(labels, np.float32)
    if rest is not None and rng.random() < config.p_pause:
        seconds = float(rng.uniform(*config.pause_seconds))
        wav, lab = insert_pause(wav, lab, rest, rng, seconds)
        steps.append(f"pause{seconds:.1f}")
    if rng.random() < config.p_speed:
        factor = float(rng.choice(config.speed_factors))
        wav, lab = speed_perturb(wav, lab, factor)
        steps.append(f"speed{factor:g}")
    if rng.random() < config.p_reverb:
        rt60 = float(rng.uniform(*config.rt60))
        wav = add_reverb(wav, rt60, rng)
        steps.append(f"reverb{rt60:.2f}")
    if rng.random() < config.p_telephone:
        wav = telephone(wav)
        steps.append("telephone")
    if rng.random() < config.p_noise:
        snr = float(rng.uniform(*config.snr_db))
        wav = add_noise(wav, snr, rng, exponent=float(rng.choice([0.0, 1.0, 2.0])))
        steps.append(f"noise{snr:.0f}dB")
    if rng.random() < config.p_codec:
        try:
            wav = lossy_codec(wav, "mp3", int(rng.choice([24000, 32000, 64000])))
            steps.append("mp3")
        except Exception:  # a PyAV build without an MP3 encoder: skip the step, not the clip
            pass
    gain = float(rng.uniform(*config.gain_db))
    wav = apply_gain(wav, gain)
    steps.append(f"gain{gain:+.0f}dB")
    return wav, lab, steps


__all__ = ["AugmentConfig", "add_noise", "add_reverb", "apply_gain", "augment_clip", "coloured_noise",
           "insert_pause", "lossy_codec", "speed_perturb", "synthetic_room_impulse", "telephone", "FPS"]
