"""Animation files: CSV/JSON/NPZ round trips, the real Face Cap capture, validated GLB export."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pestalk_hf.animation import BlendshapeAnimation
from pestalk_hf.avatar import ARKIT, load_avatar
from pestalk_hf.blendshapes import LIVELINK_CSV_HEADER, match_morph_targets
from pestalk_hf.exporters import format_timecode
from pestalk_hf.gltf_io import read_gltf

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
AVATARS = ASSETS / "avatars"
VALIDATOR_SCRIPT = Path(__file__).with_name("gltf_validate.js")
# Where `npm install gltf-validator` put its node_modules (see .ci/run); overridable.
VALIDATOR_DIRS = [os.environ.get("GLTF_VALIDATOR_NODE_PATH", ""), "/tmp/gltfv/node_modules"]


@pytest.fixture(scope="module")
def avatars_dir() -> Path:
    if not (AVATARS / "facecap.glb").is_file():
        pytest.skip("needs ../shared/assets/avatars (ICT and facecap GLBs)")
    return AVATARS


def _anim(frames: int = 45, seed: int = 0, **kw) -> BlendshapeAnimation:
    rng = np.random.default_rng(seed)
    w = rng.random((frames, 52)).astype(np.float32)
    w[:, ARKIT.index("jawOpen")] = 0.5 + 0.5 * np.sin(np.arange(frames) / 4)
    return BlendshapeAnimation(w, **kw)


def _validator_env() -> dict[str, str]:
    if shutil.which("node") is None:
        pytest.skip("glTF validation needs node (apt-get install nodejs)")
    for d in VALIDATOR_DIRS:
        if d and (Path(d) / "gltf-validator").is_dir():
            return dict(os.environ, NODE_PATH=d)
    pytest.skip("glTF validation needs the npm package gltf-validator: "
                "`npm install --prefix /tmp/gltfv gltf-validator` (or set GLTF_VALIDATOR_NODE_PATH)")


def _validate(path: Path) -> dict:
    env = _validator_env()
    proc = subprocess.run(["node", str(VALIDATOR_SCRIPT), str(path)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_timecode_format():
    assert format_timecode(0, 30) == "00:00:00:00.000"
    assert format_timecode(42, 30) == "00:00:01:12.000"
    assert format_timecode(30 * 3661 + 5, 30) == "01:01:01:05.000"


def test_livelink_csv_round_trip(tmp_path):
    anim = _anim()
    path = anim.to_livelink_csv(tmp_path / "a.csv")
    lines = path.read_text().splitlines()
    assert lines[0].split(",") == list(LIVELINK_CSV_HEADER)
    assert len(lines) == 1 + anim.num_frames
    first = lines[1].split(",")
    assert first[0] == "00:00:00:00.000" and first[1] == "61" and len(first) == len(LIVELINK_CSV_HEADER)
    # Apple order: column "JawOpen" holds our jawOpen
    col = LIVELINK_CSV_HEADER.index("JawOpen")
    assert float(first[col]) == pytest.approx(float(anim.weight("jawOpen")[0]), abs=1e-6)
    back = BlendshapeAnimation.from_livelink_csv(path)
    np.testing.assert_allclose(back.weights, anim.weights, atol=1e-6)
    assert back.fps == 30


def test_csv_reader_accepts_other_column_orders_and_rejects_junk(tmp_path):
    (tmp_path / "alpha.csv").write_text("jawOpen,eyeBlink_L\n0.5,0.25\n0.1,0\n")
    back = BlendshapeAnimation.from_livelink_csv(tmp_path / "alpha.csv")
    assert back.weights.shape == (2, 52)
    assert back.weight("jawOpen").tolist() == [0.5, pytest.approx(0.1)]
    assert back.weight("eyeBlinkLeft")[0] == 0.25
    (tmp_path / "junk.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="no ARKit"):
        BlendshapeAnimation.from_livelink_csv(tmp_path / "junk.csv")


def test_json_and_npz_round_trip(tmp_path):
    audio = np.sin(np.linspace(0, 100, 24000)).astype(np.float32)
    anim = _anim(emotion_probabilities={"happy": 0.75, "neutral": 0.25},
                 style={"speaker": "spk3", "emotion": "happy", "similarity": 0.875}, audio=audio)
    js = BlendshapeAnimation.from_json(anim.to_json(tmp_path / "a.json"))
    np.testing.assert_allclose(js.weights, anim.weights, atol=1e-6)
    assert js.emotion_probabilities == anim.emotion_probabilities and js.style == anim.style
    assert json.loads((tmp_path / "a.json").read_text())["duration"] == pytest.approx(1.5)
    npz = BlendshapeAnimation.from_npz(anim.to_npz(tmp_path / "a.npz"))
    np.testing.assert_array_equal(npz.weights, anim.weights)
    np.testing.assert_array_equal(npz.audio, audio)
    assert npz.style == anim.style and npz.emotion_probabilities == pytest.approx(anim.emotion_probabilities)
    with np.load(tmp_path / "a.npz", allow_pickle=False) as z:
        assert z["weights"].dtype == np.float32


def test_bad_input_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"\(T, 52\)"):
        BlendshapeAnimation(np.zeros((10, 51)))
    with pytest.raises(ValueError, match="NaN"):
        BlendshapeAnimation(np.full((2, 52), np.nan))
    with pytest.raises(ValueError, match="fps"):
        BlendshapeAnimation(np.zeros((2, 52)), fps=0)
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="not a pestalk"):
        BlendshapeAnimation.from_json(tmp_path / "other.json")
    with pytest.raises(ValueError, match="unknown formats"):
        _anim().save(tmp_path, formats=("csv", "fbx"))


def test_failed_write_leaves_no_file(tmp_path):
    anim = _anim(style={"similarity": float("nan")})  # JSON cannot hold NaN
    with pytest.raises(ValueError):
        anim.to_json(tmp_path / "a.json")
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temp file


def test_facecap_capture_round_trips(avatars_dir, tmp_path):
    """The real 11.2 s Face Cap capture: GLB → ours → CSV/JSON → back, equal within float tolerance."""
    path = avatars_dir / "facecap.glb"
    cap = BlendshapeAnimation.from_glb(path)
    assert cap.num_frames == 335 and cap.duration == pytest.approx(11.17, abs=0.01)
    assert cap.weights.min() >= 0 and cap.weights.max() <= 1
    # keys are exactly 1/30 s apart: resampling must reproduce the raw keyframes, column by name
    doc = read_gltf(path)
    anim = doc.gltf["animations"][0]
    sampler = anim["samplers"][anim["channels"][0]["sampler"]]
    names = doc.gltf["meshes"][2]["extras"]["targetNames"]
    raw = doc.accessor(sampler["output"]).reshape(-1, len(names))
    match = match_morph_targets(names)
    for rig_idx, our_idx in match.mapping.items():
        np.testing.assert_allclose(cap.weights[:, our_idx], raw[:, rig_idx], atol=1e-5)
    assert np.ptp(cap.weight("jawOpen")) > 0.3  # a real performance, not a flat line
    csv_back = BlendshapeAnimation.from_livelink_csv(cap.to_livelink_csv(tmp_path / "cap.csv"))
    np.testing.assert_allclose(csv_back.weights, cap.weights, atol=1e-6)
    json_back = BlendshapeAnimation.from_json(cap.to_json(tmp_path / "cap.json"))
    np.testing.assert_allclose(json_back.weights, cap.weights, atol=1e-6)


AVATAR_CASES = ["default", "ict_face_arkit52.glb", "facecap.glb"]


@pytest.fixture(scope="module", params=AVATAR_CASES)
def written_glb(request, tmp_path_factory):
    """(path, animation, avatar target names, source asset or None) for each avatar, written once."""
    anim = _anim(frames=20, seed=1)
    out = tmp_path_factory.mktemp("glb") / f"{request.param}.glb"
    if request.param == "default":
        anim.to_glb(out)
        return out, anim, list(ARKIT), None
    source = AVATARS / request.param
    if not source.is_file():
        pytest.skip("needs ../shared/assets/avatars (ICT and facecap GLBs)")
    avatar = load_avatar(source)
    anim.to_glb(out, avatar=avatar)
    return out, anim, list(avatar.morph_meshes[0].target_names), source


def test_glb_animation_is_retargeted_and_reads_back(written_glb):
    path, anim, target_names, source = written_glb
    doc = read_gltf(path)
    (animation,) = doc.gltf["animations"]  # the source's own animations are replaced
    sampler = animation["samplers"][0]
    assert sampler["interpolation"] == "LINEAR"
    times = doc.accessor(sampler["input"])[:, 0]
    np.testing.assert_allclose(np.diff(times), 1 / 30, atol=1e-6)
    out = doc.accessor(sampler["output"]).reshape(anim.num_frames, len(target_names))
    # retargeted onto the avatar's own names and order
    for k, name in enumerate(target_names):
        ours = match_morph_targets([name]).mapping.get(0)
        if ours is not None:
            np.testing.assert_allclose(out[:, k], anim.weights[:, ours], atol=1e-7)
    back = BlendshapeAnimation.from_glb(path)
    np.testing.assert_allclose(back.weights, anim.weights, atol=1e-6)
    if source is None:
        assert doc.gltf["meshes"][0]["extras"]["targetNames"] == list(ARKIT)
        assert len(doc.gltf["meshes"][0]["primitives"][0]["targets"]) == 52
    else:  # the original asset survives: same meshes, target names and node tree
        src = read_gltf(source).gltf
        assert [m.get("extras") for m in doc.gltf["meshes"]] == [m.get("extras") for m in src["meshes"]]
        assert doc.gltf["nodes"] == src["nodes"]


def test_glb_passes_khronos_validator(written_glb):
    report = _validate(written_glb[0])
    assert report["issues"]["numErrors"] == 0, report["issues"]["messages"][:5]
    assert report["issues"]["numWarnings"] == 0, report["issues"]["messages"][:5]


def test_save_writes_every_format(tmp_path):
    anim = _anim(frames=8, audio=np.zeros(4000, np.float32))
    paths = anim.save(tmp_path / "out", "clip")
    assert set(paths) == {"csv", "json", "npz", "glb", "mp4", "png"}
    for fmt, p in paths.items():
        assert p.name == f"clip.{fmt}" and p.stat().st_size > 0
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths.values())
