"""EmoStyle-Synth: a synthetic 3D-EmoStyle with a *known* emotional style per speaker.

Why: no real paired (speech, blendshape) data with emotions is reachable from our machines, and
even real data cannot tell us whether a model recovers a speaker's style, because nobody knows
the true style. Here every ingredient is known, so tests and evaluations can check what the
PESTalk paper claims (ESMM retrieval, the disentanglement loss, the frequency stream):

* speech comes from eSpeak NG (:mod:`pestalk_hf.data.espeak`); its phoneme events give exact
  timing. Speakers are eSpeak voice variants × accents × base pitch/rate/range; the eight MEAD
  emotions are prosody (rate, pitch, intonation range, loudness) scaled by the MEAD level.
* optionally (``SynthConfig.kokoro_fraction``, install extra ``synth``) a share of the speakers
  speak with the Kokoro-82M neural TTS (:mod:`pestalk_hf.data.kokoro_tts`): one voice pack or a
  seeded mix of two, a base speed; emotions change only the speed and the loudness (Kokoro has
  no pitch or range control). Phone timings come from forced alignment of the audio with the
  sentence (:mod:`pestalk_hf.data.aligner`, PocketSphinx), converted to IPA; primary stress
  (for the brow accents) is taken from eSpeak's phonemisation of the sentence, which is also
  what Kokoro was given to speak.
* lower face: phoneme → viseme targets blended with Cohen–Massaro dominance functions
  (coarticulation), evaluated on the 30 fps grid, amplitude following the local loudness.
* upper face + mouth corners: the known style matrix ``style[speaker, emotion, 52]`` (saved as
  ``style_matrix.json``) scaled by an intensity curve that follows the loudness envelope, plus
  stress-synchronous brow accents, gaze shifts and procedural blinks.
* the same sentence is spoken in every emotion by every speaker, so the neutral↔emotional pair
  index (``pairs.jsonl``) exists for L_dis; ``alignments.jsonl`` holds every clip's phone timeline.

Output layout (``datasets.load_dataset(folder)`` infers the splits from the shard names)::

    OUT/data/{train,validation,test,test_speakers}-0000i-of-0000N.parquet
    OUT/style_matrix.json  OUT/pairs.jsonl  OUT/alignments.jsonl  OUT/README.md

Splits: train/validation/test hold the *seen* speakers on disjoint sentence sets (held-out
sentences); ``test_speakers`` holds the held-out speakers on all sentences (zero-shot speakers).

Label model (per clip, frame t, ARKit channel c; ``lvl`` = MEAD level factor 0.5/0.75/1)::

    env(t)      = clip((rms_dB(t) + 45) / 35, 0, 1)                       # loudness, 30 fps
    g(t)        = 0.75 + 0.25 * smooth(env)(t)                            # intensity curve
    target[c]   = rest[s, c] + lvl * (style[s, e, c] - rest[s, c])        # rest = style[s, neutral]
    label[t, c] = clip(visemes[t, c] + target[c] * g(t) + accents + gaze, 0, 1), blinks by max()

Everything is deterministic for ``SynthConfig.seed`` (eSpeak is reseeded and reloaded per clip),
whatever ``num_proc`` is.
"""

from __future__ import annotations

import json
import math
import os
import time
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Sequence

import numpy as np

from .espeak import Phone, VoiceSettings, synthesize
from .schema import (
    ARKIT_BLENDSHAPE_NAMES,
    EMOTIONS,
    FPS,
    NUM_BLENDSHAPES,
    SAMPLING_RATE,
    make_row,
    num_frames_for,
    write_parquet_shard,
)

SOURCE = "emostyle-synth"
SPLITS = ("train", "validation", "test", "test_speakers")
_IDX = {name: i for i, name in enumerate(ARKIT_BLENDSHAPE_NAMES)}

# ----------------------------------------------------------------------------------------------
# Sentences: a fixed, phonetically varied set first (rich in bilabials, rounding and open vowels),
# then sentences drawn from a small grammar so any number of distinct sentences is available.
# ----------------------------------------------------------------------------------------------
BASE_SENTENCES: tuple[str, ...] = (
    "Bob made a happy puppy from paper.",
    "Maybe we should move the boxes before noon.",
    "The blue boat moved past the old mill.",
    "Please bring my brown bag to the bus stop.",
    "Mom bought a big bottle of maple syrup.",
    "I thought you would call me about the party.",
    "Five women waved from the window above.",
    "She sells shoes and sheep wool in the market.",
    "Our new choir sings on Thursday evening.",
    "Peter picked a bunch of purple plums.",
    "The lazy dog slept by the warm fire.",
    "Would you like some more apple pie?",
    "We were really moved by the beautiful music.",
    "Jump over the puddle, but mind your boots.",
    "The museum opens at nine every morning.",
    "Bring the map, a pen and the blue paper.",
    "My brother paints boats by the harbour.",
    "How about a walk along the beach?",
    "The baby fell asleep in her mother's arms.",
    "Pull the rope and open the heavy gate.",
    "Who moved my book from the table?",
    "A cool breeze blew through the open room.",
    "Bill and Pam ate bread and jam for lunch.",
    "Grandpa tells the same old joke every summer.",
)
_SUBJECTS = ("My father", "The teacher", "Our neighbour", "A small boy", "The pilot", "Your sister",
             "The baker", "Maria", "The old man", "Paul", "The woman", "Ben")
_VERBS = ("bought", "painted", "moved", "opened", "carried", "found", "dropped", "brought", "washed",
          "fixed", "watched", "packed")
_OBJECTS = ("a blue boat", "the wooden box", "two paper maps", "the broken lamp", "a pot of soup",
            "the big window", "some warm bread", "the morning paper", "a bag of plums",
            "the music book", "a pair of boots", "the bamboo chair")
_PLACES = ("before lunch", "by the harbour", "in the park", "at the museum", "on Monday morning",
           "near the bridge", "after the movie", "behind the barn", "under the moon",
           "beside the pool", "at the bus stop", "in the market")


def make_sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct English sentences: the fixed set, then grammar sentences chosen by ``seed``."""
    if n < 1:
        raise ValueError(f"need at least one sentence, got {n}")
    out = list(BASE_SENTENCES[:n])
    extra = n - len(out)
    if extra > 0:
        sizes = (len(_SUBJECTS), len(_VERBS), len(_OBJECTS), len(_PLACES))
        total = math.prod(sizes)
        if extra > total:
            raise ValueError(f"at most {len(BASE_SENTENCES) + total} sentences are available, asked {n}")
        rng = np.random.default_rng([seed, 101])
        for code in rng.choice(total, size=extra, replace=False):
            code = int(code)
            parts = []
            for size, words in zip(sizes, (_SUBJECTS, _VERBS, _OBJECTS, _PLACES)):
                parts.append(words[code % size])
                code //= size
            out.append(" ".join(parts) + ".")
    return out


# ----------------------------------------------------------------------------------------------
# Speakers and emotions
# ----------------------------------------------------------------------------------------------
ACCENTS: tuple[str, ...] = ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-us-nyc", "en-029")
VARIANTS: tuple[str, ...] = (
    "m1", "f1", "m2", "f2", "m3", "f3", "m4", "f4", "m5", "f5", "m6", "m7",
    "Andy", "Annie", "adam", "anika", "benjamin", "aunty", "david", "linda", "edward", "steph",
    "john", "Alicia", "max", "belinda", "michel", "shelby", "norbert", "Andrea", "paul", "Lee",
    "quincy", "rob", "robert", "travis", "victor", "zac", "Michael", "ian",
)

# Prosody per emotion at full strength (MEAD level 3): rate factor, pitch offset (0-100 scale),
# intonation-range factor, volume factor, articulation (mouth amplitude) factor, arousal (brow
# accents, blink rate).
EMOTION_PROSODY: dict[str, dict[str, float]] = {
    "neutral":   dict(rate=1.00, pitch=0.0,   range=1.00, volume=1.00, articulation=1.00, arousal=0.5),
    "angry":     dict(rate=1.12, pitch=6.0,   range=1.35, volume=1.40, articulation=1.20, arousal=1.0),
    "contempt":  dict(rate=0.90, pitch=-4.0,  range=0.80, volume=0.90, articulation=0.85, arousal=0.4),
    "disgusted": dict(rate=0.85, pitch=-8.0,  range=0.90, volume=1.00, articulation=0.90, arousal=0.6),
    "fear":      dict(rate=1.20, pitch=14.0,  range=1.40, volume=0.80, articulation=0.95, arousal=0.9),
    "happy":     dict(rate=1.10, pitch=12.0,  range=1.50, volume=1.20, articulation=1.10, arousal=0.8),
    "sad":       dict(rate=0.78, pitch=-12.0, range=0.50, volume=0.70, articulation=0.75, arousal=0.2),
    "surprised": dict(rate=1.00, pitch=18.0,  range=1.80, volume=1.20, articulation=1.25, arousal=1.0),
}
LEVEL_FACTOR: dict[int, float] = {1: 0.5, 2: 0.75, 3: 1.0}
_BLINK_FACTOR = {"neutral": 1.0, "angry": 0.8, "contempt": 1.0, "disgusted": 1.1, "fear": 1.5,
                 "happy": 1.0, "sad": 1.2, "surprised": 0.6}

# Emotion prototypes (FACS-inspired) on the style channels, before per-speaker variation.
EMOTION_PROTOTYPES: dict[str, dict[str, float]] = {
    "neutral": {},
    "angry": {"browDownLeft": 0.6, "browDownRight": 0.6, "eyeSquintLeft": 0.35, "eyeSquintRight": 0.35,
              "mouthPressLeft": 0.3, "mouthPressRight": 0.3, "noseSneerLeft": 0.25, "noseSneerRight": 0.25,
              "mouthFrownLeft": 0.2, "mouthFrownRight": 0.2},
    "contempt": {"mouthSmileLeft": 0.35, "mouthDimpleLeft": 0.3, "mouthPressRight": 0.15,
                 "eyeSquintLeft": 0.15, "eyeSquintRight": 0.1, "browDownRight": 0.1},
    "disgusted": {"noseSneerLeft": 0.5, "noseSneerRight": 0.5, "mouthUpperUpLeft": 0.35,
                  "mouthUpperUpRight": 0.35, "browDownLeft": 0.3, "browDownRight": 0.3,
                  "cheekSquintLeft": 0.25, "cheekSquintRight": 0.25, "mouthShrugLower": 0.2},
    "fear": {"browInnerUp": 0.6, "browOuterUpLeft": 0.3, "browOuterUpRight": 0.3, "eyeWideLeft": 0.5,
             "eyeWideRight": 0.5, "mouthStretchLeft": 0.3, "mouthStretchRight": 0.3},
    "happy": {"mouthSmileLeft": 0.6, "mouthSmileRight": 0.6, "cheekSquintLeft": 0.4,
              "cheekSquintRight": 0.4, "eyeSquintLeft": 0.3, "eyeSquintRight": 0.3,
              "mouthDimpleLeft": 0.15, "mouthDimpleRight": 0.15},
    "sad": {"browInnerUp": 0.5, "mouthFrownLeft": 0.45, "mouthFrownRight": 0.45, "eyeBlinkLeft": 0.15,
            "eyeBlinkRight": 0.15, "eyeLookDownLeft": 0.15, "eyeLookDownRight": 0.15,
            "mouthShrugLower": 0.25},
    "surprised": {"browInnerUp": 0.6, "browOuterUpLeft": 0.6, "browOuterUpRight": 0.6,
                  "eyeWideLeft": 0.55, "eyeWideRight": 0.55},
}
# Channels the style matrix may touch: upper face (without tongueOut) and the mouth corners.
STYLE_CHANNELS: tuple[str, ...] = (
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight", "eyeSquintLeft",
    "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "cheekSquintLeft", "cheekSquintRight",
    "noseSneerLeft", "noseSneerRight", "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthDimpleLeft", "mouthDimpleRight", "mouthPressLeft", "mouthPressRight",
    "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "mouthShrugLower", "mouthShrugUpper",
)


@dataclass(frozen=True)
class SpeakerProfile:
    """One synthetic speaker: eSpeak voice and base prosody, plus facial traits.

    ``tts="kokoro"``: the speaker speaks with Kokoro-82M; ``kokoro_voice`` is a voice-pack name or a
    ``{name: weight}`` mix, ``base_speed`` its speaking speed. ``voice`` is then ``"kokoro:<voice>"``
    (for reading) and ``pitch``/``rate``/``range`` are unused (they are still drawn, so the facial
    traits of every speaker are the same whatever ``kokoro_fraction`` is).
    """

    name: str
    voice: str
    pitch: int
    rate: int
    range: int
    articulation: float  # mouth-opening gain
    brow_accent: float  # brow raise on stressed syllables
    blink_rate: float  # blinks per minute when neutral
    tts: str = "espeak"  # "espeak" or "kokoro"
    kokoro_voice: str | dict | None = None
    base_speed: float = 1.0


@dataclass
class SynthConfig:
    """What to generate. Split sizes of ``None`` mean ~10 % of sentences each for validation and
    test (at least one when there are 3 or more sentences) and ~20 % of speakers held out (at least
    one when there are 2 or more speakers)."""

    num_speakers: int = 10
    num_sentences: int = 40
    emotions: tuple[str, ...] = EMOTIONS
    intensity_levels: tuple[int, ...] = (3,)
    seed: int = 0
    num_validation_sentences: int | None = None
    num_test_sentences: int | None = None
    num_test_speakers: int | None = None
    rows_per_shard: int = 500
    sentences: tuple[str, ...] | None = None
    license: str = "cc-by-4.0"
    # share of speakers that speak with Kokoro-82M (extra ``synth``); voice packs from
    # ``kokoro_voices_dir`` (default: kokoro_tts.default_voices_dir(), i.e. $PESTALK_KOKORO_VOICES)
    kokoro_fraction: float = 0.0
    kokoro_voices_dir: str | None = None

    def validate(self) -> None:
        """Raise ValueError for configurations that cannot produce a valid dataset."""
        if self.num_speakers < 1:
            raise ValueError(f"num_speakers must be >= 1, got {self.num_speakers}")
        if "neutral" not in self.emotions:
            raise ValueError("emotions must include 'neutral' (the pair index pairs every clip with it)")
        unknown = [e for e in self.emotions if e not in EMOTIONS]
        if unknown:
            raise ValueError(f"unknown emotions {unknown}; expected a subset of {EMOTIONS}")
        bad = [lvl for lvl in self.intensity_levels if lvl not in LEVEL_FACTOR]
        if bad or not self.intensity_levels:
            raise ValueError(f"intensity_levels must be a non-empty subset of (1, 2, 3), got {self.intensity_levels}")
        if self.rows_per_shard < 1:
            raise ValueError("rows_per_shard must be >= 1")
        if self.sentences is not None and len(set(self.sentences)) != len(self.sentences):
            raise ValueError("sentences must be distinct")
        if not (isinstance(self.kokoro_fraction, (int, float)) and 0.0 <= self.kokoro_fraction <= 1.0):
            raise ValueError(f"kokoro_fraction must be in [0, 1], got {self.kokoro_fraction!r}")
        if self.kokoro_voices_dir is not None and not isinstance(self.kokoro_voices_dir, (str, os.PathLike)):
            raise ValueError(f"kokoro_voices_dir must be a folder path or None, got {self.kokoro_voices_dir!r}")


@dataclass(frozen=True)
class ClipSpec:
    """One clip to generate."""

    id: str
    split: str
    speaker: int
    sentence: int
    emotion: str
    level: int


@dataclass
class Plan:
    """Everything derived from a config before any audio is made (cheap, deterministic)."""

    config: SynthConfig
    sentences: list[str]
    speakers: list[SpeakerProfile]
    style: np.ndarray  # (S, E=8, 52) in MEAD emotion order
    sentence_split: dict[int, str]
    test_speakers: list[int]
    groups: list[list[ClipSpec]] = field(default_factory=list)
    kokoro_voices_dir: str | None = None  # resolved folder of the voice packs (Kokoro speakers only)

    def clips(self, split: str | None = None) -> list[ClipSpec]:
        """All clips, in generation order, optionally of one split."""
        return [c for g in self.groups for c in g if split is None or c.split == split]


def _default_count(value: int | None, n: int, frac: float, minimum_n: int) -> int:
    if value is not None:
        if value < 0:
            raise ValueError(f"split sizes must be >= 0, got {value}")
        return value
    return max(1, round(frac * n)) if n >= minimum_n else 0


def num_kokoro_speakers(n: int, kokoro_fraction: float) -> int:
    """``round(kokoro_fraction * n)``, halves rounded up (0.5 × 3 → 2)."""
    return int(math.floor(kokoro_fraction * n + 0.5))


def make_speakers(n: int, seed: int, kokoro_fraction: float = 0.0,
                  kokoro_voices: Sequence[str] = ()) -> list[SpeakerProfile]:
    """``n`` distinct speakers: variants are cycled in a seeded order, accents and prosody drawn.

    ``kokoro_fraction``: :func:`num_kokoro_speakers` speakers (chosen by the seed) speak with Kokoro
    instead, using only ``kokoro_voices`` (the packs that are present): primary voices cycle in a
    seeded order; a speaker gets a seeded mix of its voice with another one (weight U(0.3, 0.7))
    with probability 1/2, and always once every voice has been used; base speed U(0.9, 1.1).
    Everything the eSpeak speakers draw is unchanged by ``kokoro_fraction``.
    """
    rng = np.random.default_rng([seed, 202])
    order = rng.permutation(len(VARIANTS))
    n_kokoro = num_kokoro_speakers(n, kokoro_fraction)
    kokoro_voices = list(kokoro_voices)
    if n_kokoro and not kokoro_voices:
        raise ValueError("kokoro_fraction > 0 needs at least one Kokoro voice pack")
    kokoro_ids = sorted(int(i) for i in np.random.default_rng([seed, 206]).permutation(n)[:n_kokoro])
    voice_order = [kokoro_voices[int(i)] for i in np.random.default_rng([seed, 207]).permutation(len(kokoro_voices))]
    speakers = []
    for i in range(n):
        r = np.random.default_rng([seed, 203, i])
        variant = VARIANTS[order[i % len(VARIANTS)]]
        accent = ACCENTS[int(r.integers(len(ACCENTS)))]
        speaker = SpeakerProfile(
            name=f"synth{i:03d}",
            voice=f"{accent}+{variant}",
            pitch=int(r.integers(30, 71)),
            rate=int(r.integers(150, 196)),
            range=int(r.integers(35, 71)),
            articulation=float(r.uniform(0.8, 1.2)),
            brow_accent=float(r.uniform(0.0, 0.2)),
            blink_rate=float(r.uniform(10.0, 25.0)),
        )
        if i in kokoro_ids:
            j = kokoro_ids.index(i)
            k = np.random.default_rng([seed, 208, i])
            main = voice_order[j % len(voice_order)]
            voice: str | dict = main
            if len(voice_order) > 1 and (j >= len(voice_order) or k.random() < 0.5):
                others = [v for v in voice_order if v != main]
                other = others[int(k.integers(len(others)))]
                w = round(float(k.uniform(0.3, 0.7)), 4)
                voice = {main: round(1.0 - w, 4), other: w}
            speed = round(float(k.uniform(0.9, 1.1)), 4)
            speaker = SpeakerProfile(**{**asdict(speaker), "voice": f"kokoro:{kokoro_voice_label(voice)}",
                                        "tts": "kokoro", "kokoro_voice": voice, "base_speed": speed})
        speakers.append(speaker)
    return speakers


def kokoro_voice_label(voice: str | dict) -> str:
    """``af_heart`` or ``af_heart*0.62+am_michael*0.38`` (a mix)."""
    if isinstance(voice, str):
        return voice
    return "+".join(f"{name}*{w:g}" for name, w in voice.items())


def make_style_matrix(num_speakers: int, seed: int) -> np.ndarray:
    """The known style: ``style[s, e, c]`` in [0, 1], shape (S, 8, 52), MEAD emotion order.

    Row ``neutral`` is the speaker's resting pose. Every other row is rest + the emotion
    prototype scaled by the speaker's expressiveness, made left/right asymmetric, varied per
    channel, plus two speaker-specific "signature" channels per emotion, so speakers are
    identifiable by their style alone.
    """
    style = np.zeros((num_speakers, len(EMOTIONS), NUM_BLENDSHAPES), np.float32)
    chan = np.array([_IDX[c] for c in STYLE_CHANNELS])
    left = np.array([n.endswith("Left") for n in ARKIT_BLENDSHAPE_NAMES])
    right = np.array([n.endswith("Right") for n in ARKIT_BLENDSHAPE_NAMES])
    for s in range(num_speakers):
        r = np.random.default_rng([seed, 303, s])
        rest = np.zeros(NUM_BLENDSHAPES, np.float32)
        for name, hi in (("browInnerUp", 0.1), ("browDownLeft", 0.06), ("browDownRight", 0.06),
                         ("eyeSquintLeft", 0.1), ("eyeSquintRight", 0.1), ("mouthSmileLeft", 0.05),
                         ("mouthSmileRight", 0.05), ("mouthFrownLeft", 0.05), ("mouthFrownRight", 0.05),
                         ("eyeBlinkLeft", 0.08), ("eyeBlinkRight", 0.08)):
            rest[_IDX[name]] = r.uniform(0.0, hi)
        gain = r.uniform(0.6, 1.3)
        asym = r.uniform(-0.25, 0.25)
        side = np.ones(NUM_BLENDSHAPES) + asym * left - asym * right
        for e, emotion in enumerate(EMOTIONS):
            if emotion == "neutral":
                style[s, e] = rest
                continue
            proto = np.zeros(NUM_BLENDSHAPES)
            for name, value in EMOTION_PROTOTYPES[emotion].items():
                proto[_IDX[name]] = value
            mult = np.exp(r.normal(0.0, 0.35, NUM_BLENDSHAPES))
            extra = np.zeros(NUM_BLENDSHAPES)
            free = [c for c in chan if proto[c] == 0]
            for c in r.choice(free, size=2, replace=False):
                extra[c] = r.uniform(0.05, 0.25)
            style[s, e] = np.clip(rest + gain * proto * mult * side + extra, 0.0, 1.0)
    return style


def make_plan(config: SynthConfig) -> Plan:
    """Sentences, speakers, style matrix, splits and the ordered clip list for ``config``."""
    config.validate()
    sentences = list(config.sentences) if config.sentences is not None else make_sentences(
        config.num_sentences, config.seed)
    n_sent, n_spk = len(sentences), config.num_speakers
    n_val = _default_count(config.num_validation_sentences, n_sent, 0.1, 3)
    n_test = _default_count(config.num_test_sentences, n_sent, 0.1, 3)
    n_test_spk = _default_count(config.num_test_speakers, n_spk, 0.2, 2)
    if n_val + n_test >= n_sent:
        raise ValueError(f"{n_val} validation + {n_test} test sentences leave none of {n_sent} for training")
    if n_test_spk >= n_spk:
        raise ValueError(f"{n_test_spk} held-out speakers leave none of {n_spk} for training")
    rng = np.random.default_rng([config.seed, 404])
    perm = [int(i) for i in rng.permutation(n_sent)]
    sentence_split = {k: "validation" for k in perm[:n_val]}
    sentence_split.update({k: "test" for k in perm[n_val:n_val + n_test]})
    sentence_split.update({k: "train" for k in perm[n_val + n_test:]})
    test_speakers = sorted(int(i) for i in rng.permutation(n_spk)[:n_test_spk])
    voices_dir, voices = None, []
    if num_kokoro_speakers(n_spk, config.kokoro_fraction) > 0:
        from . import kokoro_tts

        if not kokoro_tts.is_available():
            raise kokoro_tts.KokoroUnavailable("kokoro_fraction > 0 needs the 'synth' extra: pip install 'pestalk-hf[synth]'")
        voices_dir = str(config.kokoro_voices_dir or kokoro_tts.default_voices_dir())
        voices = kokoro_tts.KokoroVoiceBank(voices_dir).names  # only the packs present (sha256-checked)
    plan = Plan(config, sentences, make_speakers(n_spk, config.seed, config.kokoro_fraction, voices),
                make_style_matrix(n_spk, config.seed), sentence_split, test_speakers,
                kokoro_voices_dir=voices_dir)
    for s in range(n_spk):
        for k in range(n_sent):
            split = "test_speakers" if s in test_speakers else sentence_split[k]
            group = [ClipSpec(_clip_id(s, k, "neutral", 1), split, s, k, "neutral", 1)]
            for emotion in config.emotions:
                if emotion != "neutral":
                    group += [ClipSpec(_clip_id(s, k, emotion, lvl), split, s, k, emotion, lvl)
                              for lvl in config.intensity_levels]
            plan.groups.append(group)
    return plan


def _clip_id(speaker: int, sentence: int, emotion: str, level: int) -> str:
    return f"synth{speaker:03d}-s{sentence:04d}-{emotion}-{level}"


# ----------------------------------------------------------------------------------------------
# Visemes and coarticulation
# ----------------------------------------------------------------------------------------------
# Viseme targets on the lower face; unspecified channels are 0 (also for the pause '' = rest).
VISEME_TARGETS: dict[str, dict[str, float]] = {
    "rest": {},
    "PP": {"jawOpen": 0.06, "mouthClose": 0.30, "mouthPressLeft": 0.35, "mouthPressRight": 0.35,
           "mouthRollLower": 0.25, "mouthRollUpper": 0.15},
    "FF": {"jawOpen": 0.10, "mouthRollLower": 0.45, "mouthUpperUpLeft": 0.2, "mouthUpperUpRight": 0.2,
           "mouthPressLeft": 0.1, "mouthPressRight": 0.1},
    "TH": {"jawOpen": 0.15, "mouthLowerDownLeft": 0.15, "mouthLowerDownRight": 0.15,
           "mouthStretchLeft": 0.1, "mouthStretchRight": 0.1},
    "DD": {"jawOpen": 0.18, "mouthLowerDownLeft": 0.1, "mouthLowerDownRight": 0.1,
           "mouthStretchLeft": 0.08, "mouthStretchRight": 0.08},
    "KK": {"jawOpen": 0.22, "mouthStretchLeft": 0.05, "mouthStretchRight": 0.05},
    "CH": {"jawOpen": 0.12, "mouthFunnel": 0.45, "mouthPucker": 0.35, "mouthUpperUpLeft": 0.15,
           "mouthUpperUpRight": 0.15, "mouthLowerDownLeft": 0.1, "mouthLowerDownRight": 0.1},
    "SS": {"jawOpen": 0.07, "mouthStretchLeft": 0.3, "mouthStretchRight": 0.3,
           "mouthLowerDownLeft": 0.1, "mouthLowerDownRight": 0.1},
    "RR": {"jawOpen": 0.14, "mouthPucker": 0.35, "mouthFunnel": 0.25},
    "W": {"jawOpen": 0.08, "mouthPucker": 0.75, "mouthFunnel": 0.35},
    "Y": {"jawOpen": 0.10, "mouthStretchLeft": 0.35, "mouthStretchRight": 0.35},
    "H": {"jawOpen": 0.20},
    "AA": {"jawOpen": 0.60, "mouthLowerDownLeft": 0.3, "mouthLowerDownRight": 0.3,
           "mouthUpperUpLeft": 0.1, "mouthUpperUpRight": 0.1},
    "AE": {"jawOpen": 0.50, "mouthStretchLeft": 0.25, "mouthStretchRight": 0.25,
           "mouthLowerDownLeft": 0.3, "mouthLowerDownRight": 0.3},
    "AH": {"jawOpen": 0.40, "mouthLowerDownLeft": 0.2, "mouthLowerDownRight": 0.2},
    "O": {"jawOpen": 0.40, "mouthFunnel": 0.5, "mouthPucker": 0.25},
    "E": {"jawOpen": 0.32, "mouthStretchLeft": 0.3, "mouthStretchRight": 0.3,
          "mouthLowerDownLeft": 0.2, "mouthLowerDownRight": 0.2},
    "I": {"jawOpen": 0.14, "mouthStretchLeft": 0.45, "mouthStretchRight": 0.45,
          "mouthUpperUpLeft": 0.1, "mouthUpperUpRight": 0.1},
    "@": {"jawOpen": 0.28, "mouthLowerDownLeft": 0.1, "mouthLowerDownRight": 0.1},
    "ER": {"jawOpen": 0.22, "mouthPucker": 0.25, "mouthFunnel": 0.2},
    "U": {"jawOpen": 0.15, "mouthPucker": 0.7, "mouthFunnel": 0.3},
}
VOWEL_VISEMES = frozenset({"AA", "AE", "AH", "O", "E", "I", "@", "ER", "U"})
# Dominance strength and temporal spread (× half-duration) per viseme: lip closures and rounding
# must be reached (strong, narrow); tongue consonants and /h/ borrow their mouth shape from the
# neighbours (weak), which is what produces anticipatory and carry-over coarticulation.
DOMINANCE: dict[str, tuple[float, float]] = {
    "rest": (0.6, 1.0), "PP": (1.0, 1.0), "FF": (0.9, 1.0), "W": (0.9, 1.3), "U": (0.8, 1.3),
    "CH": (0.7, 1.2), "TH": (0.5, 1.0), "SS": (0.5, 1.0), "RR": (0.5, 1.2), "Y": (0.5, 1.0),
    "DD": (0.3, 1.0), "KK": (0.3, 1.0), "H": (0.1, 1.0),
}
_VOWEL_DOMINANCE = (0.6, 1.4)

# IPA symbol → viseme (eSpeak's IPA names, stress/length/diacritics removed; multi-letter first).
_IPA_MULTI = {"tʃ": ("CH",), "dʒ": ("CH",), "ts": ("DD", "SS"), "dz": ("DD", "SS")}
_IPA_SINGLE = {
    **dict.fromkeys("pbmɓ", "PP"), **dict.fromkeys("fvʋɱ", "FF"), **dict.fromkeys("θð", "TH"),
    **dict.fromkeys("tdnlɾɫɬɭʈɖɳ", "DD"), **dict.fromkeys("kgɡŋxɣqɢʔ", "KK"),
    **dict.fromkeys("ʃʒɕʑ", "CH"), **dict.fromkeys("sz", "SS"), **dict.fromkeys("ɹrɻʁʀ", "RR"),
    **dict.fromkeys("wʍ", "W"), **dict.fromkeys("jʝ", "Y"), **dict.fromkeys("hɦ", "H"),
    **dict.fromkeys("aɑ", "AA"), "æ": "AE", **dict.fromkeys("ɐʌ", "AH"),
    **dict.fromkeys("ɒɔoøœɵ", "O"), **dict.fromkeys("eɛ", "E"), **dict.fromkeys("iɪᵻyʏ", "I"),
    **dict.fromkeys("əɜɘ", "@"), "ɚ": "ER", "ɝ": "ER", **dict.fromkeys("uʊʉɯ", "U"),
}


def phone_visemes(name: str) -> tuple[str, ...]:
    """Viseme sequence for one eSpeak IPA phone name (a diphthong gives two). '' → ('rest',).

    Raises KeyError for a symbol with no mapping, so gaps in the table are found, not hidden.
    """
    text = "".join(ch for ch in unicodedata.normalize("NFD", name)
                   if ch not in "ˈˌːˑ:" and unicodedata.category(ch) != "Mn")
    if not text:
        return ("rest",)
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i:i + 2] in _IPA_MULTI:
            out += _IPA_MULTI[text[i:i + 2]]
            i += 2
            continue
        out.append(_IPA_SINGLE[text[i]])
        i += 1
    return tuple(out)


_LOWER_CHANNELS = sorted({c for t in VISEME_TARGETS.values() for c in t})
_TARGETS = {v: np.array([t.get(c, 0.0) for c in _LOWER_CHANNELS], np.float32) for v, t in VISEME_TARGETS.items()}


def viseme_curves(phones: Sequence[Phone], num_frames: int, fps: int = FPS, supersample: int = 4) -> np.ndarray:
    """Lower-face curves (T, 52) from a phone timeline by dominance-function blending.

    Each phone (diphthongs split into sub-segments) exerts ``a * exp(-(|t - centre| / w)^1.5)``
    with ``w = spread * max(duration / 2, 30 ms)``; frame values are the dominance-weighted mean of
    the targets, averaged over ``supersample`` points per frame so 30 ms closures are not missed.
    """
    segs: list[tuple[float, float, str]] = []
    duration = num_frames / fps
    if phones and phones[0].start > 0:  # the face rests before the first and after the last phone
        segs.append((0.0, phones[0].start, "rest"))
    for ph in phones:
        vis = phone_visemes(ph.name)
        step = (ph.end - ph.start) / len(vis)
        segs += [(ph.start + j * step, ph.start + (j + 1) * step, v) for j, v in enumerate(vis)]
    if phones and phones[-1].end < duration:
        segs.append((phones[-1].end, duration, "rest"))
    out = np.zeros((num_frames, NUM_BLENDSHAPES), np.float32)
    if not segs or num_frames == 0:
        return out
    start = np.array([s[0] for s in segs])
    end = np.array([s[1] for s in segs])
    dom = np.array([_VOWEL_DOMINANCE if s[2] in VOWEL_VISEMES else DOMINANCE[s[2]] for s in segs])
    targets = np.stack([_TARGETS[s[2]] for s in segs])  # (P, C)
    t = (np.arange(num_frames * supersample) + 0.5) / (fps * supersample)  # (Ts,)
    centre, half = (start + end) / 2, np.maximum((end - start) / 2, 0.03)
    width = dom[:, 1] * half
    # inside its own segment a phone keeps full strength; outside it decays with the distance
    dist = np.maximum(np.abs(t[:, None] - centre[None]) - half[None], 0.0)
    weight = dom[:, 0][None] * np.exp(-((dist / width[None]) ** 1.5))  # (Ts, P)
    blend = weight @ targets / (weight.sum(1, keepdims=True) + 1e-8)
    blend = blend.reshape(num_frames, supersample, -1).mean(1)
    out[:, [_IDX[c] for c in _LOWER_CHANNELS]] = blend
    return out


def close_lips_on_bilabials(curves: np.ndarray, phones: Sequence[Phone], fps: int = FPS,
                            max_jaw: float = 0.08) -> np.ndarray:
    """Make /p b m/ (and other PP visemes) close the lips, as every real face does.

    The dominance blend of :func:`viseme_curves` lets open neighbours leak into a short closure (jawOpen
    ≈ 0.3 on the /p/ of "Lappen"). On the frames whose centre lies inside a bilabial phone the jaw is
    limited to ``max_jaw`` above its value at rest and ``mouthClose`` follows the jaw (in ARKit the lips
    touch when mouthClose ≈ jawOpen); one frame either side is blended halfway. Returns a new array.
    """
    out = np.array(curves, dtype=np.float32, copy=True)
    jaw, close = _IDX["jawOpen"], _IDX["mouthClose"]
    weight = np.zeros(len(out), np.float32)
    centres = (np.arange(len(out)) + 0.5) / fps
    for ph in phones:
        if "PP" not in phone_visemes(ph.name):
            continue
        inside = (centres >= ph.start) & (centres < ph.end)
        if not inside.any():  # a closure shorter than a frame still closes the nearest frame
            inside[min(int((ph.start + ph.end) / 2 * fps), len(out) - 1)] = True
        near = np.convolve(inside.astype(np.float32), [0.5, 1.0, 0.5], mode="same")
        weight = np.maximum(weight, np.minimum(near, 1.0))
    if not weight.any():
        return out
    base = out[:, jaw].min() if len(out) else 0.0
    closed_jaw = np.minimum(out[:, jaw], base + max_jaw)
    out[:, jaw] = (1 - weight) * out[:, jaw] + weight * closed_jaw
    out[:, close] = np.maximum(out[:, close], weight * out[:, jaw])
    return out


# ----------------------------------------------------------------------------------------------
# One clip
# ----------------------------------------------------------------------------------------------
def loudness_envelope(waveform: np.ndarray, num_frames: int, sampling_rate: int = SAMPLING_RATE,
                      fps: int = FPS) -> np.ndarray:
    """Loudness per 30 fps frame mapped to [0, 1]: -45 dBFS RMS → 0, -10 dBFS → 1."""
    edges = np.minimum((np.arange(num_frames + 1) * sampling_rate) // fps, len(waveform))
    energy = np.concatenate([[0.0], np.cumsum(np.asarray(waveform, np.float64) ** 2)])
    counts = np.maximum(np.diff(edges), 1)
    rms = np.sqrt((energy[edges[1:]] - energy[edges[:-1]]) / counts)
    return np.clip((20 * np.log10(rms + 1e-8) + 45.0) / 35.0, 0.0, 1.0).astype(np.float32)


def _smooth(x: np.ndarray, sigma_frames: float) -> np.ndarray:
    radius = int(3 * sigma_frames) + 1
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_frames) ** 2)
    kernel /= kernel.sum()
    return np.convolve(np.pad(x, radius, mode="edge"), kernel, mode="valid").astype(np.float32)


def _blinks(num_frames: int, per_minute: float, rng: np.random.Generator, fps: int = FPS) -> np.ndarray:
    """Eyelid closure curve in [0, 1]: Poisson onsets, 70 ms closing, 130 ms opening."""
    out = np.zeros(num_frames, np.float32)
    t, duration = rng.exponential(60.0 / per_minute) * 0.5, num_frames / fps
    while t < duration:
        amp = rng.uniform(0.85, 1.0)
        frames = np.arange(num_frames) / fps - t
        shape = np.where(frames < 0.07, frames / 0.07, 1.0 - (frames - 0.07) / 0.13)
        out = np.maximum(out, amp * np.clip(np.where(frames >= 0, shape, 0.0), 0.0, 1.0))
        t += 0.3 + rng.exponential(60.0 / per_minute)
    return out


def _gaze(num_frames: int, rng: np.random.Generator, fps: int = FPS) -> np.ndarray:
    """Piecewise-constant gaze shifts (saccades) written on the eyeLook channels."""
    out = np.zeros((num_frames, NUM_BLENDSHAPES), np.float32)
    k = 0
    while k < num_frames:
        hold = int(rng.uniform(0.6, 2.0) * fps)
        h, v = rng.uniform(-0.15, 0.15), rng.uniform(-0.1, 0.1)
        sl = slice(k, k + hold)
        side = ("eyeLookOutLeft", "eyeLookInRight") if h > 0 else ("eyeLookInLeft", "eyeLookOutRight")
        for name in side:
            out[sl, _IDX[name]] = abs(h)
        for name in (("eyeLookUpLeft", "eyeLookUpRight") if v > 0 else ("eyeLookDownLeft", "eyeLookDownRight")):
            out[sl, _IDX[name]] = abs(v)
        k += hold
    return out


def voice_settings(speaker: SpeakerProfile, emotion: str, level: int) -> VoiceSettings:
    """eSpeak settings for a speaker speaking with ``emotion`` at MEAD ``level``."""
    p, f = EMOTION_PROSODY[emotion], LEVEL_FACTOR[level]
    return VoiceSettings(
        voice=speaker.voice,
        rate=int(np.clip(round(speaker.rate * (1 + f * (p["rate"] - 1))), 80, 450)),
        pitch=int(np.clip(round(speaker.pitch + f * p["pitch"]), 0, 100)),
        range=int(np.clip(round(speaker.range * (1 + f * (p["range"] - 1))), 0, 100)),
        volume=int(np.clip(round(100 * (1 + f * (p["volume"] - 1))), 0, 200)),
    )


def kokoro_speed(speaker: SpeakerProfile, emotion: str, level: int) -> float:
    """Kokoro speed for ``emotion`` at MEAD ``level``: ``base_speed · (1 + f·(rate − 1))`` in [0.5, 2]."""
    p, f = EMOTION_PROSODY[emotion], LEVEL_FACTOR[level]
    return float(np.clip(speaker.base_speed * (1 + f * (p["rate"] - 1)), 0.5, 2.0))


def volume_factor(emotion: str, level: int) -> float:
    """Amplitude factor of ``emotion`` at ``level`` (eSpeak's volume / 100), in [0, 2]."""
    p, f = EMOTION_PROSODY[emotion], LEVEL_FACTOR[level]
    return float(np.clip(1 + f * (p["volume"] - 1), 0.0, 2.0))


class ClipSkipped(RuntimeError):
    """A clip that cannot be made (a Kokoro utterance the aligner cannot align, even at speed 1)."""


_KOKORO: dict[str, tuple[int, Any, Any]] = {}  # voices folder → (pid, KokoroTTS, Aligner)


def _kokoro_engine(voices_dir: str) -> tuple[Any, Any]:
    """This process's KokoroTTS and Aligner, created on first use *in this process*: onnxruntime
    sessions (and the PocketSphinx decoder) must not be shared across a fork, so an engine
    inherited from the parent (other pid) is never used."""
    entry = _KOKORO.get(voices_dir)
    if entry is None or entry[0] != os.getpid():
        from .aligner import Aligner
        from .kokoro_tts import KokoroTTS, KokoroVoiceBank

        entry = (os.getpid(), KokoroTTS(KokoroVoiceBank(voices_dir)), Aligner())
        _KOKORO[voices_dir] = entry
    return entry[1], entry[2]


_ARPABET_VOWELS = frozenset("AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split())


def espeak_stress(sentence: str, voice: str = "en-us") -> list[tuple[str, bool]]:
    """eSpeak NG's phonemisation of ``sentence`` as ARPAbet phones with a primary-stress flag
    (on the first vowel of every eSpeak phoneme marked 'ˈ'). Unmappable symbols are dropped."""
    from .aligner import espeak_phonemes, ipa_to_arpabet

    out: list[tuple[str, bool]] = []
    for clause in espeak_phonemes(sentence, voice, separator="_"):
        for name in clause.replace(" ", "_").split("_"):
            if not name:
                continue
            try:
                arpa = ipa_to_arpabet(name)
            except KeyError:
                continue
            stressed = "ˈ" in name
            for a in arpa:
                out.append((a, stressed and a in _ARPABET_VOWELS))
                stressed = stressed and a not in _ARPABET_VOWELS
    return out


def stressed_ipa_phones(aligned: Sequence[Any], sentence: str, voice: str = "en-us") -> list[Phone]:
    """Aligned ARPAbet phones → IPA :class:`Phone` (``SIL`` → ``''``), primary stress 'ˈ' prefixed
    to the vowels eSpeak stresses.

    The aligner's phones carry no stress; Kokoro is fed eSpeak's phonemes, so eSpeak's stress is
    the stress Kokoro was asked to realise. The two phone sequences are matched with difflib (eSpeak
    joins clitics such as "from the" into one word and may pick other pronunciations than CMUdict),
    so a vowel outside a matched stretch simply gets no stress mark.
    """
    import difflib

    from .aligner import ARPABET_TO_IPA, SIL

    ref = espeak_stress(sentence, voice)
    idx = [i for i, p in enumerate(aligned) if p.name != SIL]
    sm = difflib.SequenceMatcher(a=[ref_name for ref_name, _ in ref], b=[aligned[i].name for i in idx], autojunk=False)
    stressed: set[int] = set()
    for block in sm.get_matching_blocks():
        for k in range(block.size):
            if ref[block.a + k][1]:
                stressed.add(idx[block.b + k])
    return [Phone(("ˈ" if i in stressed else "") + ARPABET_TO_IPA[p.name], p.start, p.end, p.word)
            for i, p in enumerate(aligned)]


def _kokoro_utterance(plan: Plan, speaker: SpeakerProfile, spec: ClipSpec) -> tuple[np.ndarray, list[Phone]]:
    """(16 kHz waveform, IPA phones) of a Kokoro speaker's clip; see :func:`generate_clip`."""
    from .aligner import AlignmentError

    assert plan.kokoro_voices_dir is not None, "plan has Kokoro speakers but no voices folder"
    tts, aligner = _kokoro_engine(plan.kokoro_voices_dir)
    sentence = plan.sentences[spec.sentence]
    speed = kokoro_speed(speaker, spec.emotion, spec.level)
    errors = []
    for sp in dict.fromkeys((speed, 1.0)):  # retry once at speed 1.0
        wav, _ = tts.synthesize(sentence, speaker.kokoro_voice, sp, align=False)
        try:
            aligned = aligner.align(wav, SAMPLING_RATE, sentence).phones
        except AlignmentError as exc:
            errors.append(f"speed {sp:.3f}: {exc}")
            continue
        voice = speaker.kokoro_voice
        main = voice if isinstance(voice, str) else max(voice, key=lambda v: voice[v])
        phones = stressed_ipa_phones(aligned, sentence, "en" if main.startswith("b") else "en-us")
        return (wav * volume_factor(spec.emotion, spec.level)).astype(np.float32), phones
    raise ClipSkipped(f"{spec.id}: Kokoro speech could not be aligned ({'; '.join(errors)})")


def generate_clip(plan: Plan, spec: ClipSpec) -> tuple[dict[str, Any], list[tuple[str, float, float]]]:
    """Synthesise one clip: (schema row, phone alignment [(ipa, start_s, end_s), ...]).

    eSpeak speakers: :func:`voice_settings` (rate, pitch, range, volume) and eSpeak's phone events.
    Kokoro speakers: speed :func:`kokoro_speed` and amplitude × :func:`volume_factor` only —
    Kokoro-82M has no pitch or intonation-range control, so those parts of the emotion prosody
    are missing; phones are the forced alignment of the audio with the sentence (IPA, stress from
    eSpeak, :func:`stressed_ipa_phones`). When the aligner fails, the clip is made again at speed 1.0,
    then :class:`ClipSkipped` is raised. Everything after the speech (lead silence, visemes,
    style, accents, blinks) is the same for both.
    """
    speaker = plan.speakers[spec.speaker]
    e_idx = EMOTIONS.index(spec.emotion)
    rng = np.random.default_rng([plan.config.seed, 505, spec.speaker, spec.sentence, e_idx, spec.level])
    espeak_seed = int(rng.integers(2**31 - 1))  # drawn for Kokoro speakers too: same stream after it
    if speaker.tts == "kokoro":
        speech, speech_phones = _kokoro_utterance(plan, speaker, spec)
    else:
        utt = synthesize(plan.sentences[spec.sentence], voice_settings(speaker, spec.emotion, spec.level),
                         seed=espeak_seed, sampling_rate=SAMPLING_RATE)
        speech, speech_phones = utt.waveform, utt.phones
    lead = int(rng.uniform(0.1, 0.3) * SAMPLING_RATE)
    wav = np.concatenate([np.zeros(lead, np.float32), speech, np.zeros(SAMPLING_RATE // 10, np.float32)])
    wav = np.clip(wav + rng.normal(0.0, 1e-4, len(wav)).astype(np.float32), -1.0, 1.0)
    shift = lead / SAMPLING_RATE
    phones = [Phone(p.name, p.start + shift, p.end + shift, p.word) for p in speech_phones]

    T = num_frames_for(len(wav))
    env = loudness_envelope(wav, T)
    prosody, f = EMOTION_PROSODY[spec.emotion], LEVEL_FACTOR[spec.level]
    articulation = speaker.articulation * (1 + f * (prosody["articulation"] - 1))
    lower = viseme_curves(phones, T) * articulation * (0.75 + 0.5 * _smooth(env, 1.5))[:, None]

    rest = plan.style[spec.speaker, 0]
    target = rest + f * (plan.style[spec.speaker, e_idx] - rest)
    g = 0.75 + 0.25 * _smooth(env, 4.5)
    labels = lower + target[None] * g[:, None] + _gaze(T, rng)
    accents = np.zeros(T, np.float32)  # brow raises on primary-stressed vowels
    frame_t = (np.arange(T) + 0.5) / FPS
    for ph in phones:
        if ph.name.startswith("ˈ"):
            accents += np.exp(-0.5 * ((frame_t - (ph.start + ph.end) / 2) / 0.08) ** 2)
    accents *= speaker.brow_accent * (0.5 + prosody["arousal"])
    for name, w in (("browInnerUp", 1.0), ("browOuterUpLeft", 0.7), ("browOuterUpRight", 0.7)):
        labels[:, _IDX[name]] += w * accents
    blink = _blinks(T, speaker.blink_rate * _BLINK_FACTOR[spec.emotion], rng)
    for name in ("eyeBlinkLeft", "eyeBlinkRight"):
        labels[:, _IDX[name]] = np.maximum(labels[:, _IDX[name]], blink)
    labels[:, _IDX["tongueOut"]] = 0.0
    labels = np.clip(labels, 0.0, 1.0)

    row = make_row(id=spec.id, waveform=wav, blendshapes=labels, speaker=speaker.name,
                   emotion=spec.emotion, intensity=spec.level, sentence=plan.sentences[spec.sentence],
                   source=SOURCE)
    return row, [(p.name, round(p.start, 5), round(p.end, 5)) for p in phones]


_WORKER_PLAN: Plan | None = None


def _init_worker(plan: Plan) -> None:
    global _WORKER_PLAN
    _WORKER_PLAN = plan


def _generate_group(g: int, plan: Plan | None = None) -> list[tuple[dict[str, Any] | None, Any, float]]:
    """``(row, phones, seconds)`` per clip of group ``g``; a skipped clip is ``(None, (id, why), 0.0)``."""
    plan = plan if plan is not None else _WORKER_PLAN
    assert plan is not None, "worker not initialised"
    out: list[tuple[dict[str, Any] | None, Any, float]] = []
    for spec in plan.groups[g]:
        try:
            row, align = generate_clip(plan, spec)
        except ClipSkipped as exc:
            out.append((None, (spec.id, str(exc)), 0.0))
            continue
        out.append((row, align, _row_seconds(row)))
    return out


def _row_seconds(row: dict[str, Any]) -> float:
    return len(row["blendshapes"]) / row["fps"]


# ----------------------------------------------------------------------------------------------
# Whole dataset
# ----------------------------------------------------------------------------------------------
def shard_name(split: str, index: int, count: int) -> str:
    """``data/{split}-{index:05d}-of-{count:05d}.parquet``: the layout datasets infers splits from."""
    return f"data/{split}-{index:05d}-of-{count:05d}.parquet"


class _ShardWriter:
    """Collects group results in generation order; writes a shard once its last group is in.

    Shards are cut on group boundaries, so a neutral clip and its emotional partners are always
    in the same shard (pairs can be formed while streaming).
    """

    def __init__(self, plan: Plan, output: Path, rows_per_shard: int) -> None:
        self.output = output
        per_shard = max(1, rows_per_shard // len(plan.groups[0]))
        by_split = {s: [g for g, grp in enumerate(plan.groups) if grp[0].split == s] for s in SPLITS}
        self.counts = {s: math.ceil(len(gs) / per_shard) for s, gs in by_split.items() if gs}
        self.shard_of = {g: (s, j // per_shard) for s, gs in by_split.items() for j, g in enumerate(gs)}
        self.remaining: dict[tuple[str, int], int] = {}
        for key in self.shard_of.values():
            self.remaining[key] = self.remaining.get(key, 0) + 1
        self.buffers: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self.stats = {s: {"clips": 0, "seconds": 0.0} for s in self.counts}
        self.alignments: list[str] = []
        self.skipped: dict[str, str] = {}

    def add(self, g: int, result: list[tuple[dict[str, Any] | None, Any, float]]) -> None:
        key = self.shard_of[g]
        self.buffers.setdefault(key, []).extend(row for row, _, _ in result if row is not None)
        for row, align, seconds in result:
            if row is None:
                self.skipped[align[0]] = align[1]
                continue
            self.stats[key[0]]["clips"] += 1
            self.stats[key[0]]["seconds"] += seconds
            self.alignments.append(json.dumps({"id": row["id"], "phones": align}, ensure_ascii=False))
        self.remaining[key] -= 1
        if self.remaining[key] == 0:
            rows = self.buffers.pop(key)
            if rows:  # every clip of the shard skipped: no file (the other shards keep their names)
                write_parquet_shard(rows, self.output / shard_name(key[0], key[1], self.counts[key[0]]))


def generate(config: SynthConfig, output: str | Path, num_proc: int = 1,
             progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write EmoStyle-Synth for ``config`` into ``output``; returns a summary with timing.

    Groups (speaker × sentence, every emotion) are generated in a fixed order (``imap`` keeps
    order with ``num_proc > 1``), so the output is identical for any ``num_proc``. ``progress``
    is called with the number of clips finished since the last call (for a tqdm bar).
    """
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    t0 = time.perf_counter()
    output = Path(output)
    plan = make_plan(config)
    output.mkdir(parents=True, exist_ok=True)
    for old in (output / "data").glob("*.parquet"):
        old.unlink()  # a previous run with other settings would leave shards of another count
    writer = _ShardWriter(plan, output, config.rows_per_shard)

    def results() -> Iterator[list[tuple[dict[str, Any], list, float]]]:
        if num_proc <= 1:
            yield from (_generate_group(g, plan) for g in range(len(plan.groups)))
            return
        import multiprocessing as mp
        import sys

        # fork on Linux: a spawned worker would re-import torch/transformers (tens of seconds on a
        # busy 2-core machine). Forking is safe for libespeak-ng's global state because the engine
        # reloads the library before every utterance; workers never touch torch.
        method = "fork" if sys.platform == "linux" else "spawn"
        with mp.get_context(method).Pool(num_proc, initializer=_init_worker, initargs=(plan,)) as pool:
            yield from pool.imap(_generate_group, range(len(plan.groups)))

    bars_were_enabled = is_progress_bar_enabled()
    disable_progress_bar()  # one bar per shard write would drown the caller's progress bar
    try:
        for g, result in enumerate(results()):
            writer.add(g, result)
            if progress is not None:
                progress(len(result))
    finally:
        if bars_were_enabled:
            enable_progress_bar()

    (output / "alignments.jsonl").write_text("\n".join(writer.alignments) + "\n", encoding="utf-8")
    _write_pairs(plan, output / "pairs.jsonl", skipped=writer.skipped)
    _write_style(plan, output / "style_matrix.json")
    wall = time.perf_counter() - t0
    total = sum(s["seconds"] for s in writer.stats.values())
    summary = {"splits": writer.stats, "shards": writer.counts, "seconds_of_audio": total, "wall_seconds": wall,
               "speed_x_realtime": total / wall if wall > 0 else float("inf"), "num_proc": num_proc}
    if any(s.tts == "kokoro" for s in plan.speakers):
        summary["skipped"] = dict(writer.skipped)  # clip id → why (Kokoro clips the aligner could not align)
    _write_card(plan, output / "README.md", summary)
    return summary


def pair_records(plan: Plan, skipped: Collection[str] = ()) -> list[dict[str, Any]]:
    """Neutral↔emotional pairs: same speaker, same sentence, every emotional clip once
    (pairs with a ``skipped`` clip id left out)."""
    out = []
    for group in plan.groups:
        neutral = group[0]
        for spec in group[1:]:
            if neutral.id in skipped or spec.id in skipped:
                continue
            out.append({"neutral_id": neutral.id, "emotional_id": spec.id, "speaker": plan.speakers[spec.speaker].name,
                        "sentence": plan.sentences[spec.sentence], "emotion": spec.emotion,
                        "intensity": spec.level, "split": spec.split})
    return out


def _write_pairs(plan: Plan, path: Path, skipped: Collection[str] = ()) -> None:
    lines = [json.dumps(r, ensure_ascii=False) for r in pair_records(plan, skipped)]
    path.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")


_KOKORO_PROFILE_KEYS = ("tts", "kokoro_voice", "base_speed")
_KOKORO_CONFIG_KEYS = ("kokoro_fraction", "kokoro_voices_dir")  # the folder is a local path: never written


def _profile_dict(speaker: SpeakerProfile, kokoro: bool) -> dict[str, Any]:
    """A profile as saved: without the Kokoro fields when no speaker uses Kokoro (the files of an
    eSpeak-only dataset stay what they were before Kokoro existed)."""
    d = asdict(speaker)
    return d if kokoro else {k: v for k, v in d.items() if k not in _KOKORO_PROFILE_KEYS}


def _write_style(plan: Plan, path: Path) -> None:
    kokoro = any(s.tts == "kokoro" for s in plan.speakers)
    doc = {
        "description": "style[speaker][emotion][channel] in [0,1]; emotion rows in MEAD order, channels in "
                       "ARKit alphabetical order. Row 'neutral' is the resting pose. A clip of level L uses "
                       "target = rest + LEVEL_FACTOR[L] * (style - rest), scaled per frame by "
                       "g(t) = 0.75 + 0.25 * smoothed loudness in [0,1].",
        "speakers": [s.name for s in plan.speakers],
        "emotions": list(EMOTIONS),
        "channels": list(ARKIT_BLENDSHAPE_NAMES),
        "style_channels": list(STYLE_CHANNELS),
        "level_factor": {str(k): v for k, v in LEVEL_FACTOR.items()},
        "intensity_curve": {"offset": 0.75, "gain": 0.25, "loudness_db_range": [-45.0, -10.0]},
        "speaker_profiles": [_profile_dict(s, kokoro) for s in plan.speakers],
        "test_speakers": [plan.speakers[i].name for i in plan.test_speakers],
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(plan.config).items()
                   if k not in _KOKORO_CONFIG_KEYS or (kokoro and k == "kokoro_fraction")},
        "style": np.round(plan.style, 6).tolist(),
    }
    path.write_text(json.dumps(doc, indent=1), encoding="utf-8")


def _write_card(plan: Plan, path: Path, summary: dict[str, Any]) -> None:
    """Dataset card. No ``configs:`` YAML on purpose: the file names already give the splits, and
    with ``configs`` datasets 5.x reuses a stale Arrow cache when a local folder is regenerated in
    place (its cache key then ignores the shards' mtimes)."""
    from huggingface_hub import DatasetCard

    splits = [s for s in SPLITS if s in summary["shards"]]
    table = "\n".join(f"| {s} | {summary['splits'][s]['clips']} | {summary['splits'][s]['seconds'] / 60:.1f} |"
                      for s in splits)
    cfg = plan.config
    kokoro = [s for s in plan.speakers if s.tts == "kokoro"]
    if not kokoro:
        speech = "Speech is eSpeak NG; lips follow its phoneme\ntiming"
        align_doc = "the eSpeak IPA phone timeline (seconds) of every clip."
        kokoro_doc = ""
    else:
        n_esp = len(plan.speakers) - len(kokoro)
        speech = (f"Speech is eSpeak NG ({n_esp} speakers) and the\nKokoro-82M neural TTS "
                  f"({len(kokoro)} speakers, int8 ONNX, Apache-2.0 weights); lips follow the phone\ntiming")
        align_doc = ("the IPA phone timeline (seconds) of every clip: eSpeak's phone events for\n"
                     "  eSpeak speakers; PocketSphinx forced alignment (ARPAbet → IPA, primary stress from eSpeak's\n"
                     "  phonemisation) for Kokoro speakers.")
        skipped = summary.get("skipped") or {}
        kokoro_doc = ("* Kokoro speakers (voice pack, or `name*weight` mix of two packs of kokoro-js 1.2.1; base speed):\n"
                      + "".join(f"  - {s.name}: {kokoro_voice_label(s.kokoro_voice)}, speed {s.base_speed:g}\n"
                                for s in kokoro)
                      + "  Emotions change only their speed and loudness: Kokoro has no pitch or range control.\n"
                      + f"  Clips the aligner could not align (left out, also from `pairs.jsonl`): {len(skipped)}.\n")
    content = f"""---
license: {cfg.license}
pretty_name: EmoStyle-Synth
tags:
- audio
- blendshapes
- arkit
- facial-animation
- talking-head
- synthetic
---

# EmoStyle-Synth

Synthetic speech → 52 ARKit blendshapes (30 fps) with **known** per-speaker × per-emotion
styles, in the 3D-EmoStyle schema of PESTalk-HF. {speech} through viseme targets with coarticulation; upper face and mouth corners follow the style
matrix in `style_matrix.json`, scaled by a loudness-driven intensity curve; blinks and gaze shifts
are procedural. Generated by `hub_scripts/make_emostyle_synth.py` (seed {cfg.seed}).

| split | clips | minutes |
|---|---|---|
{table}

* `train`/`validation`/`test`: seen speakers, disjoint sentences; `test_speakers`: held-out
  speakers ({", ".join(plan.speakers[i].name for i in plan.test_speakers) or "none"}) on all sentences.
* {len(plan.speakers)} speakers, {len(plan.sentences)} sentences, emotions {", ".join(cfg.emotions)},
  MEAD levels {", ".join(map(str, cfg.intensity_levels))}; every sentence in every emotion.
* `pairs.jsonl`: neutral ↔ emotional clip ids (same speaker and sentence).
{kokoro_doc}* `alignments.jsonl`: {align_doc}
* Audio: 16 kHz mono FLAC bytes (`Audio(decode=False)`); decode with soundfile.

Not real faces and not real voices: use it to test and debug, not as a benchmark of realism.
"""
    DatasetCard(content).save(str(path))


def push_to_hub(output: str | Path, repo_id: str, private: bool = False) -> str:
    """Upload a generated folder as a datasets repo; returns the repo URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(folder_path=str(output), repo_id=repo_id, repo_type="dataset",
                      commit_message="Upload EmoStyle-Synth")
    return f"https://huggingface.co/datasets/{repo_id}"
