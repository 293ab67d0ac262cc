"""Metrics on hand-built tracks whose answers are known in closed form (definitions: pestalk_hf.metrics)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pestalk_hf import metrics as M
from pestalk_hf.modeling.configuration_pestalk import ARKIT_BLENDSHAPE_NAMES
from pestalk_hf.modeling.configuration_pestalk import MEAD_EMOTIONS as M_EMOTIONS

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
ICT = ASSETS / "avatars" / "ict_face_arkit52.glb"
IDX = {n: i for i, n in enumerate(ARKIT_BLENDSHAPE_NAMES)}


def _ict_path() -> Path:
    if not ICT.exists():
        pytest.skip("needs ../shared/assets (ICT-FaceKit avatar), absent in this checkout")
    return ICT


@pytest.fixture(scope="module")
def ict():
    from pestalk_hf.avatar import load_avatar

    return load_avatar(_ict_path())


def _sine(num_frames: int, period: int, shift: int = 0) -> np.ndarray:
    """sin whose frame-to-frame speed is exactly 0 at t = shift + k·period/2 (strict velocity minima)."""
    w = 2 * np.pi / period
    t = np.arange(num_frames) - shift
    return np.sin(w * t + np.pi / 2 - w / 2)


# --------------------------------------------------------------------------------------------------
# blendshape metrics
# --------------------------------------------------------------------------------------------------


def test_channel_sets_match_the_written_definitions():
    names = np.array(ARKIT_BLENDSHAPE_NAMES)
    assert len(M.LIP_BLENDSHAPE_INDICES) == 23 and all(n.startswith("mouth") for n in names[M.LIP_BLENDSHAPE_INDICES])
    assert len(M.PRONUNCIATION_BLENDSHAPE_INDICES) == 27
    assert set(names[M.PRONUNCIATION_BLENDSHAPE_INDICES]) - set(names[M.LIP_BLENDSHAPE_INDICES]) == {
        "jawForward", "jawLeft", "jawOpen", "jawRight"
    }
    assert names[M.STYLE_BLENDSHAPE_INDICES].tolist() == [
        "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
        "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight",
    ]


def test_constant_offset_gives_sqrt_of_channel_count():
    rng = np.random.default_rng(0)
    target = rng.random((50, 52))
    pred = target + 0.1
    assert M.lbe(pred, target) == pytest.approx(0.1 * np.sqrt(23))
    assert M.pbe(pred, target) == pytest.approx(0.1 * np.sqrt(27))
    assert M.mbe(pred, target) == pytest.approx(0.1 * np.sqrt(52))
    assert M.mbe(pred, target, reduction="max") == pytest.approx(0.1)


def test_errors_are_not_squared_and_average_over_frames():
    target = np.zeros((4, 52))
    pred = np.zeros((4, 52))
    pred[:, IDX["jawOpen"]] = [0.0, 0.2, 0.4, 0.6]  # jaw only: outside LBE, inside PBE and MBE
    pred[1, IDX["mouthFunnel"]] = 0.3
    assert M.lbe(pred, target) == pytest.approx(0.3 / 4)
    expected = (0.0 + np.hypot(0.2, 0.3) + 0.4 + 0.6) / 4
    assert M.pbe(pred, target) == pytest.approx(expected)
    assert M.mbe(pred, target) == pytest.approx(expected)
    assert M.lbe(target, target) == M.pbe(target, target) == M.mbe(target, target) == 0.0


def test_lengths_are_cut_to_the_shorter_track():
    target = np.zeros((10, 52))
    pred = np.full((12, 52), 0.5)
    pred[10:] = 100.0  # beyond the reference: must not count
    assert M.mbe(pred, target) == pytest.approx(0.5 * np.sqrt(52))


@pytest.mark.parametrize("bad", [np.zeros((5, 51)), np.zeros(52), np.full((5, 52), np.nan)])
def test_bad_blendshape_input_raises(bad):
    with pytest.raises(ValueError):
        M.mbe(bad, np.zeros((5, 52)))


# --------------------------------------------------------------------------------------------------
# beat alignment
# --------------------------------------------------------------------------------------------------


def test_motion_beats_are_velocity_minima():
    beats = M.motion_beats(_sine(100, 20)[:, None], smoothing_sigma=0)
    np.testing.assert_array_equal(beats, np.arange(10, 100 - 1, 10))


@pytest.mark.parametrize("shift", [0, 1, 2, 3, 4])
def test_shifted_sine_gives_gaussian_of_the_shift(shift):
    target = np.zeros((200, 52))
    target[:, IDX["jawOpen"]] = 0.5 + 0.5 * _sine(200, 20)
    pred = np.zeros((200, 52))
    pred[:, IDX["jawOpen"]] = 0.5 + 0.5 * _sine(200, 20, shift)
    expected = np.exp(-(shift**2) / (2 * M.BA_SIGMA**2))
    assert M.beat_alignment(pred, target, smoothing_sigma=0) == pytest.approx(expected)
    # Gaussian smoothing of a periodic signal keeps its interior minima where they were.
    assert M.beat_alignment(pred, target) == pytest.approx(expected)


def test_ba_identical_static_and_upper_face_only_tracks():
    rng = np.random.default_rng(1)
    track = rng.random((120, 52))
    assert M.beat_alignment(track, track) == 1.0
    static = np.zeros((60, 52))
    assert M.beat_alignment(static, static) == 1.0  # no beats on either side
    moving = np.zeros((60, 52))
    moving[:, IDX["jawOpen"]] = _sine(60, 20)
    assert M.beat_alignment(static, moving) == 0.0
    # Blinks live outside the default (jaw + mouth) channels, so they cannot change BA ...
    blinky = moving.copy()
    blinky[:, IDX["eyeBlinkLeft"]] = rng.random(60)
    assert M.beat_alignment(blinky, moving) == 1.0
    # ... unless all channels are asked for.
    assert M.beat_alignment(blinky, moving, channels=None) < 1.0


def test_ba_on_vertex_tracks_needs_explicit_channels():
    track = np.zeros((60, 4, 3))
    track[:, :, 1] = _sine(60, 20)[:, None]
    shifted = np.zeros((60, 4, 3))
    shifted[:, :, 1] = _sine(60, 20, 2)[:, None]
    assert M.beat_alignment(shifted, track, channels=None, smoothing_sigma=0) == pytest.approx(np.exp(-4 / 18))
    assert M.beat_alignment(shifted, track, channels=[0, 2], smoothing_sigma=0) == pytest.approx(np.exp(-4 / 18))
    with pytest.raises(ValueError):
        M.beat_alignment(track, track)  # "pronunciation" channels are blendshape columns


def test_ba_from_beats_is_recall_over_reference_beats():
    assert M.beat_alignment_from_beats([10, 50], [10, 20]) == pytest.approx((1 + np.exp(-100 / 18)) / 2)
    assert M.beat_alignment_from_beats([], []) == 1.0
    assert M.beat_alignment_from_beats([3], []) == 0.0
    with pytest.raises(ValueError):
        M.beat_alignment_from_beats([1], [1], sigma=0)


# --------------------------------------------------------------------------------------------------
# vertices, regions and vertex metrics on a hand-built 6-vertex rig
# --------------------------------------------------------------------------------------------------


def _toy_rig() -> SimpleNamespace:
    """Vertex 0: chin (jawOpen); 1: lip (jawOpen + mouthFunnel); 2: mouth corner (mouthSmileLeft, and a
    little eyeSquintLeft: lip-dominant); 3: eyelid (eyeBlinkLeft); 4: forehead (browInnerUp); 5: back of
    the head, touched by eyeBlinkLeft at 5 % of its peak (below the 10 % threshold); 6: lower eyelid
    (eyeBlinkLeft, and mouthSmileLeft at 20 % of its peak: eye-dominant)."""
    base = np.arange(21, dtype=np.float32).reshape(7, 3) * 0.01
    d = np.zeros((52, 7, 3), dtype=np.float32)
    d[IDX["jawOpen"], 0] = [0, -0.02, 0]
    d[IDX["jawOpen"], 1] = [0, -0.01, 0]
    d[IDX["mouthFunnel"], 1] = [0, 0, 0.005]
    d[IDX["mouthSmileLeft"], 2] = [0.004, 0.003, 0]
    d[IDX["eyeSquintLeft"], 2] = [0, 0.001, 0]
    d[IDX["eyeBlinkLeft"], 3] = [0, -0.01, 0]
    d[IDX["eyeBlinkLeft"], 5] = [0, -0.0005, 0]
    d[IDX["browInnerUp"], 4] = [0, 0.006, 0]
    d[IDX["eyeBlinkLeft"], 6] = [0, -0.004, 0]
    d[IDX["mouthSmileLeft"], 6] = [0, 0.001, 0]
    return SimpleNamespace(vertices=base, morph_targets=d)


def test_blendshapes_to_vertices_is_the_linear_model():
    rig = _toy_rig()
    w = np.zeros((2, 52))
    w[1, IDX["jawOpen"]] = 0.5
    w[1, IDX["eyeBlinkLeft"]] = 1.0
    v = M.blendshapes_to_vertices(w, rig.vertices, rig.morph_targets)
    assert v.shape == (2, 7, 3)
    np.testing.assert_allclose(v[0], rig.vertices)
    np.testing.assert_allclose(v[1, 0] - rig.vertices[0], [0, -0.01, 0], atol=1e-7)
    np.testing.assert_allclose(v[1, 3] - rig.vertices[3], [0, -0.01, 0], atol=1e-7)
    with pytest.raises(ValueError):
        M.blendshapes_to_vertices(w[:, :51], rig.vertices, rig.morph_targets)


def test_derive_regions_on_toy_rig():
    regions = M.derive_regions(_toy_rig().morph_targets)
    assert regions["lip"].tolist() == [0, 1, 2]  # vertex 6 is moved more by the blink than the smile
    assert regions["eye"].tolist() == [3, 6]  # vertex 2 is moved more by the smile than the squint
    assert regions["brow"].tolist() == [4]
    assert regions["upper_face"].tolist() == [3, 4, 6]
    assert regions["face"].tolist() == [0, 1, 2, 3, 4, 6]  # vertex 5 is below the threshold
    assert M.derive_regions(_toy_rig().morph_targets, rel_threshold=0.04)["eye"].tolist() == [3, 5, 6]
    mouth_only = M.derive_regions(_toy_rig().morph_targets, groups={**M.REGION_PREFIXES, "lip": ("mouth",)})
    assert mouth_only["lip"].tolist() == [1, 2]


def test_lve_is_max_over_region_of_squared_distance_averaged_over_frames():
    rig = _toy_rig()
    regions = M.derive_regions(rig.morph_targets)
    target = np.zeros((3, 52))
    pred = np.zeros((3, 52))
    dw = np.array([0.1, 0.3, 0.0])
    pred[:, IDX["jawOpen"]] = dw
    pv = M.blendshapes_to_vertices(pred, rig.vertices, rig.morph_targets)
    gv = M.blendshapes_to_vertices(target, rig.vertices, rig.morph_targets)
    # The chin (vertex 0, |δ| = 0.02) has the largest error in every frame: LVE = mean(dw²) · 0.02².
    assert M.lve(pv, gv, regions["lip"]) == pytest.approx(np.mean(dw**2) * 0.02**2, rel=1e-5)
    assert M.eve(pv, gv, regions["upper_face"]) == 0.0  # the jaw does not reach the upper face
    with pytest.raises(ValueError):
        M.lve(pv, gv, [7])


def test_fdd_is_signed_gt_minus_pred_std_of_squared_motion():
    rig = _toy_rig()
    upper = M.derive_regions(rig.morph_targets)["upper_face"]  # vertices 3, 6 (eyelid), 4 (forehead)
    blinking = np.zeros((20, 52))
    blinking[::2, IDX["eyeBlinkLeft"]] = 1.0  # squared motion alternates 0 / |δ|²: std = |δ|² / 2
    still = np.zeros((20, 52))
    bv = M.blendshapes_to_vertices(blinking, rig.vertices, rig.morph_targets)
    sv = M.blendshapes_to_vertices(still, rig.vertices, rig.morph_targets)
    expected = (0.01**2 / 2 + 0.0 + 0.004**2 / 2) / 3  # mean over the three upper-face vertices
    assert M.fdd(sv, bv, upper, rig.vertices) == pytest.approx(expected, rel=1e-4)  # pred too still: > 0
    assert M.fdd(bv, sv, upper, rig.vertices) == pytest.approx(-expected, rel=1e-4)
    assert M.fdd(bv, sv, upper, rig.vertices, signed=False) == pytest.approx(expected, rel=1e-4)
    assert M.fdd(bv, bv, upper, rig.vertices) == 0.0
    # A constant expression has no dynamics, whatever its size.
    frozen = np.zeros((20, 52))
    frozen[:, IDX["browInnerUp"]] = 0.8
    fv = M.blendshapes_to_vertices(frozen, rig.vertices, rig.morph_targets)
    assert M.upper_face_dynamics(fv, rig.vertices, upper) == pytest.approx(0.0, abs=1e-12)


def test_evaluate_tracks_aggregates_per_clip_and_matches_full_vertex_computation():
    rig = _toy_rig()
    regions = M.derive_regions(rig.morph_targets)
    rng = np.random.default_rng(2)
    targets = [rng.random((300, 52)), rng.random((10, 52))]  # 300 > one 256-frame chunk
    preds = [t + rng.normal(0, 0.05, t.shape) for t in targets]
    preds[1] = np.concatenate([preds[1], np.zeros((2, 52))])  # two extra frames, cut away
    out = M.evaluate_tracks(preds, targets, rig)
    assert out["num_clips"] == 2 and out["num_frames"] == 310 and out["frames_dropped"] == 2
    expected_lbe = np.mean([M.lbe(p, t) for p, t in zip(preds, targets)])
    assert out["lbe"] == pytest.approx(expected_lbe)
    full = [
        (M.blendshapes_to_vertices(p[: len(t)], rig.vertices, rig.morph_targets),
         M.blendshapes_to_vertices(t, rig.vertices, rig.morph_targets))
        for p, t in zip(preds, targets)
    ]
    assert out["lve"] == pytest.approx(np.mean([M.lve(p, t, regions["lip"]) for p, t in full]), rel=1e-5)
    assert out["eve"] == pytest.approx(np.mean([M.eve(p, t, regions["upper_face"]) for p, t in full]), rel=1e-5)
    fdds = [M.fdd(p, t, regions["upper_face"], rig.vertices) for p, t in full]
    assert out["fdd"] == pytest.approx(np.mean(fdds), rel=1e-4, abs=1e-12)
    assert out["fdd_abs"] == pytest.approx(np.mean(np.abs(fdds)), rel=1e-4, abs=1e-12)
    weighted = M.evaluate_tracks(preds, targets, rig, frame_weighted=True)
    lbes = [M.lbe(p, t) for p, t in zip(preds, targets)]
    assert weighted["lbe"] == pytest.approx((300 * lbes[0] + 10 * lbes[1]) / 310)
    assert weighted["ba"] == out["ba"]  # per-clip statistic: never frame-weighted

    perfect = M.evaluate_tracks(targets, targets, rig)
    for key in ("lbe", "pbe", "mbe", "lve", "eve", "fdd", "fdd_abs"):
        assert perfect[key] == 0.0
    assert perfect["ba"] == 1.0
    blendshape_only = M.evaluate_tracks(preds, targets)
    assert set(blendshape_only) == {"lbe", "pbe", "mbe", "ba", "num_clips", "num_frames", "frames_dropped"}


# --------------------------------------------------------------------------------------------------
# the ICT-FaceKit head (real asset)
# --------------------------------------------------------------------------------------------------


def test_ict_regions_follow_the_morph_targets(ict):
    deltas = np.asarray(ict.morph_targets)
    assert deltas.shape == (52, len(ict.vertices), 3)
    regions = M.derive_regions(deltas)
    lip, upper = set(regions["lip"].tolist()), set(regions["upper_face"].tolist())
    mag = np.linalg.norm(deltas, axis=2)
    jaw = np.flatnonzero(mag[IDX["jawOpen"]] >= 0.5 * mag[IDX["jawOpen"]].max())
    assert set(jaw.tolist()) <= lip  # everything jawOpen moves strongly is in the lip region
    mouth_jaw = [i for i, n in enumerate(ARKIT_BLENDSHAPE_NAMES) if n.startswith(("mouth", "jaw"))]
    blink = mag[IDX["eyeBlinkLeft"]]
    only_blink = np.flatnonzero((blink >= 0.1 * blink.max()) & (mag[mouth_jaw].max(axis=0) == 0))
    assert only_blink.size > 0
    assert not (set(only_blink.tolist()) & lip)  # moved only by eyeBlink: never a lip vertex
    assert int(blink.argmax()) in upper and int(blink.argmax()) in set(regions["eye"].tolist())
    brow = mag[IDX["browInnerUp"]]
    assert int(brow.argmax()) in upper
    assert not (lip & upper)
    assert len(regions["face"]) < len(ict.vertices)  # the back of the head moves with no target


def test_ict_evaluate_tracks_vertex_metrics(ict):
    rng = np.random.default_rng(3)
    target = np.clip(rng.random((40, 52)) * 0.5, 0, 1)
    target[:, IDX["tongueOut"]] = 0
    jaw_error = target.copy()
    jaw_error[:, IDX["jawOpen"]] += 0.2
    blink_error = target.copy()
    blink_error[:, IDX["eyeBlinkLeft"]] += 0.2
    perfect = M.evaluate_tracks([target], [target], ict)
    assert perfect["lve"] == perfect["eve"] == perfect["fdd"] == 0.0 and perfect["ba"] == 1.0
    jaw = M.evaluate_tracks([jaw_error], [target], ict)
    blink = M.evaluate_tracks([blink_error], [target], ict)
    # A jaw error is (nearly) all lip error and a blink error (nearly) all eye error: ICT's sculpted
    # targets leave sub-threshold tails, hence "nearly".
    assert jaw["lve"] > 0 and jaw["eve"] < 1e-2 * jaw["lve"]
    assert blink["eve"] > 0 and blink["lve"] < 1e-2 * blink["eve"]
    # The fast path of evaluate_tracks equals the metrics on full (T, V, 3) vertex tracks.
    regions = M.derive_regions(ict.morph_targets)
    noisy = target[:20] + rng.normal(0, 0.05, (20, 52))
    pv = M.blendshapes_to_vertices(noisy, ict.vertices, ict.morph_targets)
    gv = M.blendshapes_to_vertices(target[:20], ict.vertices, ict.morph_targets)
    fast = M.evaluate_tracks([noisy], [target[:20]], ict)
    assert fast["lve"] == pytest.approx(M.lve(pv, gv, regions["lip"]), rel=1e-4)
    assert fast["eve"] == pytest.approx(M.eve(pv, gv, regions["upper_face"]), rel=1e-4)
    assert fast["fdd"] == pytest.approx(M.fdd(pv, gv, regions["upper_face"], ict.vertices), rel=1e-4)
    # A constant offset of 0.2 on jawOpen: LVE = (0.2 · largest jawOpen displacement in the region)².
    mag = np.linalg.norm(np.asarray(ict.morph_targets)[IDX["jawOpen"]], axis=1)
    assert jaw["lve"] == pytest.approx((0.2 * mag.max()) ** 2, rel=1e-4)


# --------------------------------------------------------------------------------------------------
# emotion accuracy, retrieval accuracy, style recovery
# --------------------------------------------------------------------------------------------------


def test_emotion_accuracy_from_labels_and_logits():
    true = [0, 0, 0, 1, 2, 2]
    pred = [0, 0, 1, 1, 2, 0]
    out = M.emotion_accuracy(pred, true, num_classes=4)
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["balanced_accuracy"] == pytest.approx((2 / 3 + 1 + 1 / 2) / 3)  # class 3 absent: skipped
    assert out["confusion"][0] == [2, 1, 0, 0] and len(out["confusion"]) == 4
    logits = np.eye(4)[pred] * 3.0
    assert M.emotion_accuracy(logits, true)["accuracy"] == out["accuracy"]
    with pytest.raises(ValueError):
        M.emotion_accuracy([0, 1], [0])


def test_retrieval_accuracy():
    out = M.retrieval_accuracy(["a", "a", "b", "c"], ["happy", "sad", "sad", "sad"],
                               ["a", "b", "b", "c"], ["happy", "sad", "angry", "sad"])
    assert out == {"speaker": 0.75, "emotion": 0.75, "joint": 0.5}


def test_style_cell_means_weighs_clips_equally():
    a = np.zeros((10, 52))
    a[:, IDX["browInnerUp"]] = 1.0
    b = np.zeros((30, 52))
    means, counts = M.style_cell_means([a, b, a], ["s1", "s1", "s2"], ["happy", "happy", "sad"],
                                       ["s1", "s2"], ["happy", "sad"])
    k = list(M.STYLE_BLENDSHAPE_INDICES).index(IDX["browInnerUp"])
    assert counts.tolist() == [[2, 0], [0, 1]]
    assert means[0, 0, k] == pytest.approx(0.5)  # not 10/40: clips, not frames
    assert means[1, 1, k] == 1.0 and np.isnan(means[0, 1]).all()
    with pytest.raises(ValueError):
        M.style_cell_means([a], ["s9"], ["happy"], ["s1"], ["happy"])


def test_style_recovery_perfect_affine_and_emotion_only():
    rng = np.random.default_rng(4)
    speaker_style = rng.normal(0, 0.1, (6, 1, 9))
    emotion_style = rng.normal(0, 0.2, (1, 8, 9))
    true = 0.3 + emotion_style + speaker_style * rng.uniform(0.5, 1.5, (6, 8, 1))  # (S, E, K)
    perfect = M.style_recovery(true, true)
    assert perfect["pearson_r"] == pytest.approx(1.0)
    assert perfect["pearson_r_speaker_specific"] == pytest.approx(1.0)
    assert perfect["pearson_r_per_speaker_mean"] == pytest.approx(1.0) and perfect["mae"] == 0.0
    scaled = M.style_recovery(2 * true + 0.1, true)
    assert scaled["pearson_r"] == pytest.approx(1.0)
    assert scaled["mae"] == pytest.approx(np.mean(np.abs(true + 0.1)))
    # A model that knows the emotion but not the person: high r overall, ~0 on the personal part.
    emotion_only = true.mean(axis=0, keepdims=True).repeat(6, axis=0) + rng.normal(0, 1e-3, true.shape)
    out = M.style_recovery(emotion_only, true)
    assert out["pearson_r"] > 0.8
    assert abs(out["pearson_r_speaker_specific"]) < 0.2
    exact = M.style_recovery(true.mean(axis=0, keepdims=True).repeat(6, axis=0), true)
    assert exact["pearson_r_speaker_specific"] == 0.0  # constant personal part: recovers nothing
    assert np.isnan(M.style_recovery(true, np.ones_like(true))["pearson_r"])  # nothing to recover
    # Missing cells are ignored, not counted as zeros.
    holes = true.copy()
    holes[0, 0] = np.nan
    assert M.style_recovery(holes, true)["pearson_r"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        M.style_recovery(true[:, :, :3], true)


# --------------------------------------------------------------------------------------------------
# evaluate_predictions and the CLI on a real (tiny) dataset folder
# --------------------------------------------------------------------------------------------------


def _write_dataset(folder: Path) -> dict[str, np.ndarray]:
    from pestalk_hf.data.schema import make_row, write_parquet_shard

    rng = np.random.default_rng(5)
    rows, refs = [], {}
    for i, (speaker, emotion) in enumerate([("s1", "happy"), ("s1", "sad"), ("s2", "happy"), ("s2", "sad")]):
        clip = f"{speaker}_{emotion}_{i:03d}"
        refs[clip] = rng.random((12 + i, 52)).astype(np.float32)
        rows.append(make_row(id=clip, waveform=np.zeros(1600, np.float32), blendshapes=refs[clip],
                             speaker=speaker, emotion=emotion, sentence=f"sentence {i}"))
    write_parquet_shard(rows, folder / "data" / "test-00000-of-00001.parquet")
    write_parquet_shard(rows[:1], folder / "data" / "train-00000-of-00001.parquet")
    return refs


def test_evaluate_predictions_matches_evaluate_tracks():
    rng = np.random.default_rng(6)
    refs = {f"c{i}": rng.random((20, 52)) for i in range(4)}
    rows = [{"id": k, "blendshapes": v, "speaker": f"s{i % 2}", "emotion": i // 2}
            for i, (k, v) in enumerate(refs.items())]
    preds = {k: v + 0.05 for k, v in list(refs.items())[:3]}
    preds["extra"] = np.zeros((5, 52))
    out = M.evaluate_predictions(preds, rows, emotion_names=["neutral", "happy"])
    assert out["missing_predictions"] == 1 and out["unused_predictions"] == 1
    assert out["metrics"]["num_clips"] == 3
    assert out["metrics"]["mbe"] == pytest.approx(0.05 * np.sqrt(52))
    assert set(out["by_emotion"]) == {"neutral", "happy"} and out["by_emotion"]["happy"]["num_clips"] == 1
    assert out["style_recovery_vs_reference"]["mae"] == pytest.approx(0.05)
    with pytest.raises(ValueError):
        M.evaluate_predictions({"nope": np.zeros((3, 52))}, rows)


def test_style_recovery_of_a_perfect_prediction_against_a_known_style_matrix():
    rng = np.random.default_rng(7)
    speakers, emotions = ["spk_a", "spk_b", "spk_c"], ["neutral", "happy", "sad"]
    style = rng.random((3, 3, 52))
    rows, preds = [], {}
    for s, speaker in enumerate(speakers):
        for e, emotion in enumerate(emotions[: 2 + (s > 0)]):  # spk_a has no "sad" clip: an empty cell
            clip = f"{speaker}_{emotion}"
            track = np.tile(style[s, e], (15, 1)) + rng.normal(0, 0.01, (15, 52))
            rows.append({"id": clip, "blendshapes": track, "speaker": speaker, "emotion": e})
            preds[clip] = track
    rows.append({"id": "stranger", "blendshapes": np.zeros((15, 52)), "speaker": "nobody", "emotion": 0})
    preds["stranger"] = np.zeros((15, 52))
    doc = {"speakers": speakers, "emotions": emotions, "style": style.tolist()}
    out = M.evaluate_predictions(preds, rows, emotion_names=emotions, style_matrix=doc)
    vs_matrix = out["style_recovery_vs_matrix"]
    assert vs_matrix["clips_outside_matrix"] == 1
    assert vs_matrix["pearson_r"] == pytest.approx(1.0, abs=1e-3)
    assert vs_matrix["pearson_r_speaker_specific"] == pytest.approx(1.0, abs=1e-3)
    assert vs_matrix["mae"] < 0.01
    assert out["style_recovery_vs_reference"]["pearson_r"] == pytest.approx(1.0)
    # Swapping two speakers' predictions keeps the emotion pattern but loses the personal one.
    swapped = dict(preds)
    for emotion in ("neutral", "happy"):
        swapped[f"spk_a_{emotion}"], swapped[f"spk_b_{emotion}"] = preds[f"spk_b_{emotion}"], preds[f"spk_a_{emotion}"]
    worse = M.evaluate_predictions(swapped, rows, emotion_names=emotions, style_matrix=doc)["style_recovery_vs_matrix"]
    assert worse["pearson_r_speaker_specific"] < vs_matrix["pearson_r_speaker_specific"] - 0.2
    assert worse["mae"] > vs_matrix["mae"]


def test_cli_on_dataset_folder(tmp_path):
    refs = _write_dataset(tmp_path / "ds")
    style = np.random.default_rng(8).random((3, 8, 52))  # "s3" has no clip: its row must stay unused
    (tmp_path / "ds" / "style_matrix.json").write_text(json.dumps(
        {"speakers": ["s1", "s2", "s3"], "emotions": list(M_EMOTIONS), "style": style.tolist()}))
    pred_dir = tmp_path / "preds"
    pred_dir.mkdir()
    preds = {k: np.clip(v + 0.1, 0, 1) for k, v in refs.items()}
    for k, v in preds.items():
        np.savez(pred_dir / f"{k}.npz", weights=v)
    out_json = tmp_path / "metrics.json"
    # In-process (the package import is the slow part of a subprocess); main() is the CLI entry point.
    spec = importlib.util.spec_from_file_location("pestalk_evaluate_cli", ROOT / "hub_scripts" / "evaluate.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    cli.main(["--predictions", str(pred_dir), "--references", str(tmp_path / "ds"), "--split", "test",
              "--output", str(out_json)])
    result = json.loads(out_json.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    expected = M.evaluate_tracks(list(preds.values()), list(refs.values()))
    vs_matrix = result["style_recovery_vs_matrix"]
    assert vs_matrix["clips_outside_matrix"] == 0 and vs_matrix["pearson_r_per_speaker"][2] is None
    assert result["metrics"]["num_clips"] == 4 and result["missing_predictions"] == 0
    for key in ("lbe", "pbe", "mbe", "ba"):
        assert result["metrics"][key] == pytest.approx(expected[key], rel=1e-6)
    assert set(result["by_emotion"]) == {"happy", "sad"}  # ClassLabel indices mapped back to names

    # One .npz keyed by clip id is read the same way.
    single = tmp_path / "preds.npz"
    np.savez(single, **preds)
    loaded = cli.load_predictions(single)
    assert set(loaded) == set(refs) and np.allclose(loaded[next(iter(refs))], preds[next(iter(refs))])

    # So is the animations dataset hub_scripts/animate_dataset.py writes (its own schema, two shards).
    import datasets

    from pestalk_hf.batch_animation import result_features

    anim_dir = tmp_path / "anim"
    (anim_dir / "data").mkdir(parents=True)
    items = list(preds.items())
    for rank, part in enumerate((items[:1], items[1:])):
        rows = [{"id": k, "blendshapes": v.tolist(), "fps": 30, "emotion": "neutral", "emotion_probabilities": [],
                 "style_speaker": None, "style_emotion": None, "style_similarity": 0.0} for k, v in part]
        datasets.Dataset.from_list(rows, features=result_features()).to_parquet(
            str(anim_dir / "data" / f"test-{rank:05d}-of-00002.parquet"))
    loaded = cli.load_predictions(anim_dir)
    assert set(loaded) == set(refs)
    for k, v in preds.items():
        assert loaded[k].shape == v.shape and np.allclose(loaded[k], v)


def test_cli_with_the_ict_avatar(tmp_path):
    avatar = _ict_path()
    refs = _write_dataset(tmp_path / "ds")
    single = tmp_path / "preds.npz"
    np.savez(single, **{k: v for k, v in refs.items()})
    spec = importlib.util.spec_from_file_location("pestalk_evaluate_cli", ROOT / "hub_scripts" / "evaluate.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    result = cli.main(["--predictions", str(single), "--references", str(tmp_path / "ds"), "--avatar", str(avatar),
                       "--output", str(tmp_path / "m.json")])
    metrics = result["metrics"]
    assert metrics["num_clips"] == 4
    assert metrics["lve"] == metrics["eve"] == metrics["fdd"] == metrics["mbe"] == 0.0 and metrics["ba"] == 1.0
    assert "style_recovery_vs_matrix" not in result  # no style_matrix.json next to this dataset
