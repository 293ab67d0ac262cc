"""Bad inputs to the CLI, the Python API and the Space (issue 11, points 2–5; issue 12 point 4): each case
asserts the exit code or the exception type, that the message names the problem, and that no partial or
stray file is left. Space uploads are checked as they arrive (the handler Gradio calls, and headless
Chromium uploading the file through the page, as tests/test_space_browser.py drives it).

The CLI runs in-process (``pestalk_hf.cli.main``) so the suite stays fast; ``tests/test_cli.py`` runs
the real subprocess. Models are the tiny random-weight ones of ``tests/test_pipeline.py``.
"""

from __future__ import annotations

import errno
import io
from html import unescape
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from pestalk_hf import cli
from pestalk_hf.animation import BlendshapeAnimation
from pestalk_hf.audio import AudioError, load_audio

from .test_pipeline import pipe, speech_like, tiny_model_dir  # noqa: F401  (fixtures)


# ------------------------------------------------------------------------------------------ helpers


def write_wav(path: Path, seconds: float = 0.6, sr: int = 16000) -> Path:
    sf.write(path, speech_like(seconds, sr=sr), sr, subtype="PCM_16")
    return path


def write_flac(path: Path, seconds: float = 0.6, sr: int = 22050) -> Path:
    sf.write(path, speech_like(seconds, sr=sr, seed=1), sr, format="FLAC")
    return path


def mp3_bytes(seconds: float, sr: int = 22050) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp3") as out:
        stream = out.add_stream("mp3", rate=sr, layout="mono")
        frame = av.AudioFrame.from_ndarray(speech_like(seconds, sr=sr, seed=2)[None], format="fltp", layout="mono")
        frame.sample_rate = sr
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def write_mp3(path: Path, seconds: float = 0.6) -> Path:
    path.write_bytes(mp3_bytes(seconds))
    return path


def put(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exit_:  # argparse usage errors
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def stray_files(folder: Path) -> list[str]:
    """Temp files of our atomic writers, or anything hidden, left in ``folder``."""
    if not folder.is_dir():
        return []
    return [p.name for p in folder.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


def model_copy(src: Path, dst: Path, edit: Callable[[Path], None]) -> Path:
    shutil.copytree(src, dst)
    edit(dst)
    return dst


def edit_config(**fields: Any) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        config.update(fields)
        (folder / "config.json").write_text(json.dumps(config))

    return edit


def corrupt_weights(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:8] + b"{not json" + data[17:200])


# ------------------------------------------------------------------------------------ CLI: usage (2)


@dataclass
class CliCase:
    name: str
    argv: Callable[[Path, Path, Path], list[str]]  # (tmp, good wav, model dir) → argv after "animate"
    code: int
    message: str  # regex the stderr must match
    model: Callable[[Path, Path], Path] | None = None  # (tiny model dir, tmp) → model dir to use


def _file_as_output(tmp: Path) -> str:
    (tmp / "taken").write_text("a file, not a folder")
    return str(tmp / "taken")


def _file_as_parent(tmp: Path) -> str:
    (tmp / "plain").write_text("x")
    return str(tmp / "plain" / "out")


USAGE_CASES = [
    CliCase("max_seconds_zero", lambda t, w, m: [str(w), "-o", str(t / "out"), "--max-seconds", "0"], 2,
            r"--max-seconds.*positive number of seconds"),
    CliCase("max_seconds_negative", lambda t, w, m: [str(w), "-o", str(t / "out"), "--max-seconds", "-5"], 2,
            r"--max-seconds.*positive number of seconds, got '-5'"),
    CliCase("max_seconds_nan", lambda t, w, m: [str(w), "-o", str(t / "out"), "--max-seconds", "nan"], 2,
            r"--max-seconds.*positive"),
    CliCase("max_seconds_text", lambda t, w, m: [str(w), "-o", str(t / "out"), "--max-seconds", "long"], 2,
            r"--max-seconds.*number of seconds"),
    CliCase("output_is_a_file", lambda t, w, m: [str(w), "-o", _file_as_output(t)], 2,
            r"output path .*taken exists and is not a folder"),
    CliCase("output_parent_is_a_file", lambda t, w, m: [str(w), "-o", _file_as_parent(t)], 2,
            r"cannot create the output folder .*plain is not a folder"),
    CliCase("device_not_a_device", lambda t, w, m: [str(w), "-o", str(t / "out"), "--device", "banana"], 2,
            r"--device 'banana' is not a torch device"),
    CliCase("missing_input", lambda t, w, m: [str(t / "nope.wav"), "-o", str(t / "out")], 2,
            r"no such file or folder: .*nope\.wav"),
    CliCase("empty_input_folder", lambda t, w, m: [str((t / "empty").resolve()), "-o", str(t / "out")], 2,
            r"no audio files in folder .*empty"),
    CliCase("missing_model", lambda t, w, m: [str(w), "-o", str(t / "out")], 2,
            r"cannot load the model .*no_model", model=lambda m, t: t / "no_model"),
    CliCase("corrupt_safetensors", lambda t, w, m: [str(w), "-o", str(t / "out")], 2,
            r"cannot load the model .*corrupt", model=lambda m, t: model_copy(m, t / "corrupt", corrupt_weights)),
    CliCase("config_field_wrong_type", lambda t, w, m: [str(w), "-o", str(t / "out")], 2,
            r"cannot load the model .*decoder_num_layers must be a positive integer, got 'two'",
            model=lambda m, t: model_copy(m, t / "typed", edit_config(decoder_num_layers="two"))),
    CliCase("config_emotions_not_names", lambda t, w, m: [str(w), "-o", str(t / "out")], 2,
            r"cannot load the model .*emotions",
            model=lambda m, t: model_copy(m, t / "emo", edit_config(emotions=[1, 2, 3]))),
    CliCase("config_voiceprint_backend_abs_path", lambda t, w, m: [str(w), "-o", str(t / "out")], 2,
            r"field 'voiceprint_backend' = '/etc/passwd' is refused",
            model=lambda m, t: model_copy(m, t / "vp", edit_config(voiceprint_backend="/etc/passwd"))),
    CliCase("unknown_emotion", lambda t, w, m: [str(w), "-o", str(t / "out"), "--emotion", "ecstatic"], 2,
            r"unknown emotion 'ecstatic'"),
    CliCase("style_top_k_zero", lambda t, w, m: [str(w), "-o", str(t / "out"), "--style-top-k", "0"], 2,
            r"style_top_k must be ≥ 1"),
    CliCase("unknown_format", lambda t, w, m: [str(w), "-o", str(t / "out"), "--format", "fbx"], 2,
            r"unknown format"),
]


@pytest.mark.parametrize("case", USAGE_CASES, ids=[c.name for c in USAGE_CASES])
def test_cli_usage_errors(case: CliCase, tmp_path, tiny_model_dir, capsys):  # noqa: F811
    (tmp_path / "empty").mkdir()
    wav = write_wav(tmp_path / "speech.wav")
    model = case.model(tiny_model_dir, tmp_path) if case.model else tiny_model_dir
    code, _, err = run_cli(["animate", *case.argv(tmp_path, wav, model), "--model", str(model), "-q"], capsys)
    assert code == case.code, err
    assert re.search(case.message, err), err
    assert "Traceback" not in err
    out = tmp_path / "out"
    assert not out.exists() or not list(out.iterdir()), "a usage error must not write anything"


def test_cli_device_cuda_without_gpu(tmp_path, tiny_model_dir, capsys):  # noqa: F811
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, _, err = run_cli(["animate", str(write_wav(tmp_path / "a.wav")), "-o", str(tmp_path / "out"),
                            "--model", str(tiny_model_dir), "--device", "cuda", "-q"], capsys)
    assert code == 2 and "--device cuda: no CUDA GPU is available" in err, err
    assert not (tmp_path / "out").exists()


def test_cli_info_on_broken_configs(tmp_path, tiny_model_dir, capsys):  # noqa: F811
    typed = model_copy(tiny_model_dir, tmp_path / "typed", edit_config(fps="thirty"))
    garbage = model_copy(tiny_model_dir, tmp_path / "garbage",
                         lambda f: (f / "config.json").write_text("{ not json"))
    for folder, pattern in ((typed, "fps"), (garbage, "cannot read model config"), (tmp_path / "none", "none")):
        code, _, err = run_cli(["info", "--model", str(folder)], capsys)
        assert code == 2 and pattern in err and "Traceback" not in err, err


# --------------------------------------------------------------------- CLI: per-input failures (1)


@dataclass
class InputCase:
    name: str
    make: Callable[[Path], Path]  # writes the bad input into the folder, returns it
    message: str
    extra: tuple[str, ...] = ()


def _payload_flac(folder: Path) -> Path:
    """A header declaring 192 kHz × 8 ch × 600 s in a few KB (the real 954 KB payload: test_security)."""
    path = folder / "huge.flac"
    with sf.SoundFile(path, "w", samplerate=192000, channels=8, format="FLAC", subtype="PCM_16") as f:
        f.write(np.zeros((192000, 8), np.int16))
    data = bytearray(path.read_bytes())
    field = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)  # STREAMINFO total samples (36 bits)
    data[18:26] = (field | (192000 * 600)).to_bytes(8, "big")
    path.write_bytes(bytes(data))
    return path


INPUT_CASES = [
    InputCase("empty_file", lambda f: put(f / "empty.wav", b""), r"empty \(0 bytes\)"),
    InputCase("text_as_audio", lambda f: put(f / "notes.ogg", "not audio"), "not an audio file, or corrupt"),
    InputCase("dc_only", lambda f: sf.write(f / "dc.wav", np.full(16000, 0.5, np.float32), 16000) or f / "dc.wav",
              r"silent .*DC offset of \+0\.5"),
    InputCase("truncated_mp3", lambda f: put(f / "cut.mp3", mp3_bytes(6.0)[:2500]),
              r"truncated or damaged: its header declares 6\.\d+ s"),
    InputCase("longer_than_max_seconds", lambda f: write_wav(f / "long.wav", 1.5), r"1\.50 s long; the limit is 1 s",
              ("--max-seconds", "1")),
    InputCase("header_declares_hours", _payload_flac, r"600\.00 s long; the limit is 30 s", ("--max-seconds", "30")),
    InputCase("nan_samples", lambda f: sf.write(f / "nan.wav", np.r_[speech_like(0.5), np.nan].astype(np.float32),
                                                16000, subtype="FLOAT") or f / "nan.wav", "NaN or infinite"),
]


@pytest.mark.parametrize("case", INPUT_CASES, ids=[c.name for c in INPUT_CASES])
def test_cli_bad_input_is_reported_and_the_batch_goes_on(case: InputCase, tmp_path, tiny_model_dir, capsys):  # noqa: F811
    inputs = tmp_path / "in"
    inputs.mkdir()
    bad = case.make(inputs)
    good = write_wav(inputs / "zz_good.wav")
    out = tmp_path / "out"
    code, stdout, err = run_cli(["animate", str(inputs), "-o", str(out), "--model", str(tiny_model_dir),
                                 "--format", "csv,json", "-q", *case.extra], capsys)
    assert code == 1, err
    line = next((ln for ln in err.splitlines() if bad.name in ln), "")
    assert re.search(case.message, line), err
    assert "pestalk: 1 of 2 input(s) failed; 1 written to" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == [f"{good.stem}.csv", f"{good.stem}.json"]
    assert stray_files(out) == []


def test_cli_write_failure_is_per_input_and_leaves_no_partial_set(tmp_path, tiny_model_dir, capsys, monkeypatch):  # noqa: F811
    """A full disk while writing one input's JSON: that input is reported (its CSV removed), the others
    are written, the summary says so, exit 1."""
    from pestalk_hf import exporters

    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a", "b", "c"):
        write_wav(inputs / f"{name}.wav")
    real = exporters.write_json

    def flaky(path, payload):
        if Path(path).stem == "b":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, payload)

    monkeypatch.setattr(exporters, "write_json", flaky)
    out = tmp_path / "out"
    code, _, err = run_cli(["animate", str(inputs), "-o", str(out), "--model", str(tiny_model_dir),
                            "--format", "csv,json", "-q"], capsys)
    assert code == 1, err
    assert re.search(r"b\.wav: cannot write the outputs: .*No space left on device", err), err
    assert "1 of 3 input(s) failed; 2 written" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["a.csv", "a.json", "c.csv", "c.json"]


def test_cli_unexpected_error_in_one_input_does_not_end_the_batch(tmp_path, tiny_model_dir, capsys, monkeypatch):  # noqa: F811
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_wav(inputs / "a.wav")
    write_wav(inputs / "b.wav")
    real = BlendshapeAnimation.to_livelink_csv

    def broken(self, path):
        if Path(path).stem == "a":
            raise KeyError("accessor 7")
        return real(self, path)

    monkeypatch.setattr(BlendshapeAnimation, "to_livelink_csv", broken)
    out = tmp_path / "out"
    code, _, err = run_cli(["animate", str(inputs), "-o", str(out), "--model", str(tiny_model_dir),
                            "--format", "json,csv", "-q"], capsys)
    assert code == 1 and re.search(r"a\.wav: failed \(KeyError: 'accessor 7'\)", err), err
    assert sorted(p.name for p in out.iterdir()) == ["b.csv", "b.json"]  # a.json (written first) removed


# ------------------------------------------------------------------------------ CLI: output names


def test_same_stem_different_extensions_give_distinct_outputs(tmp_path, tiny_model_dir, capsys):  # noqa: F811
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    write_wav(inputs / "good.wav", 0.5)
    write_flac(inputs / "good.flac", 0.8)
    write_mp3(inputs / "good.mp3", 1.1)
    write_wav(inputs / "sub" / "good.wav", 0.7)  # same name and type in another folder
    write_wav(inputs / "good_wav.wav", 0.9)  # an input whose plain stem is another's disambiguated one
    out = tmp_path / "out"
    code, stdout, err = run_cli(["animate", str(inputs), "-o", str(out), "--model", str(tiny_model_dir),
                                 "--format", "npz", "-q"], capsys)
    assert code == 0, err
    assert "5 of 5 input(s) written" in stdout
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 5, names
    assert {"good_flac.npz", "good_mp3.npz"} <= set(names)
    frames = sorted(np.load(out / n)["weights"].shape[0] for n in names)
    assert frames == [15, 21, 24, 27, 33]  # 0.5, 0.7, 0.8, 0.9, 1.1 s: every input has its own file (mp3: ±1)
    assert stray_files(out) == []


def test_unique_stems_rules():
    files = [Path("a/good.wav"), Path("a/good.flac"), Path("b/GOOD.flac"), Path("a/x.wav"), Path("a/x_2.wav"),
             Path("c/x.wav")]
    stems = cli._unique_stems(files)
    assert len({s.casefold() for s in stems}) == len(files)
    assert stems[0] == "good_wav" and stems[3:] == ["a_x", "x_2", "c_x"]


# -------------------------------------------------------------------------------------- Python API


API_TYPE_ERRORS = [
    ("emotion_true", dict(emotion=True), TypeError, r"emotion must be a name \(str\) or an index \(int\), got bool"),
    ("emotion_list", dict(emotion=["happy"]), TypeError, "emotion must be a name"),
    ("speaker_false", dict(speaker_style=False), TypeError, "speaker_style must be a name"),
    ("blinks_no", dict(blinks="no"), TypeError, r"blinks must be True or False, got str 'no'"),
    ("blinks_int", dict(blinks=1), TypeError, "blinks must be True or False"),
    ("intensity_text", dict(intensity="0.5"), TypeError, "intensity must be a number"),
    ("intensity_bool", dict(intensity=True), TypeError, "intensity must be a number"),
    ("style_top_k_float", dict(style_top_k=1.5), TypeError, "style_top_k must be an integer"),
    ("smoothing_text", dict(smoothing="2"), TypeError, "smoothing must be a number"),
    ("max_seconds_zero", dict(max_seconds=0), ValueError, r"max_seconds must be a positive number.*got 0"),
    ("max_seconds_negative", dict(max_seconds=-5), ValueError, r"max_seconds must be a positive number.*-5"),
    ("max_seconds_inf", dict(max_seconds=float("inf")), ValueError, "max_seconds must be a positive number"),
    ("max_seconds_bool", dict(max_seconds=True), TypeError, "max_seconds must be a number"),
    ("unknown_argument", dict(emotions="happy"), TypeError, "unexpected pipeline arguments"),
    ("intensity_range", dict(intensity=3.0), ValueError, r"intensity must be a number in \[0, 2\]"),
    ("emotion_index_range", dict(emotion=99), ValueError, "unknown emotion 99"),
]


@pytest.mark.parametrize("kwargs, kind, message", [c[1:] for c in API_TYPE_ERRORS], ids=[c[0] for c in API_TYPE_ERRORS])
def test_pipeline_parameter_errors(pipe, kwargs, kind, message):  # noqa: F811
    with pytest.raises(kind, match=message) as info:
        pipe(speech_like(0.5), sampling_rate=16000, **kwargs)
    assert not isinstance(info.value, IndexError)


@pytest.mark.parametrize("empty", [[], ()], ids=["list", "tuple"])
def test_pipeline_empty_input_list(pipe, empty):  # noqa: F811
    with pytest.raises(ValueError, match="no audio given"):
        pipe(empty)


def test_pipeline_max_seconds_is_enforced_not_replaced_by_the_default(pipe):  # noqa: F811
    with pytest.raises(AudioError, match=r"1\.00 s long; the limit is 0\.5 s"):
        pipe(speech_like(1.0), sampling_rate=16000, max_seconds=0.5)


API_AUDIO_ERRORS = [
    ("dc_offset", lambda t: np.full(16000, -0.25, np.float32), r"silent .*DC offset of -0\.25"),
    ("dc_plus_hiss", lambda t: np.full(16000, 0.3, np.float32) + np.float32(1e-6) * np.sin(np.arange(16000)),
     "silent"),
    ("dev_zero", lambda t: "/dev/zero", "not a regular file"),
    ("directory", lambda t: str(t), "is a directory"),
    ("truncated_mp3_bytes", lambda t: mp3_bytes(6.0)[:2500], "truncated or damaged"),
]


@pytest.mark.parametrize("make, message", [c[1:] for c in API_AUDIO_ERRORS], ids=[c[0] for c in API_AUDIO_ERRORS])
def test_load_audio_rejections(tmp_path, make, message):
    source = make(tmp_path)
    with pytest.raises(AudioError, match=message):
        load_audio(source, 16000)


def test_dc_offset_does_not_hide_real_signal():
    wav = np.full(16000, 0.3, np.float32) + speech_like(1.0) * np.float32(0.1)
    assert load_audio(wav, 16000).shape == (16000,)


SAVE_ERRORS = [
    ("parent_dir", "../x", ValueError, "must be a plain file name"),
    ("nested", "a/b", ValueError, "must be a plain file name"),
    ("backslash", "a\\b", ValueError, "must be a plain file name"),
    ("dotdot", "..", ValueError, "must be a plain file name"),
    ("dot", ".", ValueError, "must be a plain file name"),
    ("empty", "", ValueError, "must be a plain file name"),
    ("absolute", "/tmp/x", ValueError, "must be a plain file name"),
    ("not_a_string", 5, TypeError, "stem must be a string"),
]


@pytest.mark.parametrize("stem, kind, message", [c[1:] for c in SAVE_ERRORS], ids=[c[0] for c in SAVE_ERRORS])
def test_save_refuses_stems_that_are_paths(tmp_path, stem, kind, message):
    out = tmp_path / "inner" / "out"
    anim = BlendshapeAnimation(weights=np.zeros((3, 52), np.float32))
    with pytest.raises(kind, match=message):
        anim.save(out, stem, formats=("csv", "json"))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_save_into_a_file_path_is_refused(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        BlendshapeAnimation(weights=np.zeros((3, 52), np.float32)).save(target, "a", formats=("csv",))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


# ------------------------------------------------------------------ more audio kinds (API, datasets)


RAW_AUDIO_ERRORS = [
    ("array_3d", lambda: np.zeros((2, 2, 16000), np.float32), 16000, r"1-D \(samples\) or 2-D"),
    ("complex_samples", lambda: np.zeros(16000, np.complex64), 16000, "unsupported sample dtype complex64"),
    ("string_samples", lambda: np.array(["a"] * 1000), 16000, "unsupported sample dtype"),
    ("dict_without_rate", lambda: {"array": speech_like(0.5)}, None, "needs a 'sampling_rate' entry"),
    ("dict_unknown_keys", lambda: {"samples": speech_like(0.5)}, 16000, r"expected 'array' or 'raw'"),
    ("rate_zero", lambda: speech_like(0.5), 0, "sampling_rate must be a positive integer, got 0"),
    ("rate_fraction", lambda: speech_like(0.5), 16000.5, "sampling_rate must be a positive integer"),
    ("rate_missing", lambda: speech_like(0.5), None, "sampling_rate is required"),
    ("too_short", lambda: speech_like(0.5)[:100], 16000, r"too short: 100 samples"),
    ("inf_samples", lambda: np.r_[speech_like(0.5), np.inf].astype(np.float32), 16000, "NaN or infinite"),
    ("nan_tensor", lambda: torch.full((16000,), float("nan")), 16000, "NaN or infinite"),
    ("unsupported_type", lambda: {1, 2, 3}, 16000, "unsupported audio source of type set"),
    ("channel_axis_unclear", lambda: np.zeros((20, 30000), np.float32), 16000, "cannot tell the channel axis"),
    ("no_samples", lambda: np.zeros(0, np.float32), 16000, "no samples"),
]


@pytest.mark.parametrize("make, rate, message", [c[1:] for c in RAW_AUDIO_ERRORS], ids=[c[0] for c in RAW_AUDIO_ERRORS])
def test_raw_audio_rejections(make, rate, message):
    with pytest.raises(AudioError, match=message):
        load_audio(make(), rate)


def _flac_of_seconds(seconds: float, sr: int = 8000) -> bytes:
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", sr, 1, format="FLAC", subtype="PCM_16") as f:
        for _ in range(int(seconds // 10)):
            f.write(np.zeros(10 * sr, np.float32))
    return buf.getvalue()


ROW_BYTES_ERRORS = [
    ("row_longer_than_the_cap", lambda: _flac_of_seconds(700), r"700\.00 s long; the limit is 600 s"),
    ("row_text_bytes", lambda: b"id,audio\n1,none\n" * 20, "cannot decode the row's audio bytes"),
    ("row_empty_bytes", lambda: b"", "empty"),
]


@pytest.mark.parametrize("make, message", [c[1:] for c in ROW_BYTES_ERRORS], ids=[c[0] for c in ROW_BYTES_ERRORS])
def test_dataset_row_audio_rejections(make, message):
    """A dataset row's audio bytes are checked from their header before decoding (issue 11)."""
    from pestalk_hf.data.schema import decode_audio_bytes

    with pytest.raises(AudioError, match=message):
        decode_audio_bytes(make())


# ---------------------------------------------------------------------------------- CLI: options


MORE_USAGE_CASES = [
    CliCase("smoothing_huge", lambda t, w, m: [str(w), "-o", str(t / "out"), "--smoothing", "2e7"], 2, r"smoothing"),
    CliCase("smoothing_negative", lambda t, w, m: [str(w), "-o", str(t / "out"), "--smoothing", "-1"], 2, r"smoothing"),
    CliCase("intensity_out_of_range", lambda t, w, m: [str(w), "-o", str(t / "out"), "--intensity", "5"], 2,
            r"intensity must be a number in \[0, 2\]"),
    CliCase("unknown_speaker_style", lambda t, w, m: [str(w), "-o", str(t / "out"), "--speaker-style", "zoe"], 2,
            r"unknown library speaker 'zoe'.*ann, bob"),
    CliCase("avatar_missing", lambda t, w, m: [str(w), "-o", str(t / "out"), "--avatar", str(t / "nope.glb")], 2,
            r"nope\.glb"),
]


@pytest.mark.parametrize("case", MORE_USAGE_CASES, ids=[c.name for c in MORE_USAGE_CASES])
def test_cli_more_usage_errors(case: CliCase, tmp_path, tiny_model_dir, capsys):  # noqa: F811
    test_cli_usage_errors(case, tmp_path, tiny_model_dir, capsys)


# ------------------------------------------------------------- Space: uploads checked on arrival


def _png(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 30, 30)).save(path)
    return path


def _video_without_audio(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=30)
        stream.width = stream.height = 32
        for _ in range(15):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def _glb_file(path: Path) -> Path:
    from .hostile_payloads import rig_document

    path.write_bytes(rig_document().to_glb_bytes())
    return path


def _wav_with(path: Path, rate: int, channels: int) -> Path:
    sf.write(path, np.zeros((2000, channels), np.int16) + 1, rate, subtype="PCM_16")
    return path


SPACE_SPEECH_CASES = [
    ("empty", lambda f: put(f / "empty.wav", b""), r"empty \(0 bytes\).*empty\.wav"),
    ("text_named_wav", lambda f: put(f / "notes.wav", "not speech " * 40), r"cannot decode notes\.wav"),
    ("text_file", lambda f: put(f / "notes.txt", "not speech " * 40), r"notes\.txt: not an audio file \(it holds text\)"),
    ("image", lambda f: _png(f / "face.png"), r"face\.png is an image, not audio"),
    ("glb_as_speech", lambda f: _glb_file(f / "head.glb"), r"cannot decode head\.glb"),
    ("video_without_audio", lambda f: _video_without_audio(f / "clip.mp4"), r"clip\.mp4 has video without an audio track"),
    ("too_long", lambda f: write_wav(f / "long.wav", 5.0), r"5\.00 s long; the limit is 4 s"),
    ("header_declares_hours", _payload_flac, r"600\.00 s long; the limit is 4 s"),
    ("silent", lambda f: sf.write(f / "quiet.wav", np.zeros(16000, np.float32), 16000) or f / "quiet.wav", "silent"),
    ("dc_only", lambda f: sf.write(f / "dc.wav", np.full(16000, 0.5, np.float32), 16000) or f / "dc.wav", "DC offset"),
    ("nan_samples", lambda f: sf.write(f / "nan.wav", np.r_[speech_like(0.5), np.nan].astype(np.float32),
                                       16000, subtype="FLOAT") or f / "nan.wav", "NaN or infinite"),
    ("truncated_mp3", lambda f: put(f / "cut.mp3", mp3_bytes(3.0)[:2500]), "truncated or damaged"),
    ("too_short", lambda f: write_wav(f / "blip.wav", 0.005), "too short"),
    ("too_many_channels", lambda f: _wav_with(f / "many.wav", 16000, 65), "declares 65 channels"),
    ("rate_too_high", lambda f: _wav_with(f / "fast.wav", 1_000_000, 1), "sampling rate of 1000000 Hz"),
]

SPACE_AVATAR_CASES = [
    ("avatar_not_glb", lambda f: put(f / "head.obj", "v 0 0 0\n"), r"must be a \.glb file.*head\.obj"),
    ("avatar_no_arkit_targets", lambda f: _plain_glb(f / "plain.glb"), "no ARKit morph targets"),
    ("avatar_broken", lambda f: put(f / "broken.glb", b"glTF" + b"\0" * 64), r"broken\.glb: GLB version 0"),
    ("avatar_empty", lambda f: put(f / "empty.glb", b""), r"empty\.glb: neither a GLB"),
    ("avatar_text", lambda f: put(f / "notes.glb", "not a model " * 20), r"notes\.glb: neither a GLB"),
    ("avatar_uri_to_server_file", lambda f: _hostile_glb(f, image_uri="/proc/self/environ"),
     r"hostile\.glb: refers to the external file '/proc/self/environ'; only self-contained avatars"),
    ("avatar_declares_millions", lambda f: _many_vertices_glb(f), r"declares 2000000 vertices, over the cap"),
]


def _plain_glb(path: Path) -> Path:
    from .test_space import _write_glb_without_arkit_targets

    _write_glb_without_arkit_targets(path)
    return path


def _hostile_glb(folder: Path, **kwargs: Any) -> Path:
    from .hostile_payloads import glb_with

    return glb_with(folder, "hostile.glb", **kwargs)


def _many_vertices_glb(folder: Path) -> Path:
    from .hostile_payloads import declaring_glb

    return declaring_glb(folder, "huge.glb", 2_000_000, with_view=True)


@pytest.fixture(scope="module")
def space_app():
    pytest.importorskip("gradio", reason="the Space needs gradio")
    from .test_space import load_app

    app = load_app()
    return app, app.SpaceLimits(max_audio_seconds=4.0)


@pytest.mark.parametrize("make, message", [c[1:] for c in SPACE_SPEECH_CASES], ids=[c[0] for c in SPACE_SPEECH_CASES])
def test_space_speech_upload_is_checked_on_arrival(space_app, tmp_path, make, message):
    """What a visitor sees right after the upload (the Space's arrival check, called as Gradio calls it)."""
    app, limits = space_app
    path = make(tmp_path)
    html = app.make_check_speech(limits)(str(path))
    assert 'class="pestalk-msg bad"' in html and re.search(message, unescape(html)), html
    assert str(tmp_path) not in html and "Traceback" not in html


@pytest.mark.parametrize("make, message", [c[1:] for c in SPACE_AVATAR_CASES], ids=[c[0] for c in SPACE_AVATAR_CASES])
def test_space_avatar_upload_is_checked_on_arrival(space_app, tmp_path, make, message):
    app, _ = space_app
    path = make(tmp_path)
    html = app.check_avatar(str(path))
    assert 'class="pestalk-msg bad"' in html and re.search(message, unescape(html)), html
    assert str(tmp_path) not in html and "Traceback" not in html


# ------------------------------------------------------------------ Space: a real browser uploads


@pytest.fixture(scope="module")
def bad_upload_space(tiny_model_dir, tmp_path_factory):  # noqa: F811
    pytest.importorskip("gradio", reason="the Space needs gradio")
    from .test_space_browser import launched_space

    with launched_space(tiny_model_dir, tmp_path_factory.mktemp("bad_upload_work"), max_audio_seconds=4.0,
                        video_size=64) as url:
        yield url


from .test_space_browser import HIDE_WEBGPU, browser, visible_error_badges  # noqa: E402,F401  (browser: fixture)

BROWSER_CASES = [
    ("browser_truncated_mp3", "speech", lambda f: put(f / "cut.mp3", mp3_bytes(3.0)[:2500]), "truncated or damaged"),
    ("browser_silent_speech", "speech",
     lambda f: sf.write(f / "quiet.wav", np.zeros(16000, np.float32), 16000) or f / "quiet.wav", "silent"),
    ("browser_avatar_without_arkit_targets", "avatar", lambda f: _plain_glb(f / "plain.glb"), "no ARKit morph targets"),
    # refused by the browser itself (the input's accept= list): Gradio's warning names the file, nothing is sent
    ("browser_image_as_speech", "speech", lambda f: _png(f / "face.png"), None),
    ("browser_video_as_speech", "speech", lambda f: _video_without_audio(f / "clip.mp4"), None),
]


@pytest.mark.parametrize("field, make, message", [c[1:] for c in BROWSER_CASES], ids=[c[0] for c in BROWSER_CASES])
def test_space_bad_upload_in_a_real_browser(browser, bad_upload_space, tmp_path, field, make, message):  # noqa: F811
    """Headless Chromium uploads the file: the reason appears next to that input, no "Error" badge."""
    path = make(tmp_path)
    page = browser.new_page(viewport={"width": 1280, "height": 1200})
    page.add_init_script(HIDE_WEBGPU)
    try:
        page.goto(bad_upload_space, wait_until="networkidle")
        page.locator(f"#{field} input[type=file]").set_input_files(str(path))
        if message is None:  # the browser-side type check
            page.get_by_text(f"Invalid file type: {path.name}").wait_for(state="visible", timeout=30_000)
            page.wait_for_timeout(1000)
            assert page.locator(f"#{field}_status .pestalk-msg").count() == 0  # nothing reached the server
            assert page.locator(f"#{field} audio").count() == 0
        else:
            box = page.locator(f"#{field}_status .pestalk-msg.bad")
            box.wait_for(state="visible", timeout=30_000)
            assert re.search(message, box.inner_text()), box.inner_text()
            assert str(tmp_path) not in box.inner_text()
        assert visible_error_badges(page) == 0
    finally:
        page.close()
