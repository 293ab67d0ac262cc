"""The hostile uploads of issue 11 (points 1–2), built byte for byte: tiny files that made the old code read
server files or allocate gigabytes. Shared by ``tests/test_security.py``, ``tests/test_bad_inputs.py`` and
``bench/bench_memory.py --hostile`` (which measures what refusing them costs the server)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from pestalk_hf.avatar.gltf_io import GltfDocument

# the audio bomb: 192 kHz × 8 channels × 600 s of digital silence compresses to ~954 KB of FLAC
PAYLOAD_RATE, PAYLOAD_CHANNELS, PAYLOAD_SECONDS = 192_000, 8, 600


def rig_document() -> GltfDocument:
    """A one-triangle rig with a jawOpen target (what a user's avatar minimally is)."""
    doc = GltfDocument({"asset": {"version": "2.0"}}, b"")
    pos = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
    prim = {"attributes": {"POSITION": doc.add_accessor(pos, "VEC3")}, "mode": 4,
            "targets": [{"POSITION": doc.add_accessor(pos * 0.1, "VEC3")}]}
    doc.gltf.update({"scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
                     "meshes": [{"primitives": [prim], "extras": {"targetNames": ["jawOpen"]}}]})
    return doc


def raw_glb(gltf: dict, binary: bytes) -> bytes:
    """Serialise a GLB exactly as given (buffers and uris untouched, unlike ``to_glb_bytes``)."""
    js = json.dumps(gltf).encode()
    js += b" " * (-len(js) % 4)
    binary += b"\0" * (-len(binary) % 4)
    total = 12 + 8 + len(js) + (8 + len(binary) if binary else 0)
    out = struct.pack("<4sII", b"glTF", 2, total) + struct.pack("<II", len(js), 0x4E4F534A) + js
    if binary:
        out += struct.pack("<II", len(binary), 0x004E4942) + binary
    return out


def glb_with(folder: Path, name: str, *, image_uri: str | None = None, extra_buffer_uri: str | None = None) -> Path:
    """The minimal rig as a GLB whose image and/or second buffer point at ``*_uri`` (the file-read payload)."""
    doc = rig_document()
    gltf = dict(doc.gltf)
    gltf["buffers"] = [{"byteLength": len(doc.binary)}]
    if image_uri is not None:
        gltf["images"] = [{"uri": image_uri}]
    if extra_buffer_uri is not None:
        gltf["buffers"].append({"uri": extra_buffer_uri, "byteLength": 4})
    path = folder / name
    path.write_bytes(raw_glb(gltf, bytes(doc.binary)))
    return path


def declaring_glb(folder: Path, name: str, count: int, with_view: bool) -> Path:
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
    path = folder / name
    path.write_bytes(raw_glb(gltf, binary))
    return path


def write_flac_bomb(path: Path) -> Path:
    """The issue's payload: ``PAYLOAD_RATE`` × ``PAYLOAD_CHANNELS`` × ``PAYLOAD_SECONDS`` of silence as FLAC."""
    import soundfile as sf

    block = np.zeros((PAYLOAD_RATE * 10, PAYLOAD_CHANNELS), np.int16)
    with sf.SoundFile(path, "w", samplerate=PAYLOAD_RATE, channels=PAYLOAD_CHANNELS, format="FLAC",
                      subtype="PCM_16") as f:
        for _ in range(PAYLOAD_SECONDS // 10):
            f.write(block)
    return path


def set_flac_total_samples(data: bytes, total: int) -> bytes:
    """Rewrite the 36-bit total-samples field of a FLAC STREAMINFO block (0 = unknown length)."""
    assert data[:4] == b"fLaC"
    out = bytearray(data)
    field = int.from_bytes(out[18:26], "big") & ~((1 << 36) - 1)
    out[18:26] = (field | total).to_bytes(8, "big")
    return bytes(out)
