"""The from-scratch configuration (issue 14 point 6) and the inference style policy (point 3):
log-mel content stream, no wav2vec2, per-clip mel normalisation, class-weighted L_cls, style emotion
from the classifier, fallback towards neutral when unsure."""

from __future__ import annotations

import pytest
import torch

from pestalk_hf import PESTalkConfig, PESTalkModel
from pestalk_hf.modeling.modeling_pestalk import normalize_log_mel

from .conftest import tiny_config_kwargs
from .test_modeling import filled_library, randomise_outputs

MEL = dict(content_encoder_type="mel", use_temporal_stream=False, content_hidden_size=16, content_num_blocks=1,
           content_num_heads=2, mel_normalization="utterance")


def make_mel_model(**overrides) -> PESTalkModel:
    torch.manual_seed(0)
    return PESTalkModel(PESTalkConfig(**tiny_config_kwargs(**{**MEL, **overrides}))).eval()


def test_mel_model_has_no_wav2vec2_and_trains_every_part(tmp_path):
    model = make_mel_model()
    assert not any("wav2vec2" in n for n, _ in model.named_parameters())
    randomise_outputs(model)  # zero-initialised output layers pass no gradient back at step 0
    model.train()
    x = torch.randn(2, 16000) * 0.1
    out = model(x, labels=torch.rand(2, 30, 52), emotion_labels=torch.tensor([0, 1]))
    out.loss.backward()
    for part in (model.content_encoder, model.emotion_extractor):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads)
    # the conv front end of the content stream learns (it is what wav2vec2's frozen random convs could not)
    assert model.content_encoder.frames.front[0].weight.grad.abs().sum() > 0
    model.save_pretrained(tmp_path / "m")
    again = PESTalkModel.from_pretrained(tmp_path / "m").eval()
    model.eval()
    with torch.no_grad():
        assert torch.allclose(again(x).content_features, model(x).content_features, atol=1e-6)


def test_utterance_mel_normalisation_removes_a_gain_change():
    mel = torch.randn(2, 50, 8)
    lengths = torch.tensor([50, 30])
    shifted = mel + 3.0  # a 3-nepers gain change is a constant offset in log-mel
    a, b = normalize_log_mel(mel, lengths), normalize_log_mel(shifted, lengths)
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a[1, :30].mean(0), torch.zeros(8), atol=1e-5) and a[1, 30:].abs().max() == 0
    model = make_mel_model()
    x = torch.randn(1, 16000) * 0.05
    with torch.no_grad():
        quiet, loud = model(x).content_features, model(x * 4.0).content_features
    assert torch.allclose(quiet, loud, atol=1e-3)
    plain = make_mel_model(mel_normalization="none")
    with torch.no_grad():
        assert not torch.allclose(plain(x).content_features, plain(x * 4.0).content_features, atol=1e-3)


def test_emotion_class_weights_weight_the_classification_loss():
    x = torch.randn(2, 16000) * 0.1
    labels = torch.tensor([0, 1])
    plain = make_mel_model(emotions=["neutral", "happy", "sad"])
    weighted = make_mel_model(emotions=["neutral", "happy", "sad"], emotion_class_weights=[1.0, 3.0, 1.0])
    weighted.load_state_dict(plain.state_dict())
    logits = plain(x).emotion_logits
    per_clip = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    expected = (per_clip[0] * 1.0 + per_clip[1] * 3.0) / 4.0
    assert torch.allclose(weighted(x, emotion_labels=labels).loss_classification, expected, atol=1e-6)
    with pytest.raises(ValueError, match="emotion_class_weights"):
        PESTalkConfig(**tiny_config_kwargs(emotion_class_weights=[1.0, 2.0]))


def _policy_model(**overrides) -> PESTalkModel:
    model = make_mel_model(style_speakers=["a", "b"], voiceprint_dim=2, feature_size=3,
                           emotions=["neutral", "happy", "sad"], **overrides)
    model.style_library = filled_library()
    return model


def test_style_emotion_follows_the_classifier():
    """A query nearest to a 'sad' entry, while the classifier says 'happy': the style must be happy."""
    model = _policy_model(style_emotion_from_classifier=True)
    pooled = torch.tensor([[0.0, 0.0, 1.0]])  # emotion features of 'sad'
    logits = torch.tensor([[0.0, 4.0, 0.0]])  # the classifier reports 'happy'
    voice = torch.tensor([[1.0, 0.0]])
    _, index, _ = model.select_style(pooled, logits, voice)
    assert index.item() % 3 == 1
    # a caller's forced emotion still wins
    _, index, _ = model.select_style(pooled, logits, voice, force_emotion=torch.tensor([2]))
    assert index.item() % 3 == 2
    # without the switch, retrieval follows the features (the paper's behaviour)
    plain = _policy_model()
    _, index, _ = plain.select_style(pooled, logits, voice)
    assert index.item() % 3 == 2


def test_unsure_classifier_falls_back_to_the_neutral_style():
    model = _policy_model(style_emotion_from_classifier=True, style_confidence_full=0.8)
    styles, _ = model.style_library.entries()
    pooled, voice = torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    sure = torch.tensor([[-5.0, 5.0, -5.0]])  # p(happy) ≈ 1
    unsure = torch.tensor([[0.0, 0.05, 0.0]])  # ≈ chance
    style_sure, idx, _ = model.select_style(pooled, sure, voice)
    style_unsure, _, _ = model.select_style(pooled, unsure, voice)
    assert idx.item() == 1
    assert torch.allclose(style_sure, styles[1:2], atol=1e-4)       # full happy style of speaker 0
    assert torch.allclose(style_unsure, styles[0:1], atol=0.05)     # ≈ speaker 0's neutral style
    # an emotion the user forces keeps its full intensity whatever the classifier thinks
    forced, _, _ = model.select_style(pooled, unsure, voice, force_emotion=torch.tensor([1]))
    assert torch.allclose(forced, styles[1:2], atol=1e-4)
    with pytest.raises(ValueError, match="style_confidence_full"):
        PESTalkConfig(**tiny_config_kwargs(emotions=["a", "b"], style_confidence_full=0.4))


def test_reported_emotion_and_style_emotion_agree_end_to_end():
    model = _policy_model(style_emotion_from_classifier=True)
    randomise_outputs(model)
    for seed in range(4):
        torch.manual_seed(seed)
        out = model.animate(torch.randn(16000) * 0.1)
        assert out.style_indices.item() % 3 == out.emotion_logits.argmax(-1).item()


def test_config_refuses_an_extractor_without_streams():
    with pytest.raises(ValueError, match="use_temporal_stream or use_frequency_stream"):
        PESTalkConfig(**tiny_config_kwargs(use_temporal_stream=False, use_frequency_stream=False))
    with pytest.raises(ValueError, match="content_encoder_type"):
        PESTalkConfig(**tiny_config_kwargs(content_encoder_type="hubert"))


def test_balanced_class_weights_make_every_present_class_count_equally():
    from pestalk_hf.training import balanced_class_weights

    weights = balanced_class_weights({"emotion_counts": {"0": 900, "1": 50, "3": 50}}, 4)
    counts = {0: 900, 1: 50, 3: 50}
    assert weights[2] == 1.0  # absent class
    contributions = [weights[c] * n for c, n in counts.items()]
    assert max(contributions) == pytest.approx(min(contributions))
    assert sum(contributions) == pytest.approx(sum(counts.values()))  # the mean weight per clip stays 1
    with pytest.raises(ValueError, match="emotion counts"):
        balanced_class_weights({}, 4)


def test_mel_content_stream_can_use_kan_or_mlp_feed_forward():
    from pestalk_hf.modeling.kan import FeedForward, KANFeedForward

    assert isinstance(make_mel_model().content_encoder.blocks[0].ffn1, FeedForward)
    assert isinstance(make_mel_model(content_kan=True).content_encoder.blocks[0].ffn1, KANFeedForward)
    assert isinstance(make_mel_model().emotion_extractor.freq_blocks[0].ffn1, KANFeedForward)  # Φ_E^f stays KAN


def test_level_feature_keeps_silence_apart_from_speech_after_normalisation():
    """Per-clip normalisation maps digital silence to the same all-zero input as 'average speech';
    the level channel keeps them apart (the jaw must rest in silence)."""
    from pestalk_hf.modeling.modeling_pestalk import MelFrames

    silence, speech = torch.zeros(1, 16000), torch.randn(1, 16000) * 0.1
    mask = torch.ones(1, 30, dtype=torch.bool)
    plain = MelFrames(PESTalkConfig(**tiny_config_kwargs(**MEL)))
    assert plain(silence, mask, None).abs().max() < 1e-4  # silence → the all-zero input, the mean of any clip
    leveled = MelFrames(PESTalkConfig(**tiny_config_kwargs(**MEL, mel_level_feature=True)))
    a, b = leveled(silence, mask, None), leveled(speech, mask, None)
    assert a.shape[-1] == b.shape[-1] == 17  # 16 bins + level
    assert a[..., -1].max() < -0.9  # digital silence (log power -23) near the floor
    assert b[..., -1].mean() > -0.5
    model = make_mel_model(mel_level_feature=True)  # the whole model builds and runs with it
    assert model(speech).blendshapes.shape == (1, 30, 52)


def test_classifier_emotion_without_a_library_entry_is_never_requested():
    """The classifier may favour a class no speaker has a style for (absent from the training data):
    the style then comes from the best class that has one, instead of a retrieval error."""
    model = _policy_model(style_emotion_from_classifier=True)
    model.style_library.emotion_counts[:, 2] = 0  # nobody has a 'sad' style
    model.style_library.emotion_counts[1, 1] = 0  # speaker 1 has no 'happy' style
    pooled, voice = torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    logits = torch.tensor([[0.0, 1.0, 3.0]])  # sad > happy > neutral
    _, index, _ = model.select_style(pooled, logits, voice)
    assert index.item() == 0 * 3 + 1  # happy, from the only speaker who has it
    _, index, _ = model.select_style(pooled, logits, voice, force_speaker=torch.tensor([1]))
    assert index.item() == 1 * 3 + 0  # speaker 1: only neutral is left
