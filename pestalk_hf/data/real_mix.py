"""The real-speech training mix of the default model: real talking faces + real acted emotion.

Sources (all read by path, nothing copied into the project):

* **GRID s1** (the paper's recipe): the 3D-EmoStyle dataset that ``hub_scripts/build_3d_emostyle.py``
  builds from ``video/grid_s1`` — real speech with MediaPipe labels of the real face. Every ``train``
  clip is kept as is plus ``grid_copies`` augmented copies (:mod:`.augment`: speed, rooms, noise,
  telephone, MP3, gain); the ``test`` split (held-out sentences) is passed through for evaluation.
* **EmoDB** (German, acted, CC0): the emotion labels teach the classifier on real voices. Its faces
  are unknown, so labels are built: the lower face from our viseme model
  (:func:`~pestalk_hf.data.synth.viseme_curves`) driven by EmoDB's own phone times (``*.lablaut``,
  SAMPA), the upper face and mouth corners from the emotion prototypes of EmoStyle-Synth at
  ``emotion_scale``, everything on top of the **rest pose measured on GRID's real labels** (silent
  frames), plus blinks. With ``grid_align_dir`` the visemes are also **calibrated on GRID's real faces**
  (:func:`fit_viseme_calibration`: a gain and a talking-posture offset per lower-face channel, fitted on
  the GRID train clips' MediaPipe labels against the viseme model on their forced-aligned transcripts),
  for every built source below. Boredom has no class among our eight emotions and is left out (counted
  in the summary). Speakers ``emodb_holdout`` are written to the ``test`` split only.
* **LJSpeech** (optional, ``ljspeech_folder``; public domain): real human English read speech, one speaker.
  Its faces are unknown too, so its labels are built like EmoDB's (neutral), on the phones that
  :func:`~pestalk_hf.data.aligner.align_ljspeech` forced-aligns from the transcripts (a resumable JSON
  cache). Real English coarticulation at reading speed, which GRID's slow command sentences and the TTS
  voices lack. Chapters ``ljspeech_holdout`` (:data:`LJSPEECH_TEST_CHAPTERS`, the chapters the real-speech
  evaluation reads) go to the ``test`` split only.
* **EmoStyle-Synth** (optional, ``synth_datasets``): the synthetic benchmark's ``train`` split as it is
  (eSpeak voices, eight emotions, known styles), a random ``synth_fraction`` of its clips.
* **Neutral English TTS** (optional, ``tts_datasets``): EmoStyle-Synth folders made with Kokoro-82M voices
  (``--kokoro-fraction 1``, neutral only). Natural-sounding English read speech by many voices — what the
  classifier must call neutral, and more vocal tracts for the lips. Their labels are rebuilt like EmoDB's
  (viseme model on the clip's aligned phones, on GRID's rest pose), so all built labels share one model.

Output: ``data/{train,test}-*.parquet`` in the 3D-EmoStyle schema, ``README.md``, ``mix.json`` (what went
in, counts, the measured rest pose and viseme calibration). Clip ids are unique across the mix (they key the
trainer's voiceprint cache); ids of folder sources carry the folder name.
"""

from __future__ import annotations

import csv
import glob
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..blendshapes import lip_aperture
from .aligner import LJSPEECH_TEST_CHAPTERS, ljspeech_chapter
from .augment import AugmentConfig, augment_clip
from .schema import ARKIT_BLENDSHAPE_NAMES, EMOTIONS, FPS, SAMPLING_RATE, decode_audio_bytes, make_row, num_frames_for, \
    write_parquet_shard
from .synth import EMOTION_PROTOTYPES, Phone, _blinks, close_lips_on_bilabials, loudness_envelope, phone_visemes, \
    viseme_curves

EMODB_EMOTIONS = {"anger": "angry", "disgust": "disgusted", "fear": "fear", "happiness": "happy",
                  "sadness": "sad", "neutral": "neutral", "boredom": None}
_IDX = {n: i for i, n in enumerate(ARKIT_BLENDSHAPE_NAMES)}
_LOWER = [i for i, n in enumerate(ARKIT_BLENDSHAPE_NAMES) if n.startswith(("jaw", "mouth", "cheek", "noseSneer"))]

# German SAMPA (EmoDB's lablaut) → the IPA symbols our viseme table knows.
_SAMPA_IPA = {
    "a": "a", "a:": "a", "e": "e", "e:": "e", "E": "ɛ", "E:": "ɛ", "I": "ɪ", "i": "i", "i:": "i",
    "O": "ɔ", "o": "o", "o:": "o", "U": "ʊ", "u": "u", "u:": "u", "Y": "ʏ", "y": "y", "y:": "y",
    "2": "ø", "2:": "ø", "9": "œ", "@": "ə", "6": "ɐ", "aI": "aɪ", "aU": "aʊ", "OY": "ɔʏ",
    "p": "p", "b": "b", "t": "t", "d": "d", "k": "k", "g": "g", "f": "f", "v": "v", "s": "s", "z": "z",
    "S": "ʃ", "Z": "ʒ", "C": "ʃ", "x": "x", "X": "x", "h": "h", "m": "m", "n": "n", "N": "ŋ", "l": "l",
    "R": "ʁ", "r": "r", "j": "j", "?": "ʔ", "Q": "ʔ", "ts": "ts", "pf": "pf", "tS": "tʃ", "dZ": "dʒ",
    "B": "v", "D": "d", "V": "v", "4": "ɾ", "G": "g",
}


def sampa_to_ipa(label: str) -> str | None:
    """One lablaut label → IPA, or None for non-phones (markers, pauses). Closure (``_t``) and release
    (``!t``) parts and aspiration (``tasp``) map to their consonant; r-coloured vowels (``E6``) keep the ɐ."""
    core = label.lstrip("_!")
    if core.endswith("asp"):
        core = core[:-3]
    if not core or not re.match(r"^[A-Za-z0-9@?:]+$", core):
        return None
    if core in _SAMPA_IPA:
        return _SAMPA_IPA[core]
    if core.endswith("6") and core[:-1] in _SAMPA_IPA:
        return _SAMPA_IPA[core[:-1]] + "ɐ"
    return None


def lablaut_events(text: str) -> list[tuple[float, str]]:
    """The labelled events of an EmoDB ``*.lablaut`` file (ESPS xlabel: ``time -1 label<TAB>marks`` after
    the ``#`` line; time = the segment's start; ``.`` = end of speech): ``[(start_s, SAMPA label), ...]``.
    Lines with marks only (``+lar``, ``-sth``, ``(gef``, ``hoe``) are not events; ``tasp+sth`` → ``tasp``."""
    lines = text.splitlines()
    header_end = next((i for i, line in enumerate(lines) if line.strip() == "#"), -1)
    events: list[tuple[float, str]] = []
    for line in lines[header_end + 1:]:
        fields = line.split("\t")[0].split()
        if len(fields) < 3:
            continue
        try:
            t = float(fields[0])
        except ValueError:
            continue
        label = fields[2]
        if label[0] in "+-([" or label == "hoe":
            continue  # a mark, not a phone
        events.append((t, re.split(r"(?<=.)\+", label)[0]))
    return events


def parse_lablaut(text: str, end_time: float | None = None) -> list[Phone]:
    """EmoDB ``*.lablaut`` → merged IPA phones for the viseme model. Closure/release/aspiration parts of
    one consonant (``_t !t tasp``) become one phone; non-phones are dropped; a segment lasts until the
    next event; phones after ``end_time`` (the copy's cut) are cut."""
    marks = lablaut_events(text)
    phones: list[Phone] = []
    for (t, label), nxt in zip(marks, marks[1:] + [(None, None)]):
        if label == ".":
            break
        ipa = sampa_to_ipa(label)
        end = nxt[0] if nxt[0] is not None else t + 0.08
        if end_time is not None:
            if t >= end_time:
                break
            end = min(end, end_time)
        if ipa is None:
            continue
        if phones and phones[-1].name == ipa and (label[0] in "!_" or label.endswith("asp")):
            phones[-1] = Phone(ipa, phones[-1].start, end, "")
        else:
            phones.append(Phone(ipa, t, end, ""))
    return [p for p in phones if _known(p.name)]


def _known(ipa: str) -> bool:
    try:
        phone_visemes(ipa)
        return True
    except KeyError:
        return False


def rest_pose_from_labels(tracks: Iterable[tuple[np.ndarray, np.ndarray]], quiet: float = 0.05) -> np.ndarray:
    """Per-channel median (52,) pose over the frames whose loudness (:func:`loudness_envelope`) is below
    ``quiet``: a real face at rest, with its own mouth and brows. ``tracks``: ``(waveform16k, labels (T, 52))``.

    The median, not the mean: quiet frames include the mouth opening before speech and the releases after
    it; on GRID s1 they pull the mean jawOpen to 0.050 while the median quiet frame has 0.020 (the face
    in silence). Blinks are excluded the same way."""
    frames = []
    for wav, labels in tracks:
        env = loudness_envelope(wav, len(labels))
        frames.append(np.asarray(labels, np.float32)[env < quiet])
    quiet_frames = np.concatenate(frames) if frames else np.zeros((0, len(ARKIT_BLENDSHAPE_NAMES)), np.float32)
    if len(quiet_frames) == 0:
        raise ValueError("no quiet frames to measure a rest pose from")
    return np.median(quiet_frames, axis=0).astype(np.float32)


def speech_activity(phones: Sequence[Phone], num_frames: int, sigma_frames: float = 2.0, fps: int = FPS) -> np.ndarray:
    """(T,) in [0, 1]: 1 on the frames whose centre lies in a phone (not a pause ``''``), smoothed by a
    Gaussian of ``sigma_frames`` (the mouth takes ~100 ms to settle into and out of its talking posture)."""
    from scipy.ndimage import gaussian_filter1d

    centres = (np.arange(num_frames) + 0.5) / fps
    active = np.zeros(num_frames, np.float64)
    for ph in phones:
        if ph.name:
            active[(centres >= ph.start) & (centres < ph.end)] = 1.0
    return gaussian_filter1d(active, sigma_frames, mode="nearest") if sigma_frames > 0 and num_frames else active


@dataclass(frozen=True)
class VisemeCalibration:
    """The built labels' lower face measured against real faces (:func:`fit_viseme_calibration`).

    ``gains`` (52,) scale the viseme curves; ``speech_offset`` (52,) is added, times
    :func:`speech_activity`, while the speaker talks: the posture of a talking mouth whatever the phone
    (GRID's faces hold jawOpen ≈ 0.09 and mouthRollUpper ≈ 0.05 above their rest through an utterance).
    """

    gains: np.ndarray
    speech_offset: np.ndarray
    closure_jaw: float = 0.08  # jawOpen above rest at a bilabial closure (:func:`close_lips_on_bilabials`)

    def lower_face(self, phones: Sequence[Phone], num_frames: int) -> np.ndarray:
        """(T, 52) calibrated lower face above the rest pose (the fit leaves other channels at gain 1,
        offset 0, so they stay :func:`viseme_curves`' zeros)."""
        out = viseme_curves(list(phones), num_frames) * self.gains[None]
        out += speech_activity(phones, num_frames)[:, None].astype(np.float32) * self.speech_offset[None]
        return out.astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {key: {ARKIT_BLENDSHAPE_NAMES[i]: round(float(v[i]), 4) for i in _LOWER}
                               for key, v in (("gains", self.gains), ("speech_offset", self.speech_offset))}
        return {**out, "closure_jaw": round(float(self.closure_jaw), 4)}


def fit_viseme_calibration(tracks: Iterable[tuple[np.ndarray, Sequence[Phone]]], rest: np.ndarray,
                           max_gain: float = 1.5) -> VisemeCalibration:
    """Fit the viseme model's lower face to a real face's, channel by channel.

    ``tracks``: ``(labels (T, 52), phones)`` of real labelled clips (GRID's MediaPipe labels and the forced
    alignment of their transcripts). For each lower-face channel, least squares of ``labels − rest`` on
    the :func:`viseme_curves` channel (its gain, clipped to ``[0, max_gain]``, the offset refitted when
    clipped) and on :func:`speech_activity` (its speech offset); the Left/Right channels of a pair share
    one fit (a face's asymmetry is the speaker's, not the phone's); channels the viseme model never drives
    keep gain 1 and get an offset only. ``closure_jaw``: the median jawOpen above rest at the most closed
    frame of each bilabial (±1 frame), how far real faces lower the jaw to close the lips. Where the viseme
    model only loosely predicts a channel the fitted gain is small — that is what minimises the error against
    the real face, and why uncalibrated labels (mouthStretch 0.3–0.45 on /i s e/ where GRID's faces show ≈
    0.01) made the model worse than a still face on unseen speakers.
    """
    C = len(ARKIT_BLENDSHAPE_NAMES)
    ata = np.zeros((C, 2, 2), np.float64)  # normal equations of [viseme, activity] per channel
    aty = np.zeros((C, 2), np.float64)
    closure_jaws: list[float] = []
    for labels, phones in tracks:
        labels = np.asarray(labels, np.float32)
        gap = lip_aperture(labels)
        centres = (np.arange(len(labels)) + 0.5) / FPS
        for ph in phones:
            frames = np.flatnonzero((centres >= ph.start) & (centres < ph.end))
            if ph.name and frames.size and "PP" in phone_visemes(ph.name):
                lo, hi = max(frames[0] - 1, 0), min(frames[-1] + 2, len(labels))
                closure_jaws.append(float(labels[lo + np.argmin(gap[lo:hi]), _IDX["jawOpen"]] - rest[_IDX["jawOpen"]]))
        x = viseme_curves(list(phones), len(labels)).astype(np.float64)[:, _LOWER]
        s = speech_activity(phones, len(labels))[:, None]
        y = (labels - rest[None]).astype(np.float64)[:, _LOWER]
        ata[_LOWER, 0, 0] += (x * x).sum(0)
        ata[_LOWER, 0, 1] += (x * s).sum(0)
        ata[_LOWER, 1, 1] += (s * s).sum()
        aty[_LOWER, 0] += (x * y).sum(0)
        aty[_LOWER, 1] += (s * y).sum(0)
    ata[:, 1, 0] = ata[:, 0, 1]
    for i, name in enumerate(ARKIT_BLENDSHAPE_NAMES):  # pool each Left channel with its Right
        if name.endswith("Left") and name[:-4] + "Right" in _IDX:
            j = _IDX[name[:-4] + "Right"]
            ata[i] = ata[j] = ata[i] + ata[j]
            aty[i] = aty[j] = aty[i] + aty[j]
    gains = np.ones(C, np.float32)
    offset = np.zeros(C, np.float32)
    for c in _LOWER:
        xx, xs, ss = ata[c, 0, 0], ata[c, 0, 1], ata[c, 1, 1]
        xy, sy = aty[c]
        if ss <= 1e-9:  # no speech in the tracks at all
            continue
        if xx <= 1e-6:  # the viseme model never drives it: the talking posture only
            offset[c] = sy / ss
            continue
        det = xx * ss - xs * xs
        g = (xy * ss - sy * xs) / det if det > 1e-12 else xy / xx
        g = float(np.clip(g, 0.0, max_gain))
        gains[c], offset[c] = g, (sy - g * xs) / ss
    closure_jaw = float(np.clip(np.median(closure_jaws), 0.0, 1.0)) if closure_jaws else VisemeCalibration.closure_jaw
    return VisemeCalibration(gains, offset, closure_jaw)


def built_labels(phones: list[Phone], waveform: np.ndarray, emotion: str, rest: np.ndarray,
                 rng: np.random.Generator, emotion_scale: float = 0.6,
                 calibration: VisemeCalibration | None = None) -> np.ndarray:
    """Built (T, 52) labels for a clip without a face: visemes on its phone times, calibrated to real faces
    by ``calibration`` (None = the viseme model's own amplitudes), lips closed on bilabials, the emotion
    prototype at ``emotion_scale``, blinks, on the measured ``rest`` pose."""
    T = num_frames_for(len(waveform))
    lower = calibration.lower_face(phones, T) if calibration is not None else viseme_curves(phones, T)
    labels = np.repeat(rest[None], T, axis=0)
    labels[:, _LOWER] += lower[:, _LOWER]
    closure = {} if calibration is None else {"max_jaw": calibration.closure_jaw}
    labels = close_lips_on_bilabials(labels, phones, **closure)
    proto = np.zeros(len(ARKIT_BLENDSHAPE_NAMES), np.float32)
    for name, value in EMOTION_PROTOTYPES[emotion].items():
        proto[_IDX[name]] = value
    labels += emotion_scale * proto[None]
    blink = _blinks(T, 17.0, rng)
    for name in ("eyeBlinkLeft", "eyeBlinkRight"):
        labels[:, _IDX[name]] = np.maximum(labels[:, _IDX[name]], blink)
    labels[:, _IDX["tongueOut"]] = 0.0
    return np.clip(labels, 0.0, 1.0).astype(np.float32)


@dataclass
class RealMixConfig:
    grid_dataset: str
    emodb_folder: str | None = None
    emodb_holdout: tuple[str, ...] = ("03", "16")
    grid_copies: int = 1
    emodb_copies: int = 3
    emotion_scale: float = 0.6
    rows_per_shard: int = 400
    seed: int = 0
    augment: dict[str, Any] = field(default_factory=dict)
    tts_datasets: tuple[str, ...] = ()
    tts_copies: int = 1
    synth_datasets: tuple[str, ...] = ()
    synth_fraction: float = 1.0
    synth_copies: int = 0
    ljspeech_folder: str | None = None
    ljspeech_alignment: str | None = None  # align_ljspeech's JSON cache; default: <output>/ljspeech_alignment.json
    ljspeech_holdout: tuple[str, ...] = LJSPEECH_TEST_CHAPTERS
    ljspeech_copies: int = 3
    # GRID's word alignments (``<id>.align``, e.g. ``video/grid_s1/align``): when given, the transcripts of the
    # GRID train clips are forced-aligned (cached in ``grid_alignment``, default <output>/grid_alignment.json)
    # and every built label's visemes are calibrated on GRID's real faces (:func:`fit_viseme_calibration`)
    grid_align_dir: str | None = None
    grid_alignment: str | None = None


def _parquet_rows(folder: str, split: str) -> Iterator[dict[str, Any]]:
    """Raw rows of one split of a local schema folder (``data/{split}-*.parquet``)."""
    import pyarrow.parquet as pq

    files = sorted(glob.glob(str(Path(folder) / "data" / f"{split}-*.parquet")))
    for f in files:
        for row in pq.read_table(f).to_pylist():
            yield row


def _emodb_clips(folder: Path) -> Iterator[dict[str, Any]]:
    with open(folder / "labels.csv", newline="", encoding="utf-8") as fh:
        for rec in csv.DictReader(fh):
            yield rec


def build_real_mix(config: RealMixConfig, output: str | Path, progress: bool = True) -> dict[str, Any]:
    """Write the mix (see the module docstring); returns the summary also saved as ``mix.json``."""
    import soundfile as sf
    import soxr
    from tqdm.auto import tqdm

    out = Path(output)
    (out / "data").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    aug = AugmentConfig(**config.augment)
    counts: dict[str, int] = {}
    buffers: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    shards: dict[str, int] = {"train": 0, "test": 0}

    seen: set[str] = set()

    def emit(split: str, row: dict[str, Any]) -> None:
        # ids key the trainer's voiceprint cache: a repeated id would give one clip another's voice
        if row["id"] in seen:
            raise ValueError(f"clip id {row['id']!r} would be written twice (two source folders with the same name?)")
        seen.add(row["id"])
        buffers[split].append(row)
        counts[f"{split}/{row['source']}"] = counts.get(f"{split}/{row['source']}", 0) + 1
        if len(buffers[split]) >= config.rows_per_shard:
            flush(split)

    def flush(split: str) -> None:
        if buffers[split]:
            write_parquet_shard(buffers[split], out / "data" / f"{split}-{shards[split]:05d}.parquet")
            shards[split] += 1
            buffers[split] = []

    def emit_with_copies(split: str, copies: int, clip_id: str, wav: np.ndarray, labels: np.ndarray,
                         source: str, **row: Any) -> None:
        """The clip itself, then ``copies`` augmented copies (``<id>_aug<k>``, source ``<source>_aug:<steps>``)."""
        emit(split, make_row(id=clip_id, waveform=wav, blendshapes=labels, source=source, **row))
        for k in range(copies):
            w, lab, steps = augment_clip(wav, labels, rng, aug, rest)
            emit(split, make_row(id=f"{clip_id}_aug{k}", waveform=w, blendshapes=lab,
                                 source=f"{source}_aug:" + ",".join(steps), **row))

    grid_train = list(_parquet_rows(config.grid_dataset, "train"))
    if not grid_train:
        raise ValueError(f"{config.grid_dataset}: no train shards (build it with hub_scripts/build_3d_emostyle.py)")
    decoded = [(decode_audio_bytes(r["audio"]["bytes"])[0], np.asarray(r["blendshapes"], np.float32)) for r in grid_train]
    rest = rest_pose_from_labels(decoded)
    calibration, grid_alignment = (_grid_calibration(config, out, grid_train, decoded, rest, progress)
                                   if config.grid_align_dir else (None, None))
    for row, (wav, labels) in tqdm(list(zip(grid_train, decoded)), desc="GRID s1", disable=not progress):
        emit_with_copies("train", config.grid_copies, row["id"], wav, labels, "grid_s1", speaker=row["speaker"],
                         emotion="neutral", sentence=row["sentence"])
    for row in _parquet_rows(config.grid_dataset, "test"):
        wav, _ = decode_audio_bytes(row["audio"]["bytes"])
        emit("test", make_row(id=row["id"], waveform=wav, blendshapes=np.asarray(row["blendshapes"], np.float32),
                              speaker=row["speaker"], emotion="neutral", sentence=row["sentence"], source="grid_s1"))

    skipped_boredom = 0
    if config.emodb_folder:
        folder = Path(config.emodb_folder)
        for rec in tqdm(list(_emodb_clips(folder)), desc="EmoDB", disable=not progress):
            emotion = EMODB_EMOTIONS[rec["emotion"]]
            if emotion is None:
                skipped_boredom += 1
                continue
            wav, sr = sf.read(folder / rec["file"], dtype="float32", always_2d=True)
            wav = soxr.resample(wav.mean(1), sr, SAMPLING_RATE).astype(np.float32)
            end = min(float(rec["original_speech_end_s"]), len(wav) / SAMPLING_RATE)
            phones = parse_lablaut((folder / rec["phone_label_file"]).read_text(encoding="latin-1"), end)
            labels = built_labels(phones, wav, emotion, rest, rng, config.emotion_scale, calibration)
            speaker = "emodb" + rec["speaker_id"]
            split = "test" if rec["speaker_id"] in config.emodb_holdout else "train"
            stem = Path(rec["file"]).stem
            emit_with_copies(split, config.emodb_copies if split == "train" else 0, "emodb_" + stem, wav, labels,
                             "emodb", speaker=speaker, emotion=emotion, sentence=rec["text"])
    for folder in config.tts_datasets:
        aligned = {}
        for line in (Path(folder) / "alignments.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                aligned[rec["id"]] = [Phone(n, float(a), float(b), "") for n, a, b in rec["phones"]]
        rows = [r for split in ("train", "validation", "test", "test_speakers") for r in _parquet_rows(folder, split)]
        for row in tqdm(rows, desc=f"TTS {Path(folder).name}", disable=not progress):
            if row["id"] not in aligned:
                continue
            # every synth folder names its voices synth000…: keep voices of different folders apart
            row["speaker"] = f"{Path(folder).name}/{row['speaker']}"
            wav, _ = decode_audio_bytes(row["audio"]["bytes"])
            labels = built_labels(aligned[row["id"]], wav, "neutral", rest, rng, config.emotion_scale, calibration)
            emit_with_copies("train", config.tts_copies, f"tts_{Path(folder).name}_{row['id']}", wav, labels, "tts",
                             speaker=row["speaker"], emotion="neutral", sentence=row["sentence"])
    ljspeech_summary = (_add_ljspeech(config, out, rest, calibration, rng, emit_with_copies, progress)
                        if config.ljspeech_folder else None)
    for folder in config.synth_datasets:
        # EmoStyle-Synth as it is (its own labels, emotions and known styles): keeps the model's behaviour
        # on the synthetic benchmark, and adds prosody-varied emotional TTS for the classifier
        rows = list(_parquet_rows(folder, "train"))
        keep = rng.random(len(rows)) < config.synth_fraction
        for row, kept in tqdm(list(zip(rows, keep)), desc=f"EmoStyle-Synth {Path(folder).name}", disable=not progress):
            if not kept:
                continue
            wav, _ = decode_audio_bytes(row["audio"]["bytes"])
            emit_with_copies("train", config.synth_copies, f"synth_{Path(folder).name}_{row['id']}", wav,
                             np.asarray(row["blendshapes"], np.float32), "emostyle_synth",
                             speaker=f"{Path(folder).name}/{row['speaker']}", emotion=EMOTIONS[int(row["emotion"])],
                             sentence=row["sentence"], intensity=int(row.get("intensity") or 1))
    for split in buffers:
        flush(split)
    summary = {"config": asdict(config), "counts": {k.split(":")[0]: 0 for k in counts}, "shards": shards,
               "skipped_boredom": skipped_boredom, "ljspeech_alignment": ljspeech_summary,
               "rest_pose": {n: round(float(v), 4) for n, v in zip(ARKIT_BLENDSHAPE_NAMES, rest)},
               "grid_alignment": grid_alignment,
               "viseme_calibration": None if calibration is None else calibration.to_json(),
               "emotions": list(EMOTIONS), "fps": FPS}
    for k, v in counts.items():
        summary["counts"][k.split(":")[0]] += v
    (out / "mix.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    (out / "README.md").write_text(_card(summary), encoding="utf-8")
    return summary


def _ipa_phones(entry: dict[str, Any]) -> list[Phone]:
    """One clip of an alignment cache as the viseme model's IPA phones."""
    from .aligner import cached_phones, to_ipa

    return [Phone(p.name, p.start, p.end, p.word) for p in to_ipa(cached_phones(entry))]


def _grid_calibration(config: RealMixConfig, out: Path, grid_train: list[dict[str, Any]],
                      decoded: list[tuple[np.ndarray, np.ndarray]], rest: np.ndarray,
                      progress: bool) -> tuple[VisemeCalibration, dict[str, Any]]:
    """Force-align the GRID train clips' transcripts (cached, resumable) and fit the viseme calibration on
    their MediaPipe labels; returns it and the alignment summary."""
    from .aligner import align_cached, grid_transcript

    folder = Path(config.grid_align_dir)
    items = []
    for row, (wav, _) in zip(grid_train, decoded):
        f = folder / f"{row['id']}.align"
        if f.is_file():
            items.append((row["id"], grid_transcript(f.read_text(encoding="utf-8")), lambda wav=wav: wav))
    if not items:
        raise FileNotFoundError(
            f"{folder}: no <id>.align word alignment for any of the {len(grid_train)} GRID train clips")
    cache = Path(config.grid_alignment) if config.grid_alignment else out / "grid_alignment.json"
    summary = align_cached(items, cache, progress=progress, desc="aligning GRID s1")
    clips = json.loads(cache.read_text(encoding="utf-8"))["clips"]
    tracks = [(labels, _ipa_phones(clips[row["id"]]))
              for row, (_, labels) in zip(grid_train, decoded) if row["id"] in clips]
    if not tracks:
        raise ValueError(f"no GRID train clip could be aligned (see 'failed' in {cache})")
    summary["clips_fitted"] = len(tracks)
    return fit_viseme_calibration(tracks, rest), summary


def _add_ljspeech(config: RealMixConfig, out: Path, rest: np.ndarray, calibration: VisemeCalibration | None,
                  rng: np.random.Generator, emit_with_copies: Any, progress: bool) -> dict[str, Any]:
    """Align LJSpeech (cached, resumable), build its labels and emit its clips; returns the alignment summary."""
    from tqdm.auto import tqdm

    from .aligner import align_ljspeech, read_audio_16k

    folder = Path(config.ljspeech_folder)
    if not (folder / "metadata.csv").is_file():
        raise FileNotFoundError(f"{folder}/metadata.csv not found (the LJSpeech folder: metadata.csv and *.flac)")
    cache = Path(config.ljspeech_alignment) if config.ljspeech_alignment else out / "ljspeech_alignment.json"
    summary = align_ljspeech(folder, cache, progress=progress)
    clips = json.loads(cache.read_text(encoding="utf-8"))["clips"]
    for name in tqdm(sorted(clips), desc="LJSpeech", disable=not progress):
        wav = read_audio_16k(folder / name)
        labels = built_labels(_ipa_phones(clips[name]), wav, "neutral", rest, rng, config.emotion_scale, calibration)
        split = "test" if ljspeech_chapter(name) in config.ljspeech_holdout else "train"
        emit_with_copies(split, config.ljspeech_copies if split == "train" else 0, "ljspeech_" + Path(name).stem, wav,
                         labels, "ljspeech", speaker="ljspeech", emotion="neutral", sentence=clips[name]["text"])
    return summary


def _card(summary: dict[str, Any]) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(summary["counts"].items()))
    calibrated = (", visemes calibrated on GRID's faces (viseme_calibration in mix.json)"
                  if summary.get("viseme_calibration") else "")
    return f"""---
license: cc-by-4.0
pretty_name: PESTalk-HF real-speech training mix
---

# Real-speech training mix (GRID s1 + EmoDB)

Built by `hub_scripts/make_real_mix.py` (`pestalk_hf.data.real_mix`). GRID corpus (Cooke et al. 2006,
CC BY 4.0): real speech with MediaPipe labels of the real face. EmoDB (Burkhardt et al. 2005, CC0): real
acted emotional speech with built face labels (viseme model on EmoDB's phone times, emotion prototypes,
GRID's measured rest pose{calibrated}).
Boredom clips left out: {summary['skipped_boredom']}.

| split/source | clips |
|---|---|
{rows}
"""
