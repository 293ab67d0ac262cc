"""pestalk_hf.audio.load_audio: every input kind, every rejection, resampling quality, real speech."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly

from pestalk_hf.audio import MIN_SAMPLES, SAMPLING_RATE, AudioError, load_audio

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"

SR_IN = 44100
TONE_HZ = 440.0


@pytest.fixture(scope="module")
def assets() -> Path:
    if not (ASSETS / "speech").is_dir():
        pytest.skip("needs ../shared/assets (real speech clips); absent in a fresh clone")
    return ASSETS


def tone(freq: float = TONE_HZ, sr: int = SR_IN, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def spectrum(wav: np.ndarray, sr: int = SAMPLING_RATE) -> tuple[np.ndarray, np.ndarray]:
    mag = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    return np.fft.rfftfreq(len(wav), 1 / sr), mag


def dominant_hz(wav: np.ndarray, sr: int = SAMPLING_RATE) -> float:
    freqs, mag = spectrum(wav, sr)
    return float(freqs[np.argmax(mag)])


def encode_with_av(path: Path, channels: np.ndarray, sr: int, codec: str, layout: str,
                   video: bool = False, audio: bool = True) -> Path:
    """Write (C, N) float samples with PyAV's bundled encoders (mp3/aac), optionally muxed with video."""
    seconds = channels.shape[1] / sr
    with av.open(str(path), "w") as out:
        vstream = out.add_stream("mpeg4", rate=25) if video else None
        if vstream is not None:
            vstream.width, vstream.height, vstream.pix_fmt = 64, 48, "yuv420p"
        astream = out.add_stream(codec, rate=sr, layout=layout) if audio else None
        if vstream is not None:
            for i in range(int(25 * seconds)):
                img = np.full((48, 64, 3), (i * 9) % 255, np.uint8)
                out.mux(vstream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            out.mux(vstream.encode(None))
        if astream is not None:
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(channels, np.float32), format="fltp",
                                               layout=layout)
            frame.sample_rate = sr
            out.mux(astream.encode(frame))
            out.mux(astream.encode(None))
    return path


def assert_tone(wav: np.ndarray, amp: float = 0.5, amp_tol: float = 0.02, n: int = SAMPLING_RATE,
                n_tol: int = 1) -> None:
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(len(wav) - n) <= n_tol
    assert abs(dominant_hz(wav) - TONE_HZ) <= 1.5
    assert abs(np.abs(wav).max() - amp) <= amp_tol


# ------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_wav_every_sample_format_at_44k1(tmp_path: Path, subtype: str) -> None:
    path = tmp_path / f"tone_{subtype}.wav"
    sf.write(path, tone(), SR_IN, subtype=subtype)
    assert sf.info(path).subtype == subtype
    assert_tone(load_audio(path), amp_tol=0.02 if subtype == "PCM_U8" else 0.005)


@pytest.mark.parametrize("fmt,subtype,amp_tol", [("FLAC", "PCM_16", 0.005), ("OGG", "VORBIS", 0.08)])
def test_flac_and_ogg(tmp_path: Path, fmt: str, subtype: str, amp_tol: float) -> None:
    path = tmp_path / f"tone.{fmt.lower()}"
    sf.write(path, tone(), SR_IN, format=fmt, subtype=subtype)
    assert_tone(load_audio(str(path)), amp_tol=amp_tol)


def test_mp3_made_with_pyav(tmp_path: Path) -> None:
    path = encode_with_av(tmp_path / "tone.mp3", tone()[None], SR_IN, "mp3", "mono")
    assert_tone(load_audio(path), amp_tol=0.08, n_tol=1200)  # encoder delay/padding


@pytest.mark.parametrize("suffix", ["mp4", "mov", "m4a"])
def test_audio_track_of_video_and_m4a(tmp_path: Path, suffix: str) -> None:
    stereo = np.stack([tone(), tone()])
    path = encode_with_av(tmp_path / f"clip.{suffix}", stereo, SR_IN, "aac", "stereo", video=suffix != "m4a")
    with pytest.raises(Exception):
        sf.info(path)  # so this really exercises the PyAV path
    assert_tone(load_audio(path), amp_tol=0.08, n_tol=2500)


def test_six_channel_wav_is_averaged(tmp_path: Path) -> None:
    gains = np.array([0.9, 0.3, 0.0, 0.0, -0.3, 0.6], dtype=np.float32)  # mean 0.25
    path = tmp_path / "six.wav"
    sf.write(path, tone(amp=1.0)[:, None] * gains[None], SR_IN, subtype="FLOAT")
    assert_tone(load_audio(path), amp=float(gains.mean()), amp_tol=0.003)


def test_six_channel_aac_in_mp4(tmp_path: Path) -> None:
    path = encode_with_av(tmp_path / "surround.mp4", np.stack([tone()] * 6), SR_IN, "aac", "5.1", video=True)
    wav = load_audio(path)
    assert abs(dominant_hz(wav) - TONE_HZ) <= 1.5 and np.abs(wav).max() > 0.2


def test_bytes_and_dict_and_datasets_style_dicts(tmp_path: Path) -> None:
    buf = io.BytesIO()
    sf.write(buf, tone(), SR_IN, format="FLAC")
    data = buf.getvalue()
    from_bytes = load_audio(data)
    assert_tone(from_bytes)
    np.testing.assert_array_equal(load_audio({"bytes": data, "path": "x.flac"}), from_bytes)
    (tmp_path / "x.flac").write_bytes(data)
    np.testing.assert_array_equal(load_audio({"bytes": None, "path": str(tmp_path / "x.flac")}), from_bytes)
    for key in ("array", "raw"):
        assert_tone(load_audio({key: tone(), "sampling_rate": SR_IN}))


# ------------------------------------------------------------------------------------------------
# arrays and tensors
# ------------------------------------------------------------------------------------------------


def test_array_and_tensor_layouts_agree() -> None:
    stereo = np.stack([tone(amp=0.2), tone(amp=0.6)], axis=1)  # (N, 2): mean amplitude 0.4
    ref = load_audio(stereo, SR_IN)
    assert_tone(ref, amp=0.4, amp_tol=0.005)
    np.testing.assert_array_equal(load_audio(stereo.T, SR_IN), ref)  # (C, N)
    np.testing.assert_array_equal(load_audio(torch.from_numpy(stereo.T.copy()), SR_IN), ref)
    bf16 = torch.from_numpy(stereo.T.copy()).bfloat16()
    np.testing.assert_allclose(load_audio(bf16, SR_IN), ref, atol=0.01)
    assert_tone(load_audio(tone(sr=16000), 16000.0))  # integral float rate accepted, no resampling


def test_integer_arrays_are_scaled_by_full_range() -> None:
    t16 = np.round(tone(sr=16000, amp=0.5) * 32768).astype(np.int16)
    assert_tone(load_audio(t16, 16000), amp_tol=1e-3)
    t32 = (t16.astype(np.int32) << 16)
    np.testing.assert_allclose(load_audio(t32, 16000), load_audio(t16, 16000), atol=1e-6)
    u8 = (np.round(tone(sr=16000, amp=0.5) * 127) + 128).astype(np.uint8)
    assert_tone(load_audio(u8, 16000), amp_tol=0.01)
    full = np.full(1000, 32767, np.int16)
    full[::2] = -32768
    assert np.abs(load_audio(full, 16000)).max() == pytest.approx(1.0, abs=1e-4)


def test_float_beyond_unit_range_is_peak_normalised_not_clipped() -> None:
    wav = load_audio(tone(sr=16000, amp=3.0), 16000)
    assert np.abs(wav).max() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(wav, tone(sr=16000, amp=1.0), atol=1e-5)  # shape kept (no clipping)


# ------------------------------------------------------------------------------------------------
# resampling
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000, 96000])
def test_resampling_keeps_frequency_and_length(sr: int) -> None:
    wav = load_audio(tone(sr=sr), sr)
    assert_tone(wav, amp_tol=0.01)


def test_resampler_suppresses_aliasing() -> None:
    """A 12 kHz tone is above the 8 kHz Nyquist of 16 kHz audio: a proper resampler removes it,
    naive decimation would fold it to 4 kHz."""
    wav = load_audio(tone(TONE_HZ) + tone(12000.0), SR_IN)
    freqs, mag = spectrum(wav)
    near = lambda f: mag[np.abs(freqs - f) < 20].max()  # noqa: E731
    assert near(TONE_HZ) > 1e4 * near(4000.0)


# ------------------------------------------------------------------------------------------------
# rejections
# ------------------------------------------------------------------------------------------------


def _raises(match: str, *args, **kwargs) -> None:
    with pytest.raises(AudioError, match=match):
        load_audio(*args, **kwargs)


def test_bad_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    _raises(r"empty \(0 bytes\)", empty)
    _raises(r"empty \(0 bytes\)", b"")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 50)
    _raises("not an audio file, or corrupt", text)
    buf = io.BytesIO()
    sf.write(buf, tone(), SR_IN, format="WAV")
    _raises("not an audio file, or corrupt", buf.getvalue()[:30])  # header cut off
    video_only = encode_with_av(tmp_path / "silent_film.mp4", tone()[None], SR_IN, "aac", "mono",
                                video=True, audio=False)
    _raises("video without an audio track", video_only)
    _raises("is a directory", tmp_path)
    with pytest.raises(FileNotFoundError, match="audio file not found"):
        load_audio(tmp_path / "missing.wav")
    zero_frames = tmp_path / "zero_frames.wav"
    sf.write(zero_frames, np.zeros(0, np.float32), 16000)
    _raises("no samples", zero_frames)


def test_bad_sample_values() -> None:
    wav = tone(sr=16000)
    for bad in (np.nan, np.inf, -np.inf):
        broken = wav.copy()
        broken[100] = bad
        _raises("NaN or infinite", broken, 16000)
    _raises(r"silent \(peak amplitude 0.00e\+00", np.zeros(16000, np.float32), 16000)
    _raises("silent", tone(sr=16000, amp=5e-5), 16000)
    assert load_audio(tone(sr=16000, amp=2e-4), 16000).shape == (16000,)  # quiet but audible is fine


def test_length_limits() -> None:
    _raises(r"too short: 533 samples.*534 samples", tone(sr=16000)[:MIN_SAMPLES - 1], 16000)
    assert load_audio(tone(sr=16000)[:MIN_SAMPLES], 16000).shape == (MIN_SAMPLES,)
    _raises("too short", tone(sr=SR_IN)[:1400], SR_IN)  # 31.7 ms at 44.1 kHz → 508 samples
    _raises(r"2.00 s long; the limit is 1.5 s", tone(sr=16000, seconds=2.0), 16000, max_seconds=1.5)
    assert len(load_audio(tone(sr=16000, seconds=2.0), 16000, max_seconds=2.0)) == 32000
    with pytest.raises(ValueError, match="max_seconds"):
        load_audio(tone(sr=16000), 16000, max_seconds=0)


def test_bad_arrays_and_arguments() -> None:
    wav = tone(sr=16000)
    _raises("unsupported sample dtype complex64", wav.astype(np.complex64), 16000)
    _raises("unsupported sample dtype object", wav.astype(object), 16000)
    _raises("unsupported sample dtype bool", wav > 0, 16000)
    _raises(r"1-D \(samples\) or 2-D.*shape \(1, 1, 16000\)", wav[None, None], 16000)
    _raises(r"shape \(\)", np.array(0.5, dtype=np.float32), 16000)
    _raises("cannot tell the channel axis", np.zeros((20, 16000), np.float32) + wav, 16000)
    _raises("sampling_rate is required", wav)
    _raises("needs a 'sampling_rate'", {"array": wav})
    _raises("positive integer", wav, -16000)
    _raises("positive integer", wav, 16000.5)
    _raises("expected 'array' or 'raw'", {"audio": wav})
    _raises("unsupported audio source of type list", [0.1, 0.2])


# ------------------------------------------------------------------------------------------------
# real speech
# ------------------------------------------------------------------------------------------------


def test_cmu_arctic_16k_is_read_exactly(assets: Path) -> None:
    path = assets / "speech" / "cmu_arctic" / "arctic_a0009.wav"
    ref, sr = sf.read(path, dtype="float32")
    assert sr == SAMPLING_RATE
    np.testing.assert_array_equal(load_audio(path), ref)
    np.testing.assert_array_equal(load_audio(path.read_bytes()), ref)


def test_emodb_22k_resampled_like_a_polyphase_reference(assets: Path) -> None:
    path = assets / "speech" / "emodb" / "13a02Nc.wav"
    raw, sr = sf.read(path, dtype="float64")
    assert sr == 22050
    wav = load_audio(path)
    assert len(wav) == round(len(raw) * SAMPLING_RATE / sr)
    ref = resample_poly(raw, 320, 441)  # 16000/22050 = 320/441
    corr = np.corrcoef(wav[: len(ref)], ref[: len(wav)])[0, 1]
    assert corr > 0.999
    # The phone labels say speech ends at 1.468 s: the resampled clip keeps that timing.
    end = 1.468092
    def rms(start: float, stop: float) -> float:
        return float(np.sqrt(np.mean(wav[int(start * SAMPLING_RATE): int(stop * SAMPLING_RATE)] ** 2)))

    assert rms(end + 0.1, end + 0.4) < 0.05 * rms(0.2, end)
