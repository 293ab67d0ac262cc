"""A procedural stylised head with all 52 ARKit morph targets (the package's default avatar).

Why our own head: the package must render and export offline without shipping a third-party
mesh. The head is an egg-shaped lat-long grid (metres, +Y up, facing +Z, the character's left at
+X, the glTF conventions) with a nose, brow ridge, lips and cheeks added as smooth bumps. The mouth
is a real slit (the lower-lip row is duplicated between the corners), so ``jawOpen`` opens it and
shows the dark inside of the head. Eyeballs (with iris and pupil) sit in sockets under
upper-eyelid shells, and a tongue hides behind the lips. Every target is a smooth displacement
field (rigid rotations for the jaw, lids and eyeballs), clipped to exact zeros away from its
region so that glTF sparse accessors stay small. Everything is deterministic: no randomness.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .blendshapes import ARKIT_INDEX, ARKIT_NAMES, NUM_BLENDSHAPES

if TYPE_CHECKING:
    from .avatar import Avatar

# Head shape (metres)
A, B, C = 0.074, 0.106, 0.094  # ellipsoid half-axes x, y, z
Y_MOUTH = -0.050
Y_EYE, X_EYE, R_EYE = 0.020, 0.032, 0.0125
N_LAT, N_LON = 120, 160
MOUTH_HALF_WIDTH = 0.024

SKIN = np.array([0.86, 0.69, 0.60], dtype=np.float32)
LIPS = np.array([0.74, 0.40, 0.40], dtype=np.float32)
BROW = np.array([0.28, 0.19, 0.14], dtype=np.float32)
SCLERA = np.array([0.95, 0.95, 0.93], dtype=np.float32)
IRIS = np.array([0.28, 0.45, 0.60], dtype=np.float32)
PUPIL = np.array([0.04, 0.04, 0.05], dtype=np.float32)
TONGUE = np.array([0.80, 0.45, 0.48], dtype=np.float32)

EPS = 1e-3  # weights below this are clipped to 0 (sparse targets, no far-field drift)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _clip(w: np.ndarray) -> np.ndarray:
    return np.where(w < EPS, 0.0, w)


def _rot_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rotation_delta(p: np.ndarray, rot: np.ndarray, pivot: np.ndarray) -> np.ndarray:
    return (p - pivot) @ rot.T + pivot - p


def _orient_outward(verts: np.ndarray, faces: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Flip all faces if most of them point inwards (consistent winding is built in)."""
    tri = verts[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    outward = np.einsum("ij,ij->i", normal, tri.mean(axis=1) - centre)
    return faces[:, ::-1].copy() if outward.sum() < 0 else faces


def _grid_faces(rows: list[np.ndarray], wrap: bool) -> np.ndarray:
    """Quads (as two triangles) between consecutive index rows."""
    faces = []
    for top, bottom in zip(rows[:-1], rows[1:]):
        n = len(top)
        j = np.arange(n if wrap else n - 1)
        k = (j + 1) % n
        faces.append(np.stack([top[j], bottom[j], bottom[k]], axis=1))
        faces.append(np.stack([top[j], bottom[k], top[k]], axis=1))
    return np.concatenate(faces)


class _Head:
    """The skin surface: positions, faces and the per-vertex masks the targets are built from."""

    def __init__(self) -> None:
        theta_m = float(np.arccos(Y_MOUTH / B))
        theta = np.linspace(0.04, np.pi - 0.04, N_LAT)
        k_m = int(np.argmin(np.abs(theta - theta_m)))
        theta[k_m] = theta_m
        phi = -np.pi + 2 * np.pi * np.arange(N_LON) / N_LON  # phi = 0 faces +Z
        th, ph = np.meshgrid(theta, phi, indexing="ij")
        pos = self._surface(th, ph).reshape(-1, 3)
        index = np.arange(N_LAT * N_LON).reshape(N_LAT, N_LON)

        # Mouth slit: duplicate the mouth row strictly between the corners (the lower lip).
        mouth_x = pos[index[k_m], 0]
        inside = (np.abs(mouth_x) < MOUTH_HALF_WIDTH) & (pos[index[k_m], 2] > 0)
        lower_row = index[k_m].copy()
        extra = np.flatnonzero(inside)
        lower_row[extra] = len(pos) + np.arange(len(extra))
        pos = np.concatenate([pos, pos[index[k_m, extra]]])
        below = np.zeros(len(pos), dtype=bool)
        below[index[k_m + 1:].ravel()] = True
        below[lower_row[extra]] = True

        rows = [index[i] for i in range(k_m + 1)]
        faces = [_grid_faces(rows, wrap=True)]
        faces.append(_grid_faces([lower_row] + [index[i] for i in range(k_m + 1, N_LAT)], wrap=True))
        # Poles
        top, bottom = len(pos), len(pos) + 1
        pos = np.concatenate([pos, [[0.0, B, 0.0], [0.0, -B * 0.98, -0.01]]])
        below = np.concatenate([below, [False, True]])
        j = np.arange(N_LON)
        faces.append(np.stack([np.full(N_LON, top), index[0, j], index[0, (j + 1) % N_LON]], axis=1))
        faces.append(np.stack([index[-1, j], np.full(N_LON, bottom), index[-1, (j + 1) % N_LON]], axis=1))
        faces_arr = np.concatenate(faces)
        self.faces = _orient_outward(pos, faces_arr, np.zeros(3))
        self.pos = pos
        self.below = below.astype(np.float64)
        corner = np.flatnonzero(~inside & (pos[index[k_m], 2] > 0))
        corner_x = mouth_x[corner]
        self.corner_left = pos[index[k_m, corner[np.argmin(np.where(corner_x > 0, corner_x, np.inf))]]]
        self.corner_right = pos[index[k_m, corner[np.argmax(np.where(corner_x < 0, corner_x, -np.inf))]]]
        phi_all = np.concatenate([ph.ravel(), ph[k_m, extra], [0.0, 0.0]])
        self.lens = np.clip(1 - (pos[:, 0] / MOUTH_HALF_WIDTH) ** 2, 0, 1) * (np.abs(phi_all) < np.pi / 2)

    @staticmethod
    def _surface(th: np.ndarray, ph: np.ndarray) -> np.ndarray:
        y = B * np.cos(th)
        taper = 1 - 0.22 * _smoothstep(-y / B)  # narrower jaw and chin
        x = A * taper * np.sin(th) * np.sin(ph)
        z = C * (1 - 0.08 * _smoothstep(-y / B)) * np.sin(th) * np.cos(ph)
        p = np.stack([x, y, z], axis=-1)
        n = p / np.array([A * A, B * B, C * C])
        n /= np.linalg.norm(n, axis=-1, keepdims=True)
        front = _smoothstep((z - 0.02) / 0.04)
        ax = np.abs(x)
        bump = (
            0.020 * np.exp(-(x / 0.0085) ** 2) * np.exp(-((y + 0.018) / 0.021) ** 2)  # nose
            + 0.006 * np.exp(-(x / 0.012) ** 2) * np.exp(-((y + 0.030) / 0.006) ** 2)  # nose tip/base
            - 0.007 * np.exp(-((ax - X_EYE) / 0.014) ** 2 - ((y - Y_EYE) / 0.011) ** 2)  # eye sockets
            + 0.004 * np.exp(-((ax - 0.030) / 0.024) ** 2 - ((y - 0.040) / 0.007) ** 2)  # brow ridge
            + 0.005 * np.exp(-(x / 0.026) ** 4) * np.exp(-((y - Y_MOUTH) / 0.0065) ** 2)  # lips
            + 0.007 * np.exp(-(x / 0.016) ** 2 - ((y + 0.088) / 0.014) ** 2)  # chin
            + 0.004 * np.exp(-((ax - 0.044) / 0.016) ** 2 - ((y + 0.012) / 0.020) ** 2)  # cheekbones
        ) * front
        return p + n * bump[..., None]


def _gauss(p: np.ndarray, centre: tuple[float, float], sigma: tuple[float, float]) -> np.ndarray:
    return np.exp(-((p[:, 0] - centre[0]) / sigma[0]) ** 2 - ((p[:, 1] - centre[1]) / sigma[1]) ** 2)


def _uv_sphere(n_a: int, n_b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit sphere with its pole on +Z; returns (positions, faces, polar angle from +Z)."""
    alpha = np.linspace(0, np.pi, n_a)
    beta = 2 * np.pi * np.arange(n_b) / n_b
    al, be = np.meshgrid(alpha[1:-1], beta, indexing="ij")
    p = np.stack([np.sin(al) * np.cos(be), np.sin(al) * np.sin(be), np.cos(al)], axis=-1).reshape(-1, 3)
    idx = np.arange(p.shape[0]).reshape(n_a - 2, n_b)
    faces = [_grid_faces([idx[i] for i in range(n_a - 2)], wrap=True)]
    front, back = p.shape[0], p.shape[0] + 1
    p = np.concatenate([p, [[0, 0, 1.0], [0, 0, -1.0]]])
    j = np.arange(n_b)
    faces.append(np.stack([np.full(n_b, front), idx[0, j], idx[0, (j + 1) % n_b]], axis=1))
    faces.append(np.stack([idx[-1, j], np.full(n_b, back), idx[-1, (j + 1) % n_b]], axis=1))
    polar = np.concatenate([al.ravel(), [0.0, np.pi]])
    f = np.concatenate(faces)
    return p, _orient_outward(p, f, np.zeros(3)), polar


def _lid(centre: np.ndarray, e0: float) -> tuple[np.ndarray, np.ndarray]:
    """Upper-eyelid shell: a band of a sphere (radius 1.12 r) above elevation e0."""
    u = np.linspace(e0, 1.35, 10)
    v = np.linspace(-1.45, 1.45, 24)
    uu, vv = np.meshgrid(u, v, indexing="ij")
    r = 1.12 * R_EYE
    p = centre + r * np.stack([np.cos(uu) * np.sin(vv), np.sin(uu), np.cos(uu) * np.cos(vv)], axis=-1).reshape(-1, 3)
    idx = np.arange(p.shape[0]).reshape(len(u), len(v))
    faces = _grid_faces([idx[i] for i in range(len(u))], wrap=False)
    return p, _orient_outward(p, faces, centre)


def build_head() -> Avatar:
    """Build the default avatar (see module docstring)."""
    from .avatar import Avatar

    head = _Head()
    p = head.pos
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    front = _smoothstep((z - 0.015) / 0.03)
    left = 1 / (1 + np.exp(-x / 0.004))
    right = 1 - left

    # Eyes: centres sit just behind the dented socket surface.
    eye_centres = []
    for sx in (1.0, -1.0):
        near = np.argmin((x - sx * X_EYE) ** 2 + (y - Y_EYE) ** 2 + 1e3 * (z < 0))
        eye_centres.append(np.array([sx * X_EYE, Y_EYE, z[near] - 0.45 * R_EYE]))
    unit, eye_faces, polar = _uv_sphere(18, 28)
    e0 = 0.22
    parts_pos, parts_faces, parts_col = [p], [head.faces], []
    # Head colours: skin, lips, brows
    lip_mask = np.exp(-(x / (MOUTH_HALF_WIDTH * 1.1)) ** 6) * np.exp(-((y - Y_MOUTH) / 0.0055) ** 2) * front
    ax = np.abs(x)
    brow_y = 0.041 + 0.004 * np.exp(-((ax - 0.03) / 0.015) ** 2)
    brow_mask = (np.exp(-((y - brow_y) / 0.0032) ** 2) * _smoothstep((ax - 0.008) / 0.006)
                 * _smoothstep((0.054 - ax) / 0.008) * front)
    col = SKIN[None] * (1 - lip_mask[:, None]) + LIPS[None] * lip_mask[:, None]
    col = col * (1 - brow_mask[:, None]) + BROW[None] * brow_mask[:, None]
    parts_col.append(col)

    offsets: dict[str, int] = {}
    for side, centre in zip(("Left", "Right"), eye_centres):
        offsets["eye" + side] = sum(len(q) for q in parts_pos)
        parts_pos.append(centre + R_EYE * unit)
        parts_faces.append(eye_faces + offsets["eye" + side])
        iris = np.where(polar < 0.17, 0, np.where(polar < 0.40, 1, 2))
        parts_col.append(np.stack([PUPIL, IRIS, SCLERA])[iris])
    for side, centre in zip(("Left", "Right"), eye_centres):
        lp, lf = _lid(centre, e0)
        lid_size = len(lp)
        offsets["lid" + side] = sum(len(q) for q in parts_pos)
        parts_pos.append(lp)
        parts_faces.append(lf + offsets["lid" + side])
        parts_col.append(np.tile(SKIN * 0.97, (len(lp), 1)))
    # Tongue: a flattened ellipsoid behind the lips.
    mouth_front = z[np.argmin(np.abs(x) + np.abs(y - Y_MOUTH) + 1e3 * (z < 0))]
    t_centre = np.array([0.0, Y_MOUTH - 0.007, mouth_front - 0.036])
    t_unit, t_faces, _ = _uv_sphere(12, 20)
    offsets["tongue"] = sum(len(q) for q in parts_pos)
    parts_pos.append(t_centre + t_unit * np.array([0.015, 0.005, 0.022]))
    parts_faces.append(t_faces + offsets["tongue"])
    parts_col.append(np.tile(TONGUE, (len(t_unit), 1)))

    verts = np.concatenate(parts_pos)
    nv = len(verts)
    targets = np.zeros((NUM_BLENDSHAPES, nv, 3))

    def put(name: str, delta: np.ndarray, start: int = 0) -> None:
        targets[ARKIT_INDEX[name], start:start + len(delta)] += delta

    def field(weight: np.ndarray, vec: tuple[float, float, float]) -> np.ndarray:
        return _clip(weight)[:, None] * np.asarray(vec)[None]

    # --- jaw: rigid rotation/translation of everything below the mouth line, fading out ---------
    below_dist = (Y_MOUTH - y) + 0.012 * head.lens * head.below
    w_jaw = _clip(_smoothstep(below_dist / 0.012) * head.below * _smoothstep((z + 0.03) / 0.05))
    hinge = np.array([0.0, 0.0, 0.012])
    jaw_open = _rotation_delta(p, _rot_x(0.26), hinge) * w_jaw[:, None]
    put("jawOpen", jaw_open)
    put("jawForward", field(w_jaw, (0, 0, 0.008)))
    put("jawLeft", field(w_jaw, (0.008, 0, 0)))
    put("jawRight", field(w_jaw, (-0.008, 0, 0)))
    tongue = verts[offsets["tongue"]:]
    put("jawOpen", _rotation_delta(tongue, _rot_x(0.26), hinge) * 0.9, offsets["tongue"])
    for name, vec in (("jawForward", (0, 0, 0.007)), ("jawLeft", (0.007, 0, 0)), ("jawRight", (-0.007, 0, 0))):
        put(name, np.tile(vec, (len(tongue), 1)), offsets["tongue"])
    put("tongueOut", np.tile((0.0, -0.004, 0.030), (len(tongue), 1)), offsets["tongue"])

    # --- mouth -----------------------------------------------------------------------------
    upper, lower = lip_mask * (1 - head.below), lip_mask * head.below
    lower_region = head.below * np.exp(-(x / (MOUTH_HALF_WIDTH * 1.2)) ** 4) * np.exp(
        -((y - Y_MOUTH) / 0.014) ** 2) * front
    put("mouthClose", -jaw_open * _clip(lower_region)[:, None])
    put("mouthFunnel", field(lip_mask, (0, 0, 0.007)) + field(upper, (0, 0.003, 0)) + field(lower, (0, -0.004, 0))
        + field(lip_mask, (1, 0, 0)) * (-0.15 * x[:, None]))
    put("mouthPucker", field(lip_mask, (0, 0, 0.009)) + field(lip_mask, (1, 0, 0)) * (-0.35 * x[:, None]))
    mouth_region = np.exp(-((y - Y_MOUTH) / 0.016) ** 2) * np.exp(-(x / 0.034) ** 2) * front
    put("mouthLeft", field(mouth_region, (0.009, 0, 0)))
    put("mouthRight", field(mouth_region, (-0.009, 0, 0)))
    for side, corner, sx, half in (("Left", head.corner_left, 1, left), ("Right", head.corner_right, -1, right)):
        g = _gauss(p, (corner[0], corner[1]), (0.013, 0.013)) * front
        put("mouthSmile" + side, field(g, (0.006 * sx, 0.008, -0.004)))
        put("mouthFrown" + side, field(g, (0.0, -0.007, 0.0)))
        put("mouthDimple" + side, field(g, (0.004 * sx, 0.0, -0.005)))
        put("mouthStretch" + side, field(g, (0.008 * sx, -0.004, -0.002)))
        put("mouthPress" + side, field(upper * half, (0, -0.0015, -0.002)) + field(lower * half, (0, 0.0015, -0.002)))
        put("mouthLowerDown" + side, field(lower_region * half, (0, -0.006, 0.001)))
        upper_region = (1 - head.below) * np.exp(-(x / (MOUTH_HALF_WIDTH * 1.2)) ** 4) * np.exp(
            -((y - Y_MOUTH) / 0.010) ** 2) * front
        put("mouthUpperUp" + side, field(upper_region * half, (0, 0.006, 0.0)))
        # cheeks / nose / brows
        put("cheekSquint" + side, field(_gauss(p, (sx * 0.038, 0.0), (0.015, 0.013)) * front, (0, 0.005, 0.001)))
        put("noseSneer" + side, field(_gauss(p, (sx * 0.010, -0.014), (0.008, 0.010)) * front, (0, 0.004, 0.0)))
        brow = _gauss(p, (sx * 0.028, 0.040), (0.022, 0.012)) * front
        put("browDown" + side, field(brow, (-0.002 * sx, -0.006, 0.001)))
        put("browOuterUp" + side, field(_gauss(p, (sx * 0.048, 0.042), (0.015, 0.013)) * front, (0, 0.007, 0)))
        put("eyeSquint" + side, field(_gauss(p, (sx * X_EYE, 0.004), (0.013, 0.008)) * front, (0, 0.004, 0.001)))
    put("mouthRollLower", field(lower, (0, 0.002, -0.005)))
    put("mouthRollUpper", field(upper, (0, -0.002, -0.005)))
    put("mouthShrugLower", field(lower_region, (0, 0.004, 0.002)))
    put("mouthShrugUpper", field(upper, (0, 0.003, 0.002)))
    cheek = sum(_gauss(p, (sx * 0.042, Y_MOUTH + 0.010), (0.018, 0.018)) for sx in (1, -1)) * front
    normal_dir = p / np.linalg.norm(p, axis=1, keepdims=True)
    put("cheekPuff", _clip(cheek)[:, None] * normal_dir * 0.009)
    put("browInnerUp", field(_gauss(p, (0.0, 0.040), (0.020, 0.014)) * front, (0, 0.008, 0)))

    # --- eyes: lids rotate about the eye's x axis, eyeballs rotate in place ---------------------
    for side, centre, sx in (("Left", eye_centres[0], 1), ("Right", eye_centres[1], -1)):
        lo = offsets["lid" + side]
        lid = verts[lo:lo + lid_size]
        put("eyeBlink" + side, _rotation_delta(lid, _rot_x(e0 + 0.33), centre), lo)
        put("eyeSquint" + side, _rotation_delta(lid, _rot_x(0.25 * (e0 + 0.33)), centre), lo)
        put("eyeWide" + side, _rotation_delta(lid, _rot_x(-0.22), centre), lo)
        eo = offsets["eye" + side]
        ball = verts[eo:eo + len(unit)]
        put("eyeLookUp" + side, _rotation_delta(ball, _rot_x(-0.35), centre), eo)
        put("eyeLookDown" + side, _rotation_delta(ball, _rot_x(0.35), centre), eo)
        put("eyeLookOut" + side, _rotation_delta(ball, _rot_y(0.40 * sx), centre), eo)
        put("eyeLookIn" + side, _rotation_delta(ball, _rot_y(-0.40 * sx), centre), eo)

    faces = np.concatenate(parts_faces).astype(np.int32)
    morph = targets.astype(np.float32)
    morph[np.abs(morph) < 1e-7] = 0.0
    assert all(np.any(morph[i]) for i in range(NUM_BLENDSHAPES)), "every default target must move"
    avatar = Avatar(
        vertices=verts.astype(np.float32),
        faces=faces,
        morph_targets=morph,
        names_present=ARKIT_NAMES,
        name="pestalk_default_head",
        colors=np.concatenate(parts_col).astype(np.float32),
    )
    from .exporters import avatar_document

    avatar.document, avatar.morph_meshes = avatar_document(avatar)
    return avatar
