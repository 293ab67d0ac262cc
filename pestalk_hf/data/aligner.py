"""Forced phone alignment of English speech with its transcript (PocketSphinx 5.1.1).

Why PocketSphinx: its PyPI wheel (BSD-2, install extra ``synth``) ships the en-us acoustic model and
``cmudict-en-us.dict``, runs offline on a CPU (~0.3 s for 8 s of speech) and its alignment mode
gives phone *and* word boundaries on a 10 ms grid. Free phone recognition without the text is far
worse (~46 % phone error on clean speech), so the transcript is required.

What it returns: :class:`AlignedPhone` rows ``(name, start, end, word)`` with ARPAbet names
(CMUdict set, no stress digits: ``AA`` … ``ZH``) and ``SIL`` for pauses; ``word`` indexes
:attr:`Alignment.words` (``-1`` for ``SIL``). The phones tile the clip from 0 to its duration.
:func:`to_ipa` converts names to IPA for consumers that speak IPA (``synth.phone_visemes``).

Decisions:

* Text normalisation: lower case, curly quotes → ``'``, hyphens/dashes split words, every other
  punctuation dropped, apostrophes kept inside words (``don't``), dotted abbreviations spelt
  (``e.g.`` → ``e g``, as LJSpeech's reader says it). Numbers and abbreviations are not
  expanded here: they go to the OOV path (eSpeak speaks "1990" as "nineteen ninety").
* Out-of-vocabulary words: pronounced by eSpeak NG (the project's binding), its IPA phonemes mapped
  to ARPAbet (:data:`IPA_TO_ARPABET`) and added to the decoder's dictionary for this process.
  A symbol without a mapping raises :class:`AlignmentError` naming the word and the symbol.
* Pauses: PocketSphinx's alignment network has optional silence between words (checked: the
  comma pauses of LJSpeech come out as ``<sil>``). Inner ``SIL`` shorter than ``min_pause`` is
  merged into the previous phone; leading/trailing ``SIL`` is stretched to cover the clip.
* Two decoding passes, as PocketSphinx requires for sub-word alignment: word alignment, then
  phone/state alignment along the chosen words and pronunciations.
* Alternative pronunciations (``and(2)``) are chosen by the decoder.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

SAMPLING_RATE = 16000
FRAME_S = 0.01  # PocketSphinx's frame rate is 100 frames/s
SIL = "SIL"

ARPABET = frozenset(
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z ZH".split()
)

# eSpeak NG IPA phoneme (stress, length and most diacritics removed) → ARPAbet. Longest match first.
IPA_TO_ARPABET: dict[str, str] = {
    "aɪɚ": "AY ER", "aɪə": "AY AH", "aʊɚ": "AW ER", "aʊə": "AW AH",
    "ɑɹ": "AA R", "ɔɹ": "AO R", "oɹ": "AO R", "ɛɹ": "EH R", "ɪɹ": "IH R", "iɹ": "IY R", "ʊɹ": "UH R",
    "uɹ": "UW R", "ɜɹ": "ER", "əɹ": "ER", "eə": "EH R", "ɪə": "IH R", "ʊə": "UH R", "iə": "IY AH",
    "aɪ": "AY", "aʊ": "AW", "eɪ": "EY", "oʊ": "OW", "əʊ": "OW", "ɔɪ": "OY", "tʃ": "CH", "dʒ": "JH",
    "əl": "AH L", "ts": "T S", "dz": "D Z",
    "i": "IY", "ɪ": "IH", "ᵻ": "IH", "e": "EY", "ɛ": "EH", "æ": "AE", "a": "AE", "ɑ": "AA", "ɒ": "AA",
    "ɔ": "AO", "o": "OW", "ʊ": "UH", "u": "UW", "ʌ": "AH", "ə": "AH", "ɐ": "AH", "ɚ": "ER", "ɝ": "ER",
    "ɜ": "ER", "y": "UW", "ø": "UW", "œ": "EH",
    "p": "P", "b": "B", "t": "T", "d": "D", "k": "K", "g": "G", "ɡ": "G", "f": "F", "v": "V",
    "θ": "TH", "ð": "DH", "s": "S", "z": "Z", "ʃ": "SH", "ʒ": "ZH", "h": "HH", "ɦ": "HH", "m": "M",
    "n": "N", "ŋ": "NG", "l": "L", "ɫ": "L", "ɬ": "L", "ɹ": "R", "r": "R", "ɾ": "T", "ʔ": "T",
    "w": "W", "ʍ": "W", "j": "Y", "x": "K", "ç": "HH", "ɲ": "N Y",
}
_IPA_KEYS = sorted(IPA_TO_ARPABET, key=len, reverse=True)
_SYLLABIC = "\u0329"

# ARPAbet → IPA (General American), for IPA consumers such as synth.phone_visemes.
ARPABET_TO_IPA: dict[str, str] = {
    "AA": "ɑ", "AE": "æ", "AH": "ʌ", "AO": "ɔ", "AW": "aʊ", "AY": "aɪ", "B": "b", "CH": "tʃ", "D": "d",
    "DH": "ð", "EH": "ɛ", "ER": "ɚ", "EY": "eɪ", "F": "f", "G": "ɡ", "HH": "h", "IH": "ɪ", "IY": "i",
    "JH": "dʒ", "K": "k", "L": "l", "M": "m", "N": "n", "NG": "ŋ", "OW": "oʊ", "OY": "ɔɪ", "P": "p",
    "R": "ɹ", "S": "s", "SH": "ʃ", "T": "t", "TH": "θ", "UH": "ʊ", "UW": "u", "V": "v", "W": "w",
    "Y": "j", "Z": "z", "ZH": "ʒ", SIL: "",
}


class AlignmentError(RuntimeError):
    """The transcript could not be aligned to the audio (or a word could not be pronounced)."""


@dataclass(frozen=True)
class AlignedPhone:
    """One aligned phone: ARPAbet ``name`` (or ``SIL``), ``start``/``end`` in seconds, ``word`` index."""

    name: str
    start: float
    end: float
    word: int = -1


@dataclass
class Alignment:
    """Phones and words of one clip. ``words[i] = (word, start_s, end_s)``; ``oov`` were pronounced by eSpeak."""

    phones: list[AlignedPhone]
    words: list[tuple[str, float, float]]
    oov: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"phones": [[p.name, round(p.start, 3), round(p.end, 3), p.word] for p in self.phones],
                "words": [[w, round(s, 3), round(e, 3)] for w, s, e in self.words], "oov": self.oov}


def to_ipa(phones: Iterable[AlignedPhone]) -> list[AlignedPhone]:
    """The same timeline with IPA names (``SIL`` → ``''``, eSpeak's pause name)."""
    return [AlignedPhone(ARPABET_TO_IPA[p.name], p.start, p.end, p.word) for p in phones]


def normalize_words(text: str) -> list[str]:
    """Lower-cased words of ``text`` (see the module docstring for the rules)."""
    text = unicodedata.normalize("NFKC", text).replace("’", "'").replace("‘", "'").lower()
    text = re.sub(r"[-‐‑‒–—―_/]", " ", text)
    words = []
    for token in text.split():
        token = token.strip("\"'()[]{},;:!?")
        if re.fullmatch(r"(?:[^\W\d_]\.){2,}", token):  # e.g. / u.s. are read letter by letter
            words += token.replace(".", " ").split()
            continue
        token = re.sub(r"[^\w']", "", token).strip("'")
        if token:
            words.append(token)
    return words


def ipa_to_arpabet(name: str) -> list[str]:
    """ARPAbet phones for one eSpeak IPA phoneme name; raises KeyError for an unmapped symbol."""
    text = unicodedata.normalize("NFD", name)
    out: list[str] = []
    # a syllabic consonant (n̩, l̩, m̩) is a schwa + the consonant in CMUdict (AH N)
    text = re.sub(r"(\S)" + _SYLLABIC, r"ə\1", text)
    text = "".join(ch for ch in text if ch not in "ˈˌːˑ:^‿" and unicodedata.category(ch) != "Mn")
    i = 0
    while i < len(text):
        for key in _IPA_KEYS:
            if text.startswith(key, i):
                out += IPA_TO_ARPABET[key].split()
                i += len(key)
                break
        else:
            raise KeyError(text[i])
    return out


# --------------------------------------------------------------------------------------------------
# eSpeak NG text → phonemes (shared with kokoro_tts)
# --------------------------------------------------------------------------------------------------
_CHARS_UTF8 = 1
_PHONEME_IPA = 0x02
_PHONEME_TIE = 0x80


def espeak_phonemes(text: str, voice: str = "en-us", separator: str | None = None, tie: str | None = None) -> list[str]:
    """eSpeak NG's phoneme transcription of ``text``, one string per clause (punctuation dropped).

    ``separator`` is put between phonemes and ``tie`` inside multi-letter phonemes (``a^ɪ``); both
    are single characters or None. Words are separated by spaces. Uses ``espeak_TextToPhonemes``
    on the process-wide engine of :mod:`pestalk_hf.data.espeak` under its lock (the engine reloads
    the library before each synthesis, so this leaves no state behind for synthesis).
    """
    from .espeak import get_engine

    mode = _PHONEME_IPA
    if tie:
        mode |= _PHONEME_TIE | (ord(tie) << 8)
    elif separator:
        mode |= ord(separator) << 8
    engine = get_engine()
    with engine._lock:  # noqa: SLF001 - see docstring; the binding has no public text→phonemes call
        lib = engine._lib  # noqa: SLF001
        fn = lib.espeak_TextToPhonemes
        fn.restype = ctypes.c_char_p
        fn.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {voice!r}")
        buf = ctypes.create_string_buffer(text.encode("utf-8"))
        ptr = ctypes.c_void_p(ctypes.addressof(buf))
        out = []
        while ptr.value:
            res = fn(ctypes.byref(ptr), _CHARS_UTF8, mode)
            if res:
                out.append(res.decode("utf-8", errors="replace"))
    return [c for c in out if c.strip()]


def espeak_arpabet(word: str, voice: str = "en-us") -> list[str]:
    """ARPAbet pronunciation of one word by eSpeak NG; raises AlignmentError for unmapped symbols."""
    phones: list[str] = []
    for clause in espeak_phonemes(word, voice, separator="_"):
        for chunk in clause.split():
            for name in chunk.split("_"):
                if not name:
                    continue
                try:
                    phones += ipa_to_arpabet(name)
                except KeyError as exc:
                    raise AlignmentError(
                        f"cannot pronounce {word!r}: eSpeak phoneme {name!r} has symbol {exc.args[0]!r} "
                        "with no ARPAbet mapping (extend aligner.IPA_TO_ARPABET)") from None
    if not phones:
        raise AlignmentError(f"cannot pronounce {word!r}: eSpeak NG returned no phonemes")
    return phones


# --------------------------------------------------------------------------------------------------
# The aligner
# --------------------------------------------------------------------------------------------------
def _pcm16(waveform: np.ndarray, sampling_rate: int) -> bytes:
    wav = np.asarray(waveform, dtype=np.float32)
    if wav.ndim == 2:  # (channels, n) or (n, channels) → mono
        wav = wav.mean(axis=0 if wav.shape[0] < wav.shape[1] else 1)
    if wav.ndim != 1 or wav.size == 0:
        raise AlignmentError(f"expected a non-empty mono waveform, got shape {np.shape(waveform)}")
    if not np.isfinite(wav).all():
        raise AlignmentError("waveform contains NaN or Inf")
    if sampling_rate != SAMPLING_RATE:
        import soxr

        wav = soxr.resample(wav, sampling_rate, SAMPLING_RATE, quality="HQ")
    return (np.clip(wav, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


class Aligner:
    """A PocketSphinx decoder set up for forced alignment (not thread-safe; one per process/thread).

    ``min_pause``: shorter detected inner pauses are merged into the previous phone (seconds).
    ``voice``: the eSpeak NG voice that pronounces out-of-vocabulary words.
    """

    def __init__(self, min_pause: float = 0.03, voice: str = "en-us") -> None:
        try:
            import pocketsphinx
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError("the forced aligner needs PocketSphinx: pip install 'pestalk-hf[synth]'") from exc
        self._ps = pocketsphinx
        self.min_pause = float(min_pause)
        self.voice = voice
        # bestpath=False: the lattice best path can give <s>/</s> zero-length words, which makes the
        # sub-word pass fail ("impossible duration"; 29 of 141 LJSpeech clips with the default)
        self.decoder = pocketsphinx.Decoder(samprate=SAMPLING_RATE, loglevel="FATAL", bestpath=False)
        self._added: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- dictionary -------------------------------------------------------------------------------
    def pronunciation(self, word: str) -> str | None:
        """CMUdict pronunciation (first variant) or None."""
        return self.decoder.lookup_word(word)

    def _ensure_words(self, words: Sequence[str]) -> dict[str, str]:
        oov = {}
        for w in words:
            if w in self._added:
                oov[w] = self._added[w]
                continue
            if self.decoder.lookup_word(w) is not None:
                continue
            phones = " ".join(espeak_arpabet(w, self.voice))
            self.decoder.add_word(w, phones, True)
            self._added[w] = phones
            oov[w] = phones
        return oov

    # -- decoding ---------------------------------------------------------------------------------
    def _run(self, pcm: bytes) -> None:
        d = self.decoder
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()

    def align(self, waveform: np.ndarray, sampling_rate: int, text: str) -> Alignment:
        """Align ``text`` to ``waveform``; raises AlignmentError when it cannot."""
        words = normalize_words(text)
        if not words:
            raise AlignmentError(f"no words to align in {text!r}")
        pcm = _pcm16(waveform, sampling_rate)
        duration = len(pcm) // 2 / SAMPLING_RATE
        with self._lock:
            oov = self._ensure_words(words)
            d = self.decoder
            try:
                d.set_align_text(" ".join(words))
                self._run(pcm)
                d.set_alignment()
                self._run(pcm)
                al = d.get_alignment()
            except RuntimeError as exc:
                raise AlignmentError(f"PocketSphinx could not align {text!r}: {exc}") from None
            if al is None:
                raise AlignmentError(f"PocketSphinx returned no alignment for {text!r}")
            raw: list[tuple[str, int, int, int]] = []
            word_rows: list[tuple[str, float, float]] = []
            for entry in al.words():
                name = re.sub(r"\(\d+\)$", "", entry.name)
                is_word = not (name.startswith("<") or name.startswith("["))
                if is_word:
                    word_rows.append((name, round(entry.start * FRAME_S, 4), round((entry.start + entry.duration) * FRAME_S, 4)))
                for ph in entry:
                    pname = ph.name if is_word else SIL
                    raw.append((SIL if pname not in ARPABET else pname, ph.start, ph.start + ph.duration,
                                len(word_rows) - 1 if is_word else -1))
        if [w for w, _, _ in word_rows] != words or not raw:
            raise AlignmentError(f"alignment lost words of {text!r}: got {[w for w, _, _ in word_rows]}")
        return Alignment(self._tidy(raw, duration), word_rows, oov)

    def _tidy(self, raw: list[tuple[str, int, int, int]], duration: float) -> list[AlignedPhone]:
        """Seconds, merged pauses, short inner pauses folded into the previous phone, full coverage."""
        phones: list[list[Any]] = []
        for name, s, e, w in raw:
            start, end = s * FRAME_S, e * FRAME_S
            if end <= start:
                continue
            if phones and name == SIL and phones[-1][0] == SIL:
                phones[-1][2] = end
                continue
            phones.append([name, start, end, w])
        # cover the clip: leading/trailing silence
        if phones and phones[0][1] > 0:
            if phones[0][0] == SIL:
                phones[0][1] = 0.0
            else:
                phones.insert(0, [SIL, 0.0, phones[0][1], -1])
        if phones and phones[-1][2] < duration:
            if phones[-1][0] == SIL:
                phones[-1][2] = duration
            else:
                phones.append([SIL, phones[-1][2], duration, -1])
        out: list[list[Any]] = []
        for i, p in enumerate(phones):
            inner = 0 < i < len(phones) - 1
            if inner and p[0] == SIL and p[2] - p[1] < self.min_pause and out:
                out[-1][2] = p[2]
                continue
            out.append(p)
        return [AlignedPhone(n, round(s, 4), round(e, 4), w) for n, s, e, w in out]


def recognize(waveform: np.ndarray, sampling_rate: int) -> list[str]:
    """Free word recognition (PocketSphinx en-us n-gram LM), without a transcript.

    Much weaker than alignment (it is a 2010s HMM recogniser); meant as an intelligibility check of
    synthetic speech (share of the intended words it hears), not as a transcriber.
    """
    import pocketsphinx

    global _RECOGNIZER
    if _RECOGNIZER is None:
        _RECOGNIZER = pocketsphinx.Decoder(samprate=SAMPLING_RATE, loglevel="FATAL")
    d = _RECOGNIZER
    d.start_utt()
    d.process_raw(_pcm16(waveform, sampling_rate), full_utt=True)
    d.end_utt()
    hyp = d.hyp()
    return [] if hyp is None else [w for w in hyp.hypstr.split() if not w.startswith("<")]


def word_recall(reference: str, hypothesis: Sequence[str]) -> float:
    """Share of the reference's words found, in order, in ``hypothesis`` (difflib matching)."""
    import difflib

    ref = normalize_words(reference)
    sm = difflib.SequenceMatcher(a=ref, b=[w.lower() for w in hypothesis], autojunk=False)
    return sum(b.size for b in sm.get_matching_blocks()) / max(len(ref), 1)


_RECOGNIZER: Any = None
_DEFAULT: Aligner | None = None


def get_aligner() -> Aligner:
    """The process-wide default :class:`Aligner` (the decoder takes ~0.3 s to load)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Aligner()
    return _DEFAULT


def align(waveform: np.ndarray, sampling_rate: int, text: str) -> list[AlignedPhone]:
    """Forced phone alignment of ``text`` in ``waveform``: ARPAbet phones (no stress) and ``SIL``."""
    return get_aligner().align(waveform, sampling_rate, text).phones


# --------------------------------------------------------------------------------------------------
# Evaluation helpers (HTS labels) and the LJSpeech cache
# --------------------------------------------------------------------------------------------------
def read_hts_labels(path: str | os.PathLike) -> list[AlignedPhone]:
    """HTS full-context labels (times in 100 ns) → phones named in upper-case ARPAbet (``ax`` → ``AH``,
    ``pau``/``sil`` → ``SIL``)."""
    out = []
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        start, end = int(parts[0]) * 1e-7, int(parts[1]) * 1e-7
        m = re.search(r"-([^+]+)\+", parts[2])
        name = (m.group(1) if m else parts[2]).lower()
        name = {"ax": "AH", "pau": SIL, "sil": SIL, "h#": SIL}.get(name, name.upper())
        out.append(AlignedPhone(name, start, end))
    return out


def boundary_errors(hyp: Sequence[AlignedPhone], ref: Sequence[AlignedPhone]) -> tuple[np.ndarray, float]:
    """(|start error| in seconds of every matched phone, share of reference phones matched by name).

    Phone sequences are matched with difflib (so an inserted or deleted phone does not shift the
    rest); the first phone's start (always 0) is not counted.
    """
    import difflib

    a, b = [p.name for p in hyp], [p.name for p in ref]
    sm = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    errs, matched = [], 0
    for block in sm.get_matching_blocks():
        for k in range(block.size):
            i, j = block.a + k, block.b + k
            matched += 1
            if j > 0:
                errs.append(abs(hyp[i].start - ref[j].start))
    return np.asarray(errs), matched / max(len(b), 1)


def read_audio_16k(path: Path) -> np.ndarray:
    import soundfile as sf

    wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    wav = wav.mean(axis=1)
    if sr != SAMPLING_RATE:
        import soxr

        wav = soxr.resample(wav, sr, SAMPLING_RATE, quality="HQ").astype(np.float32)
    return wav


#: LJSpeech chapters (``LJ001-0107`` → ``LJ001``) kept out of training: the real-speech evaluation
#: (:mod:`pestalk_hf.evaluation_real`) reads these, the real mix (:mod:`pestalk_hf.data.real_mix`) trains on
#: the others. Whole chapters, so held-out clips are other text, not neighbouring sentences of one passage.
LJSPEECH_TEST_CHAPTERS = ("LJ001", "LJ002")


def ljspeech_chapter(clip_id: str) -> str:
    """The chapter of an LJSpeech clip id or file name (``LJ003-0012.flac`` → ``LJ003``)."""
    return Path(clip_id).name.split("-", 1)[0]


def align_cached(items: Iterable[tuple[str, str, Callable[[], np.ndarray]]], out_json: str | os.PathLike,
                 aligner: Aligner | None = None, progress: bool = False, desc: str = "aligning") -> dict[str, Any]:
    """Align ``(name, transcript, load_16k_waveform)`` items into a JSON cache
    ``{"aligner", "clips": {name: Alignment.to_json() + text + seconds}, "failed": {name: why}}``.

    Resumable: names already in ``out_json`` are kept and not redone (their audio is not even loaded).
    Writes atomically. Returns a summary with counts and the wall time of this call.
    """
    from tqdm.auto import tqdm

    out_json = Path(out_json)
    cache: dict[str, Any] = {"aligner": "pocketsphinx 5.1.1 en-us (aligner.py)", "clips": {}, "failed": {}}
    if out_json.exists():
        cache = json.loads(out_json.read_text(encoding="utf-8"))
        cache.setdefault("failed", {})
    t0 = time.perf_counter()
    audio_s, done = 0.0, 0
    for name, text, load in tqdm(items, desc=desc, disable=not progress, unit="clip"):
        if name in cache["clips"]:
            continue
        aligner = aligner or get_aligner()
        try:
            wav = load()
            result = aligner.align(wav, SAMPLING_RATE, text)
        except (AlignmentError, OSError, RuntimeError) as exc:
            cache["failed"][name] = str(exc)
            continue
        cache["failed"].pop(name, None)
        cache["clips"][name] = {"text": text, "seconds": round(len(wav) / SAMPLING_RATE, 3), **result.to_json()}
        audio_s += len(wav) / SAMPLING_RATE
        done += 1
    out_json.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_json.with_name(out_json.name + ".tmp")
    tmp.write_text(json.dumps(cache, ensure_ascii=False), encoding="utf-8")
    tmp.replace(out_json)
    wall = time.perf_counter() - t0
    return {"aligned_now": done, "total": len(cache["clips"]), "failed": len(cache["failed"]),
            "audio_seconds_now": round(audio_s, 1), "wall_seconds": round(wall, 2),
            "x_realtime": round(audio_s / wall, 1) if wall > 0 and audio_s else None}


def align_ljspeech(folder: str | os.PathLike, out_json: str | os.PathLike,
                   aligner: Aligner | None = None, limit: int | None = None,
                   chapters: Sequence[str] | None = None, progress: bool = False) -> dict[str, Any]:
    """Align the LJSpeech clips listed in ``folder/metadata.csv`` (file, text, normalized_text, seconds)
    into an :func:`align_cached` JSON cache keyed by file name. ``chapters`` (e.g.
    :data:`LJSPEECH_TEST_CHAPTERS`) keeps only those chapters; ``limit`` then takes the first clips of
    what is left."""
    import csv

    folder = Path(folder)
    with open(folder / "metadata.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if chapters is not None:
        rows = [r for r in rows if ljspeech_chapter(r["file"]) in chapters]
    items = ((r["file"], r.get("normalized_text") or r["text"], lambda r=r: read_audio_16k(folder / r["file"]))
             for r in rows[:limit])
    return align_cached(items, out_json, aligner, progress, "aligning LJSpeech")


def grid_transcript(align_text: str) -> str:
    """The spoken words of a GRID ``*.align`` file (``start end word`` lines; ``sil``/``sp`` dropped)."""
    words = [parts[2] for parts in (line.split() for line in align_text.splitlines())
             if len(parts) >= 3 and parts[2].lower() not in ("sil", "sp")]
    return " ".join(words)


def cached_phones(entry: dict[str, Any]) -> list[AlignedPhone]:
    """The phones of one clip entry of an :func:`align_cached` cache."""
    return [AlignedPhone(n, s, e, w) for n, s, e, w in entry["phones"]]


def load_alignment_cache(path: str | os.PathLike) -> dict[str, list[AlignedPhone]]:
    """The phones of every clip in a cache written by :func:`align_cached` (or :func:`align_ljspeech`)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return {k: cached_phones(v) for k, v in data["clips"].items()}


__all__ = ["ARPABET", "ARPABET_TO_IPA", "AlignedPhone", "Alignment", "AlignmentError", "Aligner", "IPA_TO_ARPABET",
           "align", "align_cached", "align_ljspeech", "boundary_errors", "cached_phones", "espeak_arpabet",
           "espeak_phonemes", "get_aligner", "grid_transcript", "ipa_to_arpabet", "load_alignment_cache",
           "normalize_words", "read_hts_labels", "recognize", "to_ipa", "word_recall"]
