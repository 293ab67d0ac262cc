"""Issue 11 points 6–7: our own Hub folders load without remote code; stale temp files of ours are
removed; a list with a bad item keeps its good results; ``final/`` appears only complete; resumed runs
log each step once; the 3D-EmoStyle builder retries clips whose files changed; smoothing is capped."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from pestalk_hf import cli
from pestalk_hf.audio import AudioError

from .conftest import tiny_config_kwargs
from .test_bad_inputs import run_cli, write_wav
from .test_pipeline import pipe, speech_like, tiny_model_dir  # noqa: F401  (fixtures)

REMOTE_MODULE_PREFIX = "transformers_modules"


# ------------------------------------------------------------------- 6. Hub folders without remote code


@pytest.fixture(scope="module")
def hub_folder(tiny_model_dir, tmp_path_factory):  # noqa: F811
    """What ``hub_scripts/push_model.py --dry-run`` writes: auto_map + remote-code pipeline entry."""
    from pestalk_hf import PESTalkModel
    from pestalk_hf.hub import save_for_hub

    folder = save_for_hub(PESTalkModel.from_pretrained(tiny_model_dir), tmp_path_factory.mktemp("pushed") / "hub")
    config = json.loads((folder / "config.json").read_text())
    assert "custom_pipelines" in config and config["auto_map"]["AutoModel"] == "modeling_pestalk.PESTalkModel"
    return folder


def test_pushed_folder_needs_trust_remote_code_in_plain_transformers(hub_folder):
    """The problem being fixed: transformers' pipeline() refuses any custom_pipelines entry."""
    from transformers import pipeline

    with pytest.raises(ValueError, match="trust_remote_code"):
        pipeline("audio-to-blendshape", model=str(hub_folder))


def test_pushed_folder_loads_with_our_classes_in_load_pipeline(hub_folder):
    from pestalk_hf.modeling.modeling_pestalk import PESTalkModel
    from pestalk_hf.pipeline import AudioToBlendshapePipeline, is_pestalk_model, load_pipeline

    assert is_pestalk_model(str(hub_folder)) and not is_pestalk_model(str(hub_folder / "missing"))
    pipe = load_pipeline(str(hub_folder))
    assert type(pipe) is AudioToBlendshapePipeline
    assert type(pipe.model) is PESTalkModel and not type(pipe.model).__module__.startswith(REMOTE_MODULE_PREFIX)
    anim = pipe({"array": speech_like(0.5), "sampling_rate": 16000})
    assert anim.weights.shape == (15, 52)


def test_pushed_folder_in_pestalk_animate(hub_folder, tmp_path, capsys):
    wav = write_wav(tmp_path / "speech.wav")
    code, out, err = run_cli(["animate", str(wav), "-o", str(tmp_path / "out"), "--model", str(hub_folder),
                              "--format", "json", "-q"], capsys)
    assert code == cli.EXIT_OK, err
    assert (tmp_path / "out" / "speech.json").is_file()


def test_pushed_folder_in_the_space(hub_folder):
    from .test_space import load_app

    app = load_app()
    pipe = app.ModelCache(str(hub_folder), max_models=1).get("")
    assert not type(pipe.model).__module__.startswith(REMOTE_MODULE_PREFIX)


# ------------------------------------------------------------------- 7a. stale temp files of ours


def test_stale_temp_files_of_ours_are_removed_only_when_old(tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    old = time.time() - 3600
    ours_old = [".good.mp4.k3j9x2ab.mp4", ".good_wav.csv.abcdefgh.tmp", ".x.png.ab_3efgh.png", ".a.b.json.12345678.tmp"]
    keep = [".good.glb.zzzzzzzz.tmp",            # ours but fresh: maybe another run writing right now
            ".notes.txt.abcdefgh.tmp",           # not one of our formats
            ".good.mp4.tmp", "good.mp4", ".hidden", "x.csv.abcdefgh.tmp"]
    for name in ours_old + keep:
        (out / name).write_bytes(b"x")
    (out / "sub" / ".good.mp4.k3j9x2ab.mp4").write_bytes(b"x")  # only the output folder itself
    (out / ".dir.mp4.abcdefgh.mp4").mkdir()                      # only plain files
    os.symlink(out / "good.mp4", out / ".lnk.mp4.abcdefgh.mp4")   # never follow or remove links
    for path in [*out.iterdir(), out / "sub" / ".good.mp4.k3j9x2ab.mp4"]:
        if path.name != ".good.glb.zzzzzzzz.tmp":
            os.utime(path, (old, old), follow_symlinks=False)
    removed = cli.remove_stale_temp_files(out, time.time())
    assert sorted(p.name for p in removed) == sorted(ours_old)
    left = sorted(p.name for p in out.iterdir())
    assert left == sorted([*keep, "sub", ".dir.mp4.abcdefgh.mp4", ".lnk.mp4.abcdefgh.mp4"])
    assert (out / "sub" / ".good.mp4.k3j9x2ab.mp4").exists()


def test_animate_removes_a_temp_file_left_by_a_killed_run(tiny_model_dir, tmp_path, capsys):  # noqa: F811
    """A run killed while writing leaves ``.speech.mp4.XXXXXXXX.mp4``; the next run removes it."""
    import tempfile

    out = tmp_path / "out"
    out.mkdir()
    # exactly the name exporters.atomic_path gives the MP4 it is writing when the process dies
    fd, left = tempfile.mkstemp(prefix=".speech.mp4.", suffix=".mp4", dir=out)
    os.write(fd, b"half a video")
    os.close(fd)
    left = Path(left)
    assert cli.STALE_TEMP_PATTERN.match(left.name), left.name
    old = time.time() - 600
    os.utime(left, (old, old))
    wav = write_wav(tmp_path / "speech.wav")
    code, _, err = run_cli(["animate", str(wav), "-o", str(out), "--model", str(tiny_model_dir), "--format", "json"],
                           capsys)
    assert code == cli.EXIT_OK, err
    assert "removed 1 temporary file" in err
    assert sorted(p.name for p in out.iterdir()) == ["speech.json"]


# ------------------------------------------------------------------- 7b. a list with a bad item


def test_one_bad_item_in_a_list_keeps_the_good_results(pipe):  # noqa: F811
    from pestalk_hf.pipeline import BatchError

    good1 = {"array": speech_like(0.5, seed=1), "sampling_rate": 16000}
    good2 = {"array": speech_like(0.7, seed=2), "sampling_rate": 16000}
    with pytest.raises(BatchError) as info:
        pipe([good1, b"not audio", good2])
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err.__cause__, AudioError)
    assert "1 of 3 inputs failed" in str(err) and "item 1 (<9 bytes>): AudioError" in str(err)
    assert list(err.failures) == [1] and sorted(err.good) == [0, 2]
    assert isinstance(err.results[1], AudioError)
    assert np.array_equal(err.results[0].weights, pipe(good1).weights)
    assert err.results[2].num_frames == 21

    results = pipe([good1, "/no/such/file.wav", good2], errors="return")
    assert [type(r).__name__ for r in results] == ["BlendshapeAnimation", "FileNotFoundError", "BlendshapeAnimation"]
    assert np.array_equal(results[2].weights, err.results[2].weights)
    assert len(pipe([good1, good2])) == 2  # all good: a plain list, as before


def test_list_parameter_errors_are_raised_once_not_per_item(pipe):  # noqa: F811
    good = {"array": speech_like(0.5), "sampling_rate": 16000}
    with pytest.raises(TypeError, match="blinks must be True or False"):
        pipe([good, good], blinks="no")
    with pytest.raises(ValueError, match="errors must be 'raise' or 'return'"):
        pipe([good], errors="ignore")
    with pytest.raises(AudioError):  # a single input raises its own error, as before
        pipe(b"not audio")


# ------------------------------------------------------------------- 7c/7d. training


def _stats() -> dict:
    return {"speakers": ["a"], "num_clips": 1, "seconds": 1.0, "mean_pose": [0.0] * 52}


def test_final_model_folder_appears_only_complete(tmp_path, monkeypatch):
    from pestalk_hf import PESTalkConfig, PESTalkModel
    from pestalk_hf.training import TrainingConfig, save_final_model

    model = PESTalkModel(PESTalkConfig(**tiny_config_kwargs(voiceprint_dim=256)))
    cfg = TrainingConfig(dataset="d", output_dir=str(tmp_path))
    final = tmp_path / "final"
    (tmp_path / ".final-partial-zz12").mkdir()  # left by a save that was killed
    (tmp_path / ".final-partial-zz12" / "model.safetensors").write_bytes(b"half")

    def fail() -> dict:  # the simulated failure: after model.safetensors, before the json files
        assert any(tmp_path.glob(".final-partial-*/model.safetensors"))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cfg, "to_dict", fail)
    with pytest.raises(OSError, match="No space left"):
        save_final_model(model, cfg, _stats(), final, step=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "no final/ and no temp folder"

    monkeypatch.undo()
    save_final_model(model, cfg, _stats(), final, step=3)
    assert {"config.json", "model.safetensors", "training_args.json", "training_data.json"} <= {
        p.name for p in final.iterdir()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]

    # a failing re-save keeps the previous complete folder untouched
    before = {p.name: p.read_bytes() for p in final.iterdir() if p.is_file()}
    monkeypatch.setattr(cfg, "to_dict", fail)
    with pytest.raises(OSError):
        save_final_model(model, cfg, _stats(), final, step=9)
    assert {p.name: p.read_bytes() for p in final.iterdir() if p.is_file()} == before
    monkeypatch.undo()
    save_final_model(model, cfg, _stats(), final, step=9)
    assert json.loads((final / "training_data.json").read_text())["steps"] == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]
    PESTalkModel.from_pretrained(final)


def test_truncate_metrics_keeps_rows_up_to_the_checkpoint(tmp_path):
    from pestalk_hf.training import truncate_metrics

    path = tmp_path / "metrics.jsonl"
    rows = [json.dumps({"step": s, "loss": 1.0 / s}) for s in (1, 2, 3, 4)]
    path.write_text("\n".join(rows) + '\n{"step": 5, "lo')  # a line cut short by the kill
    assert truncate_metrics(path, 2) == 3
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2]
    assert truncate_metrics(path, 2) == 0 and truncate_metrics(tmp_path / "none.jsonl", 2) == 0


def test_resumed_run_logs_each_step_once(tmp_path):
    """Train 4 steps (checkpoints at 2 and 4), lose checkpoint 4 as a kill before it would, resume."""
    import shutil

    from pestalk_hf.training import TrainingConfig, latest_checkpoint, train

    from .test_training import tiny_training_config

    dataset = _tiny_synth(tmp_path / "synth")
    cfg = TrainingConfig(**tiny_training_config(dataset, tmp_path / "run", max_steps=4, checkpoint_every=2,
                                                log_every=1, keep_checkpoints=5, use_pairs=False,
                                                rebuild_library=False, batch_size=2, max_seconds=0.5))
    train(cfg, progress=False)
    run = tmp_path / "run"
    shutil.rmtree(latest_checkpoint(run))
    shutil.rmtree(run / "final")
    assert json.loads((latest_checkpoint(run) / "trainer_state.json").read_text())["step"] == 2
    train(cfg, resume=True, progress=False)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def _tiny_synth(out: Path) -> Path:
    from pestalk_hf.data.synth import SynthConfig, generate

    generate(SynthConfig(num_speakers=2, num_sentences=2, emotions=("neutral", "happy"), seed=3,
                         num_test_speakers=0, num_validation_sentences=0, num_test_sentences=0), out)
    return out


# ------------------------------------------------------------------- 7e. builder retries fixed clips


def test_builder_redoes_a_shard_whose_skipped_clip_file_changed(tmp_path, monkeypatch):
    from pestalk_hf.data import video_builder as vb
    from pestalk_hf.data.schema import make_row

    calls: list[str] = []

    def fake_process_clip(spec, labeler, config):
        """Media-free stand-in: a file that reads GOOD is a 1 s clip, BAD is corrupt, none is missing."""
        calls.append(spec.id)
        entry = {"id": spec.id, "status": "ok", "split": vb.assign_split(spec.speaker, spec.sentence, config),
                 "speaker": spec.speaker, "emotion": spec.emotion, "intensity": spec.intensity,
                 "sentence": spec.sentence, "source": spec.source, "path": spec.video_path}
        path = Path(spec.video_path)
        if not path.exists():
            return None, {**entry, "status": "skipped", "reason": "file not found"}
        if not path.read_bytes().startswith(b"GOOD"):
            return None, {**entry, "status": "skipped", "reason": "cannot decode: invalid data"}
        row = make_row(id=spec.id, waveform=0.1 * np.sin(np.arange(16000) / 5.0).astype(np.float32),
                       blendshapes=np.full((30, 52), 0.2, np.float32), speaker=spec.speaker, emotion=spec.emotion)
        return row, entry

    monkeypatch.setattr(vb, "process_clip", fake_process_clip)
    monkeypatch.setattr(vb, "FaceBlendshapeLabeler", lambda *a, **k: None)
    landmarker = tmp_path / "face_landmarker.task"
    landmarker.write_bytes(b"stand-in")
    videos = tmp_path / "videos"
    videos.mkdir()
    for name, content in (("a", b"GOOD"), ("b", b"BAD!"), ("c", b"GOOD"), ("e", b"GOOD"), ("f", b"GOOD")):
        (videos / f"{name}.mp4").write_bytes(content)  # d.mp4 is missing at first
    clips = [vb.ClipSpec(id=n, video_path=str(videos / f"{n}.mp4"), speaker="s1", sentence=n) for n in "abcdef"]
    config = vb.BuildConfig(split="train", clips_per_shard=2)  # shards: [a, b], [c, d], [e, f]
    out = tmp_path / "out"

    def build() -> dict[str, str]:
        calls.clear()
        vb.build_dataset(clips, out, landmarker, config, progress=False)
        return {e["id"]: e["status"] for e in map(json.loads, (out / "report.jsonl").read_text().splitlines())}

    assert build() == {"a": "ok", "b": "skipped", "c": "ok", "d": "skipped", "e": "ok", "f": "ok"}
    report_b = json.loads((out / "reports" / "train-00000.jsonl").read_text().splitlines()[1])
    assert report_b["inputs"] == {str(videos / "b.mp4"): [4, os.stat(videos / "b.mp4").st_mtime_ns]}
    good_shard = (out / "data" / "train-00002.parquet").stat().st_mtime_ns

    build()
    assert calls == [], "nothing changed: nothing is redone"

    (videos / "b.mp4").write_bytes(b"GOOD, fixed")
    assert build()["b"] == "ok" and calls == ["a", "b"]  # only b's shard

    (videos / "d.mp4").write_bytes(b"GOOD")
    assert build() == dict.fromkeys("abcdef", "ok") and calls == ["c", "d"]
    assert (out / "data" / "train-00002.parquet").stat().st_mtime_ns == good_shard

    (videos / "a.mp4").write_bytes(b"BAD")  # a good clip that breaks later is not noticed (not recorded)
    build()
    assert calls == []

    from datasets import load_dataset

    assert sorted(r["id"] for r in load_dataset(str(out), split="train", streaming=True)) == list("abcdef")


# ------------------------------------------------------------------- 7f. smoothing and max-seconds


def test_smoothing_above_the_cap_is_a_usage_error(pipe, tmp_path, capsys):  # noqa: F811
    from pestalk_hf.postprocess import MAX_SMOOTHING_FRAMES, smooth

    wav = write_wav(tmp_path / "speech.wav")
    start = time.perf_counter()
    code, _, err = run_cli(["animate", str(wav), "-o", str(tmp_path / "out"), "--smoothing", "2e7"], capsys)
    assert code == cli.EXIT_USAGE and "smoothing must be at most 60 frames" in err
    assert time.perf_counter() - start < 5 and not (tmp_path / "out").exists()
    code, _, err = run_cli(["animate", str(wav), "-o", str(tmp_path / "out"), "--smoothing", "soft"], capsys)
    assert code == cli.EXIT_USAGE and "--smoothing" in err
    with pytest.raises(ValueError, match="at most 60 frames"):
        pipe(speech_like(0.5), sampling_rate=16000, smoothing=2e7)
    with pytest.raises(ValueError, match="at most 60 frames"):
        smooth(np.zeros((10, 52), np.float32), 1e9)
    assert smooth(np.random.default_rng(0).random((60, 52)).astype(np.float32), MAX_SMOOTHING_FRAMES).shape == (60, 52)
    assert pipe(speech_like(0.5), sampling_rate=16000, smoothing=60).num_frames == 15


def test_max_seconds_zero_is_refused_not_the_default(pipe, tmp_path, capsys):  # noqa: F811
    wav = write_wav(tmp_path / "speech.wav")
    code, _, err = run_cli(["animate", str(wav), "-o", str(tmp_path / "out"), "--max-seconds", "0"], capsys)
    assert code == cli.EXIT_USAGE and "positive number of seconds" in err
    with pytest.raises(ValueError, match="max_seconds must be a positive number"):
        pipe(speech_like(0.5), sampling_rate=16000, max_seconds=0)
