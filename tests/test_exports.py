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
from pestalk_hf.blendshapes import APPLE_NAMES, LIVELINK_CSV_HEADER, LIVELINK_HEAD_EYE_COLUMNS, match_morph_targets
from pestalk_hf.exporters import format_timecode, parse_timecode, prune_unused_data, read_livelink_timestamps
from pestalk_hf.avatar.gltf_io import GltfDocument, read_gltf

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


# A public Live Link Face take (dwskillman/BlendFiles: MySlate_1_iPhone.csv and take.json, app v1.3.2,
# 60 Hz): its header, its first row's EyeLook shapes and eye rotations, and its take.json times.
APP_HEADER = (
    "Timecode,BlendshapeCount,EyeBlinkLeft,EyeLookDownLeft,EyeLookInLeft,EyeLookOutLeft,EyeLookUpLeft,"
    "EyeSquintLeft,EyeWideLeft,EyeBlinkRight,EyeLookDownRight,EyeLookInRight,EyeLookOutRight,EyeLookUpRight,"
    "EyeSquintRight,EyeWideRight,JawForward,JawRight,JawLeft,JawOpen,MouthClose,MouthFunnel,MouthPucker,"
    "MouthRight,MouthLeft,MouthSmileLeft,MouthSmileRight,MouthFrownLeft,MouthFrownRight,MouthDimpleLeft,"
    "MouthDimpleRight,MouthStretchLeft,MouthStretchRight,MouthRollLower,MouthRollUpper,MouthShrugLower,"
    "MouthShrugUpper,MouthPressLeft,MouthPressRight,MouthLowerDownLeft,MouthLowerDownRight,MouthUpperUpLeft,"
    "MouthUpperUpRight,BrowDownLeft,BrowDownRight,BrowInnerUp,BrowOuterUpLeft,BrowOuterUpRight,CheekPuff,"
    "CheekSquintLeft,CheekSquintRight,NoseSneerLeft,NoseSneerRight,TongueOut,HeadYaw,HeadPitch,HeadRoll,"
    "LeftEyeYaw,LeftEyePitch,LeftEyeRoll,RightEyeYaw,RightEyePitch,RightEyeRoll"
)
APP_EYE_LOOK = {"eyeLookDownLeft": 0.1126266047, "eyeLookInLeft": 0.0544237606,
                "eyeLookDownRight": 0.1126226410, "eyeLookInRight": 0.0626601055}
APP_EYE_ROTATIONS = [-0.0381863005, 0.0688475519, -0.0026325486, 0.0331669003, 0.0688375905, 0.0022863199]
APP_TAKE = {"startTimecode": "11:54:29:19.804", "endTimecode": "11:54:40:37.884",
            "startTimestamp": 474869330070726e-9, "endTimestamp": 474880631406169e-9}


def test_timecode_counts_sixtieths_like_the_app():
    assert format_timecode(0, 30) == "00:00:00:00.000"
    assert format_timecode(1, 30) == "00:00:00:02.000"
    assert format_timecode(42, 30) == "00:00:01:24.000"
    assert format_timecode(30 * 3661 + 5, 30) == "01:01:01:10.000"
    assert format_timecode(59, 60) == "00:00:00:59.000"
    assert format_timecode(1, 25) == "00:00:00:02.400"
    # the app's rule, checked on its own take: the timecodes span exactly the recorded timestamps
    span = parse_timecode(APP_TAKE["endTimecode"]) - parse_timecode(APP_TAKE["startTimecode"])
    assert span == pytest.approx(APP_TAKE["endTimestamp"] - APP_TAKE["startTimestamp"], abs=1e-4)
    assert parse_timecode("00:00:01:24.000") == pytest.approx(1.4)
    for bad in ("00:00:01", "00:00:00:60.000", "aa:00:00:00.000"):
        with pytest.raises(ValueError):
            parse_timecode(bad)


def test_livelink_csv_reads_like_an_app_recording(tmp_path):
    """Our CSV parsed with the app's rules: 60ths timecode → 1/30 s steps, app header, eye rotations."""
    frames = 95  # > 3 s: crosses second boundaries
    w = np.zeros((frames, 52), np.float32)
    gaze = 0.55 + 0.45 * np.sin(np.arange(frames) / 7)
    w[:, ARKIT.index("eyeLookInLeft")] = w[:, ARKIT.index("eyeLookOutRight")] = gaze  # a rightward look
    w[:, ARKIT.index("eyeLookDownLeft")] = w[:, ARKIT.index("eyeLookDownRight")] = 0.3
    w[:11] = 0.0
    for name, value in APP_EYE_LOOK.items():  # frame 10: the app's first recorded row
        w[10, ARKIT.index(name)] = value
    w[:, ARKIT.index("jawOpen")] = np.linspace(0, 1, frames)
    path = BlendshapeAnimation(w).to_livelink_csv(tmp_path / "a.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == APP_HEADER  # the app's column names and order
    rows = [line.split(",") for line in lines[1:]]
    assert len(rows) == frames and all(len(r) == 63 and r[1] == "61" for r in rows)
    # the frame field counts 60ths: 00, 02, … 58 at 30 Hz, the sub-frame is 0
    assert {r[0][9:] for r in rows} == {f"{2 * k:02d}.000" for k in range(30)}
    t = read_livelink_timestamps(path)
    np.testing.assert_allclose(np.diff(t), 1 / 30, atol=1e-9)  # no double speed, no hold
    assert t[-1] == pytest.approx((frames - 1) / 30)
    # values: 10 decimals like the app; the shapes read back
    assert all(len(cell.split(".")[1]) == 10 for cell in rows[20][2:])
    np.testing.assert_allclose(BlendshapeAnimation.from_livelink_csv(path).weights, w, atol=1e-9)
    eyes = np.array([[float(r[2 + 52 + 3 + k]) for k in range(6)] for r in rows])
    head = np.array([[float(r[2 + 52 + k]) for k in range(3)] for r in rows])
    assert np.all(head == 0) and np.all(eyes[:10] == 0)
    np.testing.assert_allclose(eyes[10], APP_EYE_ROTATIONS, atol=1e-6)  # the app's own numbers
    moving = eyes[11:]
    assert np.all(moving[:, [0, 3]] > 0.03)  # yaw > 0: looking to the subject's right, both eyes
    assert np.all(moving[:, [1, 4]] > 0.15)  # pitch > 0: looking down (35° × 0.3 ≈ 0.18 rad)
    assert np.ptp(moving[:, 0]) > 0.2  # follows the EyeLook curve
    assert np.abs(eyes).max() < np.deg2rad(40)  # radians, within the eye's range


def test_livelink_csv_round_trip(tmp_path):
    anim = _anim()
    path = anim.to_livelink_csv(tmp_path / "a.csv")
    lines = path.read_text().splitlines()
    assert lines[0].split(",") == list(LIVELINK_CSV_HEADER)
    assert list(LIVELINK_CSV_HEADER) == ["Timecode", "BlendshapeCount", *APPLE_NAMES, *LIVELINK_HEAD_EYE_COLUMNS]
    assert len(lines) == 1 + anim.num_frames
    first = lines[1].split(",")
    assert first[0] == "00:00:00:00.000" and first[1] == "61" and len(first) == len(LIVELINK_CSV_HEADER)
    # Apple order: column "JawOpen" holds our jawOpen
    col = LIVELINK_CSV_HEADER.index("JawOpen")
    assert float(first[col]) == pytest.approx(float(anim.weight("jawOpen")[0]), abs=1e-9)
    back = BlendshapeAnimation.from_livelink_csv(path)
    np.testing.assert_allclose(back.weights, anim.weights, atol=1e-9)
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


@pytest.mark.parametrize("frames", [0, 1, 4096, 9000])
def test_json_weights_written_block_by_block_are_the_same_text(tmp_path, frames):
    """Issue 11: the weights go out block by block (never 11 M Python floats for 2 h); the file must be
    exactly what one json.dump of the rounded list wrote before, blocks edges (4096 rows) included."""
    from pestalk_hf import exporters

    weights = np.random.default_rng(frames).random((frames, 52), dtype=np.float32)
    anim = BlendshapeAnimation(weights=weights, fps=30, emotion_probabilities={"happy": 1.0},
                               style={"speaker": "spk", "emotion": "happy", "similarity": 0.5})
    anim.to_json(tmp_path / "a.json")
    payload = {**anim._json_payload(), "weights": np.round(weights.astype(np.float64), 6).tolist()}
    assert (tmp_path / "a.json").read_text() == json.dumps(payload, separators=(",", ":"), allow_nan=False)
    bad = weights.copy()
    if frames:
        bad[-1, 3] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            exporters.write_json(tmp_path / "b.json", {"weights": bad})
        assert not (tmp_path / "b.json").exists()


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
    """0 errors, 0 warnings and 0 infos (no UNUSED_OBJECT left over from the source asset)."""
    report = _validate(written_glb[0])
    assert report["issues"]["numErrors"] == 0, report["issues"]["messages"][:5]
    assert report["issues"]["numWarnings"] == 0, report["issues"]["messages"][:5]
    assert report["issues"]["numInfos"] == 0, report["issues"]["messages"][:5]


def test_glb_keeps_only_what_the_animation_needs(written_glb):
    """The source's own animation and its accessors/bufferViews are gone; the buffer is compact."""
    path, anim, _, source = written_glb
    doc = read_gltf(path)
    gltf = doc.gltf
    n_views = len(gltf["bufferViews"])
    used_views = {a["bufferView"] for a in gltf["accessors"] if "bufferView" in a}
    used_views |= {a["sparse"][p]["bufferView"] for a in gltf["accessors"] if "sparse" in a
                   for p in ("indices", "values")}
    used_views |= {i["bufferView"] for i in gltf.get("images", []) if "bufferView" in i}
    assert used_views == set(range(n_views))
    # the views tile the buffer: only 4-byte alignment padding between them
    spans = sorted((v.get("byteOffset", 0), v["byteLength"]) for v in gltf["bufferViews"])
    gaps = [b[0] - (a[0] + a[1]) for a, b in zip(spans, spans[1:])]
    assert all(0 <= g < 4 for g in gaps) and len(doc.binary) - (spans[-1][0] + spans[-1][1]) < 4
    if source is not None:
        src = read_gltf(source)
        ours = 4 * anim.num_frames * (1 + sum(len(m.get("extras", {}).get("targetNames", [])) for m in
                                             gltf["meshes"] if m.get("primitives", [{}])[0].get("targets")))
        sg = src.gltf
        anim_acc = {s[k] for a in sg.get("animations", []) for s in a["samplers"] for k in ("input", "output")}
        other_views = {a.get("bufferView") for i, a in enumerate(sg["accessors"]) if i not in anim_acc}
        anim_views = {sg["accessors"][i]["bufferView"] for i in anim_acc} - other_views
        src_anim_bytes = sum(sg["bufferViews"][v]["byteLength"] for v in anim_views)
        assert src_anim_bytes > 0 or not sg.get("animations")  # facecap brings its own capture
        assert len(doc.binary) <= len(src.binary) - src_anim_bytes + ours + 4 * len(gltf["bufferViews"])


def test_prune_unused_data_renumbers_and_compacts():
    doc = GltfDocument({"asset": {"version": "2.0"}}, b"")
    unused = doc.add_accessor(np.arange(100, dtype=np.float32), "SCALAR")
    pos = doc.add_accessor(np.zeros((3, 3), np.float32), "VEC3")
    img_view = doc.add_buffer_view(b"\x89PNG....")
    times = doc.add_accessor(np.array([0.0, 1 / 30], np.float32), "SCALAR")
    values = doc.add_accessor(np.array([0.0, 1.0], np.float32), "SCALAR", with_bounds=False)
    doc.add_buffer_view(b"orphan view")
    doc.gltf.update({
        "meshes": [{"primitives": [{"attributes": {"POSITION": pos}, "targets": [{"POSITION": pos}]}]}],
        "nodes": [{"mesh": 0}], "images": [{"bufferView": img_view, "mimeType": "image/png"}],
        "animations": [{"samplers": [{"input": times, "output": values}],
                        "channels": [{"sampler": 0, "target": {"node": 0, "path": "weights"}}]}],
    })
    assert unused == 0
    before = {k: doc.accessor(i).copy() for k, i in (("pos", pos), ("t", times), ("v", values))}
    prune_unused_data(doc)
    g = doc.gltf
    assert len(g["accessors"]) == 3 and len(g["bufferViews"]) == 4
    prim = g["meshes"][0]["primitives"][0]
    np.testing.assert_array_equal(doc.accessor(prim["attributes"]["POSITION"]), before["pos"])
    assert prim["targets"][0]["POSITION"] == prim["attributes"]["POSITION"]
    sampler = g["animations"][0]["samplers"][0]
    np.testing.assert_array_equal(doc.accessor(sampler["input"]), before["t"])
    np.testing.assert_array_equal(doc.accessor(sampler["output"]), before["v"])
    view = g["bufferViews"][g["images"][0]["bufferView"]]
    assert bytes(doc.binary[view["byteOffset"]:view["byteOffset"] + view["byteLength"]]) == b"\x89PNG...."
    assert len(doc.binary) == 36 + 8 + 8 + 8  # 400 bytes of the unused accessor and the orphan view gone


def test_save_writes_every_format(tmp_path):
    anim = _anim(frames=8, audio=np.zeros(4000, np.float32))
    paths = anim.save(tmp_path / "out", "clip")
    assert set(paths) == {"csv", "json", "npz", "glb", "mp4", "png"}
    for fmt, p in paths.items():
        assert p.name == f"clip.{fmt}" and p.stat().st_size > 0
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths.values())
