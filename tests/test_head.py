"""The default head looks finished (mouth cavity, teeth, tongue, eyes, lids, materials) and the
renderer draws every part in its own material colour, for our head and for any user GLB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pestalk_hf.avatar import ARKIT, Avatar, default_avatar, load_avatar, part_role
from pestalk_hf.avatar.color import linear_to_srgb, srgb_to_linear
from pestalk_hf.avatar.gltf_io import GltfDocument, read_gltf

AVATARS = Path(__file__).resolve().parents[1].parent / "shared" / "assets" / "avatars"
PART_NAMES = ("skin", "eyelids", "eye_white", "iris", "pupil", "teeth", "tongue", "mouth_interior")


def _w(**weights: float) -> np.ndarray:
    w = np.zeros(52, np.float32)
    for name, value in weights.items():
        w[ARKIT.index(name)] = value
    return w


def _part(av: Avatar, name: str) -> slice:
    (part,) = [p for p in av.parts if p.name == name]
    return slice(*part.vertices)


def _moved(av: Avatar, name: str) -> np.ndarray:
    return np.abs(av.morph_targets[ARKIT.index(name)]).max(axis=1) > 1e-6


def _luma(rgb) -> float:
    r, g, b = np.asarray(rgb, dtype=float)[..., :3].T
    return 0.299 * r + 0.587 * g + 0.114 * b


def test_default_head_has_named_parts_with_their_own_colours():
    av = default_avatar()
    assert tuple(p.name for p in av.parts) == PART_NAMES
    # parts tile the mesh in order and every face stays inside its part
    assert av.parts[0].vertices[0] == 0 and av.parts[-1].vertices[1] == av.num_vertices
    assert all(a.vertices[1] == b.vertices[0] and a.faces[1] == b.faces[0] for a, b in zip(av.parts, av.parts[1:]))
    # judged as shown: materials hold linear colours, the eye sees their sRGB encoding
    base = {p.name: linear_to_srgb(p.base_color) for p in av.parts}
    assert _luma(base["mouth_interior"]) < 0.35  # a dark cavity, not skin
    assert _luma(base["pupil"]) < 0.1 and _luma(base["eye_white"]) > 0.85 and _luma(base["teeth"]) > 0.8
    assert base["iris"][2] > base["iris"][0]  # blue-grey, not skin
    inner = linear_to_srgb(av.colors[_part(av, "mouth_interior")])
    assert np.median(_luma(inner)) < 0.25
    assert np.abs(base["tongue"] - base["skin"]).max() > 0.1


def test_default_glb_has_one_material_and_primitive_per_part(tmp_path):
    """Written GLB: named materials with baseColorFactor, 52 targets on each primitive, colours
    read back (COLOR_0 × baseColorFactor) equal to the head's."""
    av = default_avatar()
    path = tmp_path / "head.glb"
    path.write_bytes(av.document.to_glb_bytes())
    gltf = read_gltf(path).gltf
    assert [m["name"] for m in gltf["materials"]] == list(PART_NAMES)
    for m in gltf["materials"]:
        assert len(m["pbrMetallicRoughness"]["baseColorFactor"]) == 4
    (mesh,) = gltf["meshes"]
    assert len(mesh["primitives"]) == len(PART_NAMES)
    assert all(len(p["targets"]) == 52 for p in mesh["primitives"])
    assert mesh["extras"]["targetNames"] == list(ARKIT)
    back = load_avatar(path)
    assert back.names_present == ARKIT
    np.testing.assert_allclose(back.vertices, av.vertices, atol=1e-7)
    np.testing.assert_allclose(back.morph_targets, av.morph_targets, atol=1e-7)
    np.testing.assert_allclose(back.colors, av.colors, atol=2e-3)
    assert [p.name for p in back.parts] == list(PART_NAMES)


def test_srgb_linear_conversion_known_answers():
    """IEC 61966-2-1: 0.5 sRGB is 0.214 linear, the endpoints stay, both curves rise, they invert each other."""
    assert srgb_to_linear(0.5) == pytest.approx(0.21404, abs=1e-5)
    assert linear_to_srgb(0.21404) == pytest.approx(0.5, abs=1e-5)
    assert linear_to_srgb(0.18) == pytest.approx(0.46135, abs=1e-5)  # photographic mid-grey
    for f in (srgb_to_linear, linear_to_srgb):
        assert f(0.0) == 0.0 and f(1.0) == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(f([-0.5, 2.0]), [0.0, 1.0], atol=1e-12)  # clipped to the gamut
    # the toe: linear below the break, and the two pieces meet there
    assert srgb_to_linear(0.02) == pytest.approx(0.02 / 12.92)
    assert srgb_to_linear(0.04045 - 1e-9) == pytest.approx(srgb_to_linear(0.04045 + 1e-9), abs=1e-8)
    x = np.linspace(0.0, 1.0, 10001)
    assert (np.diff(srgb_to_linear(x)) > 0).all() and (np.diff(linear_to_srgb(x)) > 0).all()
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-12)
    np.testing.assert_allclose(srgb_to_linear(linear_to_srgb(x)), x, atol=1e-12)
    assert srgb_to_linear(np.ones((4, 5, 3)) * 0.5).shape == (4, 5, 3)


def test_head_glb_materials_hold_linear_colours(tmp_path):
    """glTF's baseColorFactor and COLOR_0 are linear: the written head holds the linear value of each
    part's intended (sRGB) colour, so three.js and Blender show the colour we chose, not a paler one."""
    from pestalk_hf.avatar import procedural_head as ph

    av = default_avatar()
    path = tmp_path / "head.glb"
    path.write_bytes(av.document.to_glb_bytes())
    doc = read_gltf(path)
    gltf = doc.gltf
    factor = {m["name"]: np.array(m["pbrMetallicRoughness"]["baseColorFactor"][:3]) for m in gltf["materials"]}
    np.testing.assert_allclose(factor["eye_white"], srgb_to_linear(ph.SCLERA), atol=1e-6)
    np.testing.assert_allclose(factor["pupil"], srgb_to_linear(ph.PUPIL), atol=1e-6)
    assert factor["eye_white"][0] == pytest.approx(0.8900, abs=1e-4)  # sRGB 0.95, not 0.95
    # skin varies (lips, brows): COLOR_0 × factor at the crown, far from both, is the skin colour
    (mesh,) = gltf["meshes"]
    skin = mesh["primitives"][[m["name"] for m in gltf["materials"]].index("skin")]
    pos = doc.accessor(skin["attributes"]["POSITION"])
    colour = doc.accessor(skin["attributes"]["COLOR_0"])[:, :3] * factor["skin"]
    crown = np.argmax(pos[:, 1])
    np.testing.assert_allclose(colour[crown], srgb_to_linear(ph.SKIN), atol=2e-3)
    assert linear_to_srgb(colour[crown]) == pytest.approx(ph.SKIN, abs=2e-3)


def test_blink_jaw_and_tongue_move_the_right_parts():
    av = default_avatar()
    x = av.vertices[:, 0]
    blink = _moved(av, "eyeBlinkLeft")
    lids = np.zeros(av.num_vertices, bool)
    lids[_part(av, "eyelids")] = True
    assert blink.any() and not (blink & ~lids).any()  # only eyelids
    assert (x[blink] > 0).all()  # of the character's left eye (+X)
    look = _moved(av, "eyeLookUpRight")
    eyes = np.zeros(av.num_vertices, bool)
    for name in ("eye_white", "iris", "pupil"):
        eyes[_part(av, name)] = True
    assert look.any() and not (look & ~eyes).any() and (x[look] < 0).all()

    tongue = np.zeros(av.num_vertices, bool)
    tongue[_part(av, "tongue")] = True
    out = _moved(av, "tongueOut")
    assert out.any() and not (out & ~tongue).any()
    tip = np.argmax(np.where(tongue, av.vertices[:, 2], -np.inf))
    assert av.morph_targets[ARKIT.index("tongueOut"), tip, 2] > 0.02  # the tip comes 2 cm forward

    jaw = _moved(av, "jawOpen")
    teeth = _part(av, "teeth")
    mouth_y = av.vertices[teeth, 1].mean()
    t_y = av.vertices[teeth, 1]
    t_moved = jaw[teeth]
    assert t_moved[t_y < mouth_y - 0.004].all() and not t_moved[t_y > mouth_y + 0.004].any()  # lower row only
    assert jaw[tongue].all() and jaw[_part(av, "mouth_interior")].any()
    assert not jaw[eyes].any() and not jaw[lids].any()
    drop = av.morph_targets[ARKIT.index("jawOpen"), teeth, 1][t_y < mouth_y - 0.004]
    assert drop.max() < -0.005  # the lower teeth go down with the chin


def _covered(points: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """For (P, 3) points: is some triangle of (T, 3, 3) in front (+Z) of it, seen along −Z?"""
    a, b, c = tri[:, 0, :2], tri[:, 1, :2], tri[:, 2, :2]
    out = np.zeros(len(points), bool)
    for k, p in enumerate(points):
        d = p[None, :2]
        cross1 = (b[:, 0] - a[:, 0]) * (d[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (d[:, 0] - a[:, 0])
        cross2 = (c[:, 0] - b[:, 0]) * (d[:, 1] - b[:, 1]) - (c[:, 1] - b[:, 1]) * (d[:, 0] - b[:, 0])
        cross3 = (a[:, 0] - c[:, 0]) * (d[:, 1] - c[:, 1]) - (a[:, 1] - c[:, 1]) * (d[:, 0] - c[:, 0])
        inside = ((cross1 >= 0) & (cross2 >= 0) & (cross3 >= 0)) | ((cross1 <= 0) & (cross2 <= 0) & (cross3 <= 0))
        out[k] = bool(np.any(inside & (tri[:, :, 2].max(axis=1) > p[2])))
    return out


@pytest.mark.parametrize("side, sign", [("Left", 1), ("Right", -1)])
def test_eyelids_close_fully_on_blink(side, sign):
    """Every iris/pupil vertex and the front of the eye white is hidden behind a lid when blinked,
    and the pupil is uncovered with the eye open."""
    av = default_avatar()
    lid_part = next(p for p in av.parts if p.name == "eyelids")
    f0, f1 = lid_part.faces
    lid_faces = av.faces[f0:f1]
    own = np.sign(av.vertices[lid_faces[:, 0], 0]) == sign
    front = []
    for name in ("pupil", "iris", "eye_white"):
        v = av.vertices[_part(av, name)]
        front.append(v[np.sign(v[:, 0]) == sign])
    pupil, iris, white = front
    centre_z = white[:, 2].min() + (white[:, 2].max() - white[:, 2].min()) / 2
    radius = (white[:, 2].max() - white[:, 2].min()) / 2
    visible = np.concatenate([pupil, iris, white[white[:, 2] > centre_z + 0.55 * radius]])
    open_lids = av.vertices[lid_faces[own]]
    assert not _covered(pupil, open_lids).any()  # the eye is open at rest
    posed = av.pose(_w(**{"eyeBlink" + side: 1.0}))
    closed = _covered(visible, posed[lid_faces[own]])
    assert closed.all(), f"{(~closed).sum()} of {len(visible)} eye vertices still visible"


def test_role_colours_for_a_rig_without_material_colours():
    assert part_role(["lambert5", "eyeLeft", "grp_eyeLeft"]) == "eye"
    assert part_role(["lambert5", "teeth"]) == "teeth"
    assert part_role(["lambert5", "head", "grp_transform"]) == "skin"
    assert part_role(["mat", "eyelid_L"]) == "skin" and part_role(["mat", "eyebrows"]) == "hair"
    if not (AVATARS / "facecap.glb").is_file():
        pytest.skip("needs ../shared/assets/avatars/facecap.glb")
    av = load_avatar(AVATARS / "facecap.glb")  # one colourless material for head, eyes and teeth
    eye_rows = [p for p in av.parts if p.roughness < 0.5]
    assert len(eye_rows) == 2  # the two eyeballs: white with an iris and pupil on the front
    for p in eye_rows:
        c = av.colors[slice(*p.vertices)]
        assert _luma(linear_to_srgb(c)).max() > 0.85 and _luma(linear_to_srgb(c)).min() < 0.1
    head = max(av.parts, key=lambda p: p.vertices[1] - p.vertices[0])
    assert np.allclose(av.colors[slice(*head.vertices)], head.base_color)


def _facecap_like_glb(path: Path, eye_rgb: tuple[float, float, float], teeth_rgb: tuple[float, float, float]) -> None:
    """A face quad (skin material, ARKit jawOpen) with an eye quad and a teeth quad in front of it,
    each its own mesh and material: the layout of facecap and most user rigs."""
    _quads_glb(path, [("head", (0, 0, 0.1, 0.0), (0.8, 0.6, 0.5), True),
                      ("eyeLeft", (0.04, 0.04, 0.015, 0.01), eye_rgb, False),
                      ("teeth", (0.0, -0.05, 0.015, 0.01), teeth_rgb, False)])


_Quad = tuple[str, tuple[float, float, float, float], tuple[float, float, float], bool]


def _quads_glb(path: Path, quads: list[_Quad]) -> None:
    """A GLB of square quads facing +Z, each its own mesh, node and material: (name, (centre x,
    centre y, half size, z), baseColorFactor RGB (linear, as glTF stores it), has an ARKit jawOpen)."""
    doc = GltfDocument({"asset": {"version": "2.0"}}, b"")

    def quad(cx: float, cy: float, half: float, z: float) -> np.ndarray:
        return np.array([[cx - half, cy - half, z], [cx + half, cy - half, z], [cx + half, cy + half, z],
                         [cx - half, cy + half, z]], np.float32)

    idx = np.array([0, 1, 2, 0, 2, 3], np.uint32)
    meshes, nodes, materials = [], [], []
    for name, placement, rgb, morph in quads:
        verts = quad(*placement)
        materials.append({"name": name + "_mat", "pbrMetallicRoughness": {"baseColorFactor": [*rgb, 1.0]}})
        prim = {"attributes": {"POSITION": doc.add_accessor(verts, "VEC3")},
                "indices": doc.add_accessor(idx, "SCALAR"), "material": len(materials) - 1}
        mesh = {"name": name, "primitives": [prim]}
        if morph:
            delta = np.zeros_like(verts)  # every corner moves: the camera frames the whole quad
            delta[:, 1] = [-0.02, -0.02, -0.005, -0.005]
            prim["targets"] = [{"POSITION": doc.add_accessor(delta, "VEC3")}]
            mesh["extras"] = {"targetNames": ["jawOpen"]}
        meshes.append(mesh)
        nodes.append({"name": name, "mesh": len(meshes) - 1})
    doc.gltf.update({"scene": 0, "scenes": [{"nodes": list(range(len(nodes)))}], "nodes": nodes, "meshes": meshes,
                     "materials": materials})
    path.write_bytes(doc.to_glb_bytes())


def test_renderer_draws_each_mesh_in_its_material_colour(tmp_path):
    from pestalk_hf.avatar.render import Renderer

    _facecap_like_glb(tmp_path / "coloured.glb", eye_rgb=(0.1, 0.3, 0.9), teeth_rgb=(0.95, 0.95, 0.95))
    _facecap_like_glb(tmp_path / "skin_only.glb", eye_rgb=(0.8, 0.6, 0.5), teeth_rgb=(0.8, 0.6, 0.5))
    try:
        with Renderer(load_avatar(tmp_path / "coloured.glb"), size=128) as r:
            coloured = r.render().astype(int)
        with Renderer(load_avatar(tmp_path / "skin_only.glb"), size=128) as r:
            plain = r.render().astype(int)
    except RuntimeError as exc:
        pytest.skip(f"offscreen OpenGL unavailable: {exc}")
    changed = np.abs(coloured - plain).sum(axis=2) > 40
    assert changed.mean() > 0.005  # the eye and teeth quads are drawn in their own colours
    px = coloured[changed]
    blue = px[:, 2] > px[:, 0] + 60
    white = px.min(axis=1) > 170
    assert blue.sum() > 20 and white.sum() > 20
    skin = plain[changed]
    assert (skin[:, 0] > skin[:, 2]).all()  # the same pixels are skin-coloured when the materials say so


def test_rendered_flat_patch_shows_the_intended_srgb_colour(tmp_path):
    """A camera-facing patch whose baseColorFactor is the linear value of sRGB 0.5 grey (0.214) and one
    of the head's skin colour come out at that sRGB colour: exactly unlit, within the lighting's
    spread when lit (our renders shade in linear and encode to sRGB, as three.js and Blender do)."""
    from pestalk_hf.avatar import procedural_head as ph
    from pestalk_hf.avatar.render import Renderer

    for rgb, want in ((srgb_to_linear([0.5, 0.5, 0.5]), np.array([0.5, 0.5, 0.5])),
                      (srgb_to_linear(ph.SKIN), ph.SKIN)):
        path = tmp_path / "patch.glb"
        _quads_glb(path, [("patch", (0, 0, 0.1, 0.0), tuple(float(c) for c in rgb), True)])
        av = load_avatar(path)
        np.testing.assert_allclose(av.colors[0], rgb, atol=1e-6)  # loaded as glTF stores it: linear
        try:
            with Renderer(av, size=64, unlit=True) as r:
                flat = r.render().astype(float)
            with Renderer(av, size=64) as r:
                lit = r.render().astype(float)
        except RuntimeError as exc:
            pytest.skip(f"offscreen OpenGL unavailable: {exc}")
        centre = (slice(28, 36), slice(28, 36))
        np.testing.assert_allclose(flat[centre].reshape(-1, 3), np.tile(want * 255, (64, 1)), atol=1.0)
        # lit head-on: key + fill + ambient ≈ 0.94 of the colour, plus a faint highlight
        np.testing.assert_allclose(lit[centre].reshape(-1, 3).mean(axis=0), want * 255, atol=12)
        bg = flat[0, 0]
        np.testing.assert_allclose(bg, np.array([0.93, 0.94, 0.96]) * 255, atol=1.0)  # background as given (sRGB)


def test_rendered_open_mouth_is_dark_inside_with_teeth():
    from pestalk_hf.avatar.render import Renderer

    av = default_avatar()
    try:
        with Renderer(av, size=256) as r:
            rest = r.render().astype(int)
            open_ = r.render(_w(jawOpen=0.6, mouthLowerDownLeft=0.3, mouthLowerDownRight=0.3)).astype(int)
    except RuntimeError as exc:
        pytest.skip(f"offscreen OpenGL unavailable: {exc}")
    mouth = np.abs(open_ - rest).sum(axis=2) > 60
    assert mouth.mean() > 0.01
    px = open_[mouth]
    luma = _luma(px)
    # a dark cavity: a fifth of what changed (the rest is the lowered lip and chin, lit in linear
    # light and so lighter than in the old display-space shading) and ≥ 0.5 % of the frame
    assert (luma < 50).mean() > 0.2 and (luma < 50).sum() > 0.005 * mouth.size
    assert np.percentile(luma, 10) < 25  # its deepest part near black
    assert (px.min(axis=1) > 150).sum() > 30  # teeth show on /a/
    # closed at rest: nothing dark between the lips (no sliver of the inside at a corner)
    rows, cols = np.nonzero(mouth & (_luma(open_) < 50))  # where the open mouth is dark
    box = rest[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    assert box.size and (_luma(box) < 60).sum() == 0


def test_contact_sheet_script_renders_every_pose(tmp_path):
    import importlib.util

    from PIL import Image

    from pestalk_hf.avatar.contact_sheet import sheet_poses
    from pestalk_hf.data.synth import EMOTION_PROTOTYPES, VISEME_TARGETS

    poses = sheet_poses()
    labels = [label for label, _ in poses]
    assert len(poses) == 5 + (len(VISEME_TARGETS) - 1) + len(EMOTION_PROTOTYPES)
    assert {"rest", "jaw open", "blink", "/a/ (father)", "/o/", "/f v/", "/m b p/", "smile"} <= set(labels)
    assert set(EMOTION_PROTOTYPES) <= set(labels) and len(EMOTION_PROTOTYPES) == 8
    spec = importlib.util.spec_from_file_location("contact_sheet_script",
                                                  Path(__file__).resolve().parents[1] / "hub_scripts" / "contact_sheet.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "sheet.png"
    try:
        code = script.main(["-o", str(out), "--tile", "48", "--facecap", str(tmp_path / "absent.glb")])
    except RuntimeError as exc:
        pytest.skip(f"offscreen OpenGL unavailable: {exc}")
    assert code == 0
    img = np.asarray(Image.open(out))
    columns, rows = 11, -(-len(poses) // 11)
    assert img.shape == (28 + rows * 48, columns * 48, 3)
    tiles = [img[28 + (k // columns) * 48:28 + (k // columns + 1) * 48, (k % columns) * 48:(k % columns + 1) * 48]
             for k in range(len(poses))]
    assert np.abs(tiles[0].astype(int) - tiles[1].astype(int)).sum() > 0  # rest ≠ jaw open
    assert script.main(["-o", str(out), "--avatar", str(tmp_path / "missing.glb"),
                        "--facecap", str(tmp_path / "absent.glb")]) == 2


@pytest.mark.parametrize("name", ["facecap.glb", "ict_face_arkit52.glb"])
def test_user_rig_mouth_inside_is_drawn_dark(name):
    """Rigs whose mouth inside is part of the skin mesh (skin-coloured) still render it dark."""
    from pestalk_hf.avatar.render import Renderer, cavity_occlusion

    if not (AVATARS / name).is_file():
        pytest.skip(f"needs ../shared/assets/avatars/{name}")
    av = load_avatar(AVATARS / name)
    try:
        with Renderer(av, size=192) as r:
            rest = r.render().astype(int)
            open_ = r.render(_w(jawOpen=1.0)).astype(int)
            seen = cavity_occlusion(r.ctx, av, _w(jawOpen=1.0))
    except RuntimeError as exc:
        pytest.skip(f"offscreen OpenGL unavailable: {exc}")
    assert seen.shape == (av.num_vertices,) and 0 <= seen.min() and seen.max() <= 1
    fg = np.abs(rest - rest[0, 0]).sum(axis=2) > 30
    assert np.median(_luma(rest[fg])) > 100  # the outside of the face is not darkened
    mouth = np.abs(open_ - rest).sum(axis=2) > 60
    assert (_luma(open_[mouth]) < 60).mean() > 0.2
