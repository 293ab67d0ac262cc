"""Voiceprint backends Φ_S: 16 kHz waveform → L2-normalised speaker embedding.

The paper uses ``pyannote/embedding`` (512-d). That checkpoint is gated on the Hub and unreachable
offline, so the default backend is Resemblyzer's GE2E speaker encoder (256-d), whose real trained
weights ship inside the ``resemblyzer`` wheel. The style library and the model config store the
embedding dimension, so a library built with one backend is only ever queried with the same backend.

Security: checkpoints are read with ``torch.load(..., weights_only=True)`` only. We do not call
``resemblyzer.VoiceEncoder`` or ``pyannote.audio.Model.from_pretrained`` because both unpickle with
``weights_only=False``; we rebuild the network and load the tensors ourselves.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import os
import stat
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from torch import nn

from .audio import SAMPLING_RATE, load_audio, pcm16_to_float

__all__ = [
    "VoiceprintBackend",
    "ResemblyzerBackend",
    "PyannoteBackend",
    "get_voiceprint_backend",
    "backend_from_config",
    "REGISTERED_BACKENDS",
    "load_pyannote_checkpoint",
    "save_pyannote_checkpoint",
    "DEFAULT_VOICEPRINT_BACKEND",
    "VOICEPRINT_WINDOW_SECONDS",
    "voiceprint_windows",
]

DEFAULT_VOICEPRINT_BACKEND = "resemblyzer"


def _is_int16(samples: Any) -> bool:
    return isinstance(samples, np.ndarray) and samples.dtype == np.int16 and samples.ndim == 1


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


class VoiceprintBackend(ABC):
    """A speaker-embedding model. Subclasses implement :meth:`_embed_waveforms`.

    Inputs are validated with :func:`pestalk_hf.audio.load_audio` at 16 kHz (so arrays, tensors,
    int PCM all work, and silence/NaN/too-short clips raise :class:`~pestalk_hf.audio.AudioError`);
    outputs are float32 and L2-normalised, so cosine similarity is a dot product.
    """

    name: str
    dim: int

    def embed(self, waveform_16k: Any) -> np.ndarray:
        """Embed one 16 kHz mono clip → ``(dim,)`` float32, unit norm."""
        return self.embed_batch([waveform_16k])[0]

    def embed_batch(self, waveforms_16k: Sequence[Any]) -> np.ndarray:
        """Embed clips of any lengths → ``(B, dim)`` float32, each row unit norm."""
        if len(waveforms_16k) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        # read only: no copy needed; int16 clips (the pipeline's) stay int16 and are converted per window
        wavs = [load_audio(w, SAMPLING_RATE, copy=False, dtype="int16" if _is_int16(w) else "float32")
                for w in waveforms_16k]
        out = np.asarray(self._embed_waveforms(wavs), dtype=np.float32)
        if out.shape != (len(wavs), self.dim):
            raise RuntimeError(f"{self.name} returned shape {out.shape}, expected {(len(wavs), self.dim)}")
        return _l2_normalise(out)

    @abstractmethod
    def _embed_waveforms(self, waveforms: list[np.ndarray]) -> np.ndarray:
        """Embed validated 16 kHz mono clips → (B, dim) (normalisation is done by the caller). Clips are
        float32, or int16 PCM (:func:`pestalk_hf.audio.pcm16_to_float` converts a slice of one)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


# ==================================================================================================
# Resemblyzer (GE2E LSTM speaker encoder, 256-d, bundled weights)
# ==================================================================================================

# Hyper-parameters of resemblyzer 0.1.4 (resemblyzer/hparams.py); the bundled weights were trained
# with exactly these, so they are constants rather than options.
_RZ_N_FFT = 400  # 25 ms window at 16 kHz
_RZ_HOP = 160  # 10 ms step
_RZ_N_MELS = 40
_RZ_PARTIAL_FRAMES = 160  # 1.6 s partial utterances
_RZ_PARTIAL_RATE = 1.3  # partials per second → 77-frame step, ~50 % overlap
_RZ_MIN_COVERAGE = 0.75
_RZ_VAD_WINDOW = 480  # 30 ms at 16 kHz
_RZ_VAD_AVERAGE_WIDTH = 8
_RZ_VAD_MAX_SILENCE = 6
_RZ_TARGET_DBFS = -30.0
_INT16_MAX = 2**15 - 1

VOICEPRINT_WINDOW_SECONDS = 60
"""Long clips are embedded window by window (this many seconds of audio each), so a voiceprint costs
the memory of one window whatever the clip's length (issue 11: 1 h of audio took 4.1 GB before)."""
_RZ_WINDOW_SAMPLES = VOICEPRINT_WINDOW_SECONDS * SAMPLING_RATE
_RZ_BATCH_PARTIALS = 64  # partial utterances per LSTM call (~50 MB of LSTM gate activations)


class _GE2EEncoder(nn.Module):
    """3-layer LSTM (40 → 256) on power mel frames; last hidden state → Linear → ReLU → L2 norm."""

    def __init__(self, n_mels: int = _RZ_N_MELS, hidden: int = 256, embedding: int = 256, layers: int = 3):
        super().__init__()
        self.lstm = nn.LSTM(n_mels, hidden, layers, batch_first=True)
        self.linear = nn.Linear(hidden, embedding)
        self.relu = nn.ReLU()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """mels: (B, frames, n_mels) → (B, embedding), unit norm."""
        _, (hidden, _) = self.lstm(mels)
        embeds = self.relu(self.linear(hidden[-1]))
        return embeds / torch.norm(embeds, dim=1, keepdim=True).clamp_min(1e-12)


def _vad_speech_flags(pcm16: bytes, n_windows: int) -> np.ndarray:
    """WebRTC VAD (mode 3, most aggressive) on 30 ms windows of 16-bit PCM.

    ``import webrtcvad`` fails on setuptools >= 81 (the 2.0.10 wrapper imports pkg_resources), so we
    fall back to its C extension ``_webrtcvad`` with the same calls the wrapper makes.
    """
    try:
        import webrtcvad

        vad = webrtcvad.Vad(3)

        def is_speech(chunk: bytes) -> bool:
            return vad.is_speech(chunk, SAMPLING_RATE)

    except ImportError:
        import _webrtcvad

        handle = _webrtcvad.create()
        _webrtcvad.init(handle)
        _webrtcvad.set_mode(handle, 3)

        def is_speech(chunk: bytes) -> bool:
            return _webrtcvad.process(handle, SAMPLING_RATE, chunk, len(chunk) // 2)

    step = 2 * _RZ_VAD_WINDOW
    return np.array([is_speech(pcm16[i * step : (i + 1) * step]) for i in range(n_windows)], dtype=bool)


def _rz_gain(wav: np.ndarray) -> float:
    """Resemblyzer's increase-only volume normalisation to -30 dBFS, as a factor (≥ 1).

    The RMS is summed block by block in float64, so a long clip costs no float64 copy of itself.
    """
    total = 0.0
    for start in range(0, len(wav), _RZ_WINDOW_SAMPLES):
        block = pcm16_to_float(wav[start : start + _RZ_WINDOW_SAMPLES]).astype(np.float64)
        total += float(np.dot(block, block))
    rms = math.sqrt(total / max(len(wav), 1)) * _INT16_MAX
    gain_db = _RZ_TARGET_DBFS - 20.0 * np.log10(max(rms, 1e-12) / _INT16_MAX)
    return float(10.0 ** (gain_db / 20.0)) if gain_db > 0 else 1.0


def _rz_vad_trim(wav: np.ndarray) -> np.ndarray | None:
    """Cut silences longer than ~0.2 s with WebRTC VAD (resemblyzer's ``trim_long_silences``);
    ``None`` when the VAD keeps less than one 30 ms window (or the clip is shorter than one)."""
    usable = wav[: len(wav) - len(wav) % _RZ_VAD_WINDOW]
    n_windows = len(usable) // _RZ_VAD_WINDOW
    if n_windows == 0:
        return None
    pcm = np.round(np.clip(usable, -1.0, 1.0) * _INT16_MAX).astype(np.int16).tobytes()
    flags = _vad_speech_flags(pcm, n_windows).astype(np.float64)

    # Moving average of width 8 (same padding as resemblyzer), rounded back to a mask.
    width = _RZ_VAD_AVERAGE_WIDTH
    padded = np.concatenate((np.zeros((width - 1) // 2), flags, np.zeros(width // 2)))
    cumsum = np.cumsum(padded)
    cumsum[width:] = cumsum[width:] - cumsum[:-width]
    mask = np.round(cumsum[width - 1 :] / width).astype(bool)

    from scipy.ndimage import binary_dilation

    mask = binary_dilation(mask, np.ones(_RZ_VAD_MAX_SILENCE + 1))
    trimmed = usable[np.repeat(mask, _RZ_VAD_WINDOW)]
    return trimmed if len(trimmed) >= _RZ_VAD_WINDOW else None


def resemblyzer_preprocess(wav: np.ndarray) -> np.ndarray:
    """Resemblyzer's ``preprocess_wav`` for 16 kHz input: raise quiet clips to -30 dBFS, then cut
    silences longer than ~0.2 s with WebRTC VAD (long pauses dilute the voiceprint).

    Differences from resemblyzer, both deliberate: samples are clipped before int16 conversion
    (resemblyzer wraps around on overflow), and if the VAD keeps less than one 30 ms window the
    untrimmed clip is used (resemblyzer would return an empty array and crash later).
    """
    wav = np.asarray(wav, dtype=np.float32)
    gain = _rz_gain(wav)
    if gain != 1.0:
        wav = (wav * np.float32(gain)).astype(np.float32)
    trimmed = _rz_vad_trim(wav)
    return wav if trimmed is None else trimmed


def voiceprint_windows(num_samples: int, window: int) -> list[slice]:
    """Cut ``[0, num_samples)`` into ``ceil(num_samples / window)`` equal, contiguous windows (≤ ``window``
    samples each), so no window is a sliver: with two or more, each holds at least half a window."""
    count = max(1, -(-num_samples // window))
    edges = [round(i * num_samples / count) for i in range(count + 1)]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def _partial_slices(n_samples: int) -> list[slice]:
    """Mel-frame slices of the 1.6 s partial utterances (resemblyzer's ``compute_partial_slices``)."""
    n_frames = int(np.ceil((n_samples + 1) / _RZ_HOP))
    frame_step = int(np.round((SAMPLING_RATE / _RZ_PARTIAL_RATE) / _RZ_HOP))
    steps = max(1, n_frames - _RZ_PARTIAL_FRAMES + frame_step + 1)
    slices = [slice(i, i + _RZ_PARTIAL_FRAMES) for i in range(0, steps, frame_step)]
    last_start = slices[-1].start * _RZ_HOP
    coverage = (n_samples - last_start) / (_RZ_PARTIAL_FRAMES * _RZ_HOP)
    if coverage < _RZ_MIN_COVERAGE and len(slices) > 1:
        slices = slices[:-1]
    return slices


class ResemblyzerBackend(VoiceprintBackend):
    """Resemblyzer's pretrained GE2E encoder re-implemented with safe weight loading (256-d).

    Pipeline (as ``VoiceEncoder.embed_utterance(preprocess_wav(wav))``): volume normalisation +
    VAD trimming → power mel spectrogram (40 bins, 25 ms Hann window, 10 ms hop, centred, zero
    padding as librosa >= 0.10 does, Slaney mel scale and norm) → 1.6 s partials at 1.3 per second
    → LSTM → mean of the partial embeddings → L2 norm. Partials of the clips in a batch go through
    the LSTM together, at most ``_RZ_BATCH_PARTIALS`` at a time, and clips longer than
    :data:`VOICEPRINT_WINDOW_SECONDS` are processed window by window, so memory stays bounded for any
    length (see :meth:`_embed_waveforms`).

    Args:
        weights_path: a resemblyzer-format checkpoint (``{"model_state": ...}``); defaults to the
            ``pretrained.pt`` bundled in the installed ``resemblyzer`` package (found without
            importing it).
        device: torch device for the LSTM.
        preprocess: apply the volume normalisation and VAD trimming (as resemblyzer's docs do).
    """

    name = "resemblyzer"
    dim = 256

    def __init__(self, weights_path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                 preprocess: bool = True):
        self.device = torch.device(device)
        self.preprocess = preprocess
        self.weights_path = Path(weights_path) if weights_path is not None else _bundled_resemblyzer_weights()
        state = torch.load(self.weights_path, map_location="cpu", weights_only=True)
        state = state.get("model_state", state)
        # The checkpoint also holds GE2E's training-only similarity scale/bias; keep the encoder only.
        encoder_state = {k: v for k, v in state.items() if k.startswith(("lstm.", "linear."))}
        self.encoder = _GE2EEncoder()
        self.encoder.load_state_dict(encoder_state, strict=True)
        self.encoder.to(self.device).eval()
        import torchaudio.functional as AF

        self._mel_basis = AF.melscale_fbanks(
            n_freqs=_RZ_N_FFT // 2 + 1, f_min=0.0, f_max=SAMPLING_RATE / 2, n_mels=_RZ_N_MELS,
            sample_rate=SAMPLING_RATE, norm="slaney", mel_scale="slaney",
        )  # (201, 40), equal to librosa.filters.mel(sr=16000, n_fft=400, n_mels=40).T
        self._window = torch.hann_window(_RZ_N_FFT)

    def mel_spectrogram(self, wav: np.ndarray) -> torch.Tensor:
        """(N,) 16 kHz → (frames, 40) power mel spectrogram (not log), as resemblyzer's encoder expects."""
        spec = torch.stft(
            torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)), n_fft=_RZ_N_FFT,
            hop_length=_RZ_HOP, window=self._window, center=True, pad_mode="constant", return_complex=True,
        )
        return (spec.abs() ** 2).T @ self._mel_basis

    def _embed_waveforms(self, waveforms: list[np.ndarray]) -> np.ndarray:
        """Mean of the unit-norm partial embeddings of each clip, computed in bounded memory.

        Long clips: the volume gain is measured on the whole clip (as resemblyzer does), then the clip
        is cut into :func:`voiceprint_windows` of :data:`VOICEPRINT_WINDOW_SECONDS`; each window is
        VAD-trimmed and sliced into partials on its own, and partials go through the LSTM in batches
        of at most ``_RZ_BATCH_PARTIALS``. The result is the mean over *all* partials of the clip
        (every second of speech counts, none is dropped), so it equals resemblyzer's
        ``embed_utterance`` up to the partials that straddle a window edge; a clip of one window is
        processed exactly as before. Windows the VAD finds silent are skipped; if every window is,
        the untrimmed windows are used (as resemblyzer's fallback for a clip with no detected speech).
        """
        dim = self.encoder.linear.out_features
        sums = np.zeros((len(waveforms), dim), dtype=np.float64)
        counts = np.zeros(len(waveforms), dtype=np.int64)
        pending: list[torch.Tensor] = []
        owners: list[int] = []

        def run_pending() -> None:
            if not pending:
                return
            with torch.inference_mode():
                embeds = self.encoder(torch.stack(pending).to(self.device)).cpu().numpy()
            np.add.at(sums, np.asarray(owners), embeds.astype(np.float64))
            np.add.at(counts, np.asarray(owners), 1)
            pending.clear()
            owners.clear()

        def add_segment(index: int, wav: np.ndarray) -> None:
            slices = _partial_slices(len(wav))
            needed = slices[-1].stop * _RZ_HOP
            if needed >= len(wav):
                wav = np.pad(wav, (0, needed - len(wav)))
            mel = self.mel_spectrogram(wav)
            for s in slices:
                pending.append(mel[s])
                owners.append(index)
                if len(pending) >= _RZ_BATCH_PARTIALS:
                    run_pending()

        for index, wav in enumerate(waveforms):
            gain = np.float32(_rz_gain(wav) if self.preprocess else 1.0)
            windows = voiceprint_windows(len(wav), _RZ_WINDOW_SAMPLES)

            def window_audio(window: slice) -> np.ndarray:  # float32, gain applied (int16 clips: converted here)
                segment = pcm16_to_float(wav[window])
                return segment * gain if gain != 1.0 else segment

            kept = 0
            for window in windows:
                segment = window_audio(window)
                if self.preprocess:
                    segment = _rz_vad_trim(segment)
                    if segment is None:
                        continue
                add_segment(index, segment)
                kept += 1
            if kept == 0:  # no speech found anywhere: the untrimmed clip, window by window
                for window in windows:
                    add_segment(index, window_audio(window))
        run_pending()
        return (sums / counts[:, None]).astype(np.float32)


def _bundled_resemblyzer_weights() -> Path:
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the 'resemblyzer' package (which bundles pretrained.pt) is not installed: "
                          "pip install resemblyzer")
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
    if not path.is_file():
        raise FileNotFoundError(f"resemblyzer is installed but its weights are missing: {path}")
    return path


# ==================================================================================================
# pyannote.audio (paper: pyannote/embedding, XVectorSincNet, 512-d)
# ==================================================================================================

_PYANNOTE_CHECKPOINT_NAME = "pytorch_model.bin"
# Lightning 1.x checkpoints (pyannote/embedding was trained with it) use callback *classes* as dict
# keys. Only the class reference is pickled, never an instance; we map the names to an inert class.
_LIGHTNING_CALLBACK_NAMES = [
    f"{root}.callbacks.{module}.{cls}"
    for root in ("pytorch_lightning", "lightning.pytorch")
    for module, cls in (("early_stopping", "EarlyStopping"), ("model_checkpoint", "ModelCheckpoint"))
]


class _CallbackPlaceholder:
    """Stands in for Lightning callback classes referenced by old checkpoints."""


def load_pyannote_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu"):
    """Build a ``pyannote.audio`` model from a local checkpoint with ``weights_only=True``.

    Replaces ``pyannote.audio.Model.from_pretrained`` (which unpickles with ``weights_only=False``)
    for local files: only pyannote's ``Specifications``/``Problem``/``Resolution`` and Lightning
    callback class names are allow-listed, the architecture must be a class under
    ``pyannote.audio.models``, and it is instantiated from the saved hyper-parameters. Weights of a
    training-only loss (e.g. ArcFace's ``loss_func.*``) are dropped. ``path`` may be the file or a
    directory holding ``pytorch_model.bin``.
    """
    from pyannote.audio.core.model import Model
    from pyannote.audio.core.task import Problem, Resolution, Specifications

    path = Path(path)
    if path.is_dir():
        path = path / _PYANNOTE_CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"pyannote checkpoint not found: {path}")
    allowed = [Specifications, Problem, Resolution, torch.torch_version.TorchVersion]
    allowed += [(_CallbackPlaceholder, name) for name in _LIGHTNING_CALLBACK_NAMES]
    with torch.serialization.safe_globals(allowed):
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)

    meta = checkpoint.get("pyannote.audio") if isinstance(checkpoint, dict) else None
    if not meta or "architecture" not in meta or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a pyannote.audio model checkpoint (no 'pyannote.audio' metadata)")
    module_name, class_name = meta["architecture"]["module"], meta["architecture"]["class"]
    if not module_name.startswith("pyannote.audio.models."):
        raise ValueError(f"refusing to build {module_name}.{class_name}: not a pyannote.audio model class")
    klass = getattr(importlib.import_module(module_name), class_name, None)
    if not (inspect.isclass(klass) and issubclass(klass, Model)):
        raise ValueError(f"{module_name}.{class_name} is not a pyannote.audio Model")

    params = inspect.signature(klass.__init__).parameters
    hparams = {k: v for k, v in dict(checkpoint.get("hyper_parameters", {})).items()
               if k in params and k != "task"}
    model = klass(**hparams)
    state = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("loss_func.")}
    model.load_state_dict(state, strict=True)
    if meta.get("specifications") is not None:
        model.specifications = meta["specifications"]
    return model.eval()


def save_pyannote_checkpoint(model, path: str | os.PathLike) -> Path:
    """Save a ``pyannote.audio`` model in the checkpoint layout ``Model.from_pretrained`` reads
    (``state_dict``, ``hyper_parameters``, ``pyannote.audio`` metadata), tensors and plain types only.

    Used to ship converted/fine-tuned embedding models and to make offline test checkpoints.
    ``path`` may be a file or a directory (then ``pytorch_model.bin`` inside it).
    """
    import lightning

    path = Path(path)
    if path.suffix == "" or path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        path = path / _PYANNOTE_CHECKPOINT_NAME
    checkpoint: dict[str, Any] = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    model.on_save_checkpoint(checkpoint)  # adds the "pyannote.audio" block (versions, class, specs)
    torch.save(checkpoint, path)
    return path


class PyannoteBackend(VoiceprintBackend):
    """A ``pyannote.audio`` 4.x embedding model (paper: ``pyannote/embedding``, 512-d).

    A clip of up to :data:`VOICEPRINT_WINDOW_SECONDS` goes through the model's ``forward`` in one
    window (what ``Inference(model, window="whole")`` does), which needs no ``model.specifications``
    and no torchcodec; longer clips are embedded window by window and averaged (bounded memory). Clips shorter than max(0.5 s, the receptive field of two output frames) are tiled
    (repeated) to that length: padding with zeros would bias the statistics pooling.

    Args:
        checkpoint_or_model: a ``pyannote.audio.Model`` instance; a local checkpoint file or a
            directory with ``pytorch_model.bin``; or a Hub id (``"pyannote/embedding"``), downloaded
            with ``huggingface_hub`` (gated: accept the conditions and pass ``token``).
        device: torch device.
        token, cache_dir: forwarded to ``hf_hub_download`` for Hub ids.
    """

    def __init__(self, checkpoint_or_model: Any = "pyannote/embedding", device: str | torch.device = "cpu",
                 token: str | bool | None = None, cache_dir: str | os.PathLike | None = None):
        from pyannote.audio.core.model import Model

        if isinstance(checkpoint_or_model, Model):
            model, self.name = checkpoint_or_model, type(checkpoint_or_model).__name__
        else:
            source = str(checkpoint_or_model)
            if not Path(source).exists():
                source = _download_pyannote_checkpoint(source, token=token, cache_dir=cache_dir)
            model, self.name = load_pyannote_checkpoint(source), str(checkpoint_or_model)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.dim = int(model.dimension)
        # Statistics pooling needs >= 2 frames (std with Bessel's correction), so tile short clips
        # up to two receptive fields' worth and at least 0.5 s.
        try:
            receptive = int(model.receptive_field_size(num_frames=2))
        except (AttributeError, NotImplementedError, TypeError):
            receptive = 0
        self.min_samples = max(receptive, SAMPLING_RATE // 2)
        rate = int(model.hparams.get("sample_rate", SAMPLING_RATE))
        if rate != SAMPLING_RATE:
            raise ValueError(
                f"{self.name} expects {rate} Hz audio; only {SAMPLING_RATE} Hz models are supported"
            )

    def _embed_waveforms(self, waveforms: list[np.ndarray]) -> np.ndarray:
        """One forward per clip; clips longer than :data:`VOICEPRINT_WINDOW_SECONDS` are embedded per
        :func:`voiceprint_windows` window and the window embeddings averaged, weighted by length
        (bounded memory; the usual sliding-window practice of pyannote's ``Inference``)."""
        out = []
        with torch.inference_mode():
            for wav in waveforms:  # different lengths: one forward each (no padding bias)
                total = np.zeros(self.dim, dtype=np.float64)
                for window in voiceprint_windows(len(wav), _RZ_WINDOW_SAMPLES):
                    part = pcm16_to_float(wav[window])
                    if len(part) < self.min_samples:
                        part = np.tile(part, -(-self.min_samples // len(part)))
                    x = torch.from_numpy(np.ascontiguousarray(part)).to(self.device)[None, None]  # (1, 1, samples)
                    total += (window.stop - window.start) * self.model(x).reshape(-1).double().cpu().numpy()
                out.append(total / len(wav))
        out = np.stack(out)
        if not np.isfinite(out).all():
            raise RuntimeError(f"{self.name} produced NaN/Inf embeddings")
        return out


def _download_pyannote_checkpoint(
    repo_id: str, token: str | bool | None, cache_dir: str | os.PathLike | None
) -> str:
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(repo_id, _PYANNOTE_CHECKPOINT_NAME, token=token, cache_dir=cache_dir)
    except Exception as error:  # offline, gated, missing repo: one actionable message
        raise OSError(
            f"could not get the pyannote checkpoint {repo_id!r} ({type(error).__name__}: {error}). "
            "It is not a local path, and the Hub download failed (offline? gated model needs a token "
            "and accepted conditions). Pass a local checkpoint path, or use the offline "
            "'resemblyzer' backend."
        ) from error


# ==================================================================================================
# factory
# ==================================================================================================


def get_voiceprint_backend(
    name_or_path: str = DEFAULT_VOICEPRINT_BACKEND, **kwargs: Any
) -> VoiceprintBackend:
    """Backend by name: ``"resemblyzer"`` (offline default, 256-d); ``"pyannote/embedding"``, any
    other Hub id ``"org/name"`` or a local pyannote checkpoint path → :class:`PyannoteBackend`.
    ``kwargs`` go to the backend's constructor (e.g. ``device``, ``token``)."""
    if name_or_path == "resemblyzer":
        return ResemblyzerBackend(**kwargs)
    if Path(name_or_path).exists() or name_or_path.startswith("pyannote/") or name_or_path.count("/") == 1:
        return PyannoteBackend(name_or_path, **kwargs)
    raise ValueError(
        f"unknown voiceprint backend {name_or_path!r}; use 'resemblyzer', 'pyannote/embedding', "
        "another Hub id 'org/name', or a local pyannote checkpoint path"
    )


REGISTERED_BACKENDS = ("resemblyzer", "pyannote/embedding")
"""Backend names a model config may use as ``voiceprint_backend`` (besides a file inside the model folder)."""


def backend_from_config(
    value: Any, model_dir: str | os.PathLike | None, field: str = "voiceprint_backend", **kwargs: Any
) -> VoiceprintBackend:
    """The backend a model's ``config.json`` names, read without trusting the config.

    A config comes with a downloaded or uploaded model, so it may only name

    * a registered backend (:data:`REGISTERED_BACKENDS`: ``"resemblyzer"``, ``"pyannote/embedding"``), or
    * a pyannote checkpoint **file inside the model folder**, as a relative path (``"voiceprint.bin"``,
      ``"speaker/pytorch_model.bin"``): resolved (symlinks followed), it must stay inside the folder and
      be a regular file. For a Hub model it is downloaded from the model's own repo.

    Anything else (an absolute path, ``..``, a device, a folder, another Hub repo) is refused with a
    ``ValueError`` naming the field, without reading it. Callers who mean to use another backend pass
    it explicitly (``pipeline(..., voiceprint_backend=...)``, :func:`get_voiceprint_backend`).
    """
    def refuse(reason: str) -> ValueError:
        return ValueError(
            f"config.json field {field!r} = {value!r} is refused: {reason}. A model config may name a registered "
            f"backend ({', '.join(REGISTERED_BACKENDS)}) or a checkpoint file inside the model folder (a relative "
            f"path); pass voiceprint_backend=... explicitly to use anything else"
        )

    if not isinstance(value, str) or not value.strip():
        raise refuse(f"expected a backend name (a string), got {type(value).__name__}")
    if value == "resemblyzer":
        return ResemblyzerBackend(**kwargs)
    if value == "pyannote/embedding":
        checkpoint = _download_pyannote_checkpoint(value, token=kwargs.pop("token", None),
                                                   cache_dir=kwargs.pop("cache_dir", None))
        backend = PyannoteBackend(checkpoint, **kwargs)
        backend.name = value
        return backend
    parts = PurePosixPath(value).parts
    if (value.startswith(("/", "~")) or "\\" in value or ":" in value or "\0" in value
            or ".." in parts or not parts):
        raise refuse("only a relative path inside the model folder is allowed")
    if not model_dir:
        raise refuse("the model folder is unknown, so a file inside it cannot be found")
    root = Path(model_dir)
    if root.is_dir():
        root = root.resolve()
        target = (root / value).resolve()
        if root not in target.parents:
            raise refuse("it leads outside the model folder")
        try:
            mode = target.stat().st_mode
        except OSError:
            raise refuse("there is no such file in the model folder") from None
        if not stat.S_ISREG(mode):
            raise refuse("it is not a regular file in the model folder")
        return PyannoteBackend(str(target), **kwargs)
    # a Hub model: the file comes from the model's own repository
    from huggingface_hub import hf_hub_download

    try:
        checkpoint = hf_hub_download(str(model_dir), value, token=kwargs.pop("token", None),
                                     cache_dir=kwargs.pop("cache_dir", None))
    except Exception as error:
        raise refuse(f"the model repository {str(model_dir)!r} has no such file ({type(error).__name__})") from None
    return PyannoteBackend(checkpoint, **kwargs)
