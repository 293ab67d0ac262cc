"""Blendshape naming conventions and conversion tables.

Every array in this project stores the 52 ARKit blendshapes in **alphabetical** order
(:data:`ARKIT_NAMES`, ``browDownLeft`` … ``tongueOut``). The outside world does not agree on one
order or one spelling, so this module holds every table needed to talk to it:

* Apple / Live Link Face: the iPhone app's CSV column order with capitalised names
  (``EyeBlinkLeft`` … ``TongueOut``), followed by nine head/eye rotation columns.
* MediaPipe Face Landmarker: ``_neutral`` + 51 ARKit names (alphabetical), **no** ``tongueOut``.
* ``_L``/``_R`` suffix rigs (Face Cap, ICT-FaceKit, many DCC exports): ``browDown_L``.
* SAiD-32: the 32 lower-face shapes used by SAiD (Park et al. 2023) in SAiD's order.

:func:`match_morph_targets` maps the morph-target names of an arbitrary rig onto our 52 indices by
normalising case, side suffixes and namespace prefixes, so that any ARKit-style avatar can be driven.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .modeling.configuration_pestalk import ARKIT_BLENDSHAPE_NAMES

#: The internal order: 52 ARKit names, alphabetical.
ARKIT_NAMES: tuple[str, ...] = tuple(ARKIT_BLENDSHAPE_NAMES)
NUM_BLENDSHAPES: int = len(ARKIT_NAMES)
#: name → index in the internal order.
ARKIT_INDEX: dict[str, int] = {name: i for i, name in enumerate(ARKIT_NAMES)}

# --------------------------------------------------------------------------------------------
# Derived measures
# --------------------------------------------------------------------------------------------

_LIP_PART_INDICES = [ARKIT_INDEX[n] for n in ("mouthLowerDownLeft", "mouthLowerDownRight",
                                               "mouthUpperUpLeft", "mouthUpperUpRight")]
#: Lips count as closed at or below this :func:`lip_aperture` (``docs/METRICS.md``).
LIPS_CLOSED_THRESHOLD: float = 0.05


def lip_aperture(weights: Any) -> Any:
    """The lip gap ``jawOpen − mouthClose + ½(mean mouthLowerDown + mean mouthUpperUp)``, ``(..., 52) → (...)``.

    In ARKit the lips touch when mouthClose ≈ jawOpen and the lower/upper lips are not pulled away, so
    this is ≈ 0 on a closed mouth. Works on numpy arrays and torch tensors alike (the evaluation and the
    training loss use the same definition).
    """
    part = weights[..., _LIP_PART_INDICES]
    return (weights[..., ARKIT_INDEX["jawOpen"]] - weights[..., ARKIT_INDEX["mouthClose"]]
            + 0.5 * (part[..., :2].mean(-1) + part[..., 2:].mean(-1)))


# --------------------------------------------------------------------------------------------
# Apple / Live Link Face
# --------------------------------------------------------------------------------------------

#: The 52 blendshape columns of a Live Link Face CSV, in the app's order (note JawRight before
#: JawLeft and MouthRight before MouthLeft: that is what the app writes).
APPLE_NAMES: tuple[str, ...] = (
    "EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft", "EyeLookOutLeft", "EyeLookUpLeft",
    "EyeSquintLeft", "EyeWideLeft",
    "EyeBlinkRight", "EyeLookDownRight", "EyeLookInRight", "EyeLookOutRight", "EyeLookUpRight",
    "EyeSquintRight", "EyeWideRight",
    "JawForward", "JawRight", "JawLeft", "JawOpen",
    "MouthClose", "MouthFunnel", "MouthPucker", "MouthRight", "MouthLeft",
    "MouthSmileLeft", "MouthSmileRight", "MouthFrownLeft", "MouthFrownRight",
    "MouthDimpleLeft", "MouthDimpleRight", "MouthStretchLeft", "MouthStretchRight",
    "MouthRollLower", "MouthRollUpper", "MouthShrugLower", "MouthShrugUpper",
    "MouthPressLeft", "MouthPressRight", "MouthLowerDownLeft", "MouthLowerDownRight",
    "MouthUpperUpLeft", "MouthUpperUpRight",
    "BrowDownLeft", "BrowDownRight", "BrowInnerUp", "BrowOuterUpLeft", "BrowOuterUpRight",
    "CheekPuff", "CheekSquintLeft", "CheekSquintRight", "NoseSneerLeft", "NoseSneerRight",
    "TongueOut",
)
#: The nine rotation columns Live Link Face appends after the blendshapes (radians in the app).
LIVELINK_HEAD_EYE_COLUMNS: tuple[str, ...] = (
    "HeadYaw", "HeadPitch", "HeadRoll",
    "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll",
    "RightEyeYaw", "RightEyePitch", "RightEyeRoll",
)
#: Full Live Link Face CSV header, spelled as the app writes it ("BlendshapeCount", lower-case s:
#: the header of the recording dwskillman/BlendFiles:MySlate_1_iPhone.csv, app v1.3.2).
LIVELINK_CSV_HEADER: tuple[str, ...] = (
    ("Timecode", "BlendshapeCount") + APPLE_NAMES + LIVELINK_HEAD_EYE_COLUMNS
)

#: Eye rotation per unit of an EyeLook shape, in radians (35°): the app's eye angles are the
#: EyeLook coefficients times this constant (see :func:`livelink_eye_rotations`).
LIVELINK_EYE_MAX_ANGLE: float = float(np.deg2rad(35.0))


def livelink_eye_rotations(weights: np.ndarray) -> np.ndarray:
    """(T, 52) internal order → (T, 6) ``LeftEyeYaw, LeftEyePitch, LeftEyeRoll, RightEyeYaw, …`` (radians).

    The mapping the Live Link Face app itself uses, recovered from a public recording
    (dwskillman/BlendFiles:MySlate_1_iPhone.csv, 678 rows at 60 Hz; this formula reproduces its six
    eye columns to ±1e-7 rad from its EyeLook columns):

    * the app's ``LeftEye*`` columns follow ARKit's ``eyeLook*Right`` shapes and ``RightEye*`` follow
      ``eyeLook*Left`` (ARKit names the shapes from the other side);
    * gaze angles ``p = 35° × (lookDown − lookUp)`` (positive = looking down) and
      ``y = 35° × (rightward − leftward)`` (positive = looking to the subject's right; rightward is
      ``eyeLookOutRight`` / ``eyeLookInLeft``, leftward ``eyeLookInRight`` / ``eyeLookOutLeft``, as in
      Apple's ARFaceAnchor documentation);
    * the eye's rotation ``R = Ry(y) · Rx(p)`` written as intrinsic X-Y-Z Euler angles:
      ``Yaw = asin(sin y · cos p)``, ``Pitch = atan2(sin p, cos y · cos p)``,
      ``Roll = atan2(sin y · sin p, cos y)`` (≈ y·p, the small roll the recordings show).

    The recording has no upward or outward gaze (``lookUp``/``lookOut`` are 0 throughout); their
    sign (the opposite direction of ``lookDown``/``lookIn``) is an assumption.
    """
    w = _check_last_dim(np.asarray(weights, dtype=np.float64), NUM_BLENDSHAPES, "livelink_eye_rotations")
    col = ARKIT_INDEX
    out = []
    # (app eye, ARKit shapes it follows, rightward shape, leftward shape)
    for side, right_ward, left_ward in (("Right", "eyeLookOutRight", "eyeLookInRight"),
                                        ("Left", "eyeLookInLeft", "eyeLookOutLeft")):
        p = LIVELINK_EYE_MAX_ANGLE * (w[..., col[f"eyeLookDown{side}"]] - w[..., col[f"eyeLookUp{side}"]])
        y = LIVELINK_EYE_MAX_ANGLE * (w[..., col[right_ward]] - w[..., col[left_ward]])
        out += [np.arcsin(np.sin(y) * np.cos(p)), np.arctan2(np.sin(p), np.cos(y) * np.cos(p)),
                np.arctan2(np.sin(y) * np.sin(p), np.cos(y))]
    return np.stack(out, axis=-1)


def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:]


#: APPLE_TO_ARKIT[i] = internal index of Apple column i.  ``ours[:, APPLE_TO_ARKIT] == apple``.
APPLE_TO_ARKIT: np.ndarray = np.array([ARKIT_INDEX[_lower_first(n)] for n in APPLE_NAMES], dtype=np.int64)
#: ARKIT_TO_APPLE[j] = Apple column of internal index j.  ``apple[:, ARKIT_TO_APPLE] == ours``.
ARKIT_TO_APPLE: np.ndarray = np.argsort(APPLE_TO_ARKIT).astype(np.int64)


def to_apple_order(weights: np.ndarray) -> np.ndarray:
    """(..., 52) internal order → (..., 52) Live Link Face column order."""
    return _check_last_dim(weights, NUM_BLENDSHAPES, "to_apple_order")[..., APPLE_TO_ARKIT]


def from_apple_order(weights: np.ndarray) -> np.ndarray:
    """(..., 52) Live Link Face column order → (..., 52) internal order."""
    return _check_last_dim(weights, NUM_BLENDSHAPES, "from_apple_order")[..., ARKIT_TO_APPLE]


# --------------------------------------------------------------------------------------------
# MediaPipe
# --------------------------------------------------------------------------------------------

#: MediaPipe Face Landmarker's 52 blendshape categories: ``_neutral`` then the ARKit names
#: alphabetically, without ``tongueOut``.
MEDIAPIPE_NAMES: tuple[str, ...] = ("_neutral",) + tuple(n for n in ARKIT_NAMES if n != "tongueOut")


def from_mediapipe(scores: Any) -> np.ndarray:
    """Map MediaPipe blendshape scores to the internal 52 (``_neutral`` dropped, ``tongueOut`` = 0).

    Accepts a (52,) or (T, 52) array in :data:`MEDIAPIPE_NAMES` order, a ``{name: score}`` mapping,
    or a list of MediaPipe ``Category`` objects (``.category_name``/``.score``), which is what
    ``FaceLandmarkerResult.face_blendshapes[k]`` holds. Returns float32 (52,) or (T, 52).
    """
    if isinstance(scores, Mapping):
        pairs = scores.items()
    elif isinstance(scores, Sequence) and scores and hasattr(scores[0], "category_name"):
        pairs = [(c.category_name, c.score) for c in scores]
    else:
        arr = _check_last_dim(np.asarray(scores, dtype=np.float32), len(MEDIAPIPE_NAMES), "from_mediapipe")
        out = np.zeros(arr.shape[:-1] + (NUM_BLENDSHAPES,), dtype=np.float32)
        src = [i for i, n in enumerate(MEDIAPIPE_NAMES) if n in ARKIT_INDEX]
        out[..., [ARKIT_INDEX[MEDIAPIPE_NAMES[i]] for i in src]] = arr[..., src]
        return out
    out = np.zeros(NUM_BLENDSHAPES, dtype=np.float32)
    unknown = []
    for name, value in pairs:
        if name == "_neutral":
            continue
        if name not in ARKIT_INDEX:
            unknown.append(name)
            continue
        out[ARKIT_INDEX[name]] = float(value)
    if unknown:
        raise ValueError(f"from_mediapipe: unknown blendshape names {unknown}; expected {MEDIAPIPE_NAMES}")
    out[ARKIT_INDEX["tongueOut"]] = 0.0
    return out


# --------------------------------------------------------------------------------------------
# _L / _R suffix rigs and SAiD-32
# --------------------------------------------------------------------------------------------


def to_lr_suffix(name: str) -> str:
    """``browDownLeft`` → ``browDown_L`` (Face Cap / ICT convention); names without a side stay.

    ``jawLeft``/``jawRight``/``mouthLeft``/``mouthRight`` are movements *towards* a side, not
    one half of a symmetric pair, and keep their names in those rigs.
    """
    if name not in ARKIT_INDEX:
        raise ValueError(f"to_lr_suffix: {name!r} is not one of the 52 ARKit names")
    if name in ("jawLeft", "jawRight", "mouthLeft", "mouthRight"):
        return name
    for side, suffix in (("Left", "_L"), ("Right", "_R")):
        if name.endswith(side):
            return name[: -len(side)] + suffix
    return name


#: The internal order spelled the ``_L``/``_R`` way.
LR_SUFFIX_NAMES: tuple[str, ...] = tuple(to_lr_suffix(n) for n in ARKIT_NAMES)

#: SAiD's 32 blendshapes (lower face), in SAiD's order (``data/ARKit_blendshapes.txt`` of SAiD).
SAID32_NAMES: tuple[str, ...] = (
    "jawForward", "jawLeft", "jawRight", "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker",
    "mouthLeft", "mouthRight", "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight", "mouthRollLower",
    "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthPressLeft", "mouthPressRight",
    "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft", "noseSneerRight",
)
#: SAID32_TO_ARKIT[i] = internal index of SAiD column i.
SAID32_TO_ARKIT: np.ndarray = np.array([ARKIT_INDEX[n] for n in SAID32_NAMES], dtype=np.int64)


def to_said32(weights: np.ndarray) -> np.ndarray:
    """(..., 52) internal → (..., 32) SAiD order (upper face and tongueOut dropped)."""
    return _check_last_dim(weights, NUM_BLENDSHAPES, "to_said32")[..., SAID32_TO_ARKIT]


def from_said32(weights: np.ndarray) -> np.ndarray:
    """(..., 32) SAiD order → (..., 52) internal, with the 20 shapes SAiD lacks set to 0."""
    arr = _check_last_dim(np.asarray(weights), len(SAID32_NAMES), "from_said32")
    out = np.zeros(arr.shape[:-1] + (NUM_BLENDSHAPES,), dtype=arr.dtype if arr.dtype.kind == "f" else np.float32)
    out[..., SAID32_TO_ARKIT] = arr
    return out


# --------------------------------------------------------------------------------------------
# Matching an arbitrary rig's morph targets
# --------------------------------------------------------------------------------------------

_SIDE_SUFFIXES = {"left": ("left", "l"), "right": ("right", "r")}
_MOVEMENT_NAMES = ("jawLeft", "jawRight", "mouthLeft", "mouthRight")


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _build_lookup() -> dict[str, int]:
    """Normalised spelling → internal index, for every spelling convention we accept.

    Keys are lower-case alphanumerics. Sided shapes accept ``…left``/``…l``; unsided shapes also
    accept ``…left``/``…l`` halves (ICT-FaceKit splits ``browInnerUp``/``cheekPuff`` into halves),
    which then map many-to-one. A collision between two different targets is a bug, so it raises.
    """
    lookup: dict[str, int] = {}

    def add(k: str, idx: int, strong: bool) -> None:
        if k in lookup and lookup[k] != idx:
            if strong:
                lookup[k] = idx  # an exact ARKit spelling wins over a derived one
            return
        lookup.setdefault(k, idx)

    for idx, name in enumerate(ARKIT_NAMES):
        add(_key(name), idx, True)
    for idx, name in enumerate(ARKIT_NAMES):
        base = name
        for side in ("Left", "Right"):
            if name.endswith(side) and name not in _MOVEMENT_NAMES:
                base = name[: -len(side)]
                for suffix in _SIDE_SUFFIXES[side.lower()]:
                    add(_key(base) + suffix, idx, False)
                    add(suffix + _key(base), idx, False)  # e.g. "L_browDown"
                break
        else:
            if name not in _MOVEMENT_NAMES:
                for suffixes in _SIDE_SUFFIXES.values():
                    for suffix in suffixes:
                        add(_key(name) + suffix, idx, False)
    # exact names must map to themselves
    for idx, name in enumerate(ARKIT_NAMES):
        assert lookup[_key(name)] == idx
    return lookup


_LOOKUP: dict[str, int] = _build_lookup()


def normalize_blendshape_name(name: str) -> str | None:
    """Return the internal ARKit name that a rig's morph-target name denotes, or None.

    Handles case (``EyeBlinkLeft``), separators (``eye_blink_left``), side suffixes/prefixes
    (``eyeBlink_L``, ``L_eyeBlink``), namespace prefixes (``blendShape1.jawOpen``,
    ``Face:jawOpen``, ``head|jawOpen``) and tool prefixes (``ARKit_jawOpen``, ``BS_jawOpen``).
    """
    idx = _match_one(name)
    return None if idx is None else ARKIT_NAMES[idx]


def _match_one(name: str) -> int | None:
    tail = re.split(r"[.:|/\\]", name.strip())[-1]
    candidates = [tail]
    parts = tail.split("_")
    candidates += ["_".join(parts[i:]) for i in range(1, len(parts))]  # drop leading tool prefixes
    for cand in candidates:
        idx = _LOOKUP.get(_key(cand))
        if idx is not None:
            return idx
    return None


@dataclass(frozen=True)
class MorphTargetMatch:
    """Result of :func:`match_morph_targets`.

    ``mapping`` maps rig target index → internal index (several rig targets may map to one
    internal shape, e.g. ICT's left/right ``browInnerUp`` halves); ``unmatched`` lists rig names
    that are not ARKit shapes; ``missing`` lists ARKit names the rig lacks.
    """

    mapping: dict[int, int]
    unmatched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def present(self) -> tuple[str, ...]:
        """Internal names driven by at least one rig target, in internal order."""
        return tuple(ARKIT_NAMES[i] for i in sorted(set(self.mapping.values())))


def match_morph_targets(names: Sequence[str]) -> MorphTargetMatch:
    """Map an arbitrary rig's morph-target names to internal indices, reporting leftovers."""
    mapping: dict[int, int] = {}
    unmatched: list[str] = []
    for i, name in enumerate(names):
        idx = _match_one(str(name))
        if idx is None:
            unmatched.append(str(name))
        else:
            mapping[i] = idx
    found = set(mapping.values())
    missing = [n for j, n in enumerate(ARKIT_NAMES) if j not in found]
    return MorphTargetMatch(mapping=mapping, unmatched=unmatched, missing=missing)


def retarget_weights(weights: np.ndarray, match: MorphTargetMatch, num_targets: int) -> np.ndarray:
    """(T, 52) internal weights → (T, num_targets) in a rig's own target order (0 for unmatched)."""
    arr = _check_last_dim(np.asarray(weights, dtype=np.float32), NUM_BLENDSHAPES, "retarget_weights")
    out = np.zeros(arr.shape[:-1] + (num_targets,), dtype=np.float32)
    for rig_idx, our_idx in match.mapping.items():
        out[..., rig_idx] = arr[..., our_idx]
    return out


def weights_from_rig(weights: np.ndarray, match: MorphTargetMatch) -> np.ndarray:
    """(T, K) weights in a rig's order → (T, 52) internal; many-to-one halves are averaged."""
    arr = np.asarray(weights, dtype=np.float32)
    out = np.zeros(arr.shape[:-1] + (NUM_BLENDSHAPES,), dtype=np.float32)
    count = np.zeros(NUM_BLENDSHAPES, dtype=np.float32)
    for rig_idx, our_idx in match.mapping.items():
        out[..., our_idx] += arr[..., rig_idx]
        count[our_idx] += 1
    return out / np.maximum(count, 1)


def _check_last_dim(arr: Any, size: int, who: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 0 or arr.shape[-1] != size:
        raise ValueError(f"{who}: expected an array whose last dimension is {size}, got shape {arr.shape}")
    return arr
