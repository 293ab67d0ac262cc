"""The pipeline's int16 waveform (issue 11: bounded memory at the 4 h decode limit).

``load_audio(..., dtype="int16")`` decodes straight into 16-bit PCM, the model and the voiceprint take int16
clips and convert one window at a time, and the animation keeps the int16 waveform for the MP4. These tests
check that this is the same waveform (bit-exact for 16-bit files, within one LSB otherwise, hot float files
still peak-normalised), that the results do not change, and that decoding never holds a float32 copy.
"""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import pestalk_hf
from pestalk_hf.animation import BlendshapeAnimation
from pestalk_hf.audio import PCM16_SCALE, AudioError, load_audio, pcm16_to_float
from pestalk_hf.exporters import write_mp4

DEMO = Path(pestalk_hf.__file__).parent / "assets" / "demo_ljspeech_LJ001-0107.wav"
LSB = 1 / PCM16_SCALE


def _wav_bytes(samples: np.ndarray, rate: int, subtype: str, fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, subtype=subtype, format=fmt)
    return buffer.getvalue()


def _rising_tone(seconds: float, rate: int, amp: float) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.linspace(0.1, 1.0, len(t)) * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


@pytest.fixture(scope="module")
def pipe():
    from pestalk_hf.pipeline import load_pipeline

    return load_pipeline()


def test_16_bit_file_decodes_to_its_own_samples() -> None:
    pcm, rate = sf.read(DEMO, dtype="int16")
    assert rate == 16000
    wav = load_audio(DEMO, dtype="int16")
    assert wav.dtype == np.int16
    np.testing.assert_array_equal(wav, pcm)
    np.testing.assert_array_equal(pcm16_to_float(wav), load_audio(DEMO))  # k / 32768: exactly the float path


@pytest.mark.parametrize(("rate", "subtype", "fmt", "amp"), [
    (48000, "PCM_16", "FLAC", 0.9),  # resampled: quantised once more
    (44100, "PCM_24", "WAV", 0.9),
    (16000, "FLOAT", "WAV", 3.0),  # hot float file, peak rising through the clip: rescaled as it decodes
    (22050, "FLOAT", "WAV", 40.0),
])
def test_int16_matches_the_float32_path_within_one_lsb(rate: int, subtype: str, fmt: str, amp: float) -> None:
    data = _wav_bytes(_rising_tone(2.0, rate, amp), rate, subtype, fmt)
    as_float, as_int16 = load_audio(data), load_audio(data, dtype="int16")
    assert as_int16.dtype == np.int16 and as_int16.shape == as_float.shape
    assert np.abs(pcm16_to_float(as_int16) - as_float).max() <= 2.5 * LSB  # rounding (+ a rescale for hot input)
    if amp > 1:  # peak-normalised like the float32 path, not clipped
        assert np.abs(as_float).max() == pytest.approx(1.0, abs=1e-6)
        assert np.abs(as_int16.astype(np.int32)).max() >= 32766


def test_int16_arrays_are_validated_and_passed_through() -> None:
    pcm = (np.sin(np.arange(16000) / 5) * 8000).astype(np.int16)
    same = load_audio(pcm, 16000, dtype="int16", copy=False)
    assert same is pcm
    copied = load_audio(pcm, 16000, dtype="int16")
    assert copied is not pcm and np.array_equal(copied, pcm)
    with pytest.raises(AudioError, match="silent"):
        load_audio(np.full(16000, 3, np.int16), 16000, dtype="int16")  # a DC offset only
    with pytest.raises(AudioError, match="too short"):
        load_audio(pcm[:100], 16000, dtype="int16")
    with pytest.raises(AudioError, match="limit"):
        load_audio(pcm, 16000, dtype="int16", max_seconds=0.5)
    floats = load_audio(np.linspace(-2, 2, 16000, dtype=np.float32), 16000, dtype="int16")
    assert floats.dtype == np.int16 and floats.min() == -32768 and floats.max() == 32767  # peak-normalised
    with pytest.raises(ValueError, match="dtype"):
        load_audio(pcm, 16000, dtype="int8")


def test_decoding_to_int16_never_holds_a_float32_copy(tmp_path: Path) -> None:
    seconds = 20 * 60
    path = tmp_path / "long.wav"
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", 16000, 1, subtype="PCM_16") as f:
        for _ in range(seconds // 60):
            f.write(rng.normal(0, 0.1, 60 * 16000).astype(np.float32))
    int16_mb, float32_mb = seconds * 16000 * 2 / 2**20, seconds * 16000 * 4 / 2**20
    tracemalloc.start()
    try:
        wav = load_audio(path, dtype="int16")
        peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    assert len(wav) == seconds * 16000
    # the int16 result plus one decoded block (and its float64 mono mix); far below a float32 copy
    assert peak_mb < int16_mb + 16 < float32_mb, (peak_mb, int16_mb, float32_mb)


def test_model_and_voiceprint_give_the_same_result_on_int16(pipe) -> None:
    as_float, as_int16 = load_audio(DEMO), load_audio(DEMO, dtype="int16")
    backend = pipe.voiceprint_backend
    vp_float, vp_int16 = backend.embed(as_float), backend.embed(as_int16)
    np.testing.assert_array_equal(vp_float, vp_int16)
    voiceprint = torch.from_numpy(vp_float)
    a = pipe.model.animate(torch.from_numpy(as_float), voiceprint, chunk_seconds=2, overlap_seconds=1)
    b = pipe.model.animate(torch.from_numpy(as_int16), voiceprint, chunk_seconds=2, overlap_seconds=1)
    torch.testing.assert_close(a.blendshapes, b.blendshapes, rtol=0, atol=0)
    torch.testing.assert_close(a.emotion_logits, b.emotion_logits, rtol=0, atol=0)
    with pytest.raises(ValueError, match="floating point"):
        pipe.model(input_values=torch.from_numpy(as_int16)[None])  # training/forward stays float-only


def test_pipeline_keeps_int16_audio_and_exports_it_like_float(pipe, tmp_path: Path) -> None:
    anim = pipe(str(DEMO))
    assert anim.audio.dtype == np.int16
    np.testing.assert_array_equal(anim.audio_float32(), load_audio(DEMO))
    frames = [np.zeros((64, 64, 3), np.uint8)] * 10
    write_mp4(tmp_path / "int16.mp4", frames, audio=anim.audio)
    write_mp4(tmp_path / "float.mp4", frames, audio=anim.audio_float32())

    import av

    def decoded(path: Path) -> np.ndarray:
        with av.open(str(path)) as container:
            return np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])

    np.testing.assert_array_equal(decoded(tmp_path / "int16.mp4"), decoded(tmp_path / "float.mp4"))
    loaded = BlendshapeAnimation.from_npz(anim.to_npz(tmp_path / "a.npz"))
    assert loaded.audio.dtype == np.int16 and np.array_equal(loaded.audio, anim.audio)
    other = BlendshapeAnimation(weights=anim.weights, audio=anim.audio.astype(np.float64) / PCM16_SCALE)
    assert other.audio.dtype == np.float32  # anything but int16 is held as float32
