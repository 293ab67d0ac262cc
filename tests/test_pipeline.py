"""``pipeline("audio-to-blendshape")``: every input kind, the user controls, streaming."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import pipeline

import pestalk_hf
from pestalk_hf import PESTalkConfig, PESTalkModel
from pestalk_hf.animation import BlendshapeAnimation
from pestalk_hf.audio import AudioError

from .conftest import tiny_config_kwargs
from .test_modeling import randomise_outputs

EMOTIONS = list(pestalk_hf.MEAD_EMOTIONS)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A tiny PESTalk with a 2-speaker style library, 256-d voiceprints (the offline backend)."""
    torch.manual_seed(0)
    model = PESTalkModel(PESTalkConfig(**tiny_config_kwargs(voiceprint_dim=256, style_speakers=["ann", "bob"]))).eval()
    randomise_outputs(model)
    g = torch.Generator().manual_seed(0)
    for spk in range(2):
        for emo in range(len(EMOTIONS)):
            model.update_style_library(
                torch.tensor([spk]), torch.tensor([emo]), torch.randn(1, 16, generator=g), torch.randn(1, 256, generator=g)
            )
    path = tmp_path_factory.mktemp("tiny_pestalk")
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return pipeline("audio-to-blendshape", model=str(tiny_model_dir))


def speech_like(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    return (0.2 * envelope * np.sin(2 * np.pi * 180 * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def check_animation(anim: BlendshapeAnimation, seconds: float) -> None:
    assert isinstance(anim, BlendshapeAnimation)
    assert anim.weights.shape == (math.ceil(seconds * 30 - 1e-9), 52)
    assert anim.weights.min() >= 0 and anim.weights.max() <= 1 and anim.fps == 30
    assert sum(anim.emotion_probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert set(anim.emotion_probabilities) == set(EMOTIONS)
    assert anim.style["speaker"] in ("ann", "bob") and anim.style["emotion"] in EMOTIONS


def test_every_input_kind(pipe, tmp_path, assets):
    wav_path = assets / "speech" / "cmu_arctic" / "arctic_a0009.wav"
    seconds = sf.info(wav_path).frames / sf.info(wav_path).samplerate
    check_animation(pipe(str(wav_path)), seconds)
    check_animation(pipe(wav_path.read_bytes()), seconds)
    audio = speech_like(1.5, sr=44100)
    check_animation(pipe(audio, sampling_rate=44100), 1.5)
    check_animation(pipe({"array": audio, "sampling_rate": 44100}), 1.5)
    stereo = np.stack([audio, audio], axis=1)
    buf = io.BytesIO()
    sf.write(buf, stereo, 44100, format="FLAC")
    check_animation(pipe(buf.getvalue()), 1.5)
    batch = pipe([str(wav_path), {"array": speech_like(0.5), "sampling_rate": 16000}])
    assert len(batch) == 2
    check_animation(batch[1], 0.5)


def test_same_audio_same_animation_and_input_kinds_agree(pipe):
    audio = speech_like(1.0)
    a = pipe(audio, sampling_rate=16000)
    b = pipe({"array": audio, "sampling_rate": 16000})
    assert np.array_equal(a.weights, b.weights)


def test_controls(pipe):
    audio = {"array": speech_like(2.0, seed=1), "sampling_rate": 16000}
    base = pipe(audio)
    forced = pipe(audio, emotion="angry", speaker_style="bob")
    assert forced.style["emotion"] == "angry" and forced.style["speaker"] == "bob"
    assert not np.allclose(forced.weights, base.weights)
    zero = pipe(audio, emotion="angry", speaker_style="bob", intensity=0.0)
    full = pipe(audio, emotion="angry", speaker_style="bob", intensity=1.0)
    assert np.allclose(full.weights, forced.weights, atol=1e-5) and not np.allclose(zero.weights, full.weights, atol=1e-3)
    smoothed = pipe(audio, smoothing=2.0)
    jitter = lambda w: np.abs(np.diff(w, axis=0)).mean()  # noqa: E731
    assert jitter(smoothed.weights) < jitter(base.weights)
    blinking = pipe({"array": speech_like(8.0, seed=2), "sampling_rate": 16000}, blinks=True)
    blink = blinking.weights[:, pestalk_hf.ARKIT_BLENDSHAPE_NAMES.index("eyeBlinkLeft")]
    assert blink.max() > 0.95  # at least one full blink in 8 s
    soft = pipe(audio, style_top_k=4)
    assert soft.weights.shape == base.weights.shape


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(emotion="ecstatic"), "unknown emotion 'ecstatic'.*neutral"),
        (dict(speaker_style="zoe"), "unknown library speaker 'zoe'.*ann, bob"),
        (dict(intensity=3.0), "intensity"),
        (dict(intensity=float("nan")), "intensity"),
        (dict(smoothing=-1), "smoothing"),
        (dict(style_top_k=0), "style_top_k"),
    ],
)
def test_bad_controls_raise_clear_errors(pipe, params, message):
    with pytest.raises(ValueError, match=message):
        pipe({"array": speech_like(0.5), "sampling_rate": 16000}, **params)


def test_bad_audio_raises_audio_error(pipe):
    with pytest.raises(AudioError, match="silen"):
        pipe({"array": np.zeros(16000, np.float32), "sampling_rate": 16000})
    with pytest.raises(AudioError, match="NaN"):
        pipe({"array": np.full(16000, np.nan, np.float32), "sampling_rate": 16000})
    with pytest.raises(AudioError):
        pipe(b"this is not audio at all")
    with pytest.raises(AudioError, match="long"):
        pipe({"array": speech_like(3.0), "sampling_rate": 16000}, max_seconds=2.0)


def test_long_audio_is_windowed(pipe):
    """Longer than the config's 20 s window: processed in overlapping windows, full length out."""
    anim = pipe({"array": speech_like(45.0, seed=3), "sampling_rate": 16000})
    assert anim.weights.shape == (1350, 52)


def test_streaming_matches_offline_and_bounds_latency(pipe):
    audio = speech_like(6.0, seed=4)
    chunk = 1600  # 100 ms chunks
    received, pending = 0, []
    frames = []
    for out in pipe.stream(np.split(audio, len(audio) // chunk), sampling_rate=16000, lookahead_seconds=0.3):
        frames.append(out)
    streamed = np.concatenate(frames)
    assert streamed.shape == (180, 52)
    # latency: after each push, frames older than lookahead + one chunk have been emitted
    from pestalk_hf.streaming import StreamingAnimator

    animator = StreamingAnimator(pipe.model, pipe.voiceprint_backend, lookahead_seconds=0.3)
    for piece in np.split(audio, len(audio) // chunk):
        got = animator.push(piece)
        received += len(got)
        pending.append(math.floor(animator.total * 30 / 16000) - received)
    assert max(pending) <= math.ceil(0.3 * 30) + 1
    # streamed frames follow the offline animation closely (same model; shorter context per window)
    offline = pipe({"array": audio, "sampling_rate": 16000}).weights
    assert np.abs(streamed - offline).mean() < 0.1


def test_pushed_folder_gives_the_pipeline_through_trust_remote_code(tiny_model_dir, tmp_path):
    """A folder prepared for the Hub: `pipeline(task, model=folder, trust_remote_code=True)` in a fresh
    interpreter that never imported pestalk_hf (the package must be installed, not imported)."""
    import subprocess
    import sys
    import textwrap

    from pestalk_hf.hub import save_for_hub

    folder = save_for_hub(PESTalkModel.from_pretrained(tiny_model_dir), tmp_path / "hub")
    script = textwrap.dedent(f"""
        import sys, numpy as np
        from transformers import pipeline
        assert "pestalk_hf" not in sys.modules
        pipe = pipeline("audio-to-blendshape", model={str(folder)!r}, trust_remote_code=True)
        t = np.arange(16000) / 16000
        anim = pipe({{"array": (0.2 * np.sin(2 * np.pi * 200 * t)).astype("float32"), "sampling_rate": 16000}})
        print(type(pipe).__name__, anim.weights.shape)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "AudioToBlendshapePipeline (30, 52)" in proc.stdout


def test_int8_pipeline_stays_close_to_fp32(tiny_model_dir):
    from pestalk_hf.pipeline import load_pipeline

    audio = {"array": speech_like(2.0, seed=5), "sampling_rate": 16000}
    fp32 = load_pipeline(str(tiny_model_dir))(audio).weights
    int8 = load_pipeline(str(tiny_model_dir), int8=True)
    assert any("quantized" in type(m).__module__ for m in int8.model.modules())
    assert np.abs(int8(audio).weights - fp32).mean() < 0.05


def test_bf16_pipeline_runs_and_stays_close_to_fp32(tiny_model_dir):
    """``dtype=torch.bfloat16`` (how GPU users load it) — the float32 audio and voiceprint are cast to the
    model's dtype at the model boundary."""
    import torch

    from pestalk_hf.pipeline import load_pipeline

    audio = {"array": speech_like(2.0, seed=5), "sampling_rate": 16000}
    fp32 = load_pipeline(str(tiny_model_dir))(audio).weights
    pipe = load_pipeline(str(tiny_model_dir), dtype=torch.bfloat16)
    assert pipe.model.dtype == torch.bfloat16
    bf16 = pipe(audio).weights
    assert bf16.dtype == fp32.dtype and bf16.shape == fp32.shape
    assert np.abs(bf16 - fp32).mean() < 0.02
