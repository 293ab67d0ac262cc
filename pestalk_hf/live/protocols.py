"""Wire formats of ``pestalk live``: Live Link Face UDP packets, VMC (OSC) bundles, WebSocket JSON.

Pure functions (bytes in, bytes out): the senders in :mod:`pestalk_hf.live.outputs` only move them.

**Live Link Face** (the iPhone app → Unreal Engine's Live Link, port 11111 by default). One UDP datagram per
frame, big-endian except where noted, as the app sends it and as Unreal's AppleARKit Live Link source and the
published decoders (PyPI ``pylivelinkface``; think-biq/LLV) read it::

    uint8   packet version (6)
    int32   length, then the device id (UTF-8; the app sends its 36-character UUID)
    int32   length, then the subject name (UTF-8; Unreal lists the subject under this name)
    int32   frame number    ┐ FQualifiedFrameTime: frame time = (frame + subframe) × denominator / numerator
    float32 subframe        │
    int32   rate numerator  │
    int32   rate denominator┘
    uint8   value count (61)
    61 × float32            52 blendshapes (:data:`LIVELINK_PACKET_NAMES`), head yaw/pitch/roll, left eye
                            yaw/pitch/roll, right eye yaw/pitch/roll (radians)

We send ``frame = index`` of the frame on the session's audio clock at ``rate = fps/1`` (30/1), so the
frame time is exactly ``index / 30`` seconds of audio. The head rotations are 0 (the model does not move
the head); the eye rotations come from the EyeLook shapes the way the app derives them
(:func:`pestalk_hf.blendshapes.livelink_eye_rotations`, as the Live Link Face CSV export does).

**VMC protocol** (OSC over UDP; VSeeFace, VNyan, Warudo, VMagicMirror …): per frame one OSC bundle with a
``/VMC/Ext/Blend/Val (string name, float value)`` message per blend shape, then ``/VMC/Ext/Blend/Apply``.
Names come from a mapping (:data:`VMC_MAPPINGS` or a JSON file): ARKit names as Apple spells them
(``arkit``: ``jawOpen``), "perfect sync" clip names (``perfectsync``: ``JawOpen``), or VRM expression presets
(``vrm0``: ``A``, ``Blink_L``, ``Joy`` …; ``vrm1``: ``aa``, ``blinkLeft``, ``happy`` …) as weighted sums of
ARKit shapes.

**WebSocket**: JSON text messages. First ``{"type": "hello", "names": [52 ARKit names], "fps": 30, ...}``,
then one ``{"type": "frame", "index": i, "time": t, "weights": [52 floats]}`` per frame (``time`` in seconds
on the audio clock), and now and then ``{"type": "status", ...}`` (emotion so far, latency, drops).
"""

from __future__ import annotations

import json
import math
import struct
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..blendshapes import (
    APPLE_NAMES,
    ARKIT_INDEX,
    ARKIT_NAMES,
    LIVELINK_HEAD_EYE_COLUMNS,
    NUM_BLENDSHAPES,
    livelink_eye_rotations,
)

LIVELINK_PACKET_VERSION = 6
LIVELINK_VALUE_COUNT = len(APPLE_NAMES) + len(LIVELINK_HEAD_EYE_COLUMNS)  # 61
#: Subject and device id are capped (Unreal reads at most 256 characters of each).
LIVELINK_MAX_NAME = 256


def new_device_id() -> str:
    """A device id like the app's: an upper-case 36-character UUID."""
    return str(uuid.uuid4()).upper()


def _packet_order() -> tuple[str, ...]:
    names = list(APPLE_NAMES)
    for a, b in (("JawRight", "JawLeft"), ("MouthRight", "MouthLeft")):
        i, j = names.index(a), names.index(b)
        names[i], names[j] = names[j], names[i]
    return tuple(names)


#: Slot order of the 52 blend shapes in a packet: Unreal's ``EARFaceBlendShape`` enum (AppleARKitFaceSupport;
#: pylivelinkface's ``FaceBlendShape`` is the same). It is the Live Link Face CSV column order
#: (:data:`~pestalk_hf.blendshapes.APPLE_NAMES`) except that the app's CSV writes JawRight before JawLeft and
#: MouthRight before MouthLeft, while the enum has Left first.
LIVELINK_PACKET_NAMES: tuple[str, ...] = _packet_order()
_PACKET_INDEX = np.array([ARKIT_INDEX[n[0].lower() + n[1:]] for n in LIVELINK_PACKET_NAMES])


def livelink_values(weights: np.ndarray) -> np.ndarray:
    """``(T, 52)`` internal order → ``(T, 61)`` Live Link Face packet values (:data:`LIVELINK_PACKET_NAMES`,
    then head yaw/pitch/roll = 0 and the six eye rotations in radians)."""
    w = np.asarray(weights, dtype=np.float32).reshape(-1, NUM_BLENDSHAPES)
    out = np.zeros((len(w), LIVELINK_VALUE_COUNT), dtype=np.float32)
    out[:, : len(LIVELINK_PACKET_NAMES)] = w[:, _PACKET_INDEX]
    out[:, len(LIVELINK_PACKET_NAMES) + 3:] = livelink_eye_rotations(w)  # head yaw/pitch/roll stay 0
    return out


def _check_name(what: str, value: str) -> bytes:
    data = str(value).encode("utf-8")
    if not data or len(data) > LIVELINK_MAX_NAME:
        raise ValueError(f"the Live Link {what} must be 1–{LIVELINK_MAX_NAME} bytes of UTF-8, got {value!r}")
    return data


def encode_livelink_packet(values: Sequence[float], *, frame: int, subject: str, device_id: str,
                           fps: int = 30, subframe: float = 0.0) -> bytes:
    """One Live Link Face datagram (layout in the module docstring) from 61 values."""
    vals = np.asarray(values, dtype=">f4").reshape(-1)
    if len(vals) != LIVELINK_VALUE_COUNT:
        raise ValueError(f"a Live Link Face packet carries {LIVELINK_VALUE_COUNT} values, got {len(vals)}")
    dev, name = _check_name("device id", device_id), _check_name("subject name", subject)
    return b"".join((
        struct.pack(">B", LIVELINK_PACKET_VERSION),
        struct.pack(">i", len(dev)), dev,
        struct.pack(">i", len(name)), name,
        struct.pack(">ifiiB", int(frame), float(subframe), int(fps), 1, LIVELINK_VALUE_COUNT),
        vals.tobytes(),
    ))


# ------------------------------------------------------------------------------------------------
# VMC name mappings
# ------------------------------------------------------------------------------------------------


def _arkit_identity(spell) -> dict[str, dict[str, float]]:
    return {spell(name): {name: 1.0} for name in ARKIT_NAMES}


def _vowels_and_expressions(names: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """VRM presets as ARKit combinations (the usual retargeting of ARKit capture onto VRM avatars:
    vowel mouth shapes from jaw opening, lip stretch, pucker and funnel; blinks 1:1; expressions from the
    smile, frown and brow shapes). Values are clipped to [0, 1] after the weighted sum."""
    table = {
        "a": {"jawOpen": 1.0},
        "i": {"mouthStretchLeft": 0.5, "mouthStretchRight": 0.5, "jawOpen": 0.3},
        "u": {"mouthPucker": 1.0},
        "e": {"mouthSmileLeft": 0.25, "mouthSmileRight": 0.25, "jawOpen": 0.5},
        "o": {"mouthFunnel": 1.0, "jawOpen": 0.2},
        "blink": {"eyeBlinkLeft": 0.5, "eyeBlinkRight": 0.5},
        "blink_l": {"eyeBlinkLeft": 1.0},
        "blink_r": {"eyeBlinkRight": 1.0},
        "joy": {"mouthSmileLeft": 0.5, "mouthSmileRight": 0.5},
        "angry": {"browDownLeft": 0.5, "browDownRight": 0.5},
        "sorrow": {"mouthFrownLeft": 0.5, "mouthFrownRight": 0.5},
        "fun": {"cheekSquintLeft": 0.5, "cheekSquintRight": 0.5},
        "surprised": {"browInnerUp": 0.5, "eyeWideLeft": 0.25, "eyeWideRight": 0.25},
    }
    return {names[k]: v for k, v in table.items() if k in names}


_VRM0 = {"a": "A", "i": "I", "u": "U", "e": "E", "o": "O", "blink": "Blink", "blink_l": "Blink_L",
         "blink_r": "Blink_R", "joy": "Joy", "angry": "Angry", "sorrow": "Sorrow", "fun": "Fun"}
_VRM1 = {"a": "aa", "i": "ih", "u": "ou", "e": "ee", "o": "oh", "blink": "blink", "blink_l": "blinkLeft",
         "blink_r": "blinkRight", "joy": "happy", "angry": "angry", "sorrow": "sad", "fun": "relaxed",
         "surprised": "surprised"}

#: Built-in VMC name mappings: target name → {ARKit name: weight}.
VMC_MAPPINGS: dict[str, dict[str, dict[str, float]]] = {
    "arkit": _arkit_identity(lambda n: n),
    "perfectsync": _arkit_identity(lambda n: n[0].upper() + n[1:]),
    "vrm0": _vowels_and_expressions(_VRM0),
    "vrm1": _vowels_and_expressions(_VRM1),
}
MAX_MAPPING_BYTES = 1 << 20


class VmcMapping:
    """A ``(T, 52) → (T, K)`` linear map onto ``K`` VMC blend-shape names (values clipped to [0, 1])."""

    def __init__(self, table: Mapping[str, Any]) -> None:
        if not isinstance(table, Mapping) or not table:
            raise ValueError("a VMC name mapping must be a non-empty JSON object {target: ARKit name or {ARKit name: weight}}")
        names, rows = [], []
        for target, spec in table.items():
            if not isinstance(target, str) or not target or len(target.encode()) > 256:
                raise ValueError(f"VMC mapping: target names must be 1–256 bytes of text, got {target!r}")
            if isinstance(spec, str):
                spec = {spec: 1.0}
            if not isinstance(spec, Mapping) or not spec:
                raise ValueError(f"VMC mapping {target!r}: give an ARKit name or {{ARKit name: weight}}, got {spec!r}")
            row = np.zeros(NUM_BLENDSHAPES, dtype=np.float32)
            for source, weight in spec.items():
                if source not in ARKIT_INDEX:
                    raise ValueError(f"VMC mapping {target!r}: {source!r} is not an ARKit blendshape name "
                                     f"(use the 52 names as in {ARKIT_NAMES[0]!r}, {ARKIT_NAMES[24]!r} …)")
                if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
                    raise ValueError(f"VMC mapping {target!r}: the weight of {source!r} must be a number, got {weight!r}")
                row[ARKIT_INDEX[source]] = float(weight)
            names.append(target)
            rows.append(row)
        self.names: tuple[str, ...] = tuple(names)
        self.matrix = np.stack(rows, axis=1)  # (52, K)

    @classmethod
    def named(cls, spec: str) -> VmcMapping:
        """A built-in mapping (:data:`VMC_MAPPINGS`) by name, or a JSON file of one."""
        if spec in VMC_MAPPINGS:
            return cls(VMC_MAPPINGS[spec])
        path = Path(spec)
        if not path.is_file():
            raise ValueError(f"unknown VMC name mapping {spec!r}: use one of {', '.join(VMC_MAPPINGS)} or a JSON file")
        if path.stat().st_size > MAX_MAPPING_BYTES:
            raise ValueError(f"VMC mapping file {path} is larger than {MAX_MAPPING_BYTES} bytes")
        try:
            table = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read the VMC mapping {path}: {' '.join(str(error).split())}") from None
        return cls(table)

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(weights, dtype=np.float32).reshape(-1, NUM_BLENDSHAPES) @ self.matrix, 0.0, 1.0)


def encode_vmc_bundle(names: Sequence[str], values: Sequence[float]) -> bytes:
    """One OSC bundle: ``/VMC/Ext/Blend/Val name value`` per name, then ``/VMC/Ext/Blend/Apply``."""
    from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
    from pythonosc.osc_message_builder import OscMessageBuilder

    bundle = OscBundleBuilder(IMMEDIATELY)
    for name, value in zip(names, values):
        msg = OscMessageBuilder(address="/VMC/Ext/Blend/Val")
        msg.add_arg(str(name), "s")
        msg.add_arg(float(value), "f")
        bundle.add_content(msg.build())
    bundle.add_content(OscMessageBuilder(address="/VMC/Ext/Blend/Apply").build())
    return bundle.build().dgram


# ------------------------------------------------------------------------------------------------
# WebSocket JSON
# ------------------------------------------------------------------------------------------------


def ws_hello(fps: float, subject: str, emotions: Sequence[str]) -> str:
    return json.dumps({"type": "hello", "protocol": "pestalk-live", "version": 1, "names": list(ARKIT_NAMES),
                       "fps": fps, "subject": subject, "emotions": list(emotions)})


def ws_frame(index: int, time: float, weights: np.ndarray) -> str:
    # 4 decimals: far below what a face shows, a third of the message size of full floats
    return json.dumps({"type": "frame", "index": int(index), "time": round(float(time), 6),
                       "weights": [round(float(v), 4) for v in weights]}, allow_nan=False)


def ws_status(status: Mapping[str, Any]) -> str:
    return json.dumps({"type": "status", **status}, allow_nan=False)
