"""Readers and writers for blendshape animation files.

Formats an animator can open:

* Live Link Face CSV (Unreal Engine / MetaHuman, Blender add-ons): the iPhone app's own layout
  (Apple column order, timecode in 60ths of a second, eye rotations from the EyeLook shapes).
* JSON: self-describing (fps, names, weights, emotion probabilities, style).
* NPZ: numpy arrays, loadable without pickle.
* GLB: the avatar's mesh and morph targets plus a ``weights`` animation channel at the animation's
  fps (LINEAR), retargeted onto the avatar's *own* morph-target names and order, so three.js,
  Blender or any glTF viewer plays it directly.
* MP4: frames drawn by :mod:`pestalk_hf.avatar.render`, H.264 + AAC.

This module is the "files" end of the data path (audio → model → animation → avatar → files): it
imports :mod:`pestalk_hf.avatar`, never the other way round.

Every writer goes through :func:`atomic_write`: it writes a temporary file in the destination
folder and renames it, so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import os
import queue
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .audio import pcm16_to_float
from .avatar import Avatar, target_names
from .avatar.gltf_io import GltfDocument, read_gltf
from .blendshapes import (
    APPLE_NAMES,
    ARKIT_NAMES,
    LIVELINK_CSV_HEADER,
    LIVELINK_HEAD_EYE_COLUMNS,
    NUM_BLENDSHAPES,
    livelink_eye_rotations,
    match_morph_targets,
    normalize_blendshape_name,
    retarget_weights,
    to_apple_order,
    weights_from_rig,
)

JSON_FORMAT = "pestalk-blendshapes"
JSON_VERSION = 1


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    # Reading the umask means setting it; do it once, not on every write (the MP4 is written on a worker
    # thread, and a file created by another thread between the two calls would get umask 0).
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _publish(tmp: str, path: Path) -> None:
    """Give the temp file the permissions a plain ``open()`` would (mkstemp makes it 0600), then rename."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[Any]:
    """Open a temp file next to ``path``; on success fsync and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({"newline": ""} if "b" not in mode else {})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        _publish(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str) -> Iterator[Path]:
    """Like :func:`atomic_write` for libraries that want a file *name* (PyAV, matplotlib)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _publish(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_weights(weights: Any) -> np.ndarray:
    """Validate a (T, 52) weight array and return it as float32."""
    arr = np.asarray(weights, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != NUM_BLENDSHAPES:
        raise ValueError(f"blendshape weights must have shape (T, 52), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("blendshape weights contain NaN or inf")
    return arr


# ------------------------------------------------------------------------------------------------
# Live Link Face CSV
# ------------------------------------------------------------------------------------------------


# The layout is that of the app's own recordings, checked against public takes:
#   dwskillman/BlendFiles: MySlate_1_iPhone.csv + take.json (Live Link Face v1.3.2, iPhone14,8, 60 Hz):
#   header "Timecode,BlendshapeCount,EyeBlinkLeft,…,RightEyeRoll", rows like
#   "11:54:29:19.804,61,0.0182390027,…" — 10 decimals per value, eye/head rotations in radians
#   (|LeftEyePitch| ≤ 0.14 while EyeLookDown ≈ 0.22). The timecode is HH:MM:SS:FF.fff where FF.fff
#   is the position inside the second counted in 60ths (FF 00–59, .fff the fraction of a 60th):
#   consecutive 60 Hz rows step by 1.001 (19.804, 20.805, …: 59.94 Hz), and the take's
#   startTimecode 11:54:29:19.804 → endTimecode 11:54:40:37.884 spans 11 s + 18.080/60 = 11.3013 s,
#   equal to its endTimestamp − startTimestamp (474880.631406 − 474869.330071 = 11.3013 s), not to
#   11.38 s as it would if ".fff" were milliseconds. At 30 Hz a row is therefore 2 sixtieths:
#   FF runs 00, 02, 04 … 58. (The UE exporter in the public "ARKit Remap" tool writes the same
#   60-base fractional frames, "matching actual LLF recordings".)
LIVELINK_TIMECODE_RATE = 60
_TC_UNITS = LIVELINK_TIMECODE_RATE * 1000  # thousandths of a 60th per second


def format_timecode(frame: int, fps: float) -> str:
    """Timecode of row ``frame`` at ``fps`` as Live Link Face writes it: ``HH:MM:SS:FF.fff`` in 60ths.

    ``FF.fff`` is the time inside the second in 60ths of a second (3 decimals), so 30 fps rows
    read ``…:00.000``, ``…:02.000``, ``…:04.000`` and 25 fps rows ``…:02.400``.
    """
    if fps <= 0:
        raise ValueError(f"format_timecode: fps must be positive, got {fps}")
    units = int(round(int(frame) * _TC_UNITS / float(fps)))
    seconds, rem = divmod(units, _TC_UNITS)
    ff, sub = divmod(rem, 1000)
    hh, rest = divmod(seconds, 3600)
    mm, ss = divmod(rest, 60)
    return f"{hh:02d}:{mm:02d}:{ss:02d}:{ff:02d}.{sub:03d}"


def parse_timecode(timecode: str) -> float:
    """Seconds of a Live Link Face timecode ``HH:MM:SS:FF[.fff]`` (``FF.fff`` in 60ths of a second)."""
    try:
        hh, mm, ss, frames = timecode.strip().split(":")
        value = int(hh) * 3600 + int(mm) * 60 + int(ss) + float(frames) / LIVELINK_TIMECODE_RATE
    except ValueError:
        raise ValueError(f"not a Live Link Face timecode (HH:MM:SS:FF.fff): {timecode!r}") from None
    if not 0 <= float(frames) < LIVELINK_TIMECODE_RATE:
        raise ValueError(f"timecode frame field {frames!r} is outside 0–{LIVELINK_TIMECODE_RATE}: {timecode!r}")
    return value


def write_livelink_csv(path: str | Path, weights: np.ndarray, fps: float) -> None:
    """Write a Live Link Face CSV as the iPhone app records it.

    Header :data:`LIVELINK_CSV_HEADER`; each row: the timecode (:func:`format_timecode`, starting
    at 00:00:00:00.000), the column count (61), the 52 shapes in Apple's order, then HeadYaw/Pitch/Roll
    (0: we do not move the head) and the six eye rotations derived from the EyeLook shapes
    (:func:`~pestalk_hf.blendshapes.livelink_eye_rotations`, radians). Values carry 10 decimals,
    like the app's.
    """
    w = check_weights(weights)
    apple = to_apple_order(w)
    rotations = np.zeros((len(w), len(LIVELINK_HEAD_EYE_COLUMNS)), dtype=np.float64)
    rotations[:, 3:] = livelink_eye_rotations(w)
    count = len(APPLE_NAMES) + len(LIVELINK_HEAD_EYE_COLUMNS)
    buf = io.StringIO()
    buf.write(",".join(LIVELINK_CSV_HEADER) + "\n")
    for t in range(len(w)):
        values = [f"{v:.10f}" for v in apple[t].tolist()] + [f"{v:.10f}" for v in rotations[t].tolist()]
        buf.write(f"{format_timecode(t, fps)},{count}," + ",".join(values) + "\n")
    with atomic_write(path, "w") as fh:
        fh.write(buf.getvalue())


def read_livelink_timestamps(path: str | Path) -> np.ndarray:
    """Seconds of every row of a Live Link Face CSV, from its ``Timecode`` column (:func:`parse_timecode`).

    The first row is t = 0; a take that crosses midnight keeps counting up.
    """
    with open(path, newline="") as fh:
        rows = [r for r in csv.reader(fh) if r and any(cell.strip() for cell in r)]
    if not rows or "timecode" not in [h.strip().lower() for h in rows[0]]:
        raise ValueError(f"{path}: no Timecode column")
    c = [h.strip().lower() for h in rows[0]].index("timecode")
    t = np.array([parse_timecode(r[c]) for r in rows[1:]], dtype=np.float64)
    if t.size:
        t = np.where(t < t[0], t + 24 * 3600, t) - t[0]
    return t


def read_livelink_csv(path: str | Path) -> np.ndarray:
    """Read a Live Link Face CSV (or any CSV whose columns are ARKit names) → (T, 52) internal order.

    Columns are matched by name, so Apple order, alphabetical order or ``_L``/``_R`` spellings all
    work; ``Timecode``, ``BlendshapeCount`` and head/eye rotations are ignored (rows are taken as
    consecutive frames; :func:`read_livelink_timestamps` gives their times). Shapes without a
    column are 0. Raises ValueError if no column is an ARKit name.
    """
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise ValueError(f"{path}: empty CSV")
    header = [h.strip() for h in rows[0]]
    columns = {}
    for c, name in enumerate(header):
        if name.lower() in ("timecode", "blendshapecount") or name in LIVELINK_HEAD_EYE_COLUMNS:
            continue
        arkit = normalize_blendshape_name(name)
        if arkit is not None:
            columns[c] = ARKIT_NAMES.index(arkit)
    if not columns:
        raise ValueError(f"{path}: no ARKit blendshape columns in header {header[:5]}…")
    body = [r for r in rows[1:] if r and any(cell.strip() for cell in r)]
    out = np.zeros((len(body), NUM_BLENDSHAPES), dtype=np.float32)
    for t, row in enumerate(body):
        if len(row) < len(header):
            raise ValueError(f"{path}: row {t + 2} has {len(row)} cells, header has {len(header)}")
        for c, j in columns.items():
            out[t, j] = float(row[c])
    return out


# ------------------------------------------------------------------------------------------------
# JSON and NPZ
# ------------------------------------------------------------------------------------------------


JSON_DECIMALS = 6
"""Decimals of the float arrays written by :func:`write_json` (1e-6: far below what a rig can show)."""
_JSON_BLOCK_ROWS = 4096


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically. Values are JSON-safe, and top-level values may also be 2-D numpy
    float arrays (a track's weights): those are rounded to :data:`JSON_DECIMALS` in float64 and written
    block by block, the same text ``json.dump`` gives for their rounded ``.tolist()``, so a 2 h track never
    exists as 11 M Python floats (530 MB; issue 11). NaN/Inf raise ``ValueError`` as ``allow_nan=False`` does."""
    import secrets

    arrays = {key: value for key, value in payload.items() if isinstance(value, np.ndarray)}
    marks = {key: f"\0{secrets.token_hex(8)}\0" for key in arrays}  # placeholders no real value can hold
    text = json.dumps({k: marks.get(k, v) for k, v in payload.items()}, separators=(",", ":"), allow_nan=False)
    with atomic_write(path, "w") as fh:
        for key, array in arrays.items():
            head, text = text.split(json.dumps(marks[key]), 1)
            fh.write(head)
            _write_json_rows(fh, array, key)
        fh.write(text)


def _write_json_rows(fh: Any, array: np.ndarray, key: str) -> None:
    if array.ndim != 2 or array.dtype.kind != "f":
        raise ValueError(f"write_json: {key!r} must be a 2-D float array, got {array.dtype} {array.shape}")
    fh.write("[")
    for start in range(0, len(array), _JSON_BLOCK_ROWS):
        block = np.round(array[start : start + _JSON_BLOCK_ROWS].astype(np.float64), JSON_DECIMALS)
        if not np.isfinite(block).all():
            raise ValueError(f"write_json: {key!r} holds NaN or infinite values (not JSON compliant)")
        fh.write(("," if start else "") + json.dumps(block.tolist(), separators=(",", ":"))[1:-1])
    fh.write("]")


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write a compressed NPZ atomically (only plain numeric/unicode arrays: loadable without pickle)."""
    with atomic_write(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)


# ------------------------------------------------------------------------------------------------
# GLB
# ------------------------------------------------------------------------------------------------


# Extensions that point at accessors or bufferViews from places prune_unused_data does not walk:
# with one of them in use the document is left as it is rather than risk a dangling index.
_OPAQUE_DATA_EXTENSIONS = ("KHR_draco_mesh_compression", "EXT_meshopt_compression", "KHR_meshopt_compression")


def _accessor_refs(gltf: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str | int]]:
    """Every (container, key) whose value is an accessor index."""
    for mesh in gltf.get("meshes", []):
        for prim in mesh.get("primitives", []):
            if "indices" in prim:
                yield prim, "indices"
            attr = prim.get("attributes", {})
            yield from ((attr, k) for k in attr)
            for target in prim.get("targets", []):
                yield from ((target, k) for k in target)
    for anim in gltf.get("animations", []):
        for sampler in anim.get("samplers", []):
            yield from ((sampler, k) for k in ("input", "output") if k in sampler)
    for skin in gltf.get("skins", []):
        if "inverseBindMatrices" in skin:
            yield skin, "inverseBindMatrices"
    for node in gltf.get("nodes", []):
        attr = node.get("extensions", {}).get("EXT_mesh_gpu_instancing", {}).get("attributes", {})
        yield from ((attr, k) for k in attr)


def _view_refs(gltf: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str]]:
    """Every (container, key) whose value is a bufferView index."""
    for acc in gltf.get("accessors", []):
        if "bufferView" in acc:
            yield acc, "bufferView"
        sparse = acc.get("sparse", {})
        for part in ("indices", "values"):
            if "bufferView" in sparse.get(part, {}):
                yield sparse[part], "bufferView"
    for image in gltf.get("images", []):
        if "bufferView" in image:
            yield image, "bufferView"


def prune_unused_data(doc: GltfDocument) -> None:
    """Drop accessors and bufferViews nothing refers to, renumber the rest, compact the buffer.

    In place. Kept bufferViews are copied in their original order to a new buffer, each at a
    4-byte-aligned offset (byteStride, target and the bytes are unchanged), so the Khronos
    validator finds no UNUSED_OBJECT and the GLB does not carry a source asset's dropped
    animation data. Documents using an extension that hides data references
    (Draco/meshopt compression) are left untouched.
    """
    gltf = doc.gltf
    used_ext = set(gltf.get("extensionsUsed", [])) | set(gltf.get("extensionsRequired", []))
    if used_ext & set(_OPAQUE_DATA_EXTENSIONS):
        return
    accessors = gltf.get("accessors", [])
    keep_acc = sorted({c[k] for c, k in _accessor_refs(gltf)})
    acc_map = {old: new for new, old in enumerate(keep_acc)}
    for container, key in list(_accessor_refs(gltf)):
        container[key] = acc_map[container[key]]
    if accessors:
        gltf["accessors"] = [accessors[i] for i in keep_acc]
    if not gltf.get("accessors"):
        gltf.pop("accessors", None)
    views = gltf.get("bufferViews", [])
    keep_view = sorted({c[k] for c, k in _view_refs(gltf)})
    view_map = {old: new for new, old in enumerate(keep_view)}
    binary = bytearray()
    new_views = []
    for old in keep_view:
        view = dict(views[old])
        start = view.get("byteOffset", 0)
        data = doc.binary[start:start + view["byteLength"]]
        binary.extend(b"\0" * (-len(binary) % 4))
        view["byteOffset"] = len(binary)
        binary.extend(data)
        new_views.append(view)
    for container, key in list(_view_refs(gltf)):
        container[key] = view_map[container[key]]
    if new_views:
        gltf["bufferViews"] = new_views
    else:
        gltf.pop("bufferViews", None)
    doc.binary = binary


def write_animation_glb(path: str | Path, weights: np.ndarray, fps: float, avatar: Avatar,
                        name: str = "pestalk") -> None:
    """Write the avatar's glTF plus one animation driving its morph weights (LINEAR, ``fps``).

    Existing animations of the source asset are dropped (they would fight ours), together with
    every accessor and bufferView nothing refers to any more, and the binary buffer is compacted
    (:func:`prune_unused_data`), so the file carries only what the scene and our animation need;
    the meshes, materials, images and node hierarchy are kept (same data, renumbered indices).
    """
    w = check_weights(weights)
    if avatar.document is None or not avatar.morph_meshes:
        raise ValueError("write_animation_glb: the avatar carries no glTF document to export")
    if fps <= 0:
        raise ValueError(f"write_animation_glb: fps must be positive, got {fps}")
    doc = avatar.document.copy()
    doc.gltf.pop("animations", None)
    times = (np.arange(len(w), dtype=np.float64) / fps).astype(np.float32)
    time_acc = doc.add_accessor(times, "SCALAR")
    samplers, channels = [], []
    for mm in avatar.morph_meshes:
        rig = retarget_weights(np.clip(w, 0.0, 1.0), mm.match, len(mm.target_names))
        out_acc = doc.add_accessor(rig.astype(np.float32).ravel(), "SCALAR", with_bounds=False)
        samplers.append({"input": time_acc, "output": out_acc, "interpolation": "LINEAR"})
        for node in mm.node_indices:
            channels.append({"sampler": len(samplers) - 1, "target": {"node": node, "path": "weights"}})
    doc.gltf["animations"] = [{"name": name, "samplers": samplers, "channels": channels}]
    prune_unused_data(doc)
    with atomic_write(path, "wb") as fh:
        fh.write(doc.to_glb_bytes())


def read_animation_glb(path: str | Path, fps: float = 30.0, animation: int | str | None = None) -> np.ndarray:
    """Read the morph-weights animation of a glTF/GLB → (T, 52) internal order sampled at ``fps``.

    The animation is resampled on the grid ``t0 + k / fps`` starting at its first key (LINEAR and
    STEP interpolation are honoured; CUBICSPLINE uses its key values); keys already on that grid
    (a capture at ``fps``) are taken unchanged. With several meshes, each
    ARKit shape is taken from the first channel that drives it. ``animation`` picks one by index
    or name (default: the first with a ``weights`` channel).
    """
    doc = read_gltf(path)
    anims = doc.gltf.get("animations", [])
    chosen = None
    for i, anim in enumerate(anims):
        if animation is not None and animation not in (i, anim.get("name")):
            continue
        if any(ch["target"].get("path") == "weights" for ch in anim.get("channels", [])):
            chosen = anim
            break
    if chosen is None:
        raise ValueError(f"{path}: no animation with a morph-target 'weights' channel"
                         + (f" matching {animation!r}" if animation is not None else ""))
    keyed = []
    for ch in chosen["channels"]:
        node_idx = ch["target"].get("node")
        if ch["target"].get("path") != "weights" or node_idx is None:
            continue
        mesh = doc.gltf["meshes"][doc.gltf["nodes"][node_idx]["mesh"]]
        names = target_names(mesh)
        match = match_morph_targets(names)
        sampler = chosen["samplers"][ch["sampler"]]
        times = doc.accessor(sampler["input"])[:, 0].astype(np.float64)
        values = doc.accessor(sampler["output"]).astype(np.float32).reshape(-1)
        k = len(mesh["primitives"][0].get("targets", [])) or len(names)
        interp = sampler.get("interpolation", "LINEAR")
        values = values.reshape(len(times), 3, k)[:, 1] if interp == "CUBICSPLINE" else values.reshape(len(times), k)
        keyed.append((times, values, interp, match))
    t0 = min(tk[0][0] for tk in keyed)
    t1 = max(tk[0][-1] for tk in keyed)
    n = int(np.floor((t1 - t0) * fps + 1e-6)) + 1
    grid = t0 + np.arange(n) / fps
    out = np.zeros((n, NUM_BLENDSHAPES), dtype=np.float32)
    done: set[int] = set()
    for times, values, interp, match in keyed:
        on_grid = len(times) == n and np.allclose(times, grid, atol=1e-4)
        if on_grid:  # keys already at fps: take them as they are (no float-time interpolation error)
            sampled = values
        elif interp == "STEP":
            idx = np.clip(np.searchsorted(times, grid + 1e-9, side="right") - 1, 0, len(times) - 1)
            sampled = values[idx]
        else:
            sampled = np.stack([np.interp(grid, times, values[:, j]) for j in range(values.shape[1])], axis=1)
        ours = weights_from_rig(sampled, match)
        for j in sorted(set(match.mapping.values()) - done):
            out[:, j] = ours[:, j]
        done |= set(match.mapping.values())
    return out


# ------------------------------------------------------------------------------------------------
# MP4
# ------------------------------------------------------------------------------------------------


def write_mp4(path: str | Path, frames: Iterable[np.ndarray], fps: int = 30, audio: np.ndarray | None = None,
              sample_rate: int = 16000, crf: int = 20) -> None:
    """Encode RGB frames as H.264 (yuv420p, ``fps``) plus optional mono audio (float, or int16 PCM) as AAC.

    Written to a temporary file in the destination folder and renamed when complete.
    """
    import av

    if fps <= 0 or int(fps) != fps:
        raise ValueError(f"write_mp4: fps must be a positive integer, got {fps}")
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError("write_mp4: no frames")
    h, w = np.asarray(first).shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"write_mp4: H.264 yuv420p needs even sizes, got {w}x{h}")
    with atomic_path(path, ".mp4") as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            video = container.add_stream("libx264", rate=int(fps))
            video.width, video.height, video.pix_fmt = w, h, "yuv420p"
            video.options = {"crf": str(crf), "preset": "veryfast"}
            astream = container.add_stream("aac", rate=int(sample_rate), layout="mono") if audio is not None else None
            # Encode on a worker thread while the next frame renders: x264 and llvmpipe release the GIL,
            # so the two overlap on two cores.
            pending: queue.Queue = queue.Queue(maxsize=8)
            errors: list[BaseException] = []

            def encode() -> None:
                try:
                    while (item := pending.get()) is not None:
                        container.mux(video.encode(item))
                except BaseException as err:  # re-raised in the caller's thread
                    errors.append(err)
                    while pending.get() is not None:
                        pass

            worker = threading.Thread(target=encode, daemon=True)
            worker.start()
            try:
                for count, frame in enumerate(_chain(first, it)):
                    img = np.ascontiguousarray(frame, dtype=np.uint8)
                    if img.shape != (h, w, 3):
                        raise ValueError(f"write_mp4: every frame must be ({h}, {w}, 3) uint8, got {img.shape}")
                    vf = av.VideoFrame.from_ndarray(img, format="rgb24")
                    vf.pts = count
                    pending.put(vf)
            finally:
                pending.put(None)
                worker.join()
            if errors:
                raise errors[0]
            container.mux(video.encode())
            if astream is not None:
                samples = np.asarray(audio).reshape(-1)
                if samples.dtype != np.int16:
                    samples = samples.astype(np.float32, copy=False)
                chunk = 1024
                for start in range(0, samples.size, chunk):
                    block = pcm16_to_float(samples[start:start + chunk])  # int16: one chunk at a time
                    af = av.AudioFrame.from_ndarray(block[None], format="fltp", layout="mono")
                    af.sample_rate = int(sample_rate)
                    af.pts = start
                    container.mux(astream.encode(af))
                container.mux(astream.encode())


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest
