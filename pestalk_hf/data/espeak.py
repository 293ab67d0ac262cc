"""A thin ctypes binding to eSpeak NG, as bundled by the ``espeakng-loader`` wheel.

Why ctypes and not a system package or ``phonemizer``: the wheel ships ``libespeak-ng.so`` and its
voice data, so nothing needs root, and the classic ``speak_lib.h`` API gives us exactly what the
EmoStyle-Synth generator needs — the waveform *and* a phoneme event (IPA name, sample position) for
every phone, which is exact ground-truth timing for the lip curves.

libespeak-ng keeps global state, so one process holds one engine: :func:`get_engine` returns the
process-wide instance (parallel generation uses processes, not threads).
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

ESPEAK_SAMPLING_RATE = 22050

# speak_lib.h enums
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_PHONEME_IPA = 0x0002
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4

RATE_MIN, RATE_MAX = 80, 450


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """``espeak_EVENT`` from speak_lib.h (API revision 12)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),  # sample index at 22.05 kHz, finer than audio_position
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Phone:
    """One phone: IPA name as eSpeak reports it (stress marks included; '' is a pause), start/end in seconds."""

    name: str
    start: float
    end: float
    word: int  # index of the word it belongs to (-1 before the first word)


@dataclass
class Utterance:
    """Synthesised speech: float32 waveform in [-1, 1] at ``sampling_rate`` plus its phone timeline."""

    waveform: np.ndarray
    sampling_rate: int
    phones: list[Phone]


@dataclass(frozen=True)
class VoiceSettings:
    """eSpeak voice + prosody. ``voice`` is a name such as ``"en-us+m3"`` (language + variant).

    ``rate`` is words per minute (80–450), ``pitch`` and ``range`` are eSpeak's 0–100 scales
    (base pitch and intonation range), ``volume`` is 0–200 (100 = normal).
    """

    voice: str = "en-us"
    rate: int = 175
    pitch: int = 50
    range: int = 50
    volume: int = 100

    def validate(self) -> None:
        """Raise ValueError for settings eSpeak would silently clamp or reject."""
        if not RATE_MIN <= self.rate <= RATE_MAX:
            raise ValueError(f"rate must be in [{RATE_MIN}, {RATE_MAX}] words/min, got {self.rate}")
        for name in ("pitch", "range"):
            value = getattr(self, name)
            if not 0 <= value <= 100:
                raise ValueError(f"{name} must be in [0, 100], got {value}")
        if not 0 <= self.volume <= 200:
            raise ValueError(f"volume must be in [0, 200], got {self.volume}")


class EspeakEngine:
    """One initialised libespeak-ng (synchronous mode, IPA phoneme events). Use :func:`get_engine`.

    Reproducibility: besides its random generators (both seeded per utterance here), libespeak-ng
    keeps static synthesis state (e.g. the pitch-flutter phase) that carries from one utterance to
    the next and survives ``espeak_Terminate``. With ``reproducible=True`` (default) the library is
    unloaded and loaded again before every utterance (~20 ms), so a clip depends only on
    (text, settings, seed) and not on what the process synthesised before — required for
    deterministic parallel dataset generation. This only resets the state if nothing else in the
    process holds libespeak-ng open.
    """

    def __init__(self, library_path: str | None = None, data_path: str | None = None,
                 reproducible: bool = True) -> None:
        import espeakng_loader

        self._library_path = library_path or espeakng_loader.get_library_path()
        self._data_path = (data_path or espeakng_loader.get_data_path()).encode()
        self.reproducible = reproducible
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, Any]] = []
        self._callback = _CALLBACK(self._on_audio)  # keep a reference: the C side holds a raw pointer
        self._lock = threading.Lock()
        self._lib: Any = None
        self._srand: Any = None
        self._load()
        try:
            self._srand = ctypes.CDLL(None).srand
            self._srand.argtypes = [ctypes.c_uint]
        except (OSError, AttributeError):  # pragma: no cover - platforms without a global libc
            self._srand = None

    def _load(self) -> None:
        lib = ctypes.CDLL(self._library_path)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, self._data_path, _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_PHONEME_IPA
        )
        if rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed (data path {self._data_path.decode()})")
        self.sampling_rate = int(rate)
        lib.espeak_SetSynthCallback(self._callback)
        # eSpeak NG draws noise from its own generator and from libc rand(): both are seeded per utterance.
        self._set_seed = getattr(lib, "espeak_ng_SetRandSeed", None)
        if self._set_seed is not None:
            self._set_seed.argtypes = [ctypes.c_long]
        self._lib = lib

    def _reload(self) -> None:
        import _ctypes

        self._lib.espeak_Terminate()
        _ctypes.dlclose(self._lib._handle)
        self._lib = None
        self._load()

    def _on_audio(self, wav: Any, num_samples: int, events: Any) -> int:
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_PHONEME:
                self._events.append((_EVENT_PHONEME, ev.sample, bytes(ev.id.string).split(b"\0")[0]))
            elif ev.type == _EVENT_WORD:
                self._events.append((_EVENT_WORD, ev.sample, ev.id.number))
            i += 1
        if wav and num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0

    def synthesize(self, text: str, settings: VoiceSettings = VoiceSettings(), seed: int = 0) -> Utterance:
        """Speak ``text`` with ``settings``; returns the 22.05 kHz waveform and the IPA phone timeline."""
        if not text.strip():
            raise ValueError("text is empty")
        settings.validate()
        with self._lock:
            if self.reproducible:
                self._reload()
            if self._lib.espeak_SetVoiceByName(settings.voice.encode()) != 0:
                raise ValueError(f"eSpeak NG has no voice {settings.voice!r} (e.g. 'en-us', 'en-us+m3', 'en+f2')")
            for param, value in ((_PARAM_RATE, settings.rate), (_PARAM_PITCH, settings.pitch),
                                 (_PARAM_RANGE, settings.range), (_PARAM_VOLUME, settings.volume)):
                self._lib.espeak_SetParameter(param, int(value), 0)
            if self._set_seed is not None:
                self._set_seed(int(seed) & 0x7FFFFFFF)
            if self._srand is not None:
                self._srand(int(seed) & 0xFFFFFFFF)
            self._chunks, self._events = [], []
            data = text.encode("utf-8")
            err = self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if err != 0:
                raise RuntimeError(f"espeak_Synth failed with error {err}")
            self._lib.espeak_Synchronize()
            chunks, events = self._chunks, self._events
            self._chunks, self._events = [], []
        pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        waveform = pcm.astype(np.float32) / 32768.0
        return Utterance(waveform, self.sampling_rate, _phone_timeline(events, len(pcm), self.sampling_rate))


def _phone_timeline(events: list[tuple[int, int, Any]], num_samples: int, sr: int) -> list[Phone]:
    """Turn phoneme start events into (name, start, end) phones; a phone ends where the next starts."""
    starts: list[tuple[int, str, int]] = []
    word = -1
    for kind, sample, payload in events:
        if kind == _EVENT_WORD:
            word += 1
        else:
            starts.append((sample, payload.decode("utf-8", errors="replace"), word))
    phones = []
    for i, (sample, name, w) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else num_samples
        if end > sample:
            phones.append(Phone(name, sample / sr, end / sr, w))
    return phones


_ENGINE: EspeakEngine | None = None


def get_engine() -> EspeakEngine:
    """The process-wide engine (libespeak-ng has global state, so there is one per process)."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = EspeakEngine()
    return _ENGINE


def synthesize(text: str, settings: VoiceSettings = VoiceSettings(), seed: int = 0,
               sampling_rate: int | None = 16000) -> Utterance:
    """Speak ``text`` and resample to ``sampling_rate`` (None keeps eSpeak's 22.05 kHz).

    Phone times are in seconds, so they hold at any sampling rate.
    """
    utt = get_engine().synthesize(text, settings, seed)
    if sampling_rate is None or sampling_rate == utt.sampling_rate:
        return utt
    import soxr

    wav = soxr.resample(utt.waveform, utt.sampling_rate, sampling_rate, quality="HQ").astype(np.float32)
    return Utterance(wav, sampling_rate, utt.phones)
