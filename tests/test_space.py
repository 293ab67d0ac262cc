"""The Gradio Space (space/app.py), launched on 127.0.0.1 and driven with ``gradio_client``.

One server (tiny model, tight limits so the limits themselves can be tested) serves every test in
this module: every output of a request on real speech is opened and checked against the pipeline
run directly, bad inputs get clear messages, working folders disappear, and a load test runs
concurrent requests through the queue and reports requests per minute.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import socket
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import soundfile as sf
import torch

import pestalk_hf
from pestalk_hf import PESTalkConfig, PESTalkModel
from pestalk_hf.animation import BlendshapeAnimation

from .conftest import ASSETS, tiny_config_kwargs
from .test_modeling import randomise_outputs

gradio_client = pytest.importorskip("gradio_client", reason="the Space tests need gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

APP_PATH = Path(__file__).resolve().parents[1] / "space" / "app.py"
EMODB = ASSETS / "speech" / "emodb"
SPEAKERS = ["ann", "bob"]
MAX_SECONDS = 4.0
MAX_FILE_SIZE = "4mb"  # facecap.glb (3.5 MB) fits, a 5 MB upload does not
OUTPUT_TTL = 1.0
VIDEO_SIZE = int(os.environ.get("PESTALK_SPACE_VIDEO_SIZE", "128"))  # the Space's default is 512
# concurrent requests of the load test; PESTALK_LOAD_REQUESTS=24 measures a longer run
LOAD_REQUESTS = int(os.environ.get("PESTALK_LOAD_REQUESTS", "4"))


def load_app() -> ModuleType:
    """space/app.py as a module (the Space folder is not a package)."""
    if "pestalk_space_app" in sys.modules:
        return sys.modules["pestalk_space_app"]
    spec = importlib.util.spec_from_file_location("pestalk_space_app", APP_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered while it executes
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def emodb_clip(name: str = "13a02Fa.wav") -> Path:
    path = EMODB / name
    if not path.is_file():
        pytest.skip("needs ../shared/assets/speech/emodb (real speech; present in CI, absent in a user's clone)")
    return path


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny PESTalk with a 2-speaker style library and 256-d (offline backend) voiceprints."""
    torch.manual_seed(0)
    model = PESTalkModel(PESTalkConfig(**tiny_config_kwargs(voiceprint_dim=256, style_speakers=SPEAKERS))).eval()
    randomise_outputs(model)
    g = torch.Generator().manual_seed(0)
    for spk in range(len(SPEAKERS)):
        for emo in range(len(pestalk_hf.MEAD_EMOTIONS)):
            model.update_style_library(torch.tensor([spk]), torch.tensor([emo]), torch.randn(1, 16, generator=g),
                                       torch.randn(1, 256, generator=g))
    path = tmp_path_factory.mktemp("tiny_pestalk")
    model.save_pretrained(path)
    return path


class ConcurrencyProbe:
    """Counts how many inferences of one (real) pipeline run at the same time."""

    def __init__(self) -> None:
        self.active = self.peak = self.calls = 0
        self._lock = threading.Lock()

    def wrap(self, pipe):
        run_single = pipe.run_single  # what Pipeline.__call__ runs for one input

        def counted(*args, **kwargs):
            with self._lock:
                self.active += 1
                self.calls += 1
                self.peak = max(self.peak, self.active)
            try:
                return run_single(*args, **kwargs)
            finally:
                with self._lock:
                    self.active -= 1

        pipe.run_single = counted
        return pipe


@pytest.fixture(scope="module")
def space(tiny_model_dir, tmp_path_factory):
    """(app module, demo, url, limits, workdir, probe): the Space on 127.0.0.1 with tight limits."""
    app = load_app()
    limits = app.SpaceLimits(max_audio_seconds=MAX_SECONDS, max_file_size=MAX_FILE_SIZE, concurrency_limit=2,
                             queue_size=max(8, LOAD_REQUESTS), output_ttl_seconds=OUTPUT_TTL, video_size=VIDEO_SIZE)
    workdir = tmp_path_factory.mktemp("space_work")
    probe, load_pipeline = ConcurrencyProbe(), app.load_pipeline
    app.load_pipeline = lambda model: probe.wrap(load_pipeline(model))  # the model loads in build_demo
    try:
        demo = app.build_demo(str(tiny_model_dir), limits=limits, workdir=workdir)
    finally:
        app.load_pipeline = load_pipeline
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **app.launch_kwargs(limits))
    try:
        yield app, demo, f"http://127.0.0.1:{port}/", limits, workdir, probe
    finally:
        demo.close()


@pytest.fixture(scope="module")
def client(space, tmp_path_factory) -> Client:
    """A client that downloads outputs into the test's temporary folder (not the shared /tmp/gradio)."""
    return Client(space[2], verbose=False, download_files=str(tmp_path_factory.mktemp("client_downloads")))


def animate(client: Client, audio, avatar=None, model="", emotion="auto", intensity=1.0, speaker="auto",
            blinks=True, smoothing=1.0):
    """One /animate call (positional order of the Space's inputs)."""
    return client.predict(audio, avatar, model, emotion, intensity, speaker, blinks, smoothing, api_name="/animate")


def check_outputs(result, seconds: float, avatar_path: Path | None = None) -> BlendshapeAnimation:
    """Open every output of one request and check it; returns the animation read from the JSON."""
    import av
    from PIL import Image

    from pestalk_hf.avatar import load_avatar
    from pestalk_hf.exporters import read_livelink_csv

    glb, mp4, png, label, style, downloads = result
    frames = math.ceil(seconds * 30 - 1e-9)
    by_suffix = {Path(p).suffix: Path(p) for p in downloads}
    assert sorted(by_suffix) == [".csv", ".glb", ".json"]
    anim = BlendshapeAnimation.from_json(by_suffix[".json"])
    assert anim.weights.shape == (frames, 52) and anim.fps == 30
    assert 0 <= anim.weights.min() and anim.weights.max() <= 1 and np.ptp(anim.weights, axis=0).max() > 0.01
    # Live Link CSV and the animated GLB carry the same curves as the JSON
    np.testing.assert_allclose(read_livelink_csv(by_suffix[".csv"]), anim.weights, atol=1e-3)
    assert Path(glb).read_bytes() == by_suffix[".glb"].read_bytes()
    np.testing.assert_allclose(BlendshapeAnimation.from_glb(glb).weights, anim.weights, atol=1e-3)
    rig = load_avatar(glb)  # the GLB is a rigged head again: the avatar plus the animation
    if avatar_path is not None:
        assert rig.num_vertices == load_avatar(avatar_path).num_vertices
    # MP4: H.264 video of the requested size at 30 fps with the input audio as AAC
    with av.open(str(mp4)) as container:
        vstream, astream = container.streams.video[0], container.streams.audio[0]
        assert (vstream.codec_context.name, vstream.width, vstream.height) == ("h264", VIDEO_SIZE, VIDEO_SIZE)
        assert vstream.average_rate == 30 and astream.codec_context.name == "aac"
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == frames and np.std(decoded[len(decoded) // 2]) > 5  # a head, not a flat frame
    # curves plot: a real image with both panels drawn
    with Image.open(png) as img:
        assert img.format == "PNG" and img.width > 400 and img.height > 300
        assert np.std(np.asarray(img.convert("L"))) > 10
    # emotion probabilities: a distribution over the model's emotions, the same as in the JSON
    confidences = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert set(confidences) == set(pestalk_hf.MEAD_EMOTIONS)
    assert sum(confidences.values()) == pytest.approx(1.0, abs=1e-4)
    assert confidences == pytest.approx(anim.emotion_probabilities, abs=1e-6)
    assert label["label"] == max(confidences, key=confidences.get)
    assert style == anim.style and style["speaker"] in SPEAKERS and -1.0 <= style["similarity"] <= 1.0
    return anim


def test_animate_real_speech_every_output(client, space, tiny_model_dir):
    """Real speech in, all six outputs out, they match the pipeline run directly, and the
    request's working folder is gone after the TTL (Gradio answered from its own cache)."""
    from pestalk_hf.pipeline import load_pipeline

    wav = emodb_clip("13a02Fa.wav")
    seconds = sf.info(wav).duration
    result = animate(client, handle_file(str(wav)), emotion="happy", speaker="bob", intensity=1.5,
                     blinks=False, smoothing=1.0)
    anim = check_outputs(result, seconds)
    assert anim.style["speaker"] == "bob" and anim.style["emotion"] == "happy"
    direct = load_pipeline(str(tiny_model_dir))(str(wav), emotion="happy", speaker_style="bob", intensity=1.5,
                                                smoothing=1.0, blinks=False)
    np.testing.assert_allclose(anim.weights, direct.weights, atol=2e-6)  # JSON rounds to 1e-6
    _, demo, _, limits, workdir, _ = space
    deadline = time.monotonic() + OUTPUT_TTL + 10
    while list(workdir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert list(workdir.iterdir()) == []
    assert demo.delete_cache == limits.cache_sweep  # Gradio sweeps uploads and its output copies too


def test_uploaded_avatar_and_auto_controls(client):
    """An uploaded ARKit GLB (facecap, `_L/_R` names) is what the GLB output animates; auto style."""
    wav = emodb_clip("14a02Wa.wav")
    facecap = ASSETS / "avatars" / "facecap.glb"
    if not facecap.is_file():
        pytest.skip("needs ../shared/assets/avatars/facecap.glb")
    result = animate(client, handle_file(str(wav)), avatar=handle_file(str(facecap)))
    anim = check_outputs(result, sf.info(wav).duration, avatar_path=facecap)
    assert anim.style["emotion"] in pestalk_hf.MEAD_EMOTIONS


def _wav(path: Path, seconds: float, amplitude: float = 0.3) -> str:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * 16000)) / 16000
    audio = amplitude * np.sin(2 * np.pi * 160 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    sf.write(path, (audio + 0.01 * amplitude * rng.standard_normal(len(t))).astype(np.float32), 16000)
    return str(path)


def test_bad_inputs_get_clear_messages(client, tmp_path, space):
    """Abuse is answered with a sentence the visitor understands, never a stack trace."""
    from gradio.utils import get_upload_folder

    upload_folder = str(get_upload_folder())
    wav = str(emodb_clip())
    (tmp_path / "notes.txt").write_text("this is not speech " * 50)
    (tmp_path / "fake.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 40)
    _write_glb_without_arkit_targets(tmp_path / "plain.glb")
    (tmp_path / "broken.glb").write_bytes(b"glTF" + b"\x00" * 64)
    big = tmp_path / "big.wav"
    sf.write(big, np.zeros(5 * 2**20 // 2, np.int16) + 1, 16000, subtype="PCM_16")  # 5 MB > 4 MB limit
    cases = [
        (dict(audio=None), "upload or record some speech"),
        (dict(audio=handle_file(str(tmp_path / "notes.txt"))), r"cannot be used: .*notes\.txt"),
        (dict(audio=handle_file(str(tmp_path / "fake.wav"))), r"cannot be used: .*fake\.wav"),
        (dict(audio=handle_file(_wav(tmp_path / "long.wav", MAX_SECONDS + 1))), r"long.*4 s"),
        (dict(audio=handle_file(_wav(tmp_path / "quiet.wav", 1.0, amplitude=0.0))), "silent"),
        (dict(audio=handle_file(wav), avatar=handle_file(str(tmp_path / "plain.glb"))), "no ARKit morph targets"),
        (dict(audio=handle_file(wav), avatar=handle_file(str(tmp_path / "broken.glb"))), r"broken\.glb"),
        (dict(audio=handle_file(wav), model=str(tmp_path / "no_such_model")), "cannot load model"),
        (dict(audio=handle_file(wav), speaker="zoe"), "unknown library speaker 'zoe'.*ann, bob"),
        (dict(audio=handle_file(wav), emotion="ecstatic"), "unknown emotion 'ecstatic'.*neutral"),
    ]
    for kwargs, pattern in cases:
        with pytest.raises((AppError, ValueError)) as info:
            animate(client, **kwargs)
        message = str(info.value)
        # no stack trace, and no server-side upload location (visitors see their file's name)
        assert "Traceback" not in message and upload_folder not in message, message
        assert _search(pattern, message), f"{kwargs}: {message!r} does not match {pattern!r}"
    # no failed request left a working folder behind
    assert list(space[4].iterdir()) == []


def test_upload_size_limit(client, space, tmp_path):
    """Over ``max_file_size``: gradio_client refuses before sending, and the server refuses a raw upload."""
    import httpx

    big = tmp_path / "big.wav"
    sf.write(big, np.ones(5 * 2**20 // 2, np.int16), 16000, subtype="PCM_16")  # 5 MB > 4 MB
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        animate(client, handle_file(str(big)))
    with big.open("rb") as handle:
        response = httpx.post(space[2] + "gradio_api/upload", files={"files": ("big.wav", handle, "audio/wav")},
                              timeout=60)
    assert response.status_code == 413 and "maximum allowed size" in response.text


def _write_glb_without_arkit_targets(path: Path) -> None:
    """A valid GLB (one triangle) whose morph targets are not ARKit shapes."""
    from pestalk_hf.avatar.gltf_io import GltfDocument

    doc = GltfDocument({"asset": {"version": "2.0"}}, b"")
    pos = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
    prim = {"attributes": {"POSITION": doc.add_accessor(pos, "VEC3")}, "mode": 4,
            "targets": [{"POSITION": doc.add_accessor(pos * 0.1, "VEC3")} for _ in range(2)]}
    mesh = {"primitives": [prim], "extras": {"targetNames": ["smile", "frown"]}}
    doc.gltf.update({"scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}], "meshes": [mesh]})
    path.write_bytes(doc.to_glb_bytes())


def _search(pattern: str, text: str) -> bool:
    import re

    return re.search(pattern, text) is not None


def test_model_cache_rejects_non_pestalk_models(tmp_path, tiny_model_dir):
    app = load_app()
    cache = app.ModelCache(str(tiny_model_dir), max_models=1)
    assert cache.get("") is cache.get(None) is cache.get(f"  {tiny_model_dir}  ")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    with pytest.raises(ValueError, match="not a PESTalk model"):
        app._load_checked(str(tmp_path))  # what an allow-listed id of another architecture gets
    # visitors cannot load server folders, and cannot tell an existing folder from a missing one (issue 11)
    messages = []
    for folder in (tmp_path, tmp_path / "missing"):
        with pytest.raises(ValueError, match="cannot load model") as info:
            cache.get(str(folder))
        messages.append(str(info.value).replace(str(folder), "<box>"))
    assert messages[0] == messages[1]
    with pytest.raises(ValueError, match="video_size"):
        app.SpaceLimits(video_size=101)


def test_controls_start_at_the_cli_defaults(space):
    """Blinks and smoothing start where `pestalk animate` starts (so the downloads are the CLI's files),
    and the UI says so; the video is rendered at 512 px by default (issue 12)."""
    from pestalk_hf.cli import build_parser

    app, demo = space[0], space[1]
    cli = build_parser().parse_args(["animate", "speech.wav", "-o", "out"])
    controls = {getattr(b, "label", None): b for b in demo.blocks.values()}
    blinks, smoothing = controls["Add eye blinks"], controls["Smoothing σ (frames)"]
    assert blinks.value is cli.blinks is False and smoothing.value == cli.smoothing == 0.0
    assert "CLI" in blinks.info and "CLI" in smoothing.info
    assert app.SpaceLimits().video_size == 512


def test_upload_checks_and_page_errors_without_a_browser(space, tmp_path):
    """The arrival checks (speech, avatar) and the page's error handling, called as Gradio calls them."""
    app, limits = space[0], space[3]
    check = app.make_check_speech(limits)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not speech " * 40)
    assert check(None) == "" and app.check_avatar(None) == ""
    for path, pattern in [(tmp_path / "empty.wav", r"empty \(0 bytes\): empty\.wav"),
                          (tmp_path / "notes.txt", r"cannot decode notes\.txt: not an audio file"),
                          (_wav(tmp_path / "long.wav", MAX_SECONDS + 1), r"5\.00 s long; the limit is 4 s"),
                          (_wav(tmp_path / "quiet.wav", 1.0, amplitude=0.0), "silent")]:
        html = check(str(path))
        assert 'class="pestalk-msg bad"' in html and _search(pattern, html), html
        assert str(tmp_path) not in html  # the visitor's file name, not the server's path
    ok = check(_wav(tmp_path / "fine.wav", 1.5))
    assert 'class="pestalk-msg ok"' in ok and "1.5 s of audio" in ok
    _write_glb_without_arkit_targets(tmp_path / "plain.glb")
    assert "no ARKit morph targets" in app.check_avatar(str(tmp_path / "plain.glb"))
    from .hostile_payloads import rig_document

    (tmp_path / "rig.glb").write_bytes(rig_document().to_glb_bytes())
    assert app.check_avatar(str(tmp_path / "rig.glb")).startswith('<div class="pestalk-msg ok"')
    assert "<script>" not in app.message_html("bad", "<script>alert(1)</script>")  # names are escaped

    # the page's handler: no exception (no per-output "Error" badges), outputs cleared, one panel,
    # and the message next to the input it concerns
    def failing(*args):
        raise app.InputError("This audio cannot be used: too long.", "speech")

    out = app.make_animate_ui(failing)(*[None] * 8)
    assert out[:6] == (None,) * 6 and "too long" in out[6] and out[7] == out[6]
    assert out[8] == gr_skip()


def gr_skip():
    import gradio as gr

    return gr.skip()


# ------------------------------------------------------------------------------------ load test


def emotion_of(request: int) -> str:
    """Each load-test request forces its own emotion, so answers cannot be mixed up unnoticed."""
    return pestalk_hf.MEAD_EMOTIONS[request % len(pestalk_hf.MEAD_EMOTIONS)]


def test_concurrent_requests_all_correct_within_limits(client, space, record_property):
    """N requests at once: all answered, each with its own emotion, none refused (N ≤ queue + running)."""
    *_, limits, _, probe = space
    calls_before = probe.calls
    clips = [emodb_clip(n) for n in ("13a02Ad.wav", "14a02Fd.wav", "13a02Lc.wav")]
    assert LOAD_REQUESTS <= limits.queue_size + limits.concurrency_limit
    results: dict[int, object] = {}

    def one(i: int) -> None:
        try:
            results[i] = animate(client, handle_file(str(clips[i % len(clips)])), emotion=emotion_of(i),
                                 speaker=SPEAKERS[i % 2], blinks=i % 2 == 0, smoothing=float(i % 3))
        except Exception as error:  # collected and asserted below, with the request number
            results[i] = error

    start = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(LOAD_REQUESTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(0.0, start + 170 - time.perf_counter()))
    elapsed = time.perf_counter() - start
    assert len(results) == LOAD_REQUESTS, "some requests did not finish within 170 s"
    # the queue ran them all, never more at once than its concurrency limit
    assert probe.calls - calls_before == LOAD_REQUESTS and 1 <= probe.peak <= limits.concurrency_limit
    for i in range(LOAD_REQUESTS):
        assert not isinstance(results[i], Exception), f"request {i}: {results[i]!r}"
        anim = check_outputs(results[i], sf.info(clips[i % len(clips)]).duration)
        assert (anim.style["emotion"], anim.style["speaker"]) == (emotion_of(i), SPEAKERS[i % 2])
    per_minute = LOAD_REQUESTS / elapsed * 60
    record_property("requests_per_minute", round(per_minute, 1))
    print(f"\nSpace load test: {LOAD_REQUESTS} concurrent requests (concurrency limit {limits.concurrency_limit}, "
          f"2 s clips, video {VIDEO_SIZE}px) in {elapsed:.1f} s = {per_minute:.1f} requests/minute; "
          f"at most {probe.peak} inferences at once")


def test_queue_refuses_requests_beyond_its_size(tiny_model_dir, tmp_path):
    """A full queue says so instead of growing without bound (queue 1, one at a time)."""
    app = load_app()
    limits = app.SpaceLimits(max_audio_seconds=MAX_SECONDS, concurrency_limit=1, queue_size=1,
                             output_ttl_seconds=OUTPUT_TTL, video_size=64)
    demo = app.build_demo(str(tiny_model_dir), limits=limits, workdir=tmp_path / "work", allow_model_choice=False)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **app.launch_kwargs(limits))
    try:
        small = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
        # a short clip keeps each accepted request cheap; the queue decides, not the clip
        wav = handle_file(_wav(tmp_path / "short.wav", 0.5))
        jobs = [small.submit(wav, None, "", "auto", 1.0, "auto", False, 0.0, api_name="/animate") for _ in range(4)]
        outcomes = []
        for job in jobs:
            try:
                job.result(timeout=120)
                outcomes.append("ok")
            except Exception as error:
                outcomes.append(str(error))
    finally:
        demo.close()
    refused = [o for o in outcomes if o != "ok"]
    assert outcomes.count("ok") >= 1 and refused, outcomes
    assert all("queue" in o.lower() and "full" in o.lower() for o in refused), outcomes


# ------------------------------------------------------------------------- the Space as shipped

def test_space_header_and_requirements_match_the_project():
    """README's Spaces header names this gradio and app.py; requirements use pyproject's specs."""
    import tomllib

    import gradio
    import yaml

    space = APP_PATH.parent
    text = (space / "README.md").read_text()
    assert text.startswith("---\n")
    header = yaml.safe_load(text.split("---\n")[1])
    assert header["sdk"] == "gradio" and header["sdk_version"] == gradio.__version__
    assert (space / header["app_file"]).is_file() and header["title"]
    pyproject = tomllib.loads((APP_PATH.parents[1] / "pyproject.toml").read_text())
    specs = {_req_name(s): s for s in pyproject["project"]["dependencies"]}
    lines = [ln.strip() for ln in (space / "requirements.txt").read_text().splitlines()]
    requirements = [ln for ln in lines if ln and not ln.startswith("#")]
    assert requirements and all(specs.get(_req_name(r)) == r for r in requirements), requirements
    assert "gradio" not in {_req_name(r) for r in requirements}  # the SDK version installs it


def _req_name(spec: str) -> str:
    import re

    return re.split(r"[<>=!~\[ ;@]", spec, maxsplit=1)[0].lower().replace("_", "-")


def test_push_space_dry_run_assembles_a_runnable_space(tiny_model_dir, tmp_path):
    """--dry-run writes app.py + header + the package (with the model embedded); the folder runs alone."""
    import subprocess

    root = APP_PATH.parents[1]
    out = tmp_path / "space"
    done = subprocess.run([sys.executable, str(root / "hub_scripts" / "push_space.py"), "--dry-run",
                           "--output", str(out), "--model", str(tiny_model_dir)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for name in ("app.py", "README.md", "requirements.txt", "packages.txt", "pestalk_hf/__init__.py",
                 "pestalk_hf/modeling/modeling_pestalk.py", "pestalk_hf/default_model/config.json",
                 "pestalk_hf/default_model/model.safetensors"):
        assert (out / name).is_file(), name
    assert not list(out.rglob("__pycache__"))
    # run from the folder (as the Hub does: `python app.py`), `import pestalk_hf` finds the copy,
    # not the installed package; found without importing, so no second torch start-up in this test
    probe = "import importlib.util as u; print(u.find_spec('pestalk_hf').origin); print(u.find_spec('app').origin)"
    ran = subprocess.run([sys.executable, "-c", probe], cwd=out, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": ""})
    assert ran.returncode == 0, ran.stderr
    origins = [Path(line).resolve() for line in ran.stdout.split()]
    assert origins == [(out / "pestalk_hf" / "__init__.py").resolve(), (out / "app.py").resolve()]
    default_model = (out / "pestalk_hf" / "__init__.py").read_text()
    assert 'Path(__file__).resolve().parent / "default_model"' in default_model  # → the embedded copy
    assert (out / "pestalk_hf" / "default_model" / "config.json").read_bytes() == (
        tiny_model_dir / "config.json").read_bytes()
    # refusing clearly: an output folder inside the sources, or no model to embed
    bad = subprocess.run([sys.executable, str(root / "hub_scripts" / "push_space.py"), "--dry-run",
                          "--output", str(root / "space" / "build"), "--model", str(tiny_model_dir)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "must not be inside" in bad.stderr
    spec = importlib.util.spec_from_file_location("push_space", root / "hub_scripts" / "push_space.py")
    push_space = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(push_space)
    fake = tmp_path / "fresh_clone"
    shutil.copytree(root / "space", fake / "space")
    (fake / "pestalk_hf").mkdir()
    (fake / "modeling").mkdir()
    with pytest.raises(ValueError, match="default_model lacks config.json.*--model"):
        push_space.assemble_space(tmp_path / "out2", root=fake)
