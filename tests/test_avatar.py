"""Avatars: loading ARKit-rigged GLBs (retarget by name) and the procedural default head."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pestalk_hf.avatar import ARKIT, VertexNormals, default_avatar, load_avatar, vertex_normals
from pestalk_hf.avatar.gltf_io import GltfDocument, read_gltf

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
AVATARS = ASSETS / "avatars"


@pytest.fixture(scope="module")
def avatars_dir() -> Path:
    if not (AVATARS / "ict_face_arkit52.glb").is_file():
        pytest.skip("needs ../shared/assets/avatars (ICT and facecap GLBs)")
    return AVATARS


def _raw_target(path: Path, mesh_name_targets: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rest positions, delta of the named target, world matrix) straight from the file."""
    doc = read_gltf(path)
    world = doc.node_world_matrices()
    for node_idx, m in world.items():
        node = doc.gltf["nodes"][node_idx]
        if "mesh" not in node:
            continue
        mesh = doc.gltf["meshes"][node["mesh"]]
        names = (mesh.get("extras") or {}).get("targetNames", [])
        if mesh_name_targets in names:
            prim = mesh["primitives"][0]
            pos = doc.accessor(prim["attributes"]["POSITION"])
            delta = doc.accessor(prim["targets"][names.index(mesh_name_targets)]["POSITION"])
            return pos, delta, m
    raise AssertionError(f"{mesh_name_targets} not found")


def test_ict_loads_in_arkit_order(avatars_dir):
    av = load_avatar(avatars_dir / "ict_face_arkit52.glb")
    assert av.vertices.shape == (24591, 3) and av.vertices.dtype == np.float32
    assert av.faces.shape[1] == 3 and av.faces.max() < 24591
    assert av.morph_targets.shape == (52, 24591, 3)
    assert av.names_present == ARKIT
    assert av.unmatched_targets == ()
    # ICT's targets are already in ARKit order and its node has no transform: sparse accessors
    # decoded by us must equal the raw data for every target
    for name in ("jawOpen", "eyeBlinkLeft", "mouthSmileRight"):
        _, delta, _ = _raw_target(avatars_dir / "ict_face_arkit52.glb", name)
        np.testing.assert_array_equal(av.morph_targets[ARKIT.index(name)], delta)
    jaw = av.morph_targets[ARKIT.index("jawOpen")]
    assert jaw[:, 1].min() < -0.005  # the chin goes down (metres)
    blink = np.abs(av.morph_targets[ARKIT.index("eyeBlinkLeft")]).max(axis=1) > 1e-6
    assert av.vertices[blink, 0].mean() > 0  # character's left is +X in glTF


def test_facecap_retargets_lr_suffix_names(avatars_dir):
    path = avatars_dir / "facecap.glb"
    av = load_avatar(path)
    assert av.names_present == ARKIT
    assert len(av.morph_meshes) == 1 and av.morph_meshes[0].target_names[1] == "browDown_L"
    # browDown_L (rig index 1) lands in our browDownLeft slot, transformed to world space
    pos, delta, m = _raw_target(path, "browDown_L")
    ours = av.morph_targets[ARKIT.index("browDownLeft")]
    moving = np.flatnonzero(np.abs(ours).max(axis=1) > 0)
    expected = delta @ m[:3, :3].T
    start = moving.min() - np.flatnonzero(np.abs(expected).max(axis=1) > 0).min()
    np.testing.assert_allclose(ours[start:start + len(delta)], expected, atol=1e-6)
    np.testing.assert_allclose(av.vertices[start:start + len(pos)], pos @ m[:3, :3].T + m[:3, 3], atol=1e-5)
    # eyes and teeth have no targets but are kept as static geometry
    assert av.num_vertices > len(pos)


def _write_glb(path: Path, target_names: list[str] | None) -> None:
    doc = GltfDocument({"asset": {"version": "2.0"}}, b"")
    pos = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
    prim = {"attributes": {"POSITION": doc.add_accessor(pos, "VEC3")}, "mode": 4}
    mesh: dict = {"primitives": [prim]}
    if target_names is not None:
        prim["targets"] = [{"POSITION": doc.add_accessor(pos * 0.1, "VEC3")} for _ in target_names]
        mesh["extras"] = {"targetNames": target_names}
    doc.gltf.update({"scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}], "meshes": [mesh]})
    path.write_bytes(doc.to_glb_bytes())


def test_glb_without_arkit_targets_is_a_clear_error(tmp_path):
    _write_glb(tmp_path / "plain.glb", None)
    with pytest.raises(ValueError, match="no ARKit morph targets.*no named morph targets"):
        load_avatar(tmp_path / "plain.glb")
    _write_glb(tmp_path / "other.glb", ["smile", "frown"])
    with pytest.raises(ValueError, match="no ARKit morph targets.*smile"):
        load_avatar(tmp_path / "other.glb")
    with pytest.raises(ValueError, match="does not exist"):
        load_avatar(tmp_path / "missing.glb")
    (tmp_path / "junk.glb").write_bytes(b"not a model")
    with pytest.raises(ValueError):
        load_avatar(tmp_path / "junk.glb")


def test_partial_rig_loads_with_zeros_for_missing(tmp_path):
    _write_glb(tmp_path / "partial.glb", ["jawOpen", "eyeBlink_L", "extraShape"])
    av = load_avatar(tmp_path / "partial.glb")
    assert av.names_present == ("eyeBlinkLeft", "jawOpen")
    assert av.unmatched_targets == ("extraShape",)
    assert np.any(av.morph_targets[ARKIT.index("jawOpen")])
    assert not np.any(av.morph_targets[ARKIT.index("mouthSmileLeft")])


def test_default_avatar_has_52_moving_targets():
    av = default_avatar()
    assert av is default_avatar()  # cached
    assert av.names_present == ARKIT and av.morph_targets.shape[0] == 52
    assert not av.vertices.flags.writeable  # shared cached object must not be mutated
    for i, name in enumerate(ARKIT):
        assert np.abs(av.morph_targets[i]).max() > 1e-3, f"{name} does not move"
    size = av.vertices.max(axis=0) - av.vertices.min(axis=0)
    assert 0.1 < size[1] < 0.3  # a head in metres
    jaw = av.morph_targets[ARKIT.index("jawOpen")]
    assert jaw[:, 1].min() < -0.01
    for side, sign in (("Left", 1), ("Right", -1)):
        moved = np.abs(av.morph_targets[ARKIT.index("eyeBlink" + side)]).max(axis=1) > 0
        assert np.sign(av.vertices[moved, 0].mean()) == sign
    # symmetric rig: left and right smiles mirror each other
    left = av.morph_targets[ARKIT.index("mouthSmileLeft")]
    right = av.morph_targets[ARKIT.index("mouthSmileRight")]
    assert np.isclose(np.abs(left).sum(), np.abs(right).sum(), rtol=1e-3)
    assert av.colors is not None and av.colors.shape == av.vertices.shape


def test_default_avatar_is_deterministic():
    from pestalk_hf.avatar.procedural_head import build_head

    a, b = build_head(), build_head()
    np.testing.assert_array_equal(a.vertices, b.vertices)
    np.testing.assert_array_equal(a.morph_targets, b.morph_targets)
    np.testing.assert_array_equal(a.faces, b.faces)


def test_pose_and_normals():
    av = default_avatar()
    np.testing.assert_array_equal(av.pose(np.zeros(52)), av.vertices)
    w = np.zeros(52, np.float32)
    w[ARKIT.index("jawOpen")] = 0.5
    np.testing.assert_allclose(av.pose(w), av.vertices + 0.5 * av.morph_targets[ARKIT.index("jawOpen")], atol=1e-7)
    batch = av.pose(np.stack([w, 2 * w]))
    assert batch.shape == (2,) + av.vertices.shape
    posed = av.pose(w)
    fast = VertexNormals(av.faces, av.num_vertices, av.vertices, av.moving_vertices)(posed)
    np.testing.assert_allclose(fast, vertex_normals(posed, av.faces), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError):
        av.pose(np.zeros(51))
