"""Saving, loading and remote code: the Hub-facing contract of the model."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel

from pestalk_hf import PESTalkConfig, PESTalkModel

from .conftest import tiny_config_kwargs
from .test_modeling import randomise_outputs


def build_model() -> PESTalkModel:
    torch.manual_seed(0)
    model = PESTalkModel(PESTalkConfig(**tiny_config_kwargs(style_speakers=["alice", "bob"]))).eval()
    randomise_outputs(model)
    model.update_style_library(torch.tensor([0, 1]), torch.tensor([5, 0]), torch.randn(2, 16), torch.randn(2, 8))
    return model


def test_save_load_round_trip_is_bit_exact(tmp_path):
    model = build_model()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    weights = load_file(tmp_path / "model.safetensors")
    assert "style_library.emotion_counts" in weights and weights["style_library.emotion_counts"].sum() == 2
    again = PESTalkModel.from_pretrained(tmp_path).eval()
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(1, 20000) * 0.1
    voice = torch.randn(1, 8)
    # Weights are bit-exact; the freshly built model's forward differs from a loaded one by float
    # round-off (~1e-7, wav2vec2's weight-norm parametrisation), while loaded copies agree exactly.
    again.save_pretrained(tmp_path / "again")
    twice = PESTalkModel.from_pretrained(tmp_path / "again").eval()
    assert torch.equal(again(x, voiceprint=voice).blendshapes, twice(x, voiceprint=voice).blendshapes)
    assert torch.allclose(model(x, voiceprint=voice).blendshapes, again(x, voiceprint=voice).blendshapes, atol=1e-5)


def test_auto_classes_in_process(tmp_path):
    build_model().save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), PESTalkConfig)
    assert isinstance(AutoModel.from_pretrained(tmp_path), PESTalkModel)


def test_remote_code_loads_in_a_clean_interpreter_without_pestalk_hf(tmp_path):
    model = build_model()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_pestalk.PESTalkModel"
    for name in ("configuration_pestalk.py", "modeling_pestalk.py", "kan.py"):
        assert (tmp_path / name).exists(), name
    x = torch.randn(1, 20000) * 0.1
    torch.save(x, tmp_path / "x.pt")
    expected = PESTalkModel.from_pretrained(tmp_path).eval()(x).blendshapes  # same weights, same code path
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["pestalk_hf"] = None  # make `import pestalk_hf` fail: remote code must stand alone
        try:
            import pestalk_hf
        except ImportError:
            pass
        else:
            raise SystemExit("pestalk_hf importable")
        import torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(tmp_path)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        x = torch.load({str(tmp_path / "x.pt")!r}, weights_only=True)
        torch.save(model(x).blendshapes.detach(), {str(tmp_path / "y.pt")!r})
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          # same thread count as here: a different reduction order is not bit-exact
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf"),
                               "OMP_NUM_THREADS": str(torch.get_num_threads())})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert torch.equal(torch.load(tmp_path / "y.pt", weights_only=True), expected.detach())


def test_from_sub_models_pretrained_loads_both_encoders(tmp_path):
    """The paper-size constructor, exercised with two local tiny wav2vec2 checkpoints instead of the Hub ids."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from pestalk_hf.modeling.configuration_pestalk import tiny_wav2vec2_config

    sources = {}
    for i, name in enumerate(("content", "emotion")):
        torch.manual_seed(10 + i)
        sources[name] = Wav2Vec2Model(Wav2Vec2Config(**tiny_wav2vec2_config()))
        sources[name].save_pretrained(tmp_path / name)
    model = PESTalkModel.from_sub_models_pretrained(
        str(tmp_path / "content"), str(tmp_path / "emotion"), **tiny_config_kwargs()
    )
    for name, stream in (("content", model.content_encoder.stream), ("emotion", model.emotion_extractor.temporal)):
        loaded, source = stream.wav2vec2.state_dict(), sources[name].state_dict()
        assert all(torch.equal(loaded[k], source[k]) for k in source), name
    assert not model._feature_encoders_identical()  # different seeds → distinct conv weights
    out = model.eval()(torch.randn(1, 16000) * 0.1)
    assert out.blendshapes.shape == (1, 30, 52)
