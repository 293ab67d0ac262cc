"""Voiceprint backends: Resemblyzer re-implementation vs the reference, speaker separation on real
speech, pyannote.audio embedding models loaded safely from a checkpoint, the factory."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from pestalk_hf.audio import AudioError, load_audio
from pestalk_hf.voiceprint import (
    PyannoteBackend,
    ResemblyzerBackend,
    get_voiceprint_backend,
    load_pyannote_checkpoint,
    save_pyannote_checkpoint,
)

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"


@pytest.fixture(scope="module")
def emodb() -> dict[str, np.ndarray]:
    folder = ASSETS / "speech" / "emodb"
    if not folder.is_dir():
        pytest.skip("needs ../shared/assets/speech/emodb (real speech); absent in a fresh clone")
    return {p.stem: load_audio(p) for p in sorted(folder.glob("1[34]a02*.wav"))}


@pytest.fixture(scope="module")
def arctic() -> list[np.ndarray]:
    folder = ASSETS / "speech" / "cmu_arctic"
    if not folder.is_dir():
        pytest.skip("needs ../shared/assets/speech/cmu_arctic (real speech); absent in a fresh clone")
    return [load_audio(p) for p in sorted(folder.glob("*.wav"))]


@pytest.fixture(scope="module")
def resemblyzer() -> ResemblyzerBackend:
    return ResemblyzerBackend()


# ------------------------------------------------------------------------------------------------
# Resemblyzer
# ------------------------------------------------------------------------------------------------


def _reference_voice_encoder():
    """resemblyzer's own VoiceEncoder (the reference; test-only, it unpickles without weights_only).

    webrtcvad 2.0.10 imports pkg_resources, gone from setuptools >= 81; give resemblyzer a stand-in
    built on the same C extension so the reference can be imported at all.
    """
    try:
        import webrtcvad  # noqa: F401
    except ImportError:
        import _webrtcvad

        class Vad:
            def __init__(self, mode: int | None = None) -> None:
                self._vad = _webrtcvad.create()
                _webrtcvad.init(self._vad)
                if mode is not None:
                    _webrtcvad.set_mode(self._vad, mode)

            def is_speech(self, buf: bytes, sample_rate: int, length: int | None = None) -> bool:
                return _webrtcvad.process(self._vad, sample_rate, buf, length or len(buf) // 2)

        sys.modules["webrtcvad"] = types.SimpleNamespace(Vad=Vad)
    from resemblyzer import VoiceEncoder, preprocess_wav

    return VoiceEncoder("cpu", verbose=False), preprocess_wav


def test_resemblyzer_matches_reference_implementation(resemblyzer, emodb, arctic) -> None:
    encoder, preprocess_wav = _reference_voice_encoder()
    clips = [emodb["13a02Nc"], emodb["14a02Wa"], *arctic]
    ours = resemblyzer.embed_batch(clips)
    for clip, mine in zip(clips, ours):
        ref = encoder.embed_utterance(preprocess_wav(clip))
        assert float(ref @ mine) > 0.99
    # the mel front end alone, against librosa's (what resemblyzer uses)
    from resemblyzer.audio import wav_to_mel_spectrogram

    ref_mel = wav_to_mel_spectrogram(arctic[0])
    np.testing.assert_allclose(resemblyzer.mel_spectrogram(arctic[0]).numpy(), ref_mel,
                               atol=1e-5 * float(ref_mel.max()))


def test_resemblyzer_output_contract(resemblyzer, arctic) -> None:
    wav = arctic[0]
    emb = resemblyzer.embed(wav)
    assert emb.shape == (256,) and emb.dtype == np.float32 and resemblyzer.dim == 256
    assert np.linalg.norm(emb) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(resemblyzer.embed(wav), emb)  # deterministic
    batch = resemblyzer.embed_batch([wav[:20000], wav, wav[:900]])  # mixed lengths, incl. < 1 partial
    assert batch.shape == (3, 256) and np.isfinite(batch).all()
    np.testing.assert_allclose(batch[1], emb, atol=1e-5)  # batching does not change the result
    int16 = np.round(wav * 32767).astype(np.int16)
    assert float(resemblyzer.embed(torch.from_numpy(int16)) @ emb) > 0.999  # any load_audio input
    assert resemblyzer.embed_batch([]).shape == (0, 256)
    with pytest.raises(AudioError, match="silent"):
        resemblyzer.embed(np.zeros(16000, np.float32))


def test_resemblyzer_same_speaker_closer_on_emodb(resemblyzer, emodb) -> None:
    """Speakers 13 and 14, the same sentence in 7 emotions each: the emotion changes the voice a
    lot, yet pairs from one speaker must still be more similar than pairs across speakers."""
    names = list(emodb)
    speakers = np.array([n[:2] for n in names])
    assert sorted(set(speakers)) == ["13", "14"] and len(names) == 14
    emb = resemblyzer.embed_batch([emodb[n] for n in names])
    sim = emb @ emb.T
    same = speakers[:, None] == speakers[None, :]
    off_diagonal = ~np.eye(len(names), dtype=bool)
    within, between = sim[same & off_diagonal], sim[~same]
    assert within.mean() > between.mean()
    # probability that a random same-speaker pair beats a random cross-speaker pair (ROC AUC)
    auc = float((within[:, None] > between[None, :]).mean())
    assert auc > 0.55, auc


# ------------------------------------------------------------------------------------------------
# pyannote.audio
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def xvector_checkpoint(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A real pyannote.audio XVectorSincNet (the architecture of pyannote/embedding), random weights."""
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.embedding import XVectorSincNet

    torch.manual_seed(0)
    model = XVectorSincNet()
    model.specifications = Specifications(problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK,
                                          duration=3.0)
    path = save_pyannote_checkpoint(model, tmp_path_factory.mktemp("xvector"))
    assert path.name == "pytorch_model.bin"
    return path, model.eval()


def test_pyannote_backend_from_checkpoint(xvector_checkpoint, arctic) -> None:
    path, model = xvector_checkpoint
    backend = get_voiceprint_backend(str(path.parent))  # directory form, through the factory
    assert isinstance(backend, PyannoteBackend) and backend.dim == 512
    assert backend.model.specifications.duration == 3.0
    wav = arctic[1]
    emb = backend.embed(wav)
    assert emb.shape == (512,) and emb.dtype == np.float32
    assert np.linalg.norm(emb) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(backend.embed(wav), emb)
    with torch.inference_mode():
        direct = model(torch.from_numpy(wav)[None, None])[0].numpy()
    np.testing.assert_allclose(emb, direct / np.linalg.norm(direct), atol=1e-5)  # same weights
    batch = backend.embed_batch([wav, wav[:600], wav[:5000]])  # 600 samples < receptive field: tiled
    assert batch.shape == (3, 512) and np.isfinite(batch).all()
    np.testing.assert_allclose(batch[0], emb, atol=1e-5)
    from_instance = PyannoteBackend(model)
    np.testing.assert_allclose(from_instance.embed(wav), emb, atol=1e-5)


def test_pyannote_loader_accepts_lightning1_keys_and_refuses_the_rest(xvector_checkpoint, tmp_path) -> None:
    path, _ = xvector_checkpoint
    from lightning.pytorch.callbacks import EarlyStopping
    from pyannote.audio.core.task import Problem, Resolution, Specifications

    with torch.serialization.safe_globals([Specifications, Problem, Resolution]):
        ckpt = torch.load(path, weights_only=True, map_location="cpu")
    # Lightning 1.x stored callback states keyed by the callback *class*
    old_style = dict(ckpt, callbacks={EarlyStopping: {"wait_count": 3}})
    torch.save(old_style, tmp_path / "old.bin")
    loaded = load_pyannote_checkpoint(tmp_path / "old.bin")
    assert type(loaded).__name__ == "XVectorSincNet"

    # an object that is not allow-listed never gets unpickled
    torch.save(dict(ckpt, extra=Path("/etc/passwd")), tmp_path / "evil.bin")
    with pytest.raises(Exception, match="Weights only load failed"):
        load_pyannote_checkpoint(tmp_path / "evil.bin")
    # the architecture must be a pyannote.audio model class
    hijacked = dict(ckpt)
    hijacked["pyannote.audio"] = dict(ckpt["pyannote.audio"],
                                      architecture={"module": "os", "class": "system"})
    torch.save(hijacked, tmp_path / "hijacked.bin")
    with pytest.raises(ValueError, match="refusing to build os.system"):
        load_pyannote_checkpoint(tmp_path / "hijacked.bin")
    torch.save({"state_dict": ckpt["state_dict"]}, tmp_path / "plain.bin")
    with pytest.raises(ValueError, match="not a pyannote.audio model checkpoint"):
        load_pyannote_checkpoint(tmp_path / "plain.bin")
    with pytest.raises(FileNotFoundError):
        load_pyannote_checkpoint(tmp_path / "nothing_here")


def test_pyannote_hub_id_offline_gives_actionable_error(monkeypatch, tmp_path) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="could not get the pyannote checkpoint 'pyannote/embedding'.*"
                                      "resemblyzer"):
        get_voiceprint_backend("pyannote/embedding", cache_dir=tmp_path)


# ------------------------------------------------------------------------------------------------
# factory
# ------------------------------------------------------------------------------------------------


def test_factory_names() -> None:
    backend = get_voiceprint_backend()
    assert isinstance(backend, ResemblyzerBackend) and backend.name == "resemblyzer" and backend.dim == 256
    with pytest.raises(ValueError, match="unknown voiceprint backend 'ecapa'"):
        get_voiceprint_backend("ecapa")
