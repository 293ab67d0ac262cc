"""Hostile avatar files (issue 11, points 1–2): no file leaks through glTF URIs, no allocation from
declared sizes. Every payload here made the old loader read a server file or allocate gigabytes."""

from __future__ import annotations

import base64
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from pestalk_hf.avatar import MAX_AVATAR_VERTICES, load_avatar
from pestalk_hf.gltf_io import GltfDocument, read_gltf

SECRET = b"PESTALK-SECRET-TOKEN-1234"


def _rig_document() -> GltfDocument:
    """A one-triangle rig with a jawOpen target (what a user's avatar minimally is)."""
    doc = GltfDocument({"asset": {"version": "2.0"}}, b"")
    pos = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
    prim = {"attributes": {"POSITION": doc.add_accessor(pos, "VEC3")}, "mode": 4,
            "targets": [{"POSITION": doc.add_accessor(pos * 0.1, "VEC3")}]}
    doc.gltf.update({"scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
                     "meshes": [{"primitives": [prim], "extras": {"targetNames": ["jawOpen"]}}]})
    return doc


def _glb(gltf: dict, binary: bytes) -> bytes:
    """Serialise a GLB exactly as given (buffers and uris untouched, unlike to_glb_bytes)."""
    js = json.dumps(gltf).encode()
    js += b" " * (-len(js) % 4)
    binary += b"\0" * (-len(binary) % 4)
    total = 12 + 8 + len(js) + (8 + len(binary) if binary else 0)
    out = struct.pack("<4sII", b"glTF", 2, total) + struct.pack("<II", len(js), 0x4E4F534A) + js
    if binary:
        out += struct.pack("<II", len(binary), 0x004E4942) + binary
    return out


def _glb_with(tmp_path: Path, name: str, *, image_uri: str | None = None, extra_buffer_uri: str | None = None) -> Path:
    doc = _rig_document()
    gltf = dict(doc.gltf)
    gltf["buffers"] = [{"byteLength": len(doc.binary)}]
    if image_uri is not None:
        gltf["images"] = [{"uri": image_uri}]
    if extra_buffer_uri is not None:
        gltf["buffers"].append({"uri": extra_buffer_uri, "byteLength": 4})
    path = tmp_path / name
    path.write_bytes(_glb(gltf, bytes(doc.binary)))
    return path


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
        path = _glb_with(upload, f"evil{i}.glb", **kwargs)
        with pytest.raises(ValueError, match="external file|outside the avatar's folder|not a regular file"):
            load_avatar(path, external_files=external_files)


def test_dev_zero_uri_is_refused_without_reading(tmp_path):
    # even opted in and inside the folder: a symlink to a device must not be read (it never ends)
    (tmp_path / "zero.bin").symlink_to("/dev/zero")
    path = _glb_with(tmp_path, "zero.glb", image_uri="zero.bin")
    with pytest.raises(ValueError, match="outside the avatar's folder|not a regular file"):
        load_avatar(path, external_files=True)
    with pytest.raises(ValueError, match="external file"):
        load_avatar(_glb_with(tmp_path, "zero2.glb", image_uri="/dev/zero"))


def test_symlink_out_of_the_folder_is_refused(tmp_path, secret_file):
    upload = tmp_path / "upload"
    upload.mkdir()
    (upload / "tex.png").symlink_to(secret_file)
    with pytest.raises(ValueError, match="outside the avatar's folder"):
        load_avatar(_glb_with(upload, "link.glb", image_uri="tex.png"), external_files=True)


def test_no_leak_into_the_exported_glb(tmp_path, secret_file):
    """The Space's path: load the upload, export the animation GLB; the secret must not be inside."""
    from pestalk_hf.animation import BlendshapeAnimation

    path = _glb_with(tmp_path, "env.glb", image_uri="/proc/self/environ")
    with pytest.raises(ValueError):
        load_avatar(path)
    # the same avatar without the hostile image exports fine, and nothing of the server is in it
    clean = _glb_with(tmp_path, "clean.glb")
    anim = BlendshapeAnimation(weights=np.zeros((3, 52), np.float32))
    out = anim.save(tmp_path / "out", "x", formats=("glb",), avatar=load_avatar(clean))
    data = Path(out["glb"]).read_bytes()
    assert SECRET not in data and os.environ.get("PATH", "@@").encode() not in data


def test_relative_files_inside_the_folder_are_read_only_when_opted_in(tmp_path):
    """A .gltf with its .bin beside it (the CLI's case) still works; a server refuses it."""
    doc = _rig_document()
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


def _declaring_glb(tmp_path: Path, name: str, count: int, with_view: bool) -> Path:
    """~300 bytes that declare ``count`` vertices (the old loader allocated 52 × count × 3 float64)."""
    gltf = {"asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
            "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "targets": [{"POSITION": 0}]}],
                        "extras": {"targetNames": ["jawOpen"]}}],
            "accessors": [{"componentType": 5126, "count": count, "type": "VEC3"}]}
    binary = b""
    if with_view:
        gltf["accessors"][0]["bufferView"] = 0
        gltf["bufferViews"] = [{"buffer": 0, "byteOffset": 0, "byteLength": 36}]
        gltf["buffers"] = [{"byteLength": 36}]
        binary = bytes(36)
    path = tmp_path / name
    path.write_bytes(_glb(gltf, binary))
    return path


def test_small_glb_declaring_millions_of_vertices_is_refused_before_allocating(tmp_path):
    import tracemalloc

    tracemalloc.start()
    for i, with_view in enumerate((False, True)):
        path = _declaring_glb(tmp_path, f"big{i}.glb", 2_000_000, with_view)
        assert path.stat().st_size < 1000
        with pytest.raises(ValueError, match="vertices, over the cap"):
            load_avatar(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 50 * 2**20, f"refusing a hostile GLB allocated {peak >> 20} MB"


def test_accessor_reaching_past_its_buffer_is_refused(tmp_path):
    path = _declaring_glb(tmp_path, "short.glb", min(1000, MAX_AVATAR_VERTICES), True)  # 1000 × 12 B > 36 B
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
    doc = _rig_document()
    gltf = json.loads(json.dumps(doc.gltf))
    gltf["buffers"] = [{"byteLength": len(doc.binary)}]
    mutate(gltf)
    path = tmp_path / "bad.glb"
    path.write_bytes(_glb(gltf, bytes(doc.binary)))
    with pytest.raises(ValueError):
        load_avatar(path)


def test_cli_refuses_a_hostile_avatar_with_a_usage_error(tmp_path, secret_file, capsys):
    from pestalk_hf.cli import main

    path = _glb_with(tmp_path, "evil.glb", image_uri=str(secret_file))
    wav = tmp_path / "a.wav"
    import soundfile as sf

    sf.write(wav, (0.1 * np.sin(np.arange(16000) / 5)).astype(np.float32), 16000)
    code = main(["animate", str(wav), "-o", str(tmp_path / "out"), "--avatar", str(path), "--format", "glb"])
    assert code == 2
    assert "outside the avatar's folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
