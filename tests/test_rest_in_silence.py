"""The mouth at rest in silence (:mod:`pestalk_hf.postprocess`): quiet-frame detection on hand-built
signals with known pauses, the gate's shape, and the pipeline/model wiring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import pipeline

from pestalk_hf import ARKIT_BLENDSHAPE_NAMES
from pestalk_hf.modeling.configuration_pestalk import DEFAULT_LOWER_FACE_NAMES
from pestalk_hf.postprocess import quiet_frames, rest_in_silence, silence_gate

from .test_pipeline import speech_like, tiny_model_dir  # noqa: F401  (fixture)

SR, FPS = 16000, 30
LOWER = [ARKIT_BLENDSHAPE_NAMES.index(n) for n in DEFAULT_LOWER_FACE_NAMES]
UPPER = [i for i in range(52) if i not in LOWER]


def talk_pause_talk(pause_s: float = 0.6, noise_db: float | None = None, seed: int = 0) -> np.ndarray:
    """1 s of syllable-like tone, ``pause_s`` of silence (digital zero, or white noise ``noise_db`` dBFS
    throughout the clip), 1 s of tone."""
    rng = np.random.default_rng(seed)
    talk = speech_like(1.0, seed=seed)
    x = np.concatenate([talk, np.zeros(int(pause_s * SR), np.float32), speech_like(1.0, seed=seed + 1)])
    if noise_db is not None:
        x = x + (10 ** (noise_db / 20) * rng.standard_normal(len(x))).astype(np.float32)
    return x


def frames_of(start_s: float, stop_s: float) -> slice:
    return slice(int(np.ceil(start_s * FPS)), int(stop_s * FPS))


@pytest.mark.parametrize("noise_db", [None, -70.0, -50.0])
def test_quiet_frames_find_the_pause_and_nothing_else(noise_db):
    x = talk_pause_talk(0.6, noise_db)
    q = quiet_frames(x, len(x) * FPS // SR)
    # the pause is 1.0–1.6 s; 50 ms windows may reach speech within 25 ms of its edges
    assert q[frames_of(1.05, 1.55)].all()
    assert not q[frames_of(0.0, 0.97)].any() and not q[frames_of(1.63, 2.6)].any()


def test_noise_throughout_is_not_silence():
    """At 5 dB SNR the pause is as loud as the noise under the speech is: the level range is too small to
    tell, so nothing is gated (the model's own curves stay) instead of gating quiet speech."""
    x = talk_pause_talk(0.6, noise_db=-20.0)
    assert not quiet_frames(x, len(x) * FPS // SR).any()


def test_a_quiet_talker_is_not_silence():
    """Level is relative to the clip: speech at -60 dBFS with a quieter pause is still speech."""
    x = talk_pause_talk(0.6) * np.float32(10 ** (-45 / 20))
    q = quiet_frames(x, len(x) * FPS // SR)
    assert not q[frames_of(0.0, 0.97)].any() and q[frames_of(1.05, 1.55)].all()


def test_silence_gate_shape():
    quiet = np.zeros(30, bool)
    quiet[2:5] = True  # 3 frames: shorter than min_frames, ignored
    quiet[10:20] = True
    gate = silence_gate(quiet, min_frames=5, ramp_frames=2)
    assert not gate[:10].any() and not gate[20:].any()
    np.testing.assert_allclose(gate[10:20], [1 / 3, 2 / 3, 1, 1, 1, 1, 1, 1, 2 / 3, 1 / 3], rtol=1e-6)
    assert silence_gate(np.zeros(0, bool), 5).shape == (0,)
    assert silence_gate(np.ones(4, bool), 5).sum() == 0


def test_rest_in_silence_moves_only_the_lower_face_and_only_in_the_pause():
    x = talk_pause_talk(0.6)
    T = len(x) * FPS // SR
    rng = np.random.default_rng(0)
    weights = rng.uniform(0.2, 0.8, (T, 52)).astype(np.float32)
    rest = np.full(52, 0.03, np.float32)
    out = rest_in_silence(weights, x, rest)
    inner = frames_of(1.15, 1.45)
    np.testing.assert_allclose(out[inner][:, LOWER], 0.03, atol=1e-6)
    np.testing.assert_array_equal(out[:, UPPER], weights[:, UPPER])  # emotion and blinks untouched
    np.testing.assert_array_equal(out[frames_of(0.0, 0.97)], weights[frames_of(0.0, 0.97)])
    np.testing.assert_array_equal(out[frames_of(1.63, 2.6)], weights[frames_of(1.63, 2.6)])
    # a pause shorter than min_seconds keeps the model's curves
    short = talk_pause_talk(0.1)
    w = weights[: len(short) * FPS // SR]
    np.testing.assert_array_equal(rest_in_silence(w, short, rest), w)
    with pytest.raises(ValueError, match="channels"):
        rest_in_silence(weights, x, rest[:51])


def test_int16_and_float_audio_gate_alike():
    x = talk_pause_talk(0.6, noise_db=-60.0)
    pcm = np.round(x * 32768).clip(-32768, 32767).astype(np.int16)
    T = len(x) * FPS // SR
    np.testing.assert_array_equal(quiet_frames(x, T), quiet_frames(pcm, T))


def test_model_silence_pose_is_its_face_on_silence(tiny_model_dir):  # noqa: F811
    from pestalk_hf import PESTalkModel

    model = PESTalkModel.from_pretrained(tiny_model_dir).eval()
    vp = torch.randn(256, generator=torch.Generator().manual_seed(3))
    forced = dict(force_emotion=2, force_speaker=1)  # the same style for the clip and for the silence
    with torch.no_grad():
        out = model.animate(torch.from_numpy(speech_like(2.0)), vp, return_silence_pose=True, **forced)
        zeros = model.animate(torch.zeros(SR), vp, **forced).blendshapes[0]
        assert model.animate(torch.from_numpy(speech_like(1.0)), vp).silence_pose is None
    assert out.silence_pose.shape == (1, 52)
    # animate() keeps E and C in fp16 between its two passes (≤ 2^-11 relative); silence_pose() does not
    torch.testing.assert_close(out.silence_pose[0], zeros.median(dim=0).values, atol=2e-3, rtol=0)


def test_pipeline_rests_the_mouth_in_pauses_by_default(tiny_model_dir):  # noqa: F811
    pipe = pipeline("audio-to-blendshape", model=str(tiny_model_dir))
    audio = {"array": talk_pause_talk(0.8, noise_db=-65.0), "sampling_rate": SR}
    on, off = pipe(audio), pipe(audio, rest_in_silence=False)
    inner, speech = frames_of(1.15, 1.65), frames_of(0.0, 0.95)
    np.testing.assert_array_equal(on.weights[:, UPPER], off.weights[:, UPPER])
    np.testing.assert_array_equal(on.weights[speech], off.weights[speech])
    assert not np.allclose(on.weights[inner][:, LOWER], off.weights[inner][:, LOWER], atol=1e-3)
    # in the pause the lower face holds one pose: the model's silence pose for this clip's style
    assert np.ptp(on.weights[inner][:, LOWER], axis=0).max() < 1e-6
    with pytest.raises(TypeError, match="rest_in_silence"):
        pipe(audio, rest_in_silence="yes")


def test_streaming_rest_in_silence_is_causal_and_rests_in_the_pause(tiny_model_dir):  # noqa: F811
    from pestalk_hf import PESTalkModel
    from pestalk_hf.streaming import RestInSilenceStream, StreamingAnimator

    model = PESTalkModel.from_pretrained(tiny_model_dir).eval()
    rng = np.random.default_rng(5)
    # 1.5 s of talk (past the 1 s warm-up), 1 s of -65 dBFS noise, 1 s of talk
    x = np.concatenate([speech_like(1.5, seed=3), np.zeros(SR, np.float32), speech_like(1.0, seed=4)])
    x = x + (10 ** (-65 / 20) * rng.standard_normal(len(x))).astype(np.float32)
    blocks = np.array_split(x, len(x) // 160)  # 10 ms blocks, as pestalk live pushes them
    plain, wrapped = StreamingAnimator(model, None), RestInSilenceStream(StreamingAnimator(model, None))
    a = np.concatenate([plain.push(b) for b in blocks] + [plain.flush()])
    b = np.concatenate([wrapped.push(b) for b in blocks] + [wrapped.flush()])
    assert a.shape == b.shape == (len(x) * FPS // SR, 52)
    assert wrapped.voiceprint is None and wrapped.forward_params == plain.forward_params  # attributes pass through
    np.testing.assert_array_equal(b[:, UPPER], a[:, UPPER])
    talk = np.r_[0:int(1.45 * FPS), int(2.55 * FPS):len(a)]
    np.testing.assert_array_equal(b[talk], a[talk])
    # the first 0.15 s of quiet keep the model's face (a stream cannot know the quiet will last) …
    start = int(np.ceil(1.525 * FPS))
    np.testing.assert_array_equal(b[start:start + 3], a[start:start + 3])
    # … then the lower face holds the model's silence pose until speech resumes
    with torch.no_grad():
        rest = model.animate(torch.zeros(SR), None, return_silence_pose=True).silence_pose[0].numpy()
    hold = slice(int(1.85 * FPS), int(2.4 * FPS))
    np.testing.assert_allclose(b[hold][:, LOWER], np.broadcast_to(rest[LOWER], b[hold][:, LOWER].shape), atol=1e-6)
    assert not np.allclose(a[hold][:, LOWER], b[hold][:, LOWER], atol=1e-3)
