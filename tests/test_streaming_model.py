"""The bounded-look-ahead streaming mode (issue 13 point 2): masks in every layer, the look-ahead bound,
the slow emotion/style clock, the streaming animator, and the offline model left unchanged."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pestalk_hf import PESTalkConfig, PESTalkModel
from pestalk_hf.modeling.lookahead import StreamingContext, conv_taps_allowed, running_mean_within_chunks
from pestalk_hf.modeling.modeling_pestalk import (
    StreamingStyleTracker,
    streaming_chunk_ready_samples,
    streaming_receptive_field,
)
from pestalk_hf.streaming import (
    LookaheadStreamingAnimator,
    StreamingAnimator,
    make_streaming_animator,
    with_streaming_mode,
)

from .conftest import tiny_config_kwargs
from .test_modeling import randomise_outputs

REPO = Path(__file__).resolve().parents[1]
# The last commit before the streaming mode: with the mode off, the model must compute exactly what this
# commit's model code computes. Move it forward only when the offline model is changed on purpose.
PRE_STREAMING_COMMIT = "154187b"

MEL = dict(content_encoder_type="mel", use_temporal_stream=False, content_hidden_size=16, content_num_blocks=1,
           content_num_heads=2, mel_normalization="utterance", mel_level_feature=True)
SPEAKERS = ["a", "b"]


def make_model(seed: int = 0, **overrides) -> PESTalkModel:
    """Tiny mel model with non-zero outputs and a filled 2-speaker style library (so style matters)."""
    torch.manual_seed(seed)
    cfg = PESTalkConfig(**tiny_config_kwargs(**{**MEL, "style_speakers": SPEAKERS,
                                                "style_emotion_from_classifier": True,
                                                "style_confidence_full": 0.3, **overrides}))
    model = PESTalkModel(cfg).eval()
    randomise_outputs(model)
    g = torch.Generator().manual_seed(2)
    lib = model.style_library
    with torch.no_grad():
        lib.speaker_voiceprints.copy_(torch.randn(lib.speaker_voiceprints.shape, generator=g))
        lib.speaker_counts.fill_(1)
        lib.emotion_features.copy_(torch.randn(lib.emotion_features.shape, generator=g))
        lib.emotion_counts.fill_(1)
        # a classifier that varies with the input, so the style track has something to follow
        model.emotion_extractor.classifier.weight.mul_(20)
    return model


def speechlike(seconds: float, seed: int = 0) -> torch.Tensor:
    """Amplitude-modulated noise with pauses: (1, N)."""
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * 16000)
    t = torch.arange(n) / 16000
    envelope = (torch.sin(2 * torch.pi * 3.1 * t).clamp_min(0) + 0.2 * (t % 1.3 < 0.6)).float()
    return (torch.randn(n, generator=g) * envelope * 0.1)[None]


# ----------------------------------------------------------------------------------------- config
def test_streaming_config_validation_and_round_trip(tmp_path):
    with pytest.raises(ValueError, match="content_encoder_type='mel'"):
        PESTalkConfig(**tiny_config_kwargs(streaming_lookahead_frames=2))  # wav2vec2 content: no streaming mode
    with pytest.raises(ValueError, match="streaming_lookahead_frames"):
        PESTalkConfig(**tiny_config_kwargs(**MEL, streaming_lookahead_frames=-1))
    with pytest.raises(ValueError, match="streaming_emotion_hysteresis"):
        PESTalkConfig(**tiny_config_kwargs(**MEL, streaming_lookahead_frames=1, streaming_emotion_hysteresis=1.0))
    with pytest.raises(ValueError, match="mel_hop_length"):
        PESTalkConfig(**tiny_config_kwargs(**MEL, streaming_lookahead_frames=1, mel_hop_length=300))
    with pytest.raises(ValueError, match="streaming_mel_prior"):
        PESTalkConfig(**tiny_config_kwargs(**MEL, streaming_mel_prior=[0.0] * 3))
    with pytest.raises(ValueError, match="streaming_emotion_prior"):
        PESTalkConfig(**tiny_config_kwargs(**MEL, streaming_lookahead_frames=1, streaming_emotion_prior="calm"))
    model = make_model(streaming_lookahead_frames=2, streaming_left_context_frames=7)
    model.save_pretrained(tmp_path / "m")
    again = PESTalkModel.from_pretrained(tmp_path / "m").eval()
    assert (again.config.streaming_lookahead_frames, again.config.streaming_left_context_frames) == (2, 7)
    x = speechlike(1.5)
    with torch.no_grad():
        assert torch.allclose(again(x).blendshapes, model(x).blendshapes, atol=1e-6)


def test_receptive_field_arithmetic():
    cfg = make_model(streaming_lookahead_frames=2, streaming_left_context_frames=10,
                     streaming_mel_norm_frames=50).config
    rf = streaming_receptive_field(cfg)
    assert rf["lookahead_frames"] == 2 and rf["margin_samples"] == 200
    assert rf["max_lookahead_seconds"] == pytest.approx(2 / 30 + 200 / 16000)
    # 1 decoder layer × 10 + 1 encoder block × (10 + 7)
    assert (rf["decoder_left_frames"], rf["encoder_left_frames"], rf["left_frames"]) == (10, 17, 27)
    assert rf["encoder_left_samples"] == int(np.ceil(17 * 16000 / 30 + (5 + 49) * 160 + 200))
    # chunk 0 = frames 0..2: its last mel frame is centred before 3 frames (1600 samples): m = 9, + 200
    assert streaming_chunk_ready_samples(cfg, 0) == 9 * 160 + 200
    assert streaming_chunk_ready_samples(cfg, 16) == 169 * 160 + 200


def test_mask_helpers():
    ctx = StreamingContext(chunk=3, offset=1, left=2)
    assert ctx.frame_chunks(6).tolist() == [0, 0, 1, 1, 1, 2]
    allowed = ctx.attention_allowed(6)
    assert allowed[0].tolist() == [True, True, False, False, False, False]  # own chunk, nothing later
    assert allowed[4].tolist() == [False, False, True, True, True, False]  # left context 2
    taps = conv_taps_allowed(ctx.frame_chunks(6), 3)
    assert taps[1].tolist() == [True, True, False] and taps[2].tolist() == [True, True, True]
    values = torch.arange(6.0)[None, :, None]
    means = running_mean_within_chunks(values, ctx.frame_chunks(6), window=2)
    assert means[0, :, 0].tolist() == [0.5, 0.5, 3.5, 3.5, 3.5, 4.5]
    # a prior of 10 fills the window until 4 positions have been seen (Kaldi-style online CMN)
    means = running_mean_within_chunks(values, ctx.frame_chunks(6), 2, prior=torch.tensor([10.0]), prior_frames=4)
    assert means[0, :, 0].tolist() == [(0 + 1 + 2 * 10) / 4, (0 + 1 + 2 * 10) / 4, 3.5, 3.5, 3.5, 4.5]
    # … counted from the stream's start when the values are a window cut from later on
    later = running_mean_within_chunks(values, ctx.frame_chunks(6), 2, prior=torch.tensor([10.0]), prior_frames=4,
                                       first_position=1)
    assert later[0, 0, 0].item() == pytest.approx((0 + 1 + 1 * 10) / 3)


# ----------------------------------------------------------------------------------------- look-ahead bound
@pytest.mark.parametrize("lookahead,left", [(0, None), (2, None), (2, 5), (4, 12)])
def test_output_at_t_ignores_audio_after_its_chunk(lookahead: int, left: int | None):
    model = make_model(streaming_lookahead_frames=lookahead, streaming_left_context_frames=left,
                       streaming_mel_norm_frames=60, streaming_emotion_frames=20, streaming_style_update_frames=6)
    cfg = model.config
    x = speechlike(3.0)
    vp = torch.randn(1, cfg.voiceprint_dim)
    with torch.no_grad():
        base = model(x, voiceprint=vp)
    chunk = lookahead + 1
    for t in (4, 31, 57):
        c = t // chunk
        last = (c + 1) * chunk - 1  # frame t may read frames up to here
        assert last <= t + lookahead
        cut = streaming_chunk_ready_samples(cfg, c)
        assert cut <= np.ceil((t + lookahead + 1) * 16000 / 30) + cfg.mel_win_length // 2  # the documented bound
        altered = x.clone()
        altered[:, cut:] = torch.randn(altered.shape[1] - cut) * 0.3
        with torch.no_grad():
            out = model(altered, voiceprint=vp)
        assert torch.equal(out.blendshapes[:, : last + 1], base.blendshapes[:, : last + 1]), (t, lookahead)
        assert torch.equal(out.frame_emotion_logits[:, : last + 1], base.frame_emotion_logits[:, : last + 1])
        # the bound is tight: the sample before changes the chunk (it sits at the Hann window's edge, where
        # the window is ~6e-5: a large step makes the change visible in fp32)
        altered[:, cut - 1] += 100.0
        with torch.no_grad():
            out = model(altered, voiceprint=vp)
        assert not torch.equal(out.blendshapes[:, c * chunk: last + 1], base.blendshapes[:, c * chunk: last + 1])


def test_offline_model_sees_the_future_and_padding_stays_finite():
    """Control: the same perturbation does change earlier frames of the offline model; a padded batch in
    the streaming mode (whole attention windows of padding) gives finite outputs, equal to the clip alone."""
    offline = make_model()
    x = speechlike(3.0)
    altered = x.clone()
    altered[:, 40000:] = torch.randn(altered.shape[1] - 40000) * 0.3
    with torch.no_grad():
        assert not torch.equal(offline(x).blendshapes[:, :30], offline(altered).blendshapes[:, :30])
    model = make_model(streaming_lookahead_frames=2, streaming_left_context_frames=4)
    short = speechlike(0.8, seed=3)
    batch = torch.zeros(2, x.shape[1])
    batch[0], batch[1, : short.shape[1]] = x[0], short[0]
    mask = torch.zeros_like(batch, dtype=torch.long)
    mask[0], mask[1, : short.shape[1]] = 1, 1
    vp = torch.randn(2, model.config.voiceprint_dim)
    with torch.no_grad():
        out = model(batch, attention_mask=mask, voiceprint=vp)
        alone = model(short, voiceprint=vp[1:])
    assert torch.isfinite(out.blendshapes).all()
    # every chunk whose audio lies inside the short clip is the same as for the clip alone (the last one
    # reads the clip's end, where the STFT sees zero padding in the batch and reflection alone)
    complete = 0
    while streaming_chunk_ready_samples(model.config, complete) <= short.shape[1]:
        complete += 1
    t = complete * 3
    assert t >= 18
    assert torch.allclose(out.blendshapes[1, :t], alone.blendshapes[0, :t], atol=1e-5)


def test_default_model_unchanged_with_streaming_off(tmp_path, monkeypatch):
    """With ``streaming_lookahead_frames=None`` the shipped model computes bit for bit what the model code
    of the last pre-streaming commit computes (forward on a padded batch, and chunked long-audio animate,
    whose per-window feature buffer is set to fp32 here: fp16 storage is compared in test_modeling)."""
    import pestalk_hf

    files = ("__init__.py", "configuration_pestalk.py", "modeling_pestalk.py", "kan.py")
    pkg = tmp_path / "prestreaming_modeling"
    pkg.mkdir()
    for name in files:
        try:
            text = subprocess.run(["git", "show", f"{PRE_STREAMING_COMMIT}:modeling/{name}"], cwd=REPO,
                                  capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            pytest.skip(f"needs the git history (commit {PRE_STREAMING_COMMIT}) to rebuild the pre-streaming model code")
        (pkg / name).write_text(text)
    sys.path.insert(0, str(tmp_path))
    try:
        old_module = importlib.import_module("prestreaming_modeling.modeling_pestalk")
    finally:
        sys.path.remove(str(tmp_path))
    new = PESTalkModel.from_pretrained(pestalk_hf.DEFAULT_MODEL).eval()
    old = old_module.PESTalkModel.from_pretrained(pestalk_hf.DEFAULT_MODEL).eval()
    assert new.config.streaming_lookahead_frames is None
    x = torch.cat([speechlike(3.0, seed=1), speechlike(3.0, seed=2)])
    mask = torch.ones_like(x, dtype=torch.long)
    mask[1, 30000:] = 0
    vp = torch.nn.functional.normalize(torch.randn(2, new.config.voiceprint_dim), dim=-1)
    with torch.no_grad():
        a, b = new(x, attention_mask=mask, voiceprint=vp), old(x, attention_mask=mask, voiceprint=vp)
        assert torch.equal(a.blendshapes, b.blendshapes) and torch.equal(a.emotion_logits, b.emotion_logits)
        long = speechlike(23.0, seed=4)[0]
        monkeypatch.setattr(importlib.import_module(PESTalkModel.__module__), "_feature_store_dtype", lambda d: d)
        assert torch.equal(new.animate(long, vp[0]).blendshapes, old.animate(long, vp[0]).blendshapes)
        # and the streaming mode really is a different computation on the same weights
        streamed = with_streaming_mode(new, 2, 30)
        assert not torch.equal(streamed(x[:1], voiceprint=vp[:1]).blendshapes, a.blendshapes[:1])
    assert new.config.streaming_lookahead_frames is None  # with_streaming_mode left the original alone


# ----------------------------------------------------------------------------------------- emotion/style clock
def test_style_tracker_holds_an_emotion_through_flicker_and_follows_a_real_change():
    model = make_model(streaming_lookahead_frames=2, streaming_emotion_frames=3, streaming_style_update_frames=3,
                       streaming_style_fade_frames=6, streaming_emotion_smoothing=1.0, num_mel_bins=16)
    cfg = model.config
    f = cfg.feature_size
    with torch.no_grad():  # classifier: emotion k's logit = 4 · E[k]
        model.emotion_extractor.classifier.weight.zero_()
        model.emotion_extractor.classifier.bias.zero_()
        for k in range(cfg.num_emotions):
            model.emotion_extractor.classifier.weight[k, k] = 4.0

    def frames(k_lead: int, k_other: int, margin: float) -> torch.Tensor:
        e = torch.zeros(1, 3, f)
        e[..., k_lead], e[..., k_other] = 1.0 + margin, 1.0
        return e

    def feed(hysteresis: float) -> list[int]:
        cfg.streaming_emotion_hysteresis = hysteresis
        tracker = StreamingStyleTracker(model)
        held, styles = [], []
        # emotions 1 and 2 trade the lead by a small margin every chunk, then 3 leads clearly
        sequence = [frames(1 + c % 2, 2 - c % 2, 0.05) for c in range(8)] + [frames(3, 1, 1.0)] * 4
        for c, e in enumerate(sequence):
            styles.append(tracker.step(c, e))
            held.append(int(tracker.held))
        track = torch.cat(styles, 1)[0]
        steps = (track[1:] - track[:-1]).norm(dim=-1)
        jumps = [(track[i] - track[i - 1]).norm() for i in range(1, track.shape[0])]
        assert max(jumps) <= steps.sum() / 2 + 1e-6  # cross-faded: no single frame carries a switch
        return held

    plain, hysteresis = feed(0.0), feed(0.15)
    assert len(set(plain[:8])) == 2  # plain arg-max flickers between 1 and 2 …
    assert len(set(hysteresis[:8])) == 1  # … hysteresis holds one
    assert hysteresis[-1] == 3 and plain[-1] == 3  # a clear, sustained change is followed
    # the stream starts from the prior emotion (neutral): a first estimate from a few frames does not decide
    cfg.streaming_emotion_smoothing, cfg.streaming_emotion_hysteresis = 0.25, 0.15
    tracker = StreamingStyleTracker(model)
    tracker.step(0, frames(1, 2, 0.05))
    assert int(tracker.held) == cfg.emotions.index("neutral") and tracker.probabilities[0, 1] < 0.2
    for c in range(1, 12):  # … but sustained evidence does
        tracker.step(c, frames(1, 2, 0.05))
    assert int(tracker.held) == 1


# ----------------------------------------------------------------------------------------- streaming animator
def streaming_tiny(**overrides) -> PESTalkModel:
    # a mel prior that still weighs after the window has slid (400 mel frames = 4 s)
    prior = torch.linspace(-8.0, -3.0, 16).tolist()
    return make_model(**{**dict(streaming_lookahead_frames=2, streaming_left_context_frames=6,
                                streaming_mel_norm_frames=40, streaming_emotion_frames=30,
                                streaming_style_update_frames=9, streaming_mel_prior=prior,
                                streaming_mel_prior_frames=400), **overrides})


def run_animator(animator, audio: np.ndarray, sizes=(700, 1600, 3100, 16, 2400)) -> np.ndarray:
    out, start, i = [], 0, 0
    while start < len(audio):
        n = sizes[i % len(sizes)]
        out.append(animator.push(audio[start:start + n]))
        start, i = start + n, i + 1
    out.append(animator.flush())
    return np.concatenate(out)


@pytest.mark.parametrize("lookahead", [0, 2, 3])
def test_lookahead_animator_equals_the_full_clip_forward(lookahead: int):
    """Pushing a 6 s clip in ragged chunks gives the frames of one forward over the whole clip (same mode,
    same voiceprint), although the animator keeps only about its receptive field of audio."""
    model = streaming_tiny(streaming_lookahead_frames=lookahead)
    audio = speechlike(6.0, seed=5)
    vp = torch.randn(model.config.voiceprint_dim)
    with torch.no_grad():
        full = model(audio, voiceprint=vp[None]).blendshapes[0].numpy()
    animator = LookaheadStreamingAnimator(model, voiceprint=vp)
    streamed = run_animator(animator, audio[0].numpy())
    assert streamed.shape == full.shape
    # fp32 noise only (the STFT of a different window length), amplified by the tiny random model; a window
    # one frame too short is off by > 1e-2 (next test)
    np.testing.assert_allclose(streamed, full, atol=5e-4)
    assert animator.buffer_start >= 3 * 16000  # the window slid: the receptive-field arithmetic was exercised
    assert animator.emotion in model.config.emotions and abs(sum(animator.emotion_probabilities.values()) - 1) < 1e-5


@pytest.mark.parametrize(("part", "less"), [("front_end_left_samples", 1600), ("emotion", 1), ("content", 1),
                                            ("lower", 1), ("upper", 1)])
def test_a_window_one_frame_too_short_breaks_the_equality(part: str, less: int):
    """Control for the test above: what the animator keeps matters. 0.1 s of audio less for the mel front
    ends (the window is cut on whole seconds, so smaller cuts often leave it where it was), or the layer caches
    of one stack (Φ_E's or Φ_C's Conformer blocks, either decoder) keeping one attention frame less, change
    frames."""
    model = streaming_tiny()
    audio = speechlike(6.0, seed=5)
    vp = torch.randn(model.config.voiceprint_dim)
    with torch.no_grad():
        full = model(audio, voiceprint=vp[None]).blendshapes[0].numpy()
    animator = LookaheadStreamingAnimator(model, voiceprint=vp)
    if part != "front_end_left_samples":
        push = animator.push

        def forgetful_push(chunk):
            for cache in animator._layer_cache[part]:
                if cache.keys is not None:  # (1, frames, d) in a Conformer block, (1, heads, frames, d) in a decoder
                    cache.keys = cache.keys[..., less:, :]
                    if getattr(cache, "values", None) is not None:
                        cache.values = cache.values[..., less:, :]
            return push(chunk)

        animator.push = forgetful_push
    else:
        animator.field = {**animator.field, part: animator.field[part] - less}
    assert np.abs(run_animator(animator, audio[0].numpy()) - full).max() > 1e-2


@pytest.mark.parametrize("kan", [True, False])
def test_cached_conformer_block_step_equals_the_masked_block(kan: bool):
    """kan.conformer_block_step on whole chunks (ragged counts, then a short last chunk) = the block's masked
    forward over the whole sequence: the cache holds exactly what later chunks read."""
    from pestalk_hf.modeling.kan import ConformerBlockCache, KANConformerBlock, conformer_block_step
    from pestalk_hf.modeling.lookahead import StreamingContext

    torch.manual_seed(0)
    block = KANConformerBlock(16, 4, 7, 2, 5, 3, 0.0, kan=kan).eval()
    stream = StreamingContext(chunk=3, left=5)
    x = torch.randn(1, 40, 16)
    with torch.no_grad():
        full = block(x, torch.ones(1, 40, dtype=torch.bool), stream)
        cache, outs, start = ConformerBlockCache(), [], 0
        for n in (3, 6, 3, 9, 3, 12, 3, 1):
            outs.append(conformer_block_step(block, x[:, start:start + n], cache, stream))
            start += n
    assert start == 40 and cache.next_frame == 40 and cache.keys.shape[1] == 5 and cache.conv.shape[-1] == 3
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=2e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="bounded left"):
        conformer_block_step(block, x[:, :3], ConformerBlockCache(), StreamingContext(chunk=3))


def test_frames_leave_as_soon_as_their_chunk_is_ready():
    model = streaming_tiny()
    cfg = model.config
    animator = LookaheadStreamingAnimator(model, voiceprint=torch.randn(cfg.voiceprint_dim))
    audio = speechlike(2.0)[0].numpy()
    ready = streaming_chunk_ready_samples(cfg, 5)  # chunk 5 = frames 15..17
    got = animator.push(audio[: ready - 1])
    assert animator.emitted == 15 and len(got) == 15  # chunks 0..4 only
    got = animator.push(audio[ready - 1: ready])  # the one sample chunk 5 was waiting for
    assert len(got) == 3 and animator.emitted == 18
    # latency budget of a frame beyond its own end: ≤ L frames + 12.5 ms
    assert (ready - 18 * 16000 / 30) / 16000 <= 2 / 30 + 200 / 16000
    with pytest.raises(ValueError, match="NaN"):
        animator.push(np.array([np.nan], dtype=np.float32))


def test_factory_modes_and_errors():
    offline = make_model()
    assert isinstance(make_streaming_animator(offline, mode="offline-window"), StreamingAnimator)
    animator = make_streaming_animator(offline, mode="lookahead", lookahead_frames=1, left_context_frames=8)
    assert isinstance(animator, LookaheadStreamingAnimator) and animator.lookahead_frames == 1
    assert offline.config.streaming_lookahead_frames is None  # a copy was put in the mode
    assert animator.model.style_library.emotion_counts.sum() > 0  # with the weights and the library
    with pytest.raises(ValueError, match="lookahead_frames"):
        make_streaming_animator(offline, mode="lookahead")
    with pytest.raises(ValueError, match="mode must be"):
        make_streaming_animator(offline, mode="fast")
    with pytest.raises(ValueError, match="unbounded"):
        make_streaming_animator(offline, mode="lookahead", lookahead_frames=2, left_context_frames=None)
    approx = make_streaming_animator(offline, mode="lookahead", lookahead_frames=2, left_context_frames=None,
                                     context_seconds=2)
    out = run_animator(approx, speechlike(3.0)[0].numpy())
    assert out.shape == (90, 52) and np.isfinite(out).all()
    with pytest.raises(TypeError, match="unexpected"):
        make_streaming_animator(offline, mode="lookahead", lookahead_frames=2, smoothing=0.3)


# ----------------------------------------------------------------------------------------- fine-tuning
def test_streaming_mode_trains_and_fine_tunes_from_saved_weights(tmp_path):
    """The masks pass gradients (train mode: teacher-forced style), and training.build_model starts from
    saved weights with the streaming fields set (the fine-tune recipe of configs/default_stream.yaml)."""
    from pestalk_hf.training import TrainingConfig, build_model

    offline = make_model()
    offline.save_pretrained(tmp_path / "base")
    cfg = TrainingConfig(dataset="unused", output_dir=str(tmp_path / "run"), base_model=str(tmp_path / "base"),
                         model={"streaming_lookahead_frames": 2, "streaming_left_context_frames": 6})
    model = build_model(cfg)
    assert model.config.streaming_lookahead_frames == 2
    for (name, p), q in zip(model.state_dict().items(), offline.state_dict().values()):
        assert torch.equal(p, q), name
    model.train()
    out = model(speechlike(2.0).repeat(2, 1), labels=torch.rand(2, 60, 52), emotion_labels=torch.tensor([0, 1]),
                speaker_ids=torch.tensor([0, 1]))
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.content_encoder.frames.front[0].weight.grad.abs().sum() > 0
    bad = TrainingConfig(dataset="unused", output_dir=str(tmp_path / "run"), base_model=str(tmp_path / "base"),
                         model={"streaming_lookahead_frames": -3})
    with pytest.raises(ValueError, match="streaming_lookahead_frames"):
        build_model(bad)


def test_cached_decoder_step_equals_the_masked_decoder():
    """StyleGuidedDecoder.step chunk by chunk = its masked forward over the whole sequence (ALiBi on absolute
    frame distances, keys and values of at most `left` frames cached per layer)."""
    from pestalk_hf.modeling.modeling_pestalk import DecoderLayerCache, StyleGuidedDecoder

    torch.manual_seed(0)
    model = streaming_tiny()
    cfg = model.config
    decoder = StyleGuidedDecoder(12, 7, cfg).eval()
    torch.nn.init.normal_(decoder.output.weight)  # zero-initialised output: make the test see the layers
    stream = StreamingContext.from_config(cfg)
    x = torch.randn(1, 45, 12)
    with torch.no_grad():
        full = decoder(x, torch.ones(1, 45, dtype=torch.bool), 0, stream)
        caches, outs, start = [DecoderLayerCache() for _ in decoder.layers], [], 0
        for n in (3, 9, 3, 6, 3, 3, 12, 6):
            outs.append(decoder.step(x[:, start:start + n], caches, stream))
            start += n
    assert start == 45 and all(c.next_frame == 45 and c.keys.shape[2] == cfg.streaming_left_context_frames
                               for c in caches)
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=2e-5, rtol=1e-5)
