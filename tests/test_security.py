"""Hostile avatar files (issue 11, points 1–2): no file leaks through glTF URIs, no allocation from
declared sizes. Every payload here made the old loader read a server file or allocate gigabytes."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np
import pytest

from pestalk_hf.avatar import MAX_AVATAR_VERTICES, load_avatar
from pestalk_hf.avatar.gltf_io import read_gltf

from .hostile_payloads import (PAYLOAD_CHANNELS, PAYLOAD_RATE, PAYLOAD_SECONDS, declaring_glb, glb_with, raw_glb,
                              rig_document, set_flac_total_samples, write_flac_bomb)

SECRET = b"PESTALK-SECRET-TOKEN-1234"


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    outside = tmp_path / "server"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_bytes(SECRET)
    return secret


@pytest.mark.parametrize("external_files", [False, True])
@pytest.mark.parametrize("field", ["image", "buffer"])
def test_uri_pointing_at_proc_environ_or_absolute_path_is_refused(tmp_path, secret_file, field, external_files):
    upload = tmp_path / "upload"
    upload.mkdir()
    for i, uri in enumerate(["/proc/self/environ", str(secret_file), "file://" + str(secret_file),
                             "../server/secret.txt", "../../" * 12 + str(secret_file).lstrip("/"),
                             "%2e%2e/server/secret.txt"]):
        kwargs = {"image_uri": uri} if field == "image" else {"extra_buffer_uri": uri}
        path = glb_with(upload, f"evil{i}.glb", **kwargs)
        with pytest.raises(ValueError, match="external file|outside the avatar's folder|not a regular file"):
            load_avatar(path, external_files=external_files)


def test_dev_zero_uri_is_refused_without_reading(tmp_path):
    # even opted in and inside the folder: a symlink to a device must not be read (it never ends)
    (tmp_path / "zero.bin").symlink_to("/dev/zero")
    path = glb_with(tmp_path, "zero.glb", image_uri="zero.bin")
    with pytest.raises(ValueError, match="outside the avatar's folder|not a regular file"):
        load_avatar(path, external_files=True)
    with pytest.raises(ValueError, match="external file"):
        load_avatar(glb_with(tmp_path, "zero2.glb", image_uri="/dev/zero"))


def test_symlink_out_of_the_folder_is_refused(tmp_path, secret_file):
    upload = tmp_path / "upload"
    upload.mkdir()
    (upload / "tex.png").symlink_to(secret_file)
    with pytest.raises(ValueError, match="outside the avatar's folder"):
        load_avatar(glb_with(upload, "link.glb", image_uri="tex.png"), external_files=True)


def test_no_leak_into_the_exported_glb(tmp_path, secret_file):
    """The Space's path: load the upload, export the animation GLB; the secret must not be inside."""
    from pestalk_hf.animation import BlendshapeAnimation

    path = glb_with(tmp_path, "env.glb", image_uri="/proc/self/environ")
    with pytest.raises(ValueError):
        load_avatar(path)
    # the same avatar without the hostile image exports fine, and nothing of the server is in it
    clean = glb_with(tmp_path, "clean.glb")
    anim = BlendshapeAnimation(weights=np.zeros((3, 52), np.float32))
    out = anim.save(tmp_path / "out", "x", formats=("glb",), avatar=load_avatar(clean))
    data = Path(out["glb"]).read_bytes()
    assert SECRET not in data and os.environ.get("PATH", "@@").encode() not in data


def test_relative_files_inside_the_folder_are_read_only_when_opted_in(tmp_path):
    """A .gltf with its .bin beside it (the CLI's case) still works; a server refuses it."""
    doc = rig_document()
    (tmp_path / "rig.bin").write_bytes(bytes(doc.binary))
    gltf = dict(doc.gltf, buffers=[{"uri": "rig.bin", "byteLength": len(doc.binary)}])
    (tmp_path / "rig.gltf").write_text(json.dumps(gltf))
    av = load_avatar(tmp_path / "rig.gltf", external_files=True)
    assert av.names_present == ("jawOpen",)
    with pytest.raises(ValueError, match="external file 'rig.bin'"):
        load_avatar(tmp_path / "rig.gltf")
    # data: URIs are part of the file itself and always allowed
    b64 = base64.b64encode(bytes(doc.binary)).decode()
    gltf = dict(doc.gltf, buffers=[{"uri": "data:application/octet-stream;base64," + b64,
                                    "byteLength": len(doc.binary)}])
    (tmp_path / "inline.gltf").write_text(json.dumps(gltf))
    assert load_avatar(tmp_path / "inline.gltf").names_present == ("jawOpen",)


def test_small_glb_declaring_millions_of_vertices_is_refused_before_allocating(tmp_path):
    import tracemalloc

    tracemalloc.start()
    for i, with_view in enumerate((False, True)):
        path = declaring_glb(tmp_path, f"big{i}.glb", 2_000_000, with_view)
        assert path.stat().st_size < 1000
        with pytest.raises(ValueError, match="vertices, over the cap"):
            load_avatar(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 50 * 2**20, f"refusing a hostile GLB allocated {peak >> 20} MB"


def test_accessor_reaching_past_its_buffer_is_refused(tmp_path):
    path = declaring_glb(tmp_path, "short.glb", min(1000, MAX_AVATAR_VERTICES), True)  # 1000 × 12 B > 36 B
    with pytest.raises(ValueError, match="does not fit in bufferView"):
        load_avatar(path)
    doc = read_gltf(path)
    doc.gltf["bufferViews"][0]["byteLength"] = 10**9
    with pytest.raises(ValueError, match="past the end of the buffer"):
        doc.accessor(0)
    doc.gltf["accessors"][0]["count"] = -1
    with pytest.raises(ValueError, match="non-negative integer"):
        doc.accessor(0)


@pytest.mark.parametrize("mutate", [
    lambda g: g["nodes"][0].update(mesh=7),
    lambda g: g["meshes"][0]["primitives"][0]["attributes"].update(POSITION=99),
    lambda g: g["accessors"][0].update(componentType=1),
    lambda g: g["accessors"][0].update(type="VEC9"),
    lambda g: g["nodes"][0].update(children=[42]),
    lambda g: g.update(accessors="nope"),
])
def test_malformed_documents_are_value_errors_not_tracebacks(tmp_path, mutate):
    doc = rig_document()
    gltf = json.loads(json.dumps(doc.gltf))
    gltf["buffers"] = [{"byteLength": len(doc.binary)}]
    mutate(gltf)
    path = tmp_path / "bad.glb"
    path.write_bytes(raw_glb(gltf, bytes(doc.binary)))
    with pytest.raises(ValueError):
        load_avatar(path)


def test_cli_refuses_a_hostile_avatar_with_a_usage_error(tmp_path, secret_file, capsys):
    from pestalk_hf.cli import main

    path = glb_with(tmp_path, "evil.glb", image_uri=str(secret_file))
    wav = tmp_path / "a.wav"
    import soundfile as sf

    sf.write(wav, (0.1 * np.sin(np.arange(16000) / 5)).astype(np.float32), 16000)
    code = main(["animate", str(wav), "-o", str(tmp_path / "out"), "--avatar", str(path), "--format", "glb"])
    assert code == 2
    assert "outside the avatar's folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ==================================================================================================
# Point 2: a 954 KB upload must not cost gigabytes (audio limits read from the container first)
# ==================================================================================================

@pytest.fixture(scope="module")
def flac_bomb(tmp_path_factory) -> Path:
    """The issue's payload: 192 kHz × 8 channels × 600 s of digital silence, ~954 KB of FLAC."""
    import soundfile as sf

    path = write_flac_bomb(tmp_path_factory.mktemp("bomb") / "bomb.flac")
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.duration) == (PAYLOAD_RATE, PAYLOAD_CHANNELS, PAYLOAD_SECONDS)
    assert 800_000 < path.stat().st_size < 1_000_000  # 921.6 M samples in under 1 MB
    return path


def _peak_bytes(fn) -> tuple[BaseException | None, int]:
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
        error = None
    except BaseException as err:  # noqa: BLE001 — the caller asserts on it
        error = err
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return error, peak


@pytest.mark.parametrize("as_bytes", [False, True], ids=["path", "bytes"])
def test_flac_bomb_is_refused_from_its_header_without_decoding(flac_bomb, as_bytes):
    from pestalk_hf.audio import AudioError, load_audio

    source = flac_bomb.read_bytes() if as_bytes else str(flac_bomb)
    error, peak = _peak_bytes(lambda: load_audio(source, max_seconds=30))
    assert isinstance(error, AudioError), error
    assert "600.00 s long; the limit is 30 s" in str(error)
    assert peak < 8 * 2**20, f"refusing the payload allocated {peak >> 20} MB (the old decoder: 4.4 GB)"


def test_flac_bomb_without_a_length_in_its_header_stops_decoding_at_the_limit(flac_bomb):
    """The header can lie (length 0 = unknown): decoding streams and stops once the limit is passed."""
    from pestalk_hf.audio import AudioError, load_audio

    data = set_flac_total_samples(flac_bomb.read_bytes(), 0)
    error, peak = _peak_bytes(lambda: load_audio(data, max_seconds=30))
    assert isinstance(error, AudioError) and "longer than the limit of 30 s (decoding stopped" in str(error), error
    assert peak < 64 * 2**20, f"{peak >> 20} MB"


def test_samples_times_channels_cap_applies_without_max_seconds(flac_bomb):
    from pestalk_hf.audio import MAX_DECODED_VALUES, AudioError, load_audio

    seconds = 1000  # 192 kHz × 8 ch × 1000 s = 1.5 G values > the cap, yet under MAX_DECODE_SECONDS
    assert PAYLOAD_RATE * PAYLOAD_CHANNELS * seconds > MAX_DECODED_VALUES
    data = set_flac_total_samples(flac_bomb.read_bytes(), PAYLOAD_RATE * seconds)
    error, peak = _peak_bytes(lambda: load_audio(data))
    assert isinstance(error, AudioError) and "too much audio data" in str(error), error
    assert peak < 8 * 2**20


def test_flac_bomb_through_the_pipeline_the_cli_and_the_space(flac_bomb, tmp_path, capsys):
    """CLI, pipeline and Space all reach the same header check (no per-entry-point decoding)."""
    from pestalk_hf.audio import AudioError
    from pestalk_hf.cli import main

    from .test_space import load_app

    model_dir = _tiny_model(tmp_path / "model")
    from pestalk_hf.pipeline import load_pipeline

    pipe = load_pipeline(str(model_dir))
    error, peak = _peak_bytes(lambda: pipe(str(flac_bomb), max_seconds=30))
    assert isinstance(error, AudioError) and "600.00 s long" in str(error) and peak < 8 * 2**20, error

    code = main(["animate", str(flac_bomb), "-o", str(tmp_path / "out"), "--model", str(model_dir),
                 "--max-seconds", "30", "--format", "csv", "-q"])
    err = capsys.readouterr().err
    assert code == 1 and "600.00 s long; the limit is 30 s" in err, err
    assert list((tmp_path / "out").iterdir()) == []

    import gradio as gr

    app = load_app()
    cache = app.ModelCache(str(model_dir), max_models=1)
    workdirs = app.WorkDirs(1.0, tmp_path / "work")
    animate = app.make_animate(cache, workdirs, app.SpaceLimits(max_audio_seconds=30))
    app.default_avatar()  # built once per process (cached): not part of what an upload costs
    error, peak = _peak_bytes(lambda: animate(str(flac_bomb), None, "", "auto", 1.0, "auto", True, 1.0))
    assert isinstance(error, gr.Error) and "600.00 s long; the limit is 30 s" in str(error), error
    assert str(flac_bomb.parent) not in str(error) and peak < 8 * 2**20, peak
    assert list((tmp_path / "work").iterdir()) == []


def _tiny_model(path: Path, **config) -> Path:
    import torch

    from pestalk_hf import PESTalkConfig, PESTalkModel

    from .conftest import tiny_config_kwargs

    torch.manual_seed(0)
    PESTalkModel(PESTalkConfig(**tiny_config_kwargs(voiceprint_dim=256, **config))).save_pretrained(path)
    return path


# ==================================================================================================
# Point 3: configs, the Space's model box and dataset rows cannot reach local files
# ==================================================================================================


@pytest.fixture
def no_torch_load(monkeypatch):
    """Fail the test if anything is unpickled (the old factory torch.load-ed whatever the config named)."""
    import torch

    def refuse(*args, **kwargs):
        raise AssertionError(f"torch.load called with {args[:1]}")

    monkeypatch.setattr(torch, "load", refuse)


def test_config_voiceprint_backend_cannot_name_files_outside_the_model(tmp_path, secret_file, no_torch_load):
    from pestalk_hf.voiceprint import backend_from_config

    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "link.bin").symlink_to(secret_file)
    (model / "zero.bin").symlink_to("/dev/zero")
    os.mkfifo(model / "fifo.bin")
    values = ["/etc/passwd", str(secret_file), "/dev/zero", "../server/secret.txt", "sub/../../server/secret.txt",
              "~/.ssh/id_rsa", "C:\\secret.bin", "link.bin", "zero.bin", "fifo.bin", "sub", "missing.bin",
              "someone/else", "", 42, None]
    for value in values:
        with pytest.raises(ValueError, match=r"config.json field 'voiceprint_backend' = .* is refused") as info:
            backend_from_config(value, model)
        assert SECRET.decode() not in str(info.value)


def test_config_voiceprint_backend_may_name_a_checkpoint_inside_the_model(tmp_path):
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.embedding import XVectorSincNet

    from pestalk_hf.voiceprint import PyannoteBackend, backend_from_config, save_pyannote_checkpoint

    xvector = XVectorSincNet()
    xvector.specifications = Specifications(problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=3.0)
    (tmp_path / "model" / "speaker").mkdir(parents=True)
    save_pyannote_checkpoint(xvector, tmp_path / "model" / "speaker" / "pytorch_model.bin")
    backend = backend_from_config("speaker/pytorch_model.bin", tmp_path / "model")
    assert isinstance(backend, PyannoteBackend) and backend.dim == 512
    assert backend_from_config("resemblyzer", tmp_path / "model").dim == 256


def test_pipeline_refuses_a_config_naming_a_server_file(tmp_path, secret_file, no_torch_load):
    from pestalk_hf.pipeline import load_pipeline

    model = _tiny_model(tmp_path / "model")
    config = json.loads((model / "config.json").read_text())
    config["voiceprint_backend"] = str(secret_file)
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="field 'voiceprint_backend'"):
        load_pipeline(str(model))


def test_space_model_box_loads_only_the_default_and_allow_listed_hub_ids(tmp_path, monkeypatch):
    from .test_space import load_app

    app = load_app()
    loaded = []
    monkeypatch.setattr(app, "_load_checked", lambda model: loaded.append(model) or object())
    cache = app.ModelCache("/srv/default", max_models=2, allowed=("org/pestalk-a",))
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "config.json").write_text("{}")
    answers = []
    for box in (str(tmp_path / "real"), str(tmp_path / "nothing"), "/etc", "/nonexistent", "../..", "org/other"):
        with pytest.raises(ValueError, match="cannot load model") as info:
            cache.get(box)
        answers.append(str(info.value).replace(repr(box[:200]), "<box>"))
    assert len(set(answers)) == 1, answers  # the answer does not depend on what exists on the server
    assert loaded == []  # and nothing was looked up
    cache.get("")
    cache.get("org/pestalk-a")
    assert loaded == ["/srv/default", "org/pestalk-a"]

    monkeypatch.setenv("PESTALK_SPACE_MODELS", " org/a, org/b ,,org/a")
    assert app.allowed_models_from_env() == ("org/a", "org/b")
    for bad in ("/srv/models", "./local", "../up", "org/../x", "~/m", "https://evil/x", "a/b/c"):
        with pytest.raises(ValueError, match="PESTALK_SPACE_MODELS may only list Hub model ids"):
            app.allowed_models_from_env(bad)


def test_dataset_rows_cannot_make_the_loader_read_server_files(tmp_path, secret_file):
    import io as _io

    import soundfile as sf

    from pestalk_hf.data.loading import decode_example

    root = tmp_path / "dataset"
    (root / "audio").mkdir(parents=True)
    buf = _io.BytesIO()
    sf.write(buf, (0.1 * np.sin(np.arange(16000) / 5)).astype(np.float32), 16000, format="FLAC")
    (root / "audio" / "clip.flac").write_bytes(buf.getvalue())
    (root / "audio" / "out.flac").symlink_to(secret_file)
    os.mkfifo(root / "audio" / "pipe.flac")

    def row(path: str) -> dict:
        return {"id": "c", "audio": {"bytes": None, "path": path}, "blendshapes": np.zeros((30, 52)), "fps": 30}

    for path in ("/dev/zero", str(secret_file), "audio/clip.flac"):  # by default, no path is ever opened
        with pytest.raises(ValueError, match="is not read"):
            decode_example(row(path))
    for path, reason in (("/dev/zero", "outside the dataset folder"), (str(secret_file), "outside"),
                         ("../server/secret.txt", "outside"), ("audio/out.flac", "outside"),
                         ("audio/pipe.flac", "not a regular file"), ("audio/none.flac", "does not exist")):
        with pytest.raises(ValueError, match=reason):
            decode_example(row(path), audio_root=root)
    decoded = decode_example(row("audio/clip.flac"), audio_root=root)
    assert decoded["waveform"].shape == (16000,)
    decoded = decode_example(row(str(root / "audio" / "clip.flac")), audio_root=root)  # absolute, inside
    assert decoded["blendshapes"].shape == (30, 52)
