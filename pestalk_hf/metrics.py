r"""Evaluation metrics of PESTalk (paper §4.1), written down exactly.

The paper names its metrics (LBE, PBE, MBE, BA on blendshapes; LVE, EVE, FDD on vertices) but gives
no formulas, and public implementations differ (squared or not, max or mean over vertices, signed or
absolute FDD, which beats and which σ for BA). This module fixes one definition for each, follows the
public code the paper cites wherever it exists, and says where it departs. All functions are pure
numpy on (T, 52) blendshape tracks in ARKit alphabetical order
(:data:`~pestalk_hf.modeling.configuration_pestalk.ARKIT_BLENDSHAPE_NAMES`) or (T, V, 3) vertex
tracks. ``p`` is the prediction, ``g`` the ground truth, ``t`` a frame, ``T`` the frame count.

Length mismatch: a prediction and its reference are cut to the shorter length before any metric
(as FaceFormer/FaceDiffuser do); a difference of more than one frame usually means a bug upstream,
so :func:`evaluate_tracks` reports the total number of frames dropped.

Blendshape metrics (units: blendshape coefficients, which live in [0, 1])
-------------------------------------------------------------------------
For an index set :math:`S` of coefficients, the per-frame error is the **L2 norm (not squared)** of
the coefficient difference, averaged over frames (FaceDiffuser, ``compute_objective_metrics_blendshape.py``):

.. math:: E_S(p, g) = \frac{1}{T}\sum_t \lVert p_{t,S} - g_{t,S} \rVert_2

* **LBE** (lip blendshape error, FaceDiffuser [33]): :math:`S` = the 23 ``mouth*`` coefficients
  (``mouthClose`` … ``mouthUpperUpRight``; jaw excluded, as in the ARKit port of FaceDiffuser's code).
* **PBE** (pronunciation blendshape error): **not defined in the paper** beyond "pronunciation-related
  facial movements (e.g. mouth and jaw)". Defined here as :math:`S` = the 27 ``jaw*`` + ``mouth*``
  coefficients. PBE ≥ LBE per frame by construction, consistent with every row of the paper's Table 1.
* **MBE** (mean blendshape error, FaceDiffuser [33]): :math:`S` = all 52 coefficients. The paper's
  sentence "maximal L2 error per frame" mixes in the LVE wording; FaceDiffuser's code takes the
  per-frame L2 norm over all coefficients, which is the default here. ``mbe(..., reduction="max")``
  gives the literal reading :math:`\frac1T\sum_t \max_k |p_{t,k}-g_{t,k}|` for comparison.

* **BA** (beat alignment, Bailando → DiffPoseTalk [35]), between prediction and ground truth (not
  audio: the paper's §4.1 says "between predicted and ground truth outputs"). Motion beats of a track
  ``x`` (T, J, C) — a (T, D) blendshape track is D one-dimensional "joints" — are the strict local
  minima of the smoothed kinetic velocity

  .. math:: v_t = \frac1J \sum_j \lVert x_{t+1,j} - x_{t,j} \rVert_2, \quad
            \tilde v = G_{\sigma_s} * v, \quad
            B(x) = \{t : \tilde v_t < \tilde v_{t-1},\ \tilde v_t < \tilde v_{t+1}\}

  (Bailando's ``calc_db``; ``scipy.ndimage.gaussian_filter1d`` in ``reflect`` mode). Then

  .. math:: \mathrm{BA}(p, g) = \frac{1}{|B(g)|}\sum_{b \in B(g)}
            \exp\Big(-\frac{\min_{m \in B(p)} (m - b)^2}{2\sigma^2}\Big)

  averaged over the *reference* beats (Bailando averages over music beats). σ = 3 frames as in all
  public code (``/ 2 / 9``). Bailando smooths with σ_s = 5 frames at 60 fps (83 ms); at our 30 fps the
  default σ_s = 2 frames keeps syllable-rate (4–6 Hz) lip motion, which σ_s = 5 would erase. Both are
  parameters. Channels: by default the 27 jaw + mouth coefficients, because the paper reads BA as a
  lip-sync measure and blinks (random w.r.t. speech) would otherwise dominate the reference beats.
  Edge cases: no beats in either track → 1; beats in only one → 0. BA is recall-like: extra predicted
  beats are not penalised.

Vertex metrics (units: the avatar's, metres for ICT-FaceKit, so squared metres for LVE/EVE/FDD)
------------------------------------------------------------------------------------------------
* **LVE** (lip vertex error, FaceFormer [9]): per frame the **maximum over lip vertices of the squared
  L2** distance, averaged over frames: :math:`\frac1T\sum_t \max_{v\in R_{lip}} \lVert p_{t,v}-g_{t,v}\rVert_2^2`.
* **EVE** (emotional vertex error, EmoTalk [25]): the same on the eye + forehead region
  :math:`R_{up}` (the paper: "around the eyes and forehead"); pass ``regions["eye"]`` for an eyes-only EVE.
* **FDD** (upper-face dynamics deviation, CodeTalker; FaceDiffuser's copy): with motion
  :math:`m_{t,v} = x_{t,v} - x^{template}_v`, per vertex the standard deviation over time of the
  **squared** motion norm, averaged over upper-face vertices, **ground truth minus prediction**:

  .. math:: \mathrm{dyn}(x) = \frac{1}{|R_{up}|}\sum_{v\in R_{up}} \mathrm{std}_t \lVert m_{t,v}\rVert_2^2,
            \qquad \mathrm{FDD} = \mathrm{dyn}(g) - \mathrm{dyn}(p)

  FDD is **signed** as in CodeTalker (positive: the prediction is less dynamic than the truth); the
  absolute value per clip (``fdd_abs``, CodeTalker's "ABS FDD") is what "lower is better" should rank.

Vertices come from an avatar's morph targets, :math:`x_t = x^{base} + \sum_k w_{t,k}\, \delta_k`
(:func:`blendshapes_to_vertices`; the template of FDD is :math:`x^{base}`). Regions come from the
morph targets themselves (:func:`derive_regions`), so any ARKit-rigged mesh works: the support of a
target k is :math:`\{v : \lVert\delta_{k,v}\rVert \ge 0.1 \max_u \lVert\delta_{k,u}\rVert\}`;
:math:`R_{lip}` = support of the ``mouth*``/``jaw*`` targets, :math:`R_{up}` = support of the
``eye*``/``brow*`` targets; a vertex in both goes to the side whose targets move it further. So
:math:`R_{lip}` is the articulating lower face (lips, chin, lower teeth), wider than FaceFormer's
hand-drawn lip mask; the max in LVE makes the difference small (the largest errors are at the lips
and chin either way). On ICT-FaceKit: 11,471 lip and 3,920 upper-face vertices of 24,591.

Aggregation over clips
----------------------
Every metric is computed **per clip, then averaged over clips with equal weight** (FaceDiffuser and
CodeTalker do this; FaceFormer pools the frames of all clips for LVE, i.e. weights clips by length —
``evaluate_tracks(..., frame_weighted=True)`` gives that for the per-frame metrics LBE/PBE/MBE/LVE/EVE;
FDD and BA are per-clip statistics and always clip-averaged).

Claim-specific metrics
----------------------
* :func:`emotion_accuracy`: accuracy and balanced accuracy (mean per-class recall) of the emotion
  classifier, with the confusion matrix.
* :func:`retrieval_accuracy`: how often ESMM retrieval picks the true speaker, the true emotion, and
  both (the library entry of the clip's own ⟨speaker, emotion⟩), on held-out sentences.
* :func:`style_cell_means` + :func:`style_recovery`: per ⟨speaker × emotion⟩ cell, the clip-averaged
  mean of the style channels (``brow*``, ``eyeSquint*``, ``eyeWide*``) of the predictions against a
  known style matrix (EmoStyle-Synth's ``style_matrix.json``) or the references' cell means: Pearson r
  after removing each channel's mean over cells, r after removing each ⟨emotion, channel⟩ mean over
  speakers (the *personal* part of the style, which an emotion-only model cannot get), per-speaker r,
  and MAE of the raw cells. A perfect prediction scores r = 1, MAE = 0.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter1d

from .modeling.configuration_pestalk import ARKIT_BLENDSHAPE_NAMES

NUM_BLENDSHAPES = len(ARKIT_BLENDSHAPE_NAMES)


def _indices(prefixes: tuple[str, ...]) -> np.ndarray:
    return np.array([i for i, n in enumerate(ARKIT_BLENDSHAPE_NAMES) if n.startswith(prefixes)], dtype=np.int64)


#: LBE channels: the 23 ``mouth*`` coefficients.
LIP_BLENDSHAPE_INDICES = _indices(("mouth",))
#: PBE channels (our definition, the paper has none): 4 ``jaw*`` + 23 ``mouth*`` = 27 coefficients.
PRONUNCIATION_BLENDSHAPE_INDICES = _indices(("jaw", "mouth"))
#: Style-recovery channels: the upper-face coefficients that carry expression — 5 ``brow*`` +
#: ``eyeSquint*`` + ``eyeWide*`` (9). Blinks and gaze (``eyeBlink*``, ``eyeLook*``) are left out: they are
#: random events whose clip means say little about a speaker's emotional style.
STYLE_BLENDSHAPE_INDICES = _indices(("brow", "eyeSquint", "eyeWide"))

#: Default beat-alignment settings, in frames at 30 fps (see the module docstring).
BA_SIGMA = 3.0
BA_SMOOTHING_SIGMA = 2.0

#: Morph-target groups that define the vertex regions (name prefixes).
REGION_PREFIXES: dict[str, tuple[str, ...]] = {
    "lip": ("mouth", "jaw"),
    "eye": ("eye",),
    "brow": ("brow",),
}
#: A vertex belongs to a morph target's support when that target moves it by at least this fraction of
#: the target's largest displacement.
REGION_REL_THRESHOLD = 0.1


# --------------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------------


def _as_track(x: Any, name: str, ndim: int, last: tuple[int, ...] | None = None) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {arr.shape}")
    if last is not None and arr.shape[1:] != last:
        raise ValueError(f"{name} must have shape (T, {', '.join(map(str, last))}), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def _pair(pred: Any, target: Any, ndim: int, last: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate two tracks and cut them to the shorter length."""
    p = _as_track(pred, "pred", ndim, last)
    g = _as_track(target, "target", ndim, last)
    if p.shape[1:] != g.shape[1:]:
        raise ValueError(f"pred and target differ beyond the time axis: {p.shape} vs {g.shape}")
    n = min(len(p), len(g))
    if n == 0:
        raise ValueError("pred and target need at least one frame")
    return p[:n], g[:n]


def _blendshape_pair(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    return _pair(pred, target, 2, (NUM_BLENDSHAPES,))


def _region(region: Any, num_vertices: int) -> np.ndarray:
    idx = np.asarray(region, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        raise ValueError("region is empty")
    if idx.min() < 0 or idx.max() >= num_vertices:
        raise ValueError(f"region indices must lie in [0, {num_vertices}), got [{idx.min()}, {idx.max()}]")
    return idx


# --------------------------------------------------------------------------------------------------
# blendshape metrics
# --------------------------------------------------------------------------------------------------


def _coefficient_error(pred: Any, target: Any, channels: np.ndarray) -> float:
    p, g = _blendshape_pair(pred, target)
    return float(np.linalg.norm(p[:, channels] - g[:, channels], axis=1).mean())


def lbe(pred: Any, target: Any) -> float:
    """Lip blendshape error: mean over frames of the L2 norm over the 23 ``mouth*`` coefficients."""
    return _coefficient_error(pred, target, LIP_BLENDSHAPE_INDICES)


def pbe(pred: Any, target: Any) -> float:
    """Pronunciation blendshape error (our definition): as :func:`lbe` over jaw* + mouth* (27)."""
    return _coefficient_error(pred, target, PRONUNCIATION_BLENDSHAPE_INDICES)


def mbe(pred: Any, target: Any, reduction: str = "l2") -> float:
    """Mean blendshape error over all 52 coefficients.

    ``reduction="l2"`` (default, FaceDiffuser): per-frame L2 norm; ``"max"``: per-frame max absolute
    coefficient error (the paper's literal wording). Both averaged over frames.
    """
    if reduction == "l2":
        return _coefficient_error(pred, target, np.arange(NUM_BLENDSHAPES))
    if reduction == "max":
        p, g = _blendshape_pair(pred, target)
        return float(np.abs(p - g).max(axis=1).mean())
    raise ValueError(f"reduction must be 'l2' or 'max', got {reduction!r}")


def motion_beats(track: Any, smoothing_sigma: float = BA_SMOOTHING_SIGMA) -> np.ndarray:
    """Frame indices of motion beats: strict local minima of the smoothed kinetic velocity.

    ``track`` is (T, D) (D one-dimensional channels) or (T, J, C) (J points in C dimensions). The
    velocity at index t is the mean over channels/points of ``||x[t+1] - x[t]||``; beats index it.
    """
    x = np.asarray(track, dtype=np.float64)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3:
        raise ValueError(f"track must be (T, D) or (T, J, C), got shape {x.shape}")
    if smoothing_sigma < 0:
        raise ValueError(f"smoothing_sigma must be >= 0, got {smoothing_sigma}")
    if len(x) < 4:
        return np.zeros(0, dtype=np.int64)
    velocity = np.linalg.norm(np.diff(x, axis=0), axis=-1).mean(axis=1)
    if smoothing_sigma > 0:
        velocity = gaussian_filter1d(velocity, smoothing_sigma, mode="reflect")
    inner = velocity[1:-1]
    return (np.flatnonzero((inner < velocity[:-2]) & (inner < velocity[2:])) + 1).astype(np.int64)


def beat_alignment_from_beats(pred_beats: Any, ref_beats: Any, sigma: float = BA_SIGMA) -> float:
    """BA of two beat sets: mean over reference beats of ``exp(-d² / 2σ²)``, d = distance to the
    nearest predicted beat. No beats on either side → 1.0; on one side only → 0.0."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    pb = np.asarray(pred_beats, dtype=np.float64).reshape(-1)
    rb = np.asarray(ref_beats, dtype=np.float64).reshape(-1)
    if rb.size == 0 and pb.size == 0:
        return 1.0
    if rb.size == 0 or pb.size == 0:
        return 0.0
    nearest = np.min(np.abs(rb[:, None] - pb[None, :]), axis=1)
    return float(np.mean(np.exp(-(nearest**2) / (2.0 * sigma**2))))


def beat_alignment(
    pred: Any,
    target: Any,
    sigma: float = BA_SIGMA,
    smoothing_sigma: float = BA_SMOOTHING_SIGMA,
    channels: Sequence[int] | np.ndarray | str | None = "pronunciation",
) -> float:
    """Beat alignment between a predicted and a reference track (higher is better, 1 = perfect).

    ``channels``: ``"pronunciation"`` (default; (T, 52) blendshape tracks only) = the 27 jaw + mouth
    coefficients; ``None`` = all columns / points; or explicit indices (columns of a (T, D) track,
    points of a (T, J, C) vertex track). Defaults: σ = 3 frames, smoothing 2 frames (module docstring).
    """
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(target, dtype=np.float64)
    if p.ndim not in (2, 3) or p.shape[1:] != g.shape[1:]:
        raise ValueError(f"pred and target must be (T, D) or (T, J, C) of equal trailing shape: {p.shape} vs {g.shape}")
    p, g = _pair(p, g, p.ndim)
    if isinstance(channels, str):
        if channels != "pronunciation" or p.shape[1:] != (NUM_BLENDSHAPES,):
            raise ValueError(
                f"channels={channels!r} needs (T, {NUM_BLENDSHAPES}) blendshape tracks; pass indices or None"
            )
        channels = PRONUNCIATION_BLENDSHAPE_INDICES
    if channels is not None:
        idx = np.asarray(channels, dtype=np.int64)
        p, g = p[:, idx], g[:, idx]
    return beat_alignment_from_beats(motion_beats(p, smoothing_sigma), motion_beats(g, smoothing_sigma), sigma)


# --------------------------------------------------------------------------------------------------
# vertices and regions
# --------------------------------------------------------------------------------------------------


def blendshapes_to_vertices(weights: Any, base: Any, deltas: Any) -> np.ndarray:
    """Linear blendshape model: ``base + Σ_k weights[:, k] · deltas[k]`` → (T, V, 3) float32.

    ``weights`` (T, K), ``base`` (V, 3), ``deltas`` (K, V, 3) morph-target offsets (K = 52 in ARKit
    alphabetical order for the metrics). Pass ``base[idx]`` and ``deltas[:, idx]`` to build only a
    vertex subset (all the region metrics need).
    """
    w = np.asarray(weights, dtype=np.float32)
    b = np.asarray(base, dtype=np.float32)
    d = np.asarray(deltas, dtype=np.float32)
    if w.ndim != 2 or b.ndim != 2 or b.shape[1] != 3 or d.ndim != 3 or d.shape[2] != 3:
        raise ValueError(f"expected weights (T, K), base (V, 3), deltas (K, V, 3); got {w.shape}, {b.shape}, {d.shape}")
    if d.shape[0] != w.shape[1] or d.shape[1] != b.shape[0]:
        raise ValueError(f"shape mismatch: weights {w.shape}, base {b.shape}, deltas {d.shape}")
    flat = w @ d.reshape(d.shape[0], -1)
    return b[None] + flat.reshape(len(w), b.shape[0], 3)


def derive_regions(
    deltas: Any,
    names: Sequence[str] = ARKIT_BLENDSHAPE_NAMES,
    rel_threshold: float = REGION_REL_THRESHOLD,
    groups: Mapping[str, tuple[str, ...]] = REGION_PREFIXES,
) -> dict[str, np.ndarray]:
    """Vertex regions of any ARKit-rigged mesh, read off which vertices its morph targets move.

    A vertex is in the *support* of morph target k when ``||deltas[k, v]|| >= rel_threshold ·
    max_v ||deltas[k, v]||`` (and > 0); all-zero targets (e.g. ICT's ``tongueOut``) have no support.
    The support of a group is the union over its targets (``groups``: name prefixes, by default
    ``lip`` = ``mouth*`` + ``jaw*``, ``eye`` = ``eye*``, ``brow`` = ``brow*``). A vertex in the support of
    both the lip group and the eye/brow groups (cheek, lower eyelid) goes to the side whose targets
    move it further (largest absolute displacement; ties go to the lip side). Regions, sorted indices:

    * ``lip``: lip-group support, lip-dominant (lips, chin, lower teeth: what articulates) — LVE;
    * ``eye`` / ``brow``: eye / brow group support, not lip-dominant (eyelids, eyeballs / brows, forehead);
    * ``upper_face``: ``eye`` ∪ ``brow`` — the EVE and FDD region, disjoint from ``lip``;
    * ``face``: support of any target.

    A relative threshold makes the regions independent of the mesh's units and of how far each
    target moves; 0.1 keeps each target's core and drops the long low-amplitude tails that sculpted
    targets leave over the face. Dominance matters on real rigs: on ICT-FaceKit, ``mouthSmile*``
    reaches the lower eyelids at > 10 % of its peak, and without it blinks would count as lip error.
    """
    d = np.asarray(deltas, dtype=np.float64)
    if d.ndim != 3 or d.shape[2] != 3 or d.shape[0] != len(names):
        raise ValueError(f"deltas must be ({len(names)}, V, 3) matching names, got {d.shape}")
    if not 0.0 < rel_threshold < 1.0:
        raise ValueError(f"rel_threshold must lie in (0, 1), got {rel_threshold}")
    missing = {"lip", "eye", "brow"} - set(groups)
    if missing:
        raise ValueError(f"groups must define {sorted(missing)}")
    magnitude = np.linalg.norm(d, axis=2)  # (K, V)
    peak = magnitude.max(axis=1, keepdims=True)
    support = (magnitude >= rel_threshold * peak) & (magnitude > 0)

    def rows(prefixes: tuple[str, ...]) -> list[int]:
        return [k for k, n in enumerate(names) if n.startswith(tuple(prefixes))]

    def reach(key: str) -> tuple[np.ndarray, np.ndarray]:
        """(in the group's support, largest displacement by the group's targets) per vertex."""
        r = rows(groups[key])
        if not r:
            return np.zeros(d.shape[1], dtype=bool), np.zeros(d.shape[1])
        return support[r].any(axis=0), magnitude[r].max(axis=0)

    lip_support, lip_reach = reach("lip")
    eye_support, eye_reach = reach("eye")
    brow_support, brow_reach = reach("brow")
    lip_dominant = lip_reach >= np.maximum(eye_reach, brow_reach)
    masks = {
        "lip": lip_support & lip_dominant,
        "eye": eye_support & ~(lip_support & lip_dominant),
        "brow": brow_support & ~(lip_support & lip_dominant),
    }
    masks["upper_face"] = masks["eye"] | masks["brow"]
    masks["face"] = support.any(axis=0)
    regions = {key: np.flatnonzero(mask).astype(np.int64) for key, mask in masks.items()}
    for key in ("lip", "upper_face"):
        if regions[key].size == 0:
            raise ValueError(f"no vertices in the {key!r} region: are these ARKit morph targets?")
    return regions


def _max_sq_error(pred: Any, target: Any, region: Any) -> float:
    p, g = _pair(pred, target, 3)
    if p.shape[2] != 3:
        raise ValueError(f"vertex tracks must be (T, V, 3), got {p.shape}")
    idx = _region(region, p.shape[1])
    sq = np.sum((p[:, idx] - g[:, idx]) ** 2, axis=2)  # (T, |R|)
    return float(sq.max(axis=1).mean())


def lve(pred: Any, target: Any, region: Any) -> float:
    """Lip vertex error: mean over frames of the max over ``region`` of the squared L2 distance."""
    return _max_sq_error(pred, target, region)


def eve(pred: Any, target: Any, region: Any) -> float:
    """Emotional vertex error: :func:`lve` on the eye + forehead region (``regions["upper_face"]``)."""
    return _max_sq_error(pred, target, region)


def upper_face_dynamics(vertices: Any, template: Any, region: Any) -> float:
    """Mean over ``region`` of the std over time of the squared motion norm ``||x_t,v - template_v||²``."""
    x = _as_track(vertices, "vertices", 3)
    tpl = np.asarray(template, dtype=np.float64)
    if x.shape[2] != 3 or tpl.shape != x.shape[1:]:
        raise ValueError(f"vertices (T, V, 3) and template (V, 3) disagree: {x.shape} vs {tpl.shape}")
    idx = _region(region, x.shape[1])
    return _dynamics(np.sum((x[:, idx] - tpl[idx]) ** 2, axis=2))


def fdd(pred: Any, target: Any, region: Any, template: Any, signed: bool = True) -> float:
    """Upper-face dynamics deviation, ground truth minus prediction (CodeTalker); ``signed=False``
    returns its absolute value."""
    p, g = _pair(pred, target, 3)
    value = upper_face_dynamics(g, template, region) - upper_face_dynamics(p, template, region)
    return value if signed else abs(value)


# --------------------------------------------------------------------------------------------------
# aggregation
# --------------------------------------------------------------------------------------------------


def _flat_deltas(deltas: np.ndarray, region: np.ndarray) -> np.ndarray:
    """(52, |R|·3) float32 morph-target deltas of the region's vertices."""
    idx = _region(region, deltas.shape[1])
    return np.ascontiguousarray(deltas[:, idx].reshape(deltas.shape[0], -1), dtype=np.float32)


def _sq_norms(weights: np.ndarray, flat_deltas: np.ndarray, chunk: int = 256) -> np.ndarray:
    """(T, |R|) squared norms of the region displacements ``weights @ deltas``, in time chunks so that
    no (T, |R|, 3) array is held at once."""
    out = np.empty((len(weights), flat_deltas.shape[1] // 3), dtype=np.float32)
    for start in range(0, len(weights), chunk):
        disp = (weights[start : start + chunk] @ flat_deltas).reshape(-1, out.shape[1], 3)
        out[start : start + chunk] = np.einsum("tvc,tvc->tv", disp, disp)
    return out


def _dynamics(sq_motion: np.ndarray) -> float:
    """Mean over vertices of the std over time of squared motion norms (T, |R|)."""
    return float(sq_motion.astype(np.float64).std(axis=0).mean())


def _avatar_arrays(avatar: Any) -> tuple[np.ndarray, np.ndarray]:
    """(base (V, 3), deltas (52, V, 3)) from an avatar object, or from a GLB path via ``load_avatar``."""
    if isinstance(avatar, (str, Path)):
        from .avatar import load_avatar

        avatar = load_avatar(avatar)
    base = np.asarray(avatar.vertices, dtype=np.float32)
    deltas = np.asarray(avatar.morph_targets, dtype=np.float32)
    if deltas.shape != (NUM_BLENDSHAPES, *base.shape):
        raise ValueError(
            f"avatar morph_targets must be ({NUM_BLENDSHAPES}, V, 3) for V = {len(base)}, got {deltas.shape}"
        )
    return base, deltas


def evaluate_tracks(
    preds: Sequence[Any],
    targets: Sequence[Any],
    avatar: Any = None,
    *,
    regions: Mapping[str, np.ndarray] | None = None,
    frame_weighted: bool = False,
    ba_sigma: float = BA_SIGMA,
    ba_smoothing_sigma: float = BA_SMOOTHING_SIGMA,
) -> dict[str, float]:
    """All paper metrics over paired (T, 52) clips, each averaged per clip then over clips.

    ``avatar``: an object with ``.vertices`` (V, 3) and ``.morph_targets`` (52, V, 3), or a GLB path
    (loaded with :func:`pestalk_hf.avatar.load_avatar`); without it only the blendshape metrics are
    returned. ``regions`` defaults to :func:`derive_regions` of the avatar's morph targets.
    ``frame_weighted=True`` weights LBE/PBE/MBE/LVE/EVE by clip length (FaceFormer-style pooling).
    Returns ``lbe, pbe, mbe, ba`` (+ ``lve, eve, fdd, fdd_abs``) and ``num_clips, num_frames,
    frames_dropped`` (frames cut to align lengths).
    """
    if len(preds) != len(targets):
        raise ValueError(f"got {len(preds)} predictions for {len(targets)} targets")
    if len(preds) == 0:
        raise ValueError("need at least one clip")
    pairs = [_blendshape_pair(p, g) for p, g in zip(preds, targets)]
    lengths = np.array([len(p) for p, _ in pairs], dtype=np.float64)
    dropped = sum(
        max(len(np.asarray(p)), len(np.asarray(g))) - n for p, g, n in zip(preds, targets, lengths.astype(int))
    )

    per_clip: dict[str, list[float]] = {"lbe": [], "pbe": [], "mbe": [], "ba": []}
    for p, g in pairs:
        per_clip["lbe"].append(lbe(p, g))
        per_clip["pbe"].append(pbe(p, g))
        per_clip["mbe"].append(mbe(p, g))
        per_clip["ba"].append(beat_alignment(p, g, sigma=ba_sigma, smoothing_sigma=ba_smoothing_sigma))

    if avatar is not None:
        _, deltas = _avatar_arrays(avatar)
        regs = dict(regions) if regions is not None else derive_regions(deltas)
        # Positions are linear in the weights and the base cancels in every vertex metric, so work
        # on weight differences / motions of the region vertices only: same values as lve/eve/fdd on
        # blendshapes_to_vertices(...) (the tests check this), without building (T, V, 3) tracks.
        lip_d = _flat_deltas(deltas, regs["lip"])
        up_d = _flat_deltas(deltas, regs["upper_face"])
        for key in ("lve", "eve", "fdd", "fdd_abs"):
            per_clip[key] = []
        for p, g in pairs:
            diff = (p - g).astype(np.float32)
            per_clip["lve"].append(float(_sq_norms(diff, lip_d).max(axis=1).mean()))
            per_clip["eve"].append(float(_sq_norms(diff, up_d).max(axis=1).mean()))
            value = _dynamics(_sq_norms(g.astype(np.float32), up_d)) - _dynamics(_sq_norms(p.astype(np.float32), up_d))
            per_clip["fdd"].append(value)
            per_clip["fdd_abs"].append(abs(value))

    frame_metrics = {"lbe", "pbe", "mbe", "lve", "eve"}
    out: dict[str, float] = {}
    for key, values in per_clip.items():
        weights = lengths if (frame_weighted and key in frame_metrics) else None
        out[key] = float(np.average(np.asarray(values), weights=weights))
    out.update(num_clips=len(pairs), num_frames=int(lengths.sum()), frames_dropped=int(dropped))
    return out


# --------------------------------------------------------------------------------------------------
# claim-specific metrics: emotion classifier, ESMM retrieval, style recovery
# --------------------------------------------------------------------------------------------------


def emotion_accuracy(predicted: Any, target: Any, num_classes: int | None = None) -> dict[str, Any]:
    """Accuracy of the emotion classifier.

    ``predicted``: (N,) class indices or (N, C) scores/logits (argmax taken); ``target``: (N,) indices.
    Returns ``accuracy``, ``balanced_accuracy`` (mean recall over classes present in ``target``) and
    ``confusion`` (C × C list, rows = true class, columns = predicted).
    """
    pred = np.asarray(predicted)
    true = np.asarray(target).astype(np.int64).reshape(-1)
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    pred = pred.astype(np.int64).reshape(-1)
    if pred.shape != true.shape or true.size == 0:
        raise ValueError(f"need equally many (>0) predictions and targets, got {pred.shape} and {true.shape}")
    c = int(num_classes if num_classes is not None else max(pred.max(), true.max()) + 1)
    if min(pred.min(), true.min()) < 0 or max(pred.max(), true.max()) >= c:
        raise ValueError(f"class indices must lie in [0, {c})")
    confusion = np.zeros((c, c), dtype=np.int64)
    np.add.at(confusion, (true, pred), 1)
    support = confusion.sum(axis=1)
    present = support > 0
    recall = np.diag(confusion)[present] / support[present]
    return {
        "accuracy": float(np.mean(pred == true)),
        "balanced_accuracy": float(recall.mean()),
        "confusion": confusion.tolist(),
    }


def retrieval_accuracy(
    retrieved_speaker: Sequence[Hashable],
    retrieved_emotion: Sequence[Hashable],
    true_speaker: Sequence[Hashable],
    true_emotion: Sequence[Hashable],
) -> dict[str, float]:
    """How often style retrieval returns the clip's own library entry.

    Returns the fraction of clips whose retrieved speaker, emotion, and ⟨speaker, emotion⟩ pair
    (``joint``) equal the truth. Meaningful on held-out sentences of library speakers.
    """
    rs, re_, ts, te = (list(x) for x in (retrieved_speaker, retrieved_emotion, true_speaker, true_emotion))
    if not (len(rs) == len(re_) == len(ts) == len(te)) or not rs:
        raise ValueError("retrieval_accuracy needs four equally long, non-empty sequences")
    speaker_ok = np.array([a == b for a, b in zip(rs, ts)])
    emotion_ok = np.array([a == b for a, b in zip(re_, te)])
    return {
        "speaker": float(speaker_ok.mean()),
        "emotion": float(emotion_ok.mean()),
        "joint": float((speaker_ok & emotion_ok).mean()),
    }


def style_cell_means(
    tracks: Iterable[Any],
    speakers: Iterable[Hashable],
    emotions: Iterable[Hashable],
    speaker_order: Sequence[Hashable],
    emotion_order: Sequence[Hashable],
    channels: Sequence[int] | np.ndarray = STYLE_BLENDSHAPE_INDICES,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``channels`` per ⟨speaker × emotion⟩ cell: (S, E, K) means (NaN where empty), (S, E) counts.

    Each clip contributes its frame mean once (clips weigh equally, whatever their length). Clips
    whose speaker or emotion is not in the given order raise, so misspelt labels cannot vanish.
    """
    s_index = {s: i for i, s in enumerate(speaker_order)}
    e_index = {e: i for i, e in enumerate(emotion_order)}
    ch = np.asarray(channels, dtype=np.int64)
    sums = np.zeros((len(s_index), len(e_index), len(ch)))
    counts = np.zeros((len(s_index), len(e_index)), dtype=np.int64)
    for track, s, e in zip(tracks, speakers, emotions, strict=True):
        if s not in s_index or e not in e_index:
            raise ValueError(f"clip label ({s!r}, {e!r}) is not in speaker_order/emotion_order")
        x = _as_track(track, "track", 2)
        sums[s_index[s], e_index[e]] += x[:, ch].mean(axis=0)
        counts[s_index[s], e_index[e]] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[..., None]
    means[counts == 0] = np.nan
    return means, counts


def _pearson(pred: np.ndarray, true: np.ndarray) -> float:
    """Pearson r; 0 when the prediction is constant (it recovers nothing), NaN when the truth is
    constant (there is nothing to recover)."""
    p, t = pred - pred.mean(), true - true.mean()
    sp, st = np.sum(p * p), np.sum(t * t)
    if st <= 0:
        return float("nan")
    if sp <= 1e-24 * st:  # prediction spread ≤ 1e-12 of the truth's: rounding noise, i.e. constant
        return 0.0
    return float(np.sum(p * t) / np.sqrt(sp * st))


def _center(cells: np.ndarray, observed: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Subtract the mean over ``axes`` of the observed cells (keeps NaN where unobserved)."""
    masked = np.where(observed[..., None], cells, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: mean stays NaN, on purpose
        mean = np.nanmean(masked, axis=axes, keepdims=True)
    return masked - mean


def style_recovery(pred_cells: Any, true_cells: Any, mask: Any = None) -> dict[str, Any]:
    """How well predicted per ⟨speaker × emotion⟩ styles match known ones (higher r, lower MAE = better).

    ``pred_cells``, ``true_cells``: (S, E, K) style values per speaker, emotion and channel (e.g.
    :func:`style_cell_means` of predictions, and EmoStyle-Synth's known style matrix or the
    references' cell means). Cells with NaN on either side, or ``mask`` False, are ignored. Returns:

    * ``pearson_r``: r over all observed entries after subtracting each channel's mean over cells
      (so a per-channel constant offset, e.g. a blink baseline, does not count);
    * ``pearson_r_speaker_specific``: r after subtracting each ⟨emotion, channel⟩ mean over speakers —
      the personal part of the style, which a model that only knows the emotion scores ≈ 0 on;
    * ``pearson_r_per_speaker``: list of per-speaker r of the channel-centred entries (NaN if undefined)
      and ``pearson_r_per_speaker_mean`` (mean of the defined ones);
    * ``mae``: mean absolute difference of the raw observed entries.

    r is 0 when the prediction has no variance (e.g. an emotion-only model on the speaker-specific
    part: it recovers nothing) and NaN when the truth has none (nothing to recover).
    """
    p = np.asarray(pred_cells, dtype=np.float64)
    t = np.asarray(true_cells, dtype=np.float64)
    if p.shape != t.shape or p.ndim != 3:
        raise ValueError(f"pred_cells and true_cells must be equal (S, E, K) arrays, got {p.shape} and {t.shape}")
    observed = np.all(np.isfinite(p) & np.isfinite(t), axis=2)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != observed.shape:
            raise ValueError(f"mask must be (S, E) = {observed.shape}, got {m.shape}")
        observed &= m
    if not observed.any():
        raise ValueError("no observed cells to compare")

    def r_of(axes: tuple[int, ...]) -> float:
        pc, tc = _center(p, observed, axes), _center(t, observed, axes)
        cells = observed.copy()
        if axes == (0,):  # an emotion seen for one speaker only has no speaker-specific part
            cells &= observed.sum(axis=0, keepdims=True) >= 2
        return _pearson(pc[cells].ravel(), tc[cells].ravel())

    pc, tc = _center(p, observed, (0, 1)), _center(t, observed, (0, 1))
    per_speaker = []
    for i in range(p.shape[0]):
        sel = observed[i]
        per_speaker.append(_pearson(pc[i][sel].ravel(), tc[i][sel].ravel()) if sel.sum() >= 2 else float("nan"))
    defined = [r for r in per_speaker if np.isfinite(r)]
    return {
        "pearson_r": r_of((0, 1)),
        "pearson_r_speaker_specific": r_of((0,)),
        "pearson_r_per_speaker": per_speaker,
        "pearson_r_per_speaker_mean": float(np.mean(defined)) if defined else float("nan"),
        "mae": float(np.mean(np.abs(p - t)[observed])),
    }


# --------------------------------------------------------------------------------------------------
# dataset-level entry point (used by hub_scripts/evaluate.py)
# --------------------------------------------------------------------------------------------------


def evaluate_predictions(
    pred_by_id: Mapping[str, Any],
    ref_iter: Iterable[Mapping[str, Any]],
    avatar: Any = None,
    *,
    emotion_names: Sequence[str] | None = None,
    style_matrix: Mapping[str, Any] | None = None,
    style_channels: Sequence[int] | np.ndarray = STYLE_BLENDSHAPE_INDICES,
    **kwargs: Any,
) -> dict[str, Any]:
    """Evaluate predicted tracks against dataset rows (``id``, ``blendshapes`` (T, 52), and optionally
    ``speaker``, ``emotion``), e.g. a streamed 3D-EmoStyle split.

    ``pred_by_id`` maps clip id → (T, 52) weights. Rows without a prediction are counted in
    ``missing_predictions`` and skipped; predictions without a row are counted in ``unused_predictions``.
    Returns ``metrics`` (:func:`evaluate_tracks` over all clips), ``by_emotion`` (the same per emotion
    label, names from ``emotion_names`` when labels are ClassLabel indices) and, when rows carry speaker
    and emotion, ``style_recovery_vs_reference``: :func:`style_recovery` of the predictions'
    ``style_channels`` cell means against the references'. With ``style_matrix`` (EmoStyle-Synth's
    parsed ``style_matrix.json``: ``speakers``, ``emotions``, ``style`` (S, E, 52)) also
    ``style_recovery_vs_matrix``: the predictions' cell means against the known style (clips of
    speakers outside the matrix are skipped and counted). ``kwargs`` go to :func:`evaluate_tracks`.
    """
    if isinstance(avatar, (str, Path)):
        from .avatar import load_avatar

        avatar = load_avatar(avatar)
    preds, refs, speakers, emotions, seen = [], [], [], [], set()
    missing = 0
    for row in ref_iter:
        clip_id = str(row["id"])
        if clip_id not in pred_by_id:
            missing += 1
            continue
        seen.add(clip_id)
        preds.append(np.asarray(pred_by_id[clip_id], dtype=np.float32))
        refs.append(np.asarray(row["blendshapes"], dtype=np.float32))
        emotion = row.get("emotion")
        if emotion_names is not None and isinstance(emotion, (int, np.integer)):
            emotion = emotion_names[int(emotion)]
        speakers.append(row.get("speaker"))
        emotions.append(emotion)
    if not preds:
        raise ValueError(f"no reference row has a prediction ({missing} rows, {len(pred_by_id)} predictions)")

    regions = kwargs.pop("regions", None)
    if avatar is not None and regions is None:
        regions = derive_regions(_avatar_arrays(avatar)[1])
    result: dict[str, Any] = {
        "metrics": evaluate_tracks(preds, refs, avatar, regions=regions, **kwargs),
        "missing_predictions": missing,
        "unused_predictions": len(set(map(str, pred_by_id)) - seen),
    }
    if any(e is None for e in emotions):
        return result
    by_emotion = {}
    for label in sorted(set(emotions), key=str):
        idx = [i for i, e in enumerate(emotions) if e == label]
        by_emotion[str(label)] = evaluate_tracks(
            [preds[i] for i in idx], [refs[i] for i in idx], avatar, regions=regions, **kwargs
        )
    result["by_emotion"] = by_emotion
    if any(s is None for s in speakers):
        return result

    result.update(style_recovery_report(preds, refs, speakers, emotions, style_matrix, style_channels))
    return result


def style_recovery_report(
    preds: Sequence[Any],
    refs: Sequence[Any],
    speakers: Sequence[Hashable],
    emotions: Sequence[Hashable],
    style_matrix: Mapping[str, Any] | None = None,
    style_channels: Sequence[int] | np.ndarray = STYLE_BLENDSHAPE_INDICES,
) -> dict[str, Any]:
    """:func:`style_recovery` of paired (T, 52) predictions per ⟨speaker, emotion⟩ label:
    ``style_recovery_vs_reference`` (against the references' cell means) and, with ``style_matrix``
    (EmoStyle-Synth's parsed ``style_matrix.json``: ``speakers``, ``emotions``, ``style`` (S, E, 52)),
    ``style_recovery_vs_matrix`` (clips of speakers outside the matrix are skipped and counted)."""
    result: dict[str, Any] = {}
    n = [min(len(p), len(r)) for p, r in zip(preds, refs)]
    preds_cut = [p[:k] for p, k in zip(preds, n)]
    s_order = sorted(set(speakers), key=str)
    e_order = sorted(set(emotions), key=str)
    pc, _ = style_cell_means(preds_cut, speakers, emotions, s_order, e_order, style_channels)
    rc, _ = style_cell_means([r[:k] for r, k in zip(refs, n)], speakers, emotions, s_order, e_order, style_channels)
    result["style_recovery_vs_reference"] = {**style_recovery(pc, rc), "speakers": [str(s) for s in s_order]}

    if style_matrix is not None:
        m_speakers = [str(s) for s in style_matrix["speakers"]]
        m_emotions = [str(e) for e in style_matrix["emotions"]]
        known = np.asarray(style_matrix["style"], dtype=np.float64)
        if known.shape != (len(m_speakers), len(m_emotions), NUM_BLENDSHAPES):
            raise ValueError(f"style matrix must be (speakers, emotions, {NUM_BLENDSHAPES}), got {known.shape}")
        keep = [i for i, (s, e) in enumerate(zip(speakers, emotions)) if str(s) in m_speakers and str(e) in m_emotions]
        if keep:
            cells, counts = style_cell_means(
                [preds_cut[i] for i in keep], [str(speakers[i]) for i in keep], [str(emotions[i]) for i in keep],
                m_speakers, m_emotions, style_channels,
            )
            observed = counts > 0
            recovery = style_recovery(cells, known[:, :, np.asarray(style_channels)], mask=observed)
            recovery["speakers"] = m_speakers
            recovery["pearson_r_per_speaker"] = [
                r if observed[i].any() else float("nan") for i, r in enumerate(recovery["pearson_r_per_speaker"])
            ]
        else:
            recovery = {}
        recovery["clips_outside_matrix"] = len(preds) - len(keep)
        result["style_recovery_vs_matrix"] = recovery
    return result
