"""The ``pestalk`` command in a subprocess, on real human speech and on every kind of bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from .test_pipeline import speech_like, tiny_model_dir  # noqa: F401  (fixture)

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pestalk_hf.cli", *args], capture_output=True, text=True,
                          env=ENV, timeout=timeout)


def test_help_teaches():
    proc = run_cli("animate", "--help")
    assert proc.returncode == 0
    for word in ("Live Link", "--emotion", "--speaker-style", "--avatar", "examples", "Blender"):
        assert word in proc.stdout


def test_animate_real_speech_and_bad_inputs(tmp_path, tiny_model_dir, assets):  # noqa: F811
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = {
        "emodb_happy.wav": (assets / "speech" / "emodb" / "13a02Fa.wav").read_bytes(),
    }
    for name, data in good.items():
        (inputs / name).write_bytes(data)
    audio = speech_like(1.0, sr=22050)
    sf.write(inputs / "pcm8.wav", audio, 22050, subtype="PCM_U8")
    sf.write(inputs / "pcm24.wav", audio, 22050, subtype="PCM_24")
    sf.write(inputs / "float32.wav", audio, 22050, subtype="FLOAT")
    sf.write(inputs / "six_channels.wav", np.stack([audio] * 6, axis=1), 22050, subtype="PCM_16")
    bad = {
        "empty.wav": b"",
        "corrupt.wav": b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk",
        "notes.ogg": b"this is a text file, not audio",
    }
    for name, data in bad.items():
        (inputs / name).write_bytes(data)
    sf.write(inputs / "silence.wav", np.zeros(16000, np.float32), 16000)
    sf.write(inputs / "too_short.wav", audio[:200], 22050)
    nan = audio.copy()
    nan[100] = np.nan
    sf.write(inputs / "nan.wav", nan, 22050, subtype="FLOAT")

    out = tmp_path / "out"
    proc = run_cli("animate", str(inputs), str(assets / "speech" / "cmu_arctic" / "arctic_a0009.wav"),
                   "-o", str(out), "--model", str(tiny_model_dir), "--format", "csv,json,npz,png", "-q")
    assert proc.returncode == 1, proc.stderr[-3000:]  # some inputs failed, the rest written
    failed = {"empty", "corrupt", "notes", "silence", "too_short", "nan"}
    for stem in failed:
        assert f"{stem}." in proc.stderr, (stem, proc.stderr[-3000:])
        assert not list(out.glob(f"{stem}.*"))
    assert "6 of 12 input(s) failed" in proc.stderr
    written = {"emodb_happy", "pcm8", "pcm24", "float32", "six_channels", "arctic_a0009"}
    for stem in written:
        for ext in ("csv", "json", "npz", "png"):
            assert (out / f"{stem}.{ext}").stat().st_size > 0, (stem, ext)
    assert not [p for p in out.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]  # no half-written files

    with open(out / "arctic_a0009.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][:3] == ["Timecode", "BlendshapeCount", "EyeBlinkLeft"] and len(rows[0]) == 2 + 52 + 9
    seconds = sf.info(assets / "speech" / "cmu_arctic" / "arctic_a0009.wav").duration
    assert len(rows) - 1 == int(np.ceil(seconds * 30 - 1e-9))
    meta = json.loads((out / "emodb_happy.json").read_text())
    assert meta["fps"] == 30 and len(meta["names"]) == 52


def test_all_formats_for_one_file(tmp_path, tiny_model_dir, assets):  # noqa: F811
    out = tmp_path / "out"
    proc = run_cli("animate", str(assets / "speech" / "emodb" / "14a02Fd.wav"), "-o", str(out),
                   "--model", str(tiny_model_dir), "--format", "all", "--emotion", "happy", "--intensity", "0.8",
                   "--speaker-style", "bob", "--blinks", "--smoothing", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for ext in ("csv", "json", "npz", "glb", "mp4", "png"):
        assert (out / f"14a02Fd.{ext}").stat().st_size > 0, ext
    assert "style bob/happy" in proc.stdout


def test_bf16_weights_write_the_same_track_closely(tmp_path, tiny_model_dir, assets):  # noqa: F811
    wav = str(assets / "speech" / "emodb" / "14a02Fd.wav")
    tracks = {}
    for dtype in ("fp32", "bf16"):
        proc = run_cli("animate", wav, "-o", str(tmp_path / dtype), "--model", str(tiny_model_dir),
                       "--format", "npz", "--dtype", dtype, "-q")
        assert proc.returncode == 0, proc.stderr[-3000:]
        tracks[dtype] = np.load(tmp_path / dtype / "14a02Fd.npz")["weights"]
    assert tracks["bf16"].shape == tracks["fp32"].shape
    assert np.abs(tracks["bf16"] - tracks["fp32"]).mean() < 0.02


def test_no_rest_in_silence_keeps_the_models_lower_face(tmp_path, tiny_model_dir, assets):  # noqa: F811
    from pestalk_hf.modeling.configuration_pestalk import ARKIT_BLENDSHAPE_NAMES, DEFAULT_LOWER_FACE_NAMES

    wav = str(assets / "speech" / "emodb" / "14a02Fd.wav")  # EmoDB clips start and end in silence
    tracks = {}
    for name, extra in (("gated", []), ("raw", ["--no-rest-in-silence"])):
        proc = run_cli("animate", wav, "-o", str(tmp_path / name), "--model", str(tiny_model_dir),
                       "--format", "npz", "-q", *extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
        tracks[name] = np.load(tmp_path / name / "14a02Fd.npz")["weights"]
    lower = [ARKIT_BLENDSHAPE_NAMES.index(n) for n in DEFAULT_LOWER_FACE_NAMES]
    upper = [i for i in range(52) if i not in lower]
    np.testing.assert_array_equal(tracks["gated"][:, upper], tracks["raw"][:, upper])
    assert not np.allclose(tracks["gated"][:, lower], tracks["raw"][:, lower], atol=1e-3)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--emotion", "ecstatic"], "unknown emotion"),
        (["--speaker-style", "nobody"], "unknown library speaker"),
        (["--format", "csv,fbx"], "unknown format"),
        (["--intensity", "5"], "intensity"),
        (["--int8", "--dtype", "bf16"], "starts from fp32 weights"),
        (["--dtype", "fp64"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2(tmp_path, tiny_model_dir, assets, extra, message):  # noqa: F811
    proc = run_cli("animate", str(assets / "speech" / "emodb" / "13a02Nc.wav"), "-o", str(tmp_path / "o"),
                   "--model", str(tiny_model_dir), *extra)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_bad_avatar_and_missing_input_exit_2(tmp_path, tiny_model_dir, assets):  # noqa: F811
    not_glb = tmp_path / "head.glb"
    not_glb.write_text("not a glb")
    proc = run_cli("animate", str(assets / "speech" / "emodb" / "13a02Nc.wav"), "-o", str(tmp_path / "o"),
                   "--model", str(tiny_model_dir), "--avatar", str(not_glb))
    assert proc.returncode == 2 and "head.glb" in proc.stderr, proc.stderr[-2000:]
    proc = run_cli("animate", str(tmp_path / "nope.wav"), "-o", str(tmp_path / "o"), "--model", str(tiny_model_dir))
    assert proc.returncode == 2 and "nope.wav" in proc.stderr


def test_info_lists_emotions_and_speakers(tiny_model_dir):  # noqa: F811
    proc = run_cli("info", "--model", str(tiny_model_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["library_speakers"] == ["ann", "bob"] and "happy" in info["emotions"]
