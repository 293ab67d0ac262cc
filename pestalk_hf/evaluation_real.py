r"""Real-speech evaluation: does a model animate real human speech (lips, jaw, emotion)?

``hub_scripts/evaluate_real.py`` is the command line; the definitions are in ``docs/METRICS.md``
("Real-speech evaluation") and repeated here. Three sections, each skipped with a reason when its
material is missing:

(a) **Talking faces** — references are MediaPipe Face Landmarker labels of real videos (the paper's
    3D-EmoStyle recipe, made by :mod:`pestalk_hf.data.video_builder`): held-out GRID s1 clips (the
    ``test`` split of a 3D-EmoStyle folder built over ``video/grid_s1``) and clips of speakers no model
    has seen (``video/grid/brbk7n.mp4``, ``video/grid/id2_vcd_swwp2s.mp4``, labelled here into a cache
    under the output folder). Per group: LBE and MBE (:func:`pestalk_hf.metrics.lbe` /
    :func:`~pestalk_hf.metrics.mbe`, clip-averaged), r(jawOpen) at the best lag within ±3 frames
    (:func:`best_lag_correlation`), and the jawOpen std ratio prediction/labels
    (:func:`jaw_std_ratio`). The same for three floors: all zeros, the mean pose (of the s1 ``train``
    split's labels when given, else of the group's references themselves — an in-sample floor), and a
    loudness→jawOpen linear fit (other channels = that mean pose; fit on the same clips as the mean pose).
(b) **Phone-labelled speech** — CMU ARCTIC a0009 (HTS labels), EmoDB held-out speakers (``*.lablaut``),
    LJSpeech forced-aligned by ``pestalk_hf.data.aligner`` (skipped without its ``synth`` extra); the
    MediaPipe labels of GRID s1 clips (phones from a GRID lexicon spread over the corpus's word timings) give the reference value
    a real face reaches under the same definitions. Metrics: share of bilabials with the lips closed
    (:func:`bilabial_closure`), jawOpen on open vowels vs consonants (:func:`jaw_by_phone_class`),
    share of pauses ≥ 200 ms with jawOpen at rest (:func:`pauses_at_rest`).
(c) **Emotion** — accuracy and confusion matrix over EmoDB held-out speakers on the six emotions EmoDB
    shares with ours (boredom reported apart), and the share of neutral English read speech (ARCTIC,
    LJSpeech) read as neutral.

Definitions (all at 30 fps; frame k is at k/30 s, as the 3D-EmoStyle builder samples its labels)
--------------------------------------------------------------------------------------------------
* **Lip aperture** :math:`a_t = \mathrm{jawOpen} - \mathrm{mouthClose} + \tfrac12(\overline{\mathrm{mouthLowerDown}}
  + \overline{\mathrm{mouthUpperUp}})` (left/right averaged). ARKit's ``mouthClose`` is "lips closed
  while the jaw is open": with ``mouthClose == jawOpen`` the lips touch, so ``jawOpen − mouthClose``
  is the lip gap the jaw leaves; raising the upper or lowering the lower lip opens it further.
  **Lips closed** at frame t: :math:`a_t \le 0.05` (:data:`LIPS_CLOSED_THRESHOLD`).
* **Bilabial closed**: a bilabial phone (p, b, m; adjacent bilabial segments, e.g. EmoDB's closure +
  release + aspiration ``p !p pasp``, count as one) whose frames, widened by one frame on each side,
  contain at least one lips-closed frame. A phone's frames are those whose time lies in
  [start, end), or the frame nearest its midpoint when none does.
* **jawOpen on open vowels vs consonants**: mean jawOpen over the frames of open vowels (ARPAbet
  aa ae ah ao aw ay; SAMPA a-initial, 6, O) and of consonants (every phone that is not a vowel or a pause).
* **Pause at rest**: a pause (silence label, or EmoDB's unlabelled lead-in and the time after its end
  mark ``.``) of ≥ 0.2 s whose median jawOpen over its interior (its frames minus 2 frames = 67 ms at
  each end, where the mouth closes after and opens before speech; at least the middle frame) is within
  0.05 of the rest value. Two rest values: **0** (the mouth closed: a real face at rest has jawOpen
  ≈ 0.02–0.05 in MediaPipe labels) and the **model's own jawOpen on digital silence** (median over 1 s
  of zeros, with the clip's voiceprint), which only asks that pauses look like the model's silence.
* **r(jawOpen) at the best lag**: for each lag k in [-3, 3], the Pearson r between prediction frame
  t + k and reference frame t over the overlap, per clip, averaged over clips; the lag with the largest
  mean r is reported with its r (k > 0: the prediction lags the reference). Constant tracks have no r
  (JSON ``null``).
* **jawOpen std ratio**: clip-averaged standard deviation over time of the prediction's jawOpen divided
  by that of the references (1 = the real amplitude).
* **Loudness**: per frame, RMS of a 50 ms window centred on the frame, in dB relative to the clip's
  95th-percentile frame level, floored at −45 dB (relative, so recording gain does not matter).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .audio import frame_level_db
from .blendshapes import LIPS_CLOSED_THRESHOLD, lip_aperture as _lip_aperture
from .data.aligner import LJSPEECH_TEST_CHAPTERS, align_ljspeech, ljspeech_chapter, load_alignment_cache
from .metrics import emotion_accuracy, lbe, mbe
from .modeling.configuration_pestalk import ARKIT_BLENDSHAPE_NAMES

FPS = 30
SAMPLING_RATE = 16000
_IDX = {name: i for i, name in enumerate(ARKIT_BLENDSHAPE_NAMES)}
JAW_OPEN = _IDX["jawOpen"]

PAUSE_TOLERANCE = 0.05
MIN_PAUSE_SECONDS = 0.2
PAUSE_EDGE_FRAMES = 2
MAX_LAG = 3
LOUDNESS_WINDOW_SECONDS = 0.05
LOUDNESS_FLOOR_DB = -45.0

#: EmoDB emotion → ours. Boredom has no class of ours.
EMODB_TO_OURS = {"anger": "angry", "disgust": "disgusted", "fear": "fear", "happiness": "happy",
                 "sadness": "sad", "neutral": "neutral"}
DEFAULT_EMODB_TEST_SPEAKERS = ("03", "16")
GRID_NEW_SPEAKER_CLIPS = ("video/grid/brbk7n.mp4", "video/grid/id2_vcd_swwp2s.mp4")

# ------------------------------------------------------------------------------------------------
# phones
# ------------------------------------------------------------------------------------------------

ARPABET_VOWELS = frozenset("aa ae ah ao aw ax axr ay eh er ey ih ix iy ow oy uh uw ux".split())
ARPABET_OPEN_VOWELS = frozenset("aa ae ah ao aw ay".split())
ARPABET_BILABIALS = frozenset("p b m em".split())
ARPABET_PAUSES = frozenset("sil pau sp h# spn".split())
_SAMPA_VOWEL_START = set("aeiouyAEIOUY@26982")
SAMPA_BILABIALS = frozenset("p b m _p _b mm m: !p !b pasp basp".split())  # closures, nasal, releases
PAUSE = "pau"

#: GRID's 51 words (ARPAbet, CMUdict pronunciations); ``sil``/``sp`` are pauses.
GRID_LEXICON: dict[str, tuple[str, ...]] = {k: tuple(v.split()) for k, v in {
    "bin": "b ih n", "lay": "l ey", "place": "p l ey s", "set": "s eh t",
    "blue": "b l uw", "green": "g r iy n", "red": "r eh d", "white": "w ay t",
    "at": "ae t", "by": "b ay", "in": "ih n", "with": "w ih dh",
    "a": "ey", "b": "b iy", "c": "s iy", "d": "d iy", "e": "iy", "f": "eh f", "g": "jh iy", "h": "ey ch",
    "i": "ay", "j": "jh ey", "k": "k ey", "l": "eh l", "m": "eh m", "n": "eh n", "o": "ow", "p": "p iy",
    "q": "k y uw", "r": "aa r", "s": "eh s", "t": "t iy", "u": "y uw", "v": "v iy", "x": "eh k s",
    "y": "w ay", "z": "z iy",
    "zero": "z ih r ow", "one": "w ah n", "two": "t uw", "three": "th r iy", "four": "f ao r",
    "five": "f ay v", "six": "s ih k s", "seven": "s eh v ah n", "eight": "ey t", "nine": "n ay n",
    "again": "ah g eh n", "now": "n aw", "please": "p l iy z", "soon": "s uw n",
}.items()}


@dataclass(frozen=True)
class Phone:
    """One labelled segment: ``label`` in its alphabet, ``start``/``end`` in seconds."""

    label: str
    start: float
    end: float


def _norm_arpabet(label: str) -> str:
    return re.sub(r"\d+$", "", label.strip().lower())


def classify_phone(label: str, alphabet: str = "arpabet") -> str:
    """``"pause"``, ``"bilabial"``, ``"open_vowel"``, ``"vowel"``, ``"consonant"`` or ``"other"``.

    ``alphabet``: ``"arpabet"`` (CMU ARCTIC HTS labels, GRID lexicon, PocketSphinx; stress digits and
    case ignored) or ``"sampa"`` (EmoDB lablaut).
    """
    if label == PAUSE:
        return "pause"
    if alphabet == "arpabet":
        p = _norm_arpabet(label)
        if p in ARPABET_PAUSES:
            return "pause"
        if not p or not p[0].isalpha():
            return "other"  # noise marks such as +nsn+
        if p in ARPABET_BILABIALS:
            return "bilabial"
        if p in ARPABET_OPEN_VOWELS:
            return "open_vowel"
        return "vowel" if p in ARPABET_VOWELS else "consonant"
    if alphabet == "sampa":
        p = label.strip()
        if not p:
            return "other"
        if p in SAMPA_BILABIALS:
            return "bilabial"
        if p[0] in _SAMPA_VOWEL_START:
            return "open_vowel" if p[0] in "aA" or p in ("6", "O", "O:") else "vowel"
        return "consonant"
    raise ValueError(f"alphabet must be 'arpabet' or 'sampa', got {alphabet!r}")


def parse_hts_labels(text: str) -> list[Phone]:
    """HTS full-context labels (``start end context``, times in 100 ns): the phone is between ``-`` and ``+``
    of the quinphone (``x^sil-hh+iy=t@...`` → ``hh``); plain monophone labels (``start end ph``) work too."""
    phones = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        start, end, ctx = int(parts[0]) * 1e-7, int(parts[1]) * 1e-7, parts[2]
        m = re.match(r"^[^-]*\^[^-]*-([^+]+)\+", ctx)
        phones.append(Phone(m.group(1) if m else ctx, start, end))
    return phones


def parse_lablaut(text: str, end_s: float | None = None, cut_s: float | None = None) -> list[Phone]:
    """EmoDB ``*.lablaut`` (ESPS xlabel: ``time -1 label<TAB>diacritics`` after a ``#`` line; SAMPA).

    The time is the segment's **start** (checked against the audio: releases, vowel onsets and the end
    mark ``.`` line up with the energy); a segment lasts until the next label. Lines without a phone
    (voice-quality marks ``+lar``/``-sth``, ``(gef``) do not cut segments. The unlabelled lead-in and the
    time after ``.`` (end of speech) up to ``end_s`` are returned as pauses (``"pau"``). ``cut_s``: the
    audio was cut there (labels.csv ``truncated_in_this_copy``): later phones are dropped and the last
    kept one ends at the cut.
    """
    from .data.real_mix import lablaut_events

    events = [(t, PAUSE if label == "." else label) for t, label in lablaut_events(text)]
    limit = min(x for x in (end_s, cut_s) if x is not None) if (end_s is not None or cut_s is not None) else None
    phones: list[Phone] = []
    if events and events[0][0] > 0:
        phones.append(Phone(PAUSE, 0.0, events[0][0]))
    for i, (t, label) in enumerate(events):
        nxt = events[i + 1][0] if i + 1 < len(events) else (limit if limit is not None else t)
        if limit is not None:
            if t >= limit:
                break
            nxt = min(nxt, limit)
        if nxt > t:
            phones.append(Phone(label, t, nxt))
    return phones


def grid_align_to_phones(text: str, lexicon: Mapping[str, Sequence[str]] = GRID_LEXICON) -> list[Phone]:
    """GRID ``*.align`` (``start end word``, units of 1/1000 video frame at 25 fps = 1/25000 s) → phones,
    each word's time shared equally by its lexicon phones (an approximation: GRID has word timings
    only); ``sil``/``sp`` → pauses. Unknown words raise KeyError."""
    phones = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        start, end, word = int(parts[0]) / 25000.0, int(parts[1]) / 25000.0, parts[2].lower()
        if word in ("sil", "sp"):
            phones.append(Phone(PAUSE, start, end))
            continue
        seq = lexicon[word]
        step = (end - start) / len(seq)
        phones.extend(Phone(p, start + i * step, start + (i + 1) * step) for i, p in enumerate(seq))
    return phones


# ------------------------------------------------------------------------------------------------
# per-frame measures and phone-level metrics
# ------------------------------------------------------------------------------------------------


def lip_aperture(weights: Any) -> np.ndarray:
    """(T,) lip gap (:func:`pestalk_hf.blendshapes.lip_aperture`) of a ``(T, 52)`` track, in float64."""
    return _lip_aperture(np.asarray(weights, dtype=np.float64))


def lips_closed(weights: Any, threshold: float = LIPS_CLOSED_THRESHOLD) -> np.ndarray:
    """(T,) bool: lip aperture ≤ ``threshold``."""
    return lip_aperture(weights) <= threshold


def phone_frames(phone: Phone, num_frames: int, fps: float = FPS) -> np.ndarray:
    """Frames whose time k/fps lies in [start, end); the one nearest the midpoint when none does."""
    lo, hi = math.ceil(phone.start * fps - 1e-9), math.ceil(phone.end * fps - 1e-9)
    frames = np.arange(max(lo, 0), min(hi, num_frames))
    if frames.size == 0:
        mid = int(round((phone.start + phone.end) / 2 * fps))
        frames = np.array([mid]) if 0 <= mid < num_frames else frames
    return frames


def merge_bilabials(phones: Sequence[Phone], alphabet: str = "arpabet") -> list[Phone]:
    """The bilabial phones, adjacent bilabial segments merged into one (closure + release = one /p/)."""
    out: list[Phone] = []
    prev_end = None
    for ph in phones:
        if classify_phone(ph.label, alphabet) != "bilabial":
            prev_end = None
            continue
        if out and prev_end is not None and abs(ph.start - prev_end) < 1e-6:
            out[-1] = Phone(out[-1].label + " " + ph.label, out[-1].start, ph.end)
        else:
            out.append(ph)
        prev_end = ph.end
    return out


def bilabial_closure(weights: Any, phones: Sequence[Phone], alphabet: str = "arpabet",
                     threshold: float = LIPS_CLOSED_THRESHOLD, margin_frames: int = 1,
                     fps: float = FPS) -> tuple[int, int]:
    """(bilabials with a lips-closed frame within ``margin_frames`` of the phone, bilabials counted)."""
    closed = lips_closed(weights, threshold)
    n = len(closed)
    hits = total = 0
    for ph in merge_bilabials(phones, alphabet):
        frames = phone_frames(ph, n, fps)
        if frames.size == 0:
            continue
        lo, hi = max(0, frames.min() - margin_frames), min(n, frames.max() + margin_frames + 1)
        total += 1
        hits += bool(closed[lo:hi].any())
    return hits, total


def jaw_by_phone_class(weights: Any, phones: Sequence[Phone], alphabet: str = "arpabet",
                       fps: float = FPS) -> dict[str, list[float]]:
    """jawOpen values of the frames of open vowels and of consonants (bilabials included)."""
    jaw = np.asarray(weights, dtype=np.float64)[:, JAW_OPEN]
    out: dict[str, list[float]] = {"open_vowel": [], "consonant": []}
    for ph in phones:
        cls = classify_phone(ph.label, alphabet)
        key = "consonant" if cls in ("consonant", "bilabial") else cls
        if key in out:
            out[key].extend(jaw[phone_frames(ph, len(jaw), fps)].tolist())
    return out


def open_vowels_closed(weights: Any, phones: Sequence[Phone], alphabet: str = "arpabet",
                       threshold: float = LIPS_CLOSED_THRESHOLD, fps: float = FPS) -> tuple[int, int]:
    """(open-vowel frames with the lips closed, open-vowel frames): the false closures that keep
    :func:`bilabial_closure` honest (an all-zeros face closes every bilabial)."""
    closed = lips_closed(weights, threshold)
    frames = [phone_frames(ph, len(closed), fps) for ph in phones if classify_phone(ph.label, alphabet) == "open_vowel"]
    frames = np.concatenate(frames) if frames else np.zeros(0, dtype=np.int64)
    return int(closed[frames].sum()), int(frames.size)


def pause_intervals(phones: Sequence[Phone], alphabet: str = "arpabet",
                    min_seconds: float = MIN_PAUSE_SECONDS) -> list[Phone]:
    """Pauses of at least ``min_seconds`` (adjacent pause segments merged)."""
    merged: list[Phone] = []
    for ph in phones:
        if classify_phone(ph.label, alphabet) != "pause":
            continue
        if merged and abs(ph.start - merged[-1].end) < 1e-6:
            merged[-1] = Phone(PAUSE, merged[-1].start, ph.end)
        else:
            merged.append(Phone(PAUSE, ph.start, ph.end))
    return [p for p in merged if p.end - p.start >= min_seconds - 1e-9]


def pauses_at_rest(weights: Any, phones: Sequence[Phone], rest: float = 0.0, alphabet: str = "arpabet",
                   tolerance: float = PAUSE_TOLERANCE, min_seconds: float = MIN_PAUSE_SECONDS,
                   edge_frames: int = PAUSE_EDGE_FRAMES, fps: float = FPS) -> tuple[int, int]:
    """(pauses ≥ ``min_seconds`` whose interior median jawOpen is within ``tolerance`` of ``rest``, pauses)."""
    jaw = np.asarray(weights, dtype=np.float64)[:, JAW_OPEN]
    hits = total = 0
    for pause in pause_intervals(phones, alphabet, min_seconds):
        frames = phone_frames(pause, len(jaw), fps)
        if frames.size == 0:
            continue
        inner = frames[edge_frames: len(frames) - edge_frames] if len(frames) > 2 * edge_frames else frames[[len(frames) // 2]]
        total += 1
        hits += bool(abs(float(np.median(jaw[inner])) - rest) <= tolerance)
    return hits, total


# ------------------------------------------------------------------------------------------------
# talking-face metrics
# ------------------------------------------------------------------------------------------------


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 1e-12 else float("nan")


def lagged_correlations(pred: Any, ref: Any, max_lag: int = MAX_LAG) -> dict[int, float]:
    """Lag k → Pearson r of ``pred[t + k]`` with ``ref[t]`` (1-D tracks, cut to the shorter one)."""
    p, g = np.asarray(pred, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    n = min(len(p), len(g))
    p, g = p[:n], g[:n]
    out = {}
    for k in range(-max_lag, max_lag + 1):
        out[k] = _pearson(p[k:], g[: n - k]) if k >= 0 else _pearson(p[: n + k], g[-k:])
    return out


def best_lag_correlation(preds: Sequence[Any], refs: Sequence[Any], channel: int = JAW_OPEN,
                         max_lag: int = MAX_LAG) -> dict[str, Any]:
    """Clip-averaged r of one channel at each lag in [-max_lag, max_lag]; the best lag and its r.

    ``preds``/``refs``: (T, 52) tracks. ``r``/``lag`` are None when no clip has a defined r (constant tracks).
    """
    per_lag: dict[int, list[float]] = {k: [] for k in range(-max_lag, max_lag + 1)}
    for p, g in zip(preds, refs):
        for k, r in lagged_correlations(np.asarray(p)[:, channel], np.asarray(g)[:, channel], max_lag).items():
            per_lag[k].append(r)
    means = {k: (float(np.nanmean(v)) if np.isfinite(v).any() else None) for k, v in per_lag.items()}
    defined = {k: v for k, v in means.items() if v is not None}
    if not defined:
        return {"r": None, "lag": None, "r_at_lag0": None, "r_by_lag": means}
    best = max(defined, key=lambda k: (defined[k], -abs(k)))
    return {"r": defined[best], "lag": best, "r_at_lag0": means[0], "r_by_lag": means}


def jaw_std_ratio(preds: Sequence[Any], refs: Sequence[Any], channel: int = JAW_OPEN) -> float | None:
    """Clip-averaged std over time of the predictions' channel / that of the references."""
    sp = np.mean([np.asarray(p)[:, channel].std() for p in preds])
    sg = np.mean([np.asarray(g)[:, channel].std() for g in refs])
    return float(sp / sg) if sg > 0 else None


def talking_face_metrics(preds: Sequence[Any], refs: Sequence[Any], max_lag: int = MAX_LAG) -> dict[str, Any]:
    """LBE, MBE (clip-averaged), r(jawOpen) at the best lag, jawOpen std ratio, mean jawOpen."""
    if not preds:
        raise ValueError("no clips")
    cut = [(np.asarray(p)[: min(len(p), len(g))], np.asarray(g)[: min(len(p), len(g))]) for p, g in zip(preds, refs)]
    corr = best_lag_correlation([p for p, _ in cut], [g for _, g in cut], JAW_OPEN, max_lag)
    return {
        "LBE": float(np.mean([lbe(p, g) for p, g in cut])),
        "MBE": float(np.mean([mbe(p, g) for p, g in cut])),
        "r_jawOpen": corr["r"], "best_lag": corr["lag"], "r_jawOpen_lag0": corr["r_at_lag0"],
        "jawOpen_std_ratio": jaw_std_ratio([p for p, _ in cut], [g for _, g in cut]),
        "jawOpen_mean": float(np.mean([p[:, JAW_OPEN].mean() for p, _ in cut])),
        "frames_dropped": int(sum(abs(len(p) - len(g)) for p, g in zip(preds, refs))),
    }


def loudness_db(waveform: Any, num_frames: int, sampling_rate: int = SAMPLING_RATE, fps: float = FPS,
                window_s: float = LOUDNESS_WINDOW_SECONDS, floor_db: float = LOUDNESS_FLOOR_DB) -> np.ndarray:
    """(T,) frame loudness in dB relative to the clip's 95th-percentile level, floored at ``floor_db``."""
    db = frame_level_db(waveform, num_frames, sampling_rate, fps, window_s)
    ref = np.percentile(db, 95) if len(db) else 0.0
    return np.maximum(db - ref, floor_db)


def fit_loudness_jaw(waveforms: Sequence[Any], refs: Sequence[Any], sampling_rate: int = SAMPLING_RATE) -> tuple[float, float]:
    """Least-squares ``jawOpen ≈ a + b · loudness_dB`` over all frames of the clips → (a, b)."""
    xs, ys = [], []
    for wav, g in zip(waveforms, refs):
        g = np.asarray(g)
        xs.append(loudness_db(wav, len(g), sampling_rate))
        ys.append(g[:, JAW_OPEN])
    x, y = np.concatenate(xs), np.concatenate(ys)
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b)


def loudness_floor(waveform: Any, num_frames: int, mean_pose: Any, coef: tuple[float, float],
                   sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """(T, 52): the mean pose with jawOpen = clip(a + b · loudness_dB, 0, 1)."""
    out = np.repeat(np.asarray(mean_pose, dtype=np.float64)[None], num_frames, axis=0)
    out[:, JAW_OPEN] = np.clip(coef[0] + coef[1] * loudness_db(waveform, num_frames, sampling_rate), 0, 1)
    return out


# ------------------------------------------------------------------------------------------------
# emotion
# ------------------------------------------------------------------------------------------------


def emotion_report(predicted: Sequence[str], truth: Sequence[str], model_emotions: Sequence[str],
                   classes: Sequence[str] | None = None) -> dict[str, Any]:
    """Accuracy (via :func:`pestalk_hf.metrics.emotion_accuracy`) and the confusion matrix with rows =
    ``classes`` (default: the true emotions present, in model order) and columns = every model emotion."""
    model_emotions = list(model_emotions)
    if not truth:
        return {"n": 0}
    pred_idx = [model_emotions.index(p) for p in predicted]
    true_idx = [model_emotions.index(t) for t in truth]
    acc = emotion_accuracy(pred_idx, true_idx, num_classes=len(model_emotions))
    classes = list(classes) if classes is not None else [e for e in model_emotions if e in set(truth)]
    confusion = {c: dict(zip(model_emotions, acc["confusion"][model_emotions.index(c)])) for c in classes}
    recall = {c: (confusion[c][c] / sum(confusion[c].values()) if sum(confusion[c].values()) else None) for c in classes}
    return {"n": len(truth), "accuracy": acc["accuracy"], "balanced_accuracy": acc["balanced_accuracy"],
            "chance": 1.0 / len(classes) if classes else None, "classes": classes, "columns": model_emotions,
            "confusion": confusion, "recall": recall}


def prediction_distribution(predicted: Sequence[str], model_emotions: Sequence[str]) -> dict[str, float]:
    """Share of clips predicted as each model emotion."""
    counts = Counter(predicted)
    n = max(len(predicted), 1)
    return {e: counts.get(e, 0) / n for e in model_emotions}


# ------------------------------------------------------------------------------------------------
# running a model
# ------------------------------------------------------------------------------------------------


@dataclass
class Prediction:
    weights: np.ndarray
    emotion: str
    probabilities: dict[str, float]
    silence_jaw: float | None = None


class ModelRunner:
    """Runs the pipeline deterministically (no blinks, no smoothing) and reads the model's rest jaw.
    ``rest_in_silence``: the pipeline's mouth at rest in quiet stretches (on, as a user gets it)."""

    def __init__(self, model: str | None = None, device: str | None = None, silence_rest: bool = True,
                 rest_in_silence: bool = True) -> None:
        import torch

        from .pipeline import load_pipeline

        torch.manual_seed(0)
        self.pipe = load_pipeline(model, device=device)
        self.emotions = list(self.pipe.model.config.emotions)
        self.silence_rest = silence_rest
        self.rest_in_silence = rest_in_silence

    def __call__(self, source: Any, sampling_rate: int | None = None, silence: bool = False) -> Prediction:
        """Animate one clip; ``silence=True`` also reads the model's jawOpen on silence for this voice."""
        kwargs = {"sampling_rate": sampling_rate} if sampling_rate is not None else {}
        anim = self.pipe(source, blinks=False, smoothing=0.0, rest_in_silence=self.rest_in_silence, **kwargs)
        probs = dict(anim.emotion_probabilities or {})
        emotion = max(probs, key=probs.get) if probs else ""
        silence = self.silence_jaw(anim.audio) if silence and self.silence_rest else None
        return Prediction(np.asarray(anim.weights, dtype=np.float32), emotion, probs, silence)

    def silence_jaw(self, waveform_16k: np.ndarray, seconds: float = 1.0) -> float:
        """Median jawOpen of the model on ``seconds`` of digital silence, with this clip's voiceprint."""
        import torch

        model = self.pipe.model
        vp = torch.from_numpy(np.asarray(self.pipe.voiceprint_backend.embed(waveform_16k), dtype=np.float32))
        zeros = torch.zeros(int(seconds * SAMPLING_RATE), dtype=torch.float32)
        with torch.no_grad():
            out = model.animate(zeros.to(model.device), vp.to(model.device))
        jaw = out.blendshapes[0, :, JAW_OPEN].float().cpu().numpy()
        return float(np.median(np.clip(jaw, 0, 1)))


# ------------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------------


@dataclass
class RealEvalConfig:
    """Where the material is and what to run. Relative asset paths are relative to ``assets``."""

    output: str
    model: str | None = None
    assets: str = "../shared/assets"
    grid_s1_dataset: str | None = None
    grid_s1_test_split: str = "test"
    grid_s1_train_split: str = "train"
    grid_s1_videos: str = "video/grid_s1"
    grid_s1_sample: int = 40  # s1 clips labelled here for the phone reference when no dataset is given
    grid_new_speakers: tuple[str, ...] = GRID_NEW_SPEAKER_CLIPS
    landmarker: str = "mediapipe/face_landmarker.task"
    arctic: str = "speech/cmu_arctic"
    emodb: str = "speech/emodb"
    emodb_test_speakers: tuple[str, ...] = DEFAULT_EMODB_TEST_SPEAKERS
    ljspeech: str = "speech/ljspeech"
    # the chapters the default model's training leaves out (the real mix trains on the others); None: all
    ljspeech_chapters: tuple[str, ...] | None = LJSPEECH_TEST_CHAPTERS
    sections: tuple[str, ...] = ("talking_faces", "phones", "emotion")
    max_clips: int | None = None  # per set, for quick runs
    device: str | None = None
    lips_closed_threshold: float = LIPS_CLOSED_THRESHOLD
    pause_tolerance: float = PAUSE_TOLERANCE
    min_pause_seconds: float = MIN_PAUSE_SECONDS
    max_lag: int = MAX_LAG
    rest_in_silence: bool = True  # the pipeline's default; False measures the model's own pauses
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = set(self.sections) - {"talking_faces", "phones", "emotion"}
        if unknown:
            raise ValueError(f"unknown sections {sorted(unknown)}; choose from talking_faces, phones, emotion")
        if self.max_clips is not None and self.max_clips < 1:
            raise ValueError(f"max_clips must be >= 1, got {self.max_clips}")
        if self.max_lag < 0 or self.grid_s1_sample < 0 or self.min_pause_seconds <= 0:
            raise ValueError("max_lag and grid_s1_sample must be >= 0, min_pause_seconds > 0")
        self.sections = tuple(self.sections)
        self.grid_new_speakers = tuple(self.grid_new_speakers)
        self.emodb_test_speakers = tuple(self.emodb_test_speakers)
        if self.ljspeech_chapters is not None:
            self.ljspeech_chapters = tuple(self.ljspeech_chapters)

    def path(self, rel: str | Path) -> Path:
        """``rel`` as given when absolute; else under ``assets`` (or as given when only that exists)."""
        p = Path(rel)
        if p.is_absolute():
            return p
        under = Path(self.assets) / p
        return p if not under.exists() and p.exists() else under


def _take(items: Sequence[Any], n: int | None) -> list[Any]:
    return list(items) if n is None else list(items)[:n]


def _bar(iterable: Iterable[Any], desc: str, enabled: bool, total: int | None = None):
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, disable=not enabled, leave=False)


# ------------------------------------------------------------------------------------------------
# (a) talking faces
# ------------------------------------------------------------------------------------------------


@dataclass
class FaceClip:
    id: str
    waveform: np.ndarray  # 16 kHz
    labels: np.ndarray  # (T, 52) MediaPipe
    align: str | None = None  # GRID word alignment text, when known


def _grid_align_for(clip_id: str, sentence: str | None, align_dirs: Sequence[Path]) -> str | None:
    names = {clip_id, clip_id.split("__")[-1], Path(clip_id).stem}
    if sentence:
        names.add(sentence)
    for d in align_dirs:
        for n in names:
            f = d / f"{n}.align"
            if f.is_file():
                return f.read_text()
    return None


def load_dataset_clips(path: str, split: str, align_dirs: Sequence[Path] = (), limit: int | None = None,
                       progress: bool = True, desc: str = "") -> list[FaceClip]:
    """Decoded clips of one split of a 3D-EmoStyle folder (audio 16 kHz + MediaPipe labels)."""
    from .data.loading import load_clips

    clips = []
    ds = load_clips(path, split=split)
    for row in _bar(ds, desc or f"{Path(path).name}/{split}", progress):
        clips.append(FaceClip(str(row["id"]), np.asarray(row["waveform"], np.float32), np.asarray(row["blendshapes"], np.float32),
                              _grid_align_for(str(row["id"]), row.get("sentence"), align_dirs)))
        if limit is not None and len(clips) >= limit:
            break
    return clips


def has_split(path: str | Path | None, split: str) -> bool:
    """A local 3D-EmoStyle folder with Parquet files of ``split`` (``data/<split>-*.parquet``)."""
    if not path:
        return False
    p = Path(path)
    return p.is_dir() and (any(p.glob(f"data/{split}-*.parquet")) or any(p.glob(f"{split}-*.parquet")))


def label_videos(videos: Sequence[Path], cache_root: Path, landmarker: Path, speaker: str, progress: bool = True) -> Path:
    """Label videos with the 3D-EmoStyle builder (MediaPipe, VIDEO mode) into a cache folder keyed by the
    clip list (reruns reuse it); every clip goes to the ``test`` split. Returns the folder."""
    from .data import video_builder as vb

    specs = [vb.ClipSpec(id=v.stem, video_path=str(v), speaker=speaker, sentence=v.stem, source=v.parent.name) for v in videos]
    key = hashlib.sha256("\n".join(f"{s.id}={s.video_path}" for s in specs).encode()).hexdigest()[:10]
    out = cache_root / f"{speaker}_{key}"
    vb.build_dataset(specs, out, landmarker, vb.BuildConfig(split="test", clips_per_shard=25), num_proc=1, progress=progress)
    return out


def _floors(clips: Sequence[FaceClip], mean_pose: np.ndarray, coef: tuple[float, float]) -> dict[str, list[np.ndarray]]:
    return {
        "zeros": [np.zeros_like(c.labels) for c in clips],
        "mean_pose": [np.repeat(mean_pose[None], len(c.labels), axis=0) for c in clips],
        "loudness_fit": [loudness_floor(c.waveform, len(c.labels), mean_pose, coef) for c in clips],
    }


def evaluate_face_group(runner: ModelRunner, clips: Sequence[FaceClip], floor_clips: Sequence[FaceClip] | None,
                        floor_source: str, cfg: RealEvalConfig, desc: str,
                        cache: dict[str, Prediction] | None = None) -> dict[str, Any]:
    """Model and floors on one group of labelled clips. ``floor_clips``: where the mean pose and the
    loudness fit come from (None: the group itself, in-sample)."""
    base = list(floor_clips) if floor_clips else list(clips)
    mean_pose = np.concatenate([c.labels for c in base]).mean(axis=0)
    coef = fit_loudness_jaw([c.waveform for c in base], [c.labels for c in base])
    preds = []
    for c in _bar(clips, desc, cfg.progress):
        pred = runner(c.waveform, sampling_rate=SAMPLING_RATE)
        if cache is not None:
            cache[c.id] = pred
        preds.append(pred.weights)
    refs = [c.labels for c in clips]
    systems = {"model": talking_face_metrics(preds, refs, cfg.max_lag)}
    for name, tracks in _floors(clips, mean_pose, coef).items():
        systems[name] = talking_face_metrics(tracks, refs, cfg.max_lag)
    systems["labels"] = {"jawOpen_mean": float(np.mean([g[:, JAW_OPEN].mean() for g in refs])),
                         "jawOpen_std": float(np.mean([g[:, JAW_OPEN].std() for g in refs]))}
    per_clip = {c.id: {"LBE": lbe(p, c.labels), "r_jawOpen_lag0": lagged_correlations(p[:, JAW_OPEN], c.labels[:, JAW_OPEN], 0)[0]}
                for c, p in zip(clips, preds)}
    return {
        "n_clips": len(clips), "seconds": round(sum(len(c.waveform) for c in clips) / SAMPLING_RATE, 2),
        "clips": [c.id for c in clips], "model_per_clip": per_clip,
        "floors_from": floor_source if floor_clips else "the group's own references (in-sample)",
        "loudness_fit": {"intercept": coef[0], "slope_per_dB": coef[1]},
        "systems": systems,
    }


def run_talking_faces(runner: ModelRunner, cfg: RealEvalConfig, cache_root: Path,
                      shared: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"groups": {}, "skipped": {}}
    align_dirs = [cfg.path(cfg.grid_s1_videos) / "align", cfg.path("video/grid")]
    train: list[FaceClip] | None = None
    ds = cfg.grid_s1_dataset
    if ds and has_split(ds, cfg.grid_s1_train_split):
        train = load_dataset_clips(ds, cfg.grid_s1_train_split, progress=cfg.progress, desc="s1 train labels")
    if ds and has_split(ds, cfg.grid_s1_test_split):
        test = load_dataset_clips(ds, cfg.grid_s1_test_split, align_dirs, cfg.max_clips, cfg.progress, "s1 test labels")
        shared["grid_s1_clips"] = test
        shared["grid_s1_source"] = f"{ds} split {cfg.grid_s1_test_split} (held out of training)"
        shared["grid_s1_preds"] = {}
        out["groups"]["grid_s1_test"] = evaluate_face_group(
            runner, test, train, f"{ds} split {cfg.grid_s1_train_split}", cfg, "model on s1 test", shared["grid_s1_preds"])
    else:
        out["skipped"]["grid_s1_test"] = (
            "no --grid-s1-dataset given" if not ds
            else f"{ds} has no '{cfg.grid_s1_test_split}' split (data/{cfg.grid_s1_test_split}-*.parquet)")
    landmarker = cfg.path(cfg.landmarker)
    videos = [cfg.path(v) for v in cfg.grid_new_speakers]
    missing = [str(v) for v in videos if not v.is_file()]
    if missing or not landmarker.is_file():
        out["skipped"]["grid_new_speakers"] = f"missing: {', '.join(missing + ([] if landmarker.is_file() else [str(landmarker)]))}"
    else:
        folder = label_videos(_take(videos, cfg.max_clips), cache_root, landmarker, "grid_new", cfg.progress)
        clips = load_dataset_clips(str(folder), "test", align_dirs, None, cfg.progress, "new-speaker labels")
        if clips:
            out["groups"]["grid_new_speakers"] = evaluate_face_group(
                runner, clips, train, f"{ds} split {cfg.grid_s1_train_split}", cfg, "model on new speakers")
        else:
            out["skipped"]["grid_new_speakers"] = f"the builder labelled no clip (see {folder}/report.jsonl)"
    out["mean_pose_source"] = (f"GRID s1 '{cfg.grid_s1_train_split}' split labels ({len(train)} clips)" if train
                               else "each group's own references (no s1 train split given: in-sample floors)")
    return out


# ------------------------------------------------------------------------------------------------
# (b) phone-labelled speech
# ------------------------------------------------------------------------------------------------


@dataclass
class PhoneClip:
    id: str
    source: Any  # path or waveform
    phones: list[Phone]
    alphabet: str
    sampling_rate: int | None = None


def phone_metrics(items: Sequence[tuple[np.ndarray, list[Phone], str, float | None]], cfg: RealEvalConfig) -> dict[str, Any]:
    """Aggregate phone metrics over clips given as (weights, phones, alphabet, model silence jaw or None)."""
    bh = bt = p0h = pmh = pt = oh = ot = 0
    jaw: dict[str, list[float]] = {"open_vowel": [], "consonant": []}
    pause_jaw: list[float] = []
    for w, phones, alphabet, silence in items:
        h, t = bilabial_closure(w, phones, alphabet, cfg.lips_closed_threshold)
        bh, bt = bh + h, bt + t
        h, t = open_vowels_closed(w, phones, alphabet, cfg.lips_closed_threshold)
        oh, ot = oh + h, ot + t
        for k, v in jaw_by_phone_class(w, phones, alphabet).items():
            jaw[k].extend(v)
        h0, t0 = pauses_at_rest(w, phones, 0.0, alphabet, cfg.pause_tolerance, cfg.min_pause_seconds)
        p0h, pt = p0h + h0, pt + t0
        if silence is not None:
            pmh += pauses_at_rest(w, phones, silence, alphabet, cfg.pause_tolerance, cfg.min_pause_seconds)[0]
        for pause in pause_intervals(phones, alphabet, cfg.min_pause_seconds):
            fr = phone_frames(pause, len(w))
            if fr.size:
                pause_jaw.append(float(np.median(np.asarray(w)[fr, JAW_OPEN])))
    have_silence = all(s is not None for *_, s in items)
    ov, co = (float(np.mean(jaw[k])) if jaw[k] else None for k in ("open_vowel", "consonant"))
    return {
        "n_clips": len(items),
        "bilabials": bt, "bilabials_closed": (bh / bt) if bt else None,
        "open_vowel_frames_closed": (oh / ot) if ot else None,
        "jawOpen_open_vowels": ov, "jawOpen_consonants": co,
        "open_minus_consonant": (ov - co) if ov is not None and co is not None else None,
        "frames_open_vowels": len(jaw["open_vowel"]), "frames_consonants": len(jaw["consonant"]),
        "pauses": pt, "pauses_at_rest_0": (p0h / pt) if pt else None,
        "pauses_at_rest_model_silence": (pmh / pt) if pt and have_silence else None,
        "pause_jawOpen_median": float(np.median(pause_jaw)) if pause_jaw else None,
        "model_silence_jawOpen": float(np.median([s for *_, s in items])) if have_silence and items else None,
    }


def arctic_clips(root: Path) -> list[PhoneClip]:
    out = []
    for lab in sorted(root.glob("*_phone.lab")):
        wav = root / lab.name.replace("_phone.lab", ".wav")
        if wav.is_file():
            out.append(PhoneClip(wav.stem, str(wav), parse_hts_labels(lab.read_text()), "arpabet"))
    return out


def read_emodb_table(root: Path) -> list[dict[str, str]]:
    with open(root / "labels.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def emodb_phone_clips(root: Path, speakers: Sequence[str], limit: int | None = None) -> list[PhoneClip]:
    import soundfile as sf

    out = []
    for row in read_emodb_table(root):
        if row["speaker_id"] not in speakers:
            continue
        wav, lab = root / row["file"], root / row.get("phone_label_file", "")
        if not (wav.is_file() and lab.is_file()):
            continue
        end = sf.info(str(wav)).duration
        cut = end if str(row.get("truncated_in_this_copy", "")).lower() == "true" else None
        out.append(PhoneClip(wav.stem, str(wav), parse_lablaut(lab.read_text(encoding="latin-1"), end_s=end, cut_s=cut), "sampa"))
    return _take(out, limit)


def _normalise_alignment(result: Iterable[Any]) -> list[Phone]:
    """Aligner rows (objects with ``name``/``phone``/``label`` + ``start``/``end``, dicts, or
    ``(name, start, end, ...)`` tuples) → :class:`Phone` list."""
    phones = []
    for item in result:
        if isinstance(item, Phone):
            phones.append(item)
        elif isinstance(item, Mapping):
            name = item.get("name", item.get("phone", item.get("label")))
            phones.append(Phone(str(name), float(item["start"]), float(item["end"])))
        elif isinstance(item, (tuple, list)):
            phones.append(Phone(str(item[0]), float(item[1]), float(item[2])))
        else:
            name = next(getattr(item, a) for a in ("name", "phone", "label") if hasattr(item, a))
            phones.append(Phone(str(name), float(item.start), float(item.end)))
    return phones


def ljspeech_rows(root: Path, limit: int | None = None, chapters: Sequence[str] | None = None) -> list[dict[str, str]]:
    """The clips of ``root/metadata.csv`` whose audio exists, of ``chapters`` only (None: all), at most ``limit``."""
    rows = []
    with open(root / "metadata.csv", newline="", encoding="utf-8") as f:
        for rec in csv.reader(f):
            if not rec or rec[0] in ("file", "id"):
                continue
            path = root / rec[0]
            if not path.suffix:
                path = path.with_suffix(".flac")
            if path.is_file() and (chapters is None or ljspeech_chapter(path.name) in chapters):
                rows.append({"id": path.stem, "path": str(path), "text": rec[2] if len(rec) > 2 and rec[2] else rec[1]})
    return _take(rows, limit)


def _lj_chapters(cfg: RealEvalConfig) -> str:
    return "all chapters" if cfg.ljspeech_chapters is None else "chapters " + ", ".join(cfg.ljspeech_chapters)


def run_phones(runner: ModelRunner, cfg: RealEvalConfig, cache_root: Path, shared: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"sets": {}, "skipped": {}}
    preds: dict[str, Prediction] = shared.setdefault("speech_preds", {})

    def model_items(clips: Sequence[PhoneClip], desc: str) -> list[tuple]:
        items = []
        for c in _bar(clips, desc, cfg.progress):
            key = f"{desc}:{c.id}"
            if key not in preds or (preds[key].silence_jaw is None and runner.silence_rest):
                preds[key] = runner(c.source, sampling_rate=c.sampling_rate, silence=True)
            p = preds[key]
            items.append((p.weights, c.phones, c.alphabet, p.silence_jaw))
        return items

    arctic = cfg.path(cfg.arctic)
    clips = arctic_clips(arctic) if arctic.is_dir() else []
    if clips:
        out["sets"]["arctic"] = {"what": f"CMU ARCTIC slt {', '.join(c.id for c in clips)} (HTS phone labels)",
                                 "model": phone_metrics(model_items(clips, "arctic"), cfg)}
    else:
        out["skipped"]["arctic"] = f"no *_phone.lab with its wav in {arctic}"

    emodb = cfg.path(cfg.emodb)
    clips = emodb_phone_clips(emodb, cfg.emodb_test_speakers, cfg.max_clips) if (emodb / "labels.csv").is_file() else []
    if clips:
        what = f"EmoDB speakers {', '.join(cfg.emodb_test_speakers)} ({len(clips)} clips, lablaut, phones after the 2.0 s cut ignored)"
        out["sets"]["emodb"] = {"what": what,
                                "model": phone_metrics(model_items(clips, "emodb"), cfg)}
    else:
        out["skipped"]["emodb"] = f"no EmoDB clips of speakers {cfg.emodb_test_speakers} with lablaut in {emodb}"

    lj = cfg.path(cfg.ljspeech)
    if not (lj / "metadata.csv").is_file():
        out["skipped"]["ljspeech"] = f"no {lj}/metadata.csv"
    else:
        cache_json = cache_root / "ljspeech_alignment.json"
        try:
            summary = align_ljspeech(lj, cache_json, limit=cfg.max_clips, chapters=cfg.ljspeech_chapters,
                                     progress=cfg.progress)
            aligned = load_alignment_cache(cache_json)
        except Exception as exc:  # noqa: BLE001 - e.g. the aligner's extra (pocketsphinx) not installed
            summary, aligned = {"error": f"{type(exc).__name__}: {exc}"}, {}
        rows = ljspeech_rows(lj, cfg.max_clips, cfg.ljspeech_chapters)
        clips = [PhoneClip(r["id"], r["path"], _normalise_alignment(aligned[Path(r["path"]).name]), "arpabet")
                 for r in rows if Path(r["path"]).name in aligned]
        if clips:
            what = (f"LJSpeech {_lj_chapters(cfg)} ({len(clips)} of {len(rows)} clips aligned by pestalk_hf.data.aligner, "
                    f"cache {cache_json})")
            out["sets"]["ljspeech"] = {"what": what,
                                       "alignment": summary, "model": phone_metrics(model_items(clips, "ljspeech"), cfg)}
        else:
            out["skipped"]["ljspeech"] = f"the aligner aligned no clip ({summary})"

    # reference: MediaPipe labels of GRID s1 (and the model on the same clips)
    grid = shared.get("grid_s1_clips")
    source = shared.get("grid_s1_source")
    if not grid and cfg.grid_s1_sample > 0:
        vids = sorted(cfg.path(cfg.grid_s1_videos).glob("*.mp4"))
        landmarker = cfg.path(cfg.landmarker)
        if vids and landmarker.is_file():
            n = min(cfg.grid_s1_sample, len(vids)) if cfg.max_clips is None else min(cfg.grid_s1_sample, cfg.max_clips, len(vids))
            step = max(1, len(vids) // n)
            folder = label_videos(vids[::step][:n], cache_root, landmarker, "grid_s1_sample", cfg.progress)
            grid = load_dataset_clips(str(folder), "test", [cfg.path(cfg.grid_s1_videos) / "align"], None, cfg.progress,
                                      "s1 sample labels")
            source = (f"every {step}th clip of {cfg.path(cfg.grid_s1_videos)} labelled here ({len(grid)} clips; "
                      "may include the model's training clips)")
    grid = [c for c in (grid or []) if c.align]
    if grid:
        phones = [grid_align_to_phones(c.align) for c in grid]
        gp: dict[str, Prediction] = shared.get("grid_s1_preds") or {}
        items_model = []
        for c, ph in zip(_bar(grid, "model on s1 (phones)", cfg.progress), phones):
            p = gp.get(c.id) or runner(c.waveform, sampling_rate=SAMPLING_RATE)
            if p.silence_jaw is None and runner.silence_rest:
                p.silence_jaw = runner.silence_jaw(c.waveform)
            items_model.append((p.weights, ph, "arpabet", p.silence_jaw))
        out["sets"]["grid_s1"] = {
            "what": f"GRID s1: {source}; phones = GRID lexicon spread evenly over the word timings",
            "labels": phone_metrics([(c.labels, ph, "arpabet", None) for c, ph in zip(grid, phones)], cfg),
            "model": phone_metrics(items_model, cfg),
        }
    else:
        out["skipped"]["grid_s1"] = "no labelled GRID s1 clips with word alignments (reference values unavailable)"
    return out


# ------------------------------------------------------------------------------------------------
# (c) emotion
# ------------------------------------------------------------------------------------------------


def run_emotion(runner: ModelRunner, cfg: RealEvalConfig, shared: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"skipped": {}}
    preds: dict[str, Prediction] = shared.setdefault("speech_preds", {})
    emotions = runner.emotions
    emodb = cfg.path(cfg.emodb)
    if (emodb / "labels.csv").is_file():
        rows = [r for r in read_emodb_table(emodb) if r["speaker_id"] in cfg.emodb_test_speakers and (emodb / r["file"]).is_file()]
        rows = _take(rows, cfg.max_clips)
        pred, true, bored, unmapped = [], [], [], Counter()
        for r in _bar(rows, "emotion emodb", cfg.progress):
            key = f"emodb:{Path(r['file']).stem}"
            if key not in preds:
                preds[key] = runner(str(emodb / r["file"]))
            p = preds[key].emotion
            ours = EMODB_TO_OURS.get(r["emotion"])
            if r["emotion"] == "boredom":
                bored.append(p)
            elif ours in emotions:
                pred.append(p)
                true.append(ours)
            else:
                unmapped[r["emotion"]] += 1
        classes = [e for e in EMODB_TO_OURS.values() if e in emotions]
        if true:
            out["emodb"] = {"speakers": list(cfg.emodb_test_speakers),
                            **emotion_report(pred, true, emotions, classes),
                            "boredom": {"n": len(bored), "predicted": prediction_distribution(bored, emotions)},
                            "unmapped": dict(unmapped)}
        else:
            out["skipped"]["emodb"] = f"no EmoDB clips of speakers {cfg.emodb_test_speakers}"
    else:
        out["skipped"]["emodb"] = f"no {emodb}/labels.csv"

    neutral_sets = {}
    arctic = cfg.path(cfg.arctic)
    arctic_wavs = sorted(arctic.glob("*.wav")) if arctic.is_dir() else []
    if arctic_wavs:
        neutral_sets["arctic"] = [(f"arctic:{w.stem}", str(w)) for w in arctic_wavs]
    lj = cfg.path(cfg.ljspeech)
    if (lj / "metadata.csv").is_file():
        neutral_sets["ljspeech"] = [(f"ljspeech:{r['id']}", r["path"]) for r in ljspeech_rows(lj, cfg.max_clips, cfg.ljspeech_chapters)]
    out["neutral_read_speech"] = {}
    for name, items in neutral_sets.items():
        got = []
        for key, path in _bar(items, f"emotion {name}", cfg.progress):
            if key not in preds:
                preds[key] = runner(path)
            got.append(preds[key].emotion)
        out["neutral_read_speech"][name] = {"n": len(got), "neutral": (sum(g == "neutral" for g in got) / len(got)) if got else None,
                                            "predicted": prediction_distribution(got, emotions)}
    allg = [(v["n"], v["neutral"]) for v in out["neutral_read_speech"].values() if v["n"]]
    if allg:
        n = sum(k for k, _ in allg)
        out["neutral_read_speech"]["all"] = {"n": n, "neutral": sum(k * s for k, s in allg) / n}
    else:
        out["skipped"]["neutral_read_speech"] = "no ARCTIC wavs and no LJSpeech metadata.csv"
    return out


# ------------------------------------------------------------------------------------------------
# all sections, markdown
# ------------------------------------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return None if not math.isfinite(value) else value
    if isinstance(value, (np.floating, np.integer)):
        return _json_safe(value.item())
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def run_real_evaluation(cfg: RealEvalConfig, runner: ModelRunner | None = None) -> dict[str, Any]:
    """Run the sections in ``cfg.sections``; write ``real_eval.json`` and ``real_eval.md`` to ``cfg.output``."""
    out_dir = Path(cfg.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_root = out_dir / "cache"
    runner = runner or ModelRunner(cfg.model, cfg.device, rest_in_silence=cfg.rest_in_silence)
    shared: dict[str, Any] = {}
    result: dict[str, Any] = {"config": {**asdict(cfg), "model": cfg.model or "pestalk_hf default model"},
                              "definitions": "docs/METRICS.md#real-speech-evaluation", "model_emotions": runner.emotions}
    if "talking_faces" in cfg.sections:
        result["talking_faces"] = run_talking_faces(runner, cfg, cache_root, shared)
    if "phones" in cfg.sections:
        result["phones"] = run_phones(runner, cfg, cache_root, shared)
    if "emotion" in cfg.sections:
        result["emotion"] = run_emotion(runner, cfg, shared)
    result = _json_safe(result)
    (out_dir / "real_eval.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "real_eval.md").write_text(render_markdown(result))
    return result


def _f(x: Any, digits: int = 3, pct: bool = False) -> str:
    if x is None:
        return "—"
    if pct:
        return f"{100 * x:.0f} %"
    if isinstance(x, int):
        return str(x)
    return f"{x:.{digits}f}"


FACE_ROWS = (("LBE ↓", "LBE", False), ("MBE ↓", "MBE", False), ("r(jawOpen) best lag ↑", "r_jawOpen", False),
             ("best lag (frames)", "best_lag", False), ("jawOpen std ratio (→ 1)", "jawOpen_std_ratio", False),
             ("jawOpen mean", "jawOpen_mean", False))
GROUP_NAMES = {"grid_s1_test": "GRID s1, held-out clips", "grid_new_speakers": "GRID, new speakers"}
SET_NAMES = {"arctic": "CMU ARCTIC a0009", "emodb": "EmoDB held-out speakers", "ljspeech": "LJSpeech (aligned)",
             "grid_s1": "GRID s1"}


def render_markdown(result: Mapping[str, Any]) -> str:
    """The report as markdown: model and floors side by side."""
    lines = [f"# Real-speech evaluation: {result['config']['model']}", "",
             "Definitions: `docs/METRICS.md` (Real-speech evaluation). `—`: undefined (constant track) or not run.",
             "Pipeline: mouth at rest in silence "
             + ("on (the default)." if result["config"].get("rest_in_silence", True) else "off (`--no-rest-in-silence`)."), ""]
    tf = result.get("talking_faces")
    if tf:
        lines += ["## Talking faces (references: MediaPipe labels)", "",
                  f"Mean pose and loudness fit from: {tf.get('mean_pose_source')}.", ""]
        if tf["groups"]:
            lines += ["| group | metric | model | zeros | mean pose | loudness→jaw |", "|---|---|---|---|---|---|"]
            for g, res in tf["groups"].items():
                s = res["systems"]
                label = f"{GROUP_NAMES.get(g, g)} ({res['n_clips']} clips, {res['seconds']:.0f} s)"
                for i, (name, key, pct) in enumerate(FACE_ROWS):
                    cells = [_f(s[k].get(key), pct=pct) for k in ("model", "zeros", "mean_pose", "loudness_fit")]
                    lines.append(f"| {label if i == 0 else ''} | {name} | " + " | ".join(cells) + " |")
                lines.append(f"| | labels: jawOpen mean / std | {_f(s['labels']['jawOpen_mean'])} / {_f(s['labels']['jawOpen_std'])} | | | |")
        for g, why in tf.get("skipped", {}).items():
            lines.append(f"\n*{GROUP_NAMES.get(g, g)}: skipped — {why}.*")
        lines.append("")
    ph = result.get("phones")
    if ph:
        lines += ["## Phone-labelled speech", "",
                  f"Lips closed: aperture jawOpen − mouthClose + ½(mouthLowerDown + mouthUpperUp) ≤ "
                  f"{result['config']['lips_closed_threshold']}; pauses ≥ {result['config']['min_pause_seconds']} s, "
                  f"at rest = median jawOpen within {result['config']['pause_tolerance']} of 0 (or of the model's jawOpen on silence).", "",
                  "| set | who | bilabials closed ↑ | open-vowel frames closed ↓ | jawOpen open vowels | jawOpen consonants | pauses at rest (0) ↑ | pauses at rest (model silence) | jawOpen on silence |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, res in ph["sets"].items():
            for who in ("labels", "model"):
                if who not in res:
                    continue
                m = res[who]
                lines.append(
                    f"| {SET_NAMES.get(name, name)} ({m['n_clips']} clips) | {'MediaPipe labels' if who == 'labels' else 'model'} | "
                    f"{_f(m['bilabials_closed'], pct=True)} of {m['bilabials']} | {_f(m['open_vowel_frames_closed'], pct=True)} | "
                    f"{_f(m['jawOpen_open_vowels'])} | "
                    f"{_f(m['jawOpen_consonants'])} | {_f(m['pauses_at_rest_0'], pct=True)} of {m['pauses']} | "
                    f"{_f(m['pauses_at_rest_model_silence'], pct=True)} | {_f(m['model_silence_jawOpen'])} |")
        for name, why in ph.get("skipped", {}).items():
            lines.append(f"\n*{SET_NAMES.get(name, name)}: skipped — {why}.*")
        lines.append("")
    em = result.get("emotion")
    if em:
        lines += ["## Emotion", ""]
        e = em.get("emodb")
        if e:
            lines += [f"EmoDB held-out speakers {', '.join(e['speakers'])}: accuracy **{_f(e['accuracy'], pct=True)}** over "
                      f"{len(e['classes'])} shared emotions ({e['n']} clips; chance {_f(e['chance'], pct=True)}), "
                      f"balanced accuracy {_f(e['balanced_accuracy'], pct=True)}.", "",
                      "| true \\ predicted | " + " | ".join(e["columns"]) + " | recall |",
                      "|---|" + "---|" * (len(e["columns"]) + 1)]
            for c in e["classes"]:
                row = e["confusion"][c]
                lines.append(f"| {c} | " + " | ".join(str(row[k]) for k in e["columns"]) + f" | {_f(e['recall'][c], pct=True)} |")
            b = e["boredom"]
            if b["n"]:
                dist = ", ".join(f"{k} {_f(v, pct=True)}" for k, v in sorted(b["predicted"].items(), key=lambda kv: -kv[1]) if v > 0)
                lines += ["", f"Boredom (no class of ours, excluded from accuracy; {b['n']} clips) read as: {dist}."]
        nr = em.get("neutral_read_speech", {})
        if nr:
            lines += ["", "| neutral English read speech | clips | read as neutral ↑ |", "|---|---|---|"]
            for name, v in nr.items():
                lines.append(f"| {name} | {v['n']} | {_f(v['neutral'], pct=True)} |")
        for name, why in em.get("skipped", {}).items():
            lines.append(f"\n*{name}: skipped — {why}.*")
        lines.append("")
    return "\n".join(lines) + "\n"
