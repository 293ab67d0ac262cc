"""Blendshape conventions: conversion tables and morph-target name matching."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from pestalk_hf.blendshapes import (
    APPLE_NAMES,
    ARKIT_NAMES,
    LIVELINK_CSV_HEADER,
    LR_SUFFIX_NAMES,
    MEDIAPIPE_NAMES,
    SAID32_NAMES,
    from_apple_order,
    from_mediapipe,
    from_said32,
    match_morph_targets,
    normalize_blendshape_name,
    retarget_weights,
    to_apple_order,
    to_lr_suffix,
    to_said32,
    weights_from_rig,
)
from pestalk_hf.modeling.configuration_pestalk import DEFAULT_LOWER_FACE_NAMES

RNG = np.random.default_rng(0)


def test_internal_order_is_52_alphabetical():
    assert len(ARKIT_NAMES) == 52 == len(set(ARKIT_NAMES))
    assert list(ARKIT_NAMES) == sorted(ARKIT_NAMES)


def test_apple_order_is_a_permutation_with_livelink_quirks():
    assert len(APPLE_NAMES) == 52
    assert sorted(n[0].lower() + n[1:] for n in APPLE_NAMES) == sorted(ARKIT_NAMES)
    # the app writes JawRight before JawLeft and MouthRight before MouthLeft
    assert APPLE_NAMES.index("JawRight") + 1 == APPLE_NAMES.index("JawLeft")
    assert APPLE_NAMES.index("MouthRight") + 1 == APPLE_NAMES.index("MouthLeft")
    assert APPLE_NAMES[0] == "EyeBlinkLeft" and APPLE_NAMES[-1] == "TongueOut"
    assert LIVELINK_CSV_HEADER[:3] == ("Timecode", "BlendshapeCount", "EyeBlinkLeft")
    assert len(LIVELINK_CSV_HEADER) == 2 + 52 + 9


def test_apple_conversion_is_bijective_and_by_name():
    w = RNG.random((7, 52)).astype(np.float32)
    apple = to_apple_order(w)
    for i, name in enumerate(APPLE_NAMES):
        np.testing.assert_array_equal(apple[:, i], w[:, ARKIT_NAMES.index(name[0].lower() + name[1:])])
    np.testing.assert_array_equal(from_apple_order(apple), w)
    with pytest.raises(ValueError, match="52"):
        to_apple_order(np.zeros((3, 51)))


def test_mediapipe_table_and_conversion():
    assert len(MEDIAPIPE_NAMES) == 52 and MEDIAPIPE_NAMES[0] == "_neutral"
    assert "tongueOut" not in MEDIAPIPE_NAMES
    assert set(MEDIAPIPE_NAMES[1:]) == set(ARKIT_NAMES) - {"tongueOut"}
    scores = RNG.random((4, 52)).astype(np.float32)
    ours = from_mediapipe(scores)
    assert ours.shape == (4, 52)
    for j, name in enumerate(MEDIAPIPE_NAMES[1:], start=1):
        np.testing.assert_array_equal(ours[:, ARKIT_NAMES.index(name)], scores[:, j])
    assert np.all(ours[:, ARKIT_NAMES.index("tongueOut")] == 0)
    # dict and FaceLandmarker Category objects give the same vector as the array form
    as_dict = dict(zip(MEDIAPIPE_NAMES, scores[0].tolist()))
    np.testing.assert_allclose(from_mediapipe(as_dict), ours[0], atol=1e-7)
    cats = [SimpleNamespace(category_name=n, score=s) for n, s in as_dict.items()]
    np.testing.assert_allclose(from_mediapipe(cats), ours[0], atol=1e-7)
    with pytest.raises(ValueError, match="unknown"):
        from_mediapipe({"notAShape": 1.0})
    with pytest.raises(ValueError):
        from_mediapipe(np.zeros(51))


def test_lr_suffix_names():
    assert len(set(LR_SUFFIX_NAMES)) == 52
    assert to_lr_suffix("browDownLeft") == "browDown_L"
    assert to_lr_suffix("eyeBlinkRight") == "eyeBlink_R"
    assert to_lr_suffix("jawLeft") == "jawLeft"  # a movement, not a half
    assert to_lr_suffix("cheekPuff") == "cheekPuff"
    match = match_morph_targets(LR_SUFFIX_NAMES)
    assert match.mapping == {i: i for i in range(52)}
    with pytest.raises(ValueError):
        to_lr_suffix("smile")


def test_said32_subset():
    assert len(SAID32_NAMES) == 32 == len(set(SAID32_NAMES))
    assert set(SAID32_NAMES) == set(DEFAULT_LOWER_FACE_NAMES)
    w = RNG.random((5, 52)).astype(np.float32)
    back = from_said32(to_said32(w))
    lower = [ARKIT_NAMES.index(n) for n in SAID32_NAMES]
    upper = [i for i in range(52) if i not in lower]
    np.testing.assert_array_equal(back[:, lower], w[:, lower])
    assert np.all(back[:, upper] == 0)


@pytest.mark.parametrize("spelling,expected", [
    ("EyeBlinkLeft", "eyeBlinkLeft"),
    ("eyeBlink_L", "eyeBlinkLeft"),
    ("eye_blink_left", "eyeBlinkLeft"),
    ("L_eyeBlink", "eyeBlinkLeft"),
    ("blendShape1.mouthSmile_R", "mouthSmileRight"),
    ("Face:jawOpen", "jawOpen"),
    ("ARKit_browInnerUp", "browInnerUp"),
    ("browInnerUp_L", "browInnerUp"),  # ICT splits it in halves
    ("jawLeft", "jawLeft"),
    ("TongueOut", "tongueOut"),
    ("_neutral", None),
    ("Basis", None),
])
def test_normalize_names(spelling, expected):
    assert normalize_blendshape_name(spelling) == expected


def test_match_reports_unmatched_and_missing():
    rig = ["blendShape1." + n for n in LR_SUFFIX_NAMES[:40]] + ["neck_twist", "Basis"]
    order = RNG.permutation(len(rig))
    shuffled = [rig[i] for i in order]
    match = match_morph_targets(shuffled)
    assert sorted(match.unmatched) == ["Basis", "neck_twist"]
    assert match.missing == list(ARKIT_NAMES[40:])
    for rig_idx, our_idx in match.mapping.items():
        assert shuffled[rig_idx] == "blendShape1." + LR_SUFFIX_NAMES[our_idx]
    # retarget into the rig's order and back
    w = RNG.random((3, 52)).astype(np.float32)
    rig_w = retarget_weights(w, match, len(shuffled))
    assert rig_w.shape == (3, 42)
    assert np.all(rig_w[:, [shuffled.index("Basis"), shuffled.index("neck_twist")]] == 0)
    back = weights_from_rig(rig_w, match)
    np.testing.assert_allclose(back[:, :40], w[:, :40])
    assert np.all(back[:, 40:] == 0)


def test_many_to_one_halves():
    match = match_morph_targets(["browInnerUp_L", "browInnerUp_R", "jawOpen"])
    bi = ARKIT_NAMES.index("browInnerUp")
    assert match.mapping == {0: bi, 1: bi, 2: ARKIT_NAMES.index("jawOpen")}
    w = np.zeros((1, 52), np.float32)
    w[0, bi] = 0.4
    np.testing.assert_allclose(retarget_weights(w, match, 3), [[0.4, 0.4, 0.0]])
