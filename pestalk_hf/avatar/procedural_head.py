"""A procedural stylised head with all 52 ARKit morph targets (the package's default avatar).

Why our own head: the package must render and export offline without shipping a third-party
mesh. The skin is an egg-shaped lat-long grid (metres, +Y up, facing +Z, the character's left at
+X, the glTF conventions) with a nose, brow ridge, lips, lower-lip pad and cheeks added as smooth
bumps. The parts a viewer expects of a finished head, each its own :class:`AvatarPart` (one named
glTF material and primitive each):

* ``skin`` with lip and brow colours; the mouth is a real slit (the lower-lip row is duplicated
  between the corners) and
* ``mouth_interior``, a dark cavity glued to the slit's rim (inner lips → roof/floor → back), so an
  open mouth is dark inside and a closed one shows no gap at the corners; it follows the lips and,
  in its lower half, the jaw;
* ``teeth``: an upper arch fixed to the skull and a lower one rigid with the jaw, tubes with a
  tooth-shaped cross-section, scalloped biting edges, dark lines between teeth and gums at the root;
* ``tongue`` on the cavity floor, carried by the jaw; ``tongueOut`` slides its tip over the lower
  teeth and out between the lips;
* ``eye_white``, ``iris``, ``pupil``: one sphere per eye split at the iris and pupil borders, in
  sockets; the eyeLook targets rotate them in place;
* ``eyelids``: upper and lower shells around each eyeball (poles on the x axis, so a blink is a
  rotation that slides over the eye); on ``eyeBlink`` the upper lid's edge passes the lower lid's,
  so the eye closes fully; a dark lash line at the edges.

Every target is a smooth displacement field (rigid rotations for the jaw, lids and eyeballs),
clipped to exact zeros away from its region so that glTF sparse accessors stay small. Everything
is deterministic: no randomness. ``hub_scripts/contact_sheet.py`` draws the head in every viseme
and emotion template (the check a person does).
"""

from __future__ import annotations

import functools

import numpy as np

from ..blendshapes import ARKIT_INDEX, ARKIT_NAMES, NUM_BLENDSHAPES
from .color import srgb_to_linear
from .model import Avatar, AvatarPart, avatar_document

# Head shape (metres)
A, B, C = 0.074, 0.106, 0.094  # ellipsoid half-axes x, y, z
Y_MOUTH = -0.050
Y_EYE, X_EYE, R_EYE = 0.020, 0.032, 0.0125
N_LAT, N_LON = 120, 160
MOUTH_HALF_WIDTH = 0.024

# Part colours as they should look on screen: sRGB values, chosen by eye (as in a colour picker) and
# mixed in sRGB below; :meth:`_Parts.finish` converts them to linear, glTF's baseColorFactor space.
SKIN = np.array([0.86, 0.69, 0.60], dtype=np.float32)
LIPS = np.array([0.74, 0.40, 0.40], dtype=np.float32)
BROW = np.array([0.28, 0.19, 0.14], dtype=np.float32)
SCLERA = np.array([0.95, 0.95, 0.93], dtype=np.float32)
IRIS = np.array([0.28, 0.45, 0.60], dtype=np.float32)
PUPIL = np.array([0.04, 0.04, 0.05], dtype=np.float32)
TONGUE = np.array([0.80, 0.45, 0.48], dtype=np.float32)
LID = np.array([0.84, 0.66, 0.58], dtype=np.float32)
LASH = np.array([0.10, 0.07, 0.06], dtype=np.float32)
MOUTH = np.array([0.15, 0.045, 0.05], dtype=np.float32)  # dark even under viewers' unshadowed light
IRIS_PUPIL, IRIS_EDGE = 0.18, 0.42  # polar angles (rad from the eye's axis) of the pupil and iris borders

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
        left_col = corner[np.argmin(np.where(corner_x > 0, corner_x, np.inf))]
        right_col = corner[np.argmax(np.where(corner_x < 0, corner_x, -np.inf))]
        self.corner_left, self.corner_right = pos[index[k_m, left_col]], pos[index[k_m, right_col]]
        # The slit as a closed loop (right corner → upper lip edge → left corner → lower lip edge):
        # the mouth cavity is attached along it. Columns run in +phi, which is +x on the front.
        self.mouth_loop = np.concatenate([[index[k_m, right_col]], index[k_m, extra], [index[k_m, left_col]],
                                          lower_row[extra][::-1]])
        n_in = len(extra)
        self.loop_side = np.concatenate([[0.0], np.ones(n_in), [0.0], -np.ones(n_in)])  # +1 upper, −1 lower
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
            + 0.0045 * np.exp(-(x / 0.022) ** 4) * np.exp(-((y - Y_MOUTH + 0.009) / 0.009) ** 2)  # lower lip pad
            + 0.007 * np.exp(-(x / 0.016) ** 2 - ((y + 0.088) / 0.014) ** 2)  # chin
            + 0.004 * np.exp(-((ax - 0.044) / 0.016) ** 2 - ((y + 0.012) / 0.020) ** 2)  # cheekbones
        ) * front
        return p + n * bump[..., None]


def _gauss(p: np.ndarray, centre: tuple[float, float], sigma: tuple[float, float]) -> np.ndarray:
    return np.exp(-((p[:, 0] - centre[0]) / sigma[0]) ** 2 - ((p[:, 1] - centre[1]) / sigma[1]) ** 2)


def _uv_sphere(alpha: np.ndarray, n_b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit sphere with its pole on +Z and rings at the polar angles ``alpha`` (from 0 to π).

    Returns (positions, faces, polar angle of each vertex); faces point outwards.
    """
    beta = 2 * np.pi * np.arange(n_b) / n_b
    al, be = np.meshgrid(alpha[1:-1], beta, indexing="ij")
    p = np.stack([np.sin(al) * np.cos(be), np.sin(al) * np.sin(be), np.cos(al)], axis=-1).reshape(-1, 3)
    idx = np.arange(p.shape[0]).reshape(len(alpha) - 2, n_b)
    faces = [_grid_faces([idx[i] for i in range(len(alpha) - 2)], wrap=True)]
    front, back = p.shape[0], p.shape[0] + 1
    p = np.concatenate([p, [[0, 0, 1.0], [0, 0, -1.0]]])
    j = np.arange(n_b)
    faces.append(np.stack([np.full(n_b, front), idx[0, j], idx[0, (j + 1) % n_b]], axis=1))
    faces.append(np.stack([idx[-1, j], np.full(n_b, back), idx[-1, (j + 1) % n_b]], axis=1))
    polar = np.concatenate([al.ravel(), [0.0, np.pi]])
    f = np.concatenate(faces)
    return p, _orient_outward(p, f, np.zeros(3)), polar


def _orient_from(verts: np.ndarray, faces: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """Flip all faces if most point towards ``inner`` ((V, 3): a point inside the solid per vertex)."""
    tri = verts[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    outward = np.einsum("ij,ij->i", normal, tri.mean(axis=1) - inner[faces].mean(axis=1))
    return faces[:, ::-1].copy() if outward.sum() < 0 else faces


def _split_faces(pos: np.ndarray, faces: np.ndarray, labels: np.ndarray,
                 count: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Split a mesh by face label: per label (positions, faces, index of each vertex in ``pos``).

    Vertices on a border are duplicated, so every part owns its vertices (one glTF primitive each).
    """
    out = []
    for k in range(count):
        f = faces[labels == k]
        used, inverse = np.unique(f, return_inverse=True)
        out.append((pos[used], inverse.reshape(-1, 3), used))
    return out


def _lid_shell(centre: np.ndarray, radius: float, edge: np.ndarray, span: float, upper: bool,
               n_u: int = 16, v_max: float = 1.30) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An eyelid: a band of a sphere around the eyeball, parameterised with its poles on the x axis.

    ``v`` (−v_max … v_max) is the angle from the y-z plane; ``α`` the angle in the y-z plane above +Z.
    The lid covers α from its edge ``edge(v)`` upwards (upper) or downwards (lower) over ``span``
    radians; rotating it about the x axis through the eye centre slides it over the eyeball, so a
    blink is a rotation and the lid never cuts into the eye. Returns (positions, faces, angular
    distance of each vertex from the edge).
    """
    v = np.linspace(-v_max, v_max, len(edge))
    t = np.linspace(0.0, 1.0, n_u)[:, None] ** 1.7  # rows packed near the edge (lash line)
    alpha = edge[None] + (1 if upper else -1) * span * t
    vv = np.broadcast_to(v, alpha.shape)
    p = centre + radius * np.stack([np.sin(vv), np.cos(vv) * np.sin(alpha), np.cos(vv) * np.cos(alpha)],
                                   axis=-1).reshape(-1, 3)
    idx = np.arange(p.shape[0]).reshape(n_u, len(v))
    faces = _grid_faces([idx[i] for i in range(n_u)], wrap=False)
    return p, _orient_outward(p, faces, centre), np.broadcast_to(span * t, alpha.shape).ravel()


# Tooth widths (mm) from the midline back, upper and lower arch (incisors, canine, premolars, molar).
_UPPER_TEETH_MM = (8.5, 6.5, 7.5, 7.0, 6.5, 10.0)
_LOWER_TEETH_MM = (5.3, 5.9, 6.8, 7.0, 7.1, 11.0)


def _tooth_row(z_front: float, y_edge: float, height: float, rx: float, rz: float, upper: bool,
               widths_mm: tuple[float, ...], n_u: int = 321) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One dental arch as a closed tube: a horseshoe in x-z whose cross-section is a tooth's profile.

    The biting edge is scalloped and darkened where two teeth meet (so the row reads as teeth), the
    part near the root is gum-coloured. Returns (positions, faces, colours).
    """
    u = np.linspace(-1.0, 1.0, n_u)
    phi = 1.25 * u
    cx, cz = rx * np.sin(phi), z_front - rz * (1 - np.cos(phi))
    tangent = np.stack([rx * np.cos(phi), -rz * np.sin(phi)], axis=1)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(np.stack([cx, cz], 1), axis=0), axis=1))])
    arc = np.abs(arc - arc[n_u // 2])  # distance along the arch from the midline
    nx, nz = -tangent[:, 1], tangent[:, 0]  # outward (front) normal of the arch
    norm = np.hypot(nx, nz)
    nx, nz = nx / norm, nz / norm
    bounds = np.cumsum(widths_mm) / 1000.0
    gap = np.min(np.abs(arc[:, None] - np.concatenate([[0.0], bounds])[None]), axis=1)
    scallop = 0.0008 * np.exp(-(gap / 0.0011) ** 2)  # rounded tooth corners: the edge recedes at a gap
    h = height * (1 - 0.3 * np.abs(u))
    thick = 1 + 1.5 * u ** 2  # incisors are thin, molars broad
    # (inward offset m, fraction of the height from the edge) around the closed cross-section
    profile = [(0.0, 1.0), (0.0, 0.7), (0.0, 0.4), (0.0, 0.15), (0.0004, 0.0), (0.0016, 0.0),
               (0.0024, 0.3), (0.0026, 1.0)]
    up = 1.0 if upper else -1.0  # from the biting edge towards the root
    rows, inner, cols = [], [], []
    base = np.array([0.93, 0.90, 0.83])
    gum = np.array([0.80, 0.44, 0.46])
    for r, f in profile:
        off = r * thick
        rows.append(np.stack([cx - off * nx, y_edge + up * (f * h + scallop), cz - off * nz], axis=1))
        inner.append(np.stack([cx - 0.0013 * thick * nx, y_edge + up * 0.5 * h, cz - 0.0013 * thick * nz], axis=1))
        shade = 1 - 0.45 * np.exp(-(gap / 0.00035) ** 2)
        root = _smoothstep((f - 0.78) / 0.15)
        cols.append(base[None] * shade[:, None] * (1 - root) + gum[None] * root)
    pos = np.concatenate(rows)
    idx = np.arange(len(pos)).reshape(len(profile), n_u)
    faces = _grid_faces([idx[j] for j in range(len(profile))] + [idx[0]], wrap=False)
    inner_pts = np.concatenate(inner)
    return pos, _orient_from(pos, faces, inner_pts), np.concatenate(cols)


_ROLES = {"skin": "skin", "eyelids": "skin", "eye_white": "eye", "iris": "eye", "pupil": "eye",
          "teeth": "teeth", "tongue": "tongue", "mouth_interior": "mouth"}


class _Parts:
    """Accumulates the head's parts: vertex/face blocks with one material each, in order."""

    def __init__(self) -> None:
        self.pos: list[np.ndarray] = []
        self.faces: list[np.ndarray] = []
        self.colors: list[np.ndarray] = []
        self.parts: list[AvatarPart] = []
        self.nv = self.nf = 0

    def add(self, name: str, pos: np.ndarray, faces: np.ndarray, colors: np.ndarray, roughness: float) -> int:
        """Append a block (faces index ``pos``; ``colors`` in sRGB); returns its first vertex.

        Consecutive blocks of one name merge.
        """
        start = self.nv
        self.pos.append(np.asarray(pos, dtype=np.float64))
        self.faces.append(np.asarray(faces) + start)
        self.colors.append(np.broadcast_to(np.asarray(colors, dtype=np.float64), (len(pos), 3)))
        v_end, f_end = start + len(pos), self.nf + len(faces)
        last = self.parts[-1] if self.parts else None
        if last is not None and last.name == name:
            self.parts[-1] = AvatarPart(name, (last.vertices[0], v_end), (last.faces[0], f_end),
                                        last.base_color, roughness)
        else:
            self.parts.append(AvatarPart(name, (start, v_end), (self.nf, f_end), (1.0, 1.0, 1.0), roughness))
        self.nv, self.nf = v_end, f_end
        return start

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[AvatarPart, ...]]:
        """(positions, faces, linear RGB colours, parts): the sRGB colours given to :meth:`add` decoded."""
        colors = srgb_to_linear(np.concatenate(self.colors))
        parts = tuple(AvatarPart(p.name, p.vertices, p.faces,
                                 tuple(float(c) for c in colors[p.vertices[0]:p.vertices[1]].max(axis=0)),
                                 p.roughness, _ROLES[p.name]) for p in self.parts)
        return np.concatenate(self.pos), np.concatenate(self.faces), colors, parts


# Jaw: a rotation about a hinge below and behind the eyes (where the jaw joint is) plus a small
# forward glide, as the condyle slides when the mouth opens wide; 15° at jawOpen = 1.
JAW_HINGE = np.array([0.0, -0.012, -0.010])
JAW_ANGLE = 0.26
JAW_GLIDE = 0.005
# Blink: the upper lid's edge travels past the lower lid's (by ~0.1 rad) so the eye closes fully.
UPPER_LID_EDGE = (0.22, 0.16)  # α of the edge at the corners, + rise at the middle (an arch)
LOWER_LID_EDGE = (-0.30, -0.12)
BLINK_UPPER, BLINK_LOWER = 0.86, 0.05


def _jaw_open(points: np.ndarray) -> np.ndarray:
    return _rotation_delta(points, _rot_x(JAW_ANGLE), JAW_HINGE) + np.array([0.0, 0.0, JAW_GLIDE])


def build_head() -> Avatar:
    """Build the default avatar (see module docstring)."""
    head = _Head()
    p = head.pos
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    front = _smoothstep((z - 0.015) / 0.03)
    left = 1 / (1 + np.exp(-x / 0.004))
    right = 1 - left
    parts = _Parts()

    # Skin colours: skin, lips, brows
    lip_mask = np.exp(-(x / (MOUTH_HALF_WIDTH * 1.1)) ** 6) * np.exp(-((y - Y_MOUTH) / 0.0055) ** 2) * front
    ax = np.abs(x)
    brow_y = 0.041 + 0.004 * np.exp(-((ax - 0.03) / 0.015) ** 2)
    brow_mask = (np.exp(-((y - brow_y) / 0.0032) ** 2) * _smoothstep((ax - 0.008) / 0.006)
                 * _smoothstep((0.054 - ax) / 0.008) * front)
    col = SKIN[None] * (1 - lip_mask[:, None]) + LIPS[None] * lip_mask[:, None]
    col = col * (1 - brow_mask[:, None]) + BROW[None] * brow_mask[:, None]
    parts.add("skin", p, head.faces, col, 0.6)

    # Eyes: centres sit just behind the dented socket surface.
    eye_centres = []
    for sx in (1.0, -1.0):
        near = np.argmin((x - sx * X_EYE) ** 2 + (y - Y_EYE) ** 2 + 1e3 * (z < 0))
        eye_centres.append(np.array([sx * X_EYE, Y_EYE, z[near] - 0.45 * R_EYE]))

    # Eyelids: upper and lower shells (the upper one outside the lower one, so a closed eye overlaps).
    n_v = 27
    arch = 1 - np.linspace(-1, 1, n_v) ** 2
    lids: dict[str, tuple[int, int]] = {}
    for kind, radius, (e_corner, e_mid), span, upper in (("upper", 1.10, UPPER_LID_EDGE, 2.0, True),
                                                          ("lower", 1.06, LOWER_LID_EDGE, 1.7, False)):
        for side, centre in zip(("Left", "Right"), eye_centres):
            lp, lf, dist = _lid_shell(centre, radius * R_EYE, e_corner + e_mid * arch, span, upper)
            lash = np.exp(-(dist / (0.07 if upper else 0.04)) ** 2)[:, None]
            lid_col = LID[None] * (1 - lash) + LASH[None] * lash
            lids[kind + side] = (parts.add("eyelids", lp, lf, lid_col, 0.6), len(lp))

    # Eyeballs: sclera, iris and pupil as three parts of one sphere (rings exactly on the borders).
    alpha = np.unique(np.concatenate([np.linspace(0, IRIS_PUPIL, 4), np.linspace(IRIS_PUPIL, IRIS_EDGE, 6),
                                      np.linspace(IRIS_EDGE, np.pi, 22)]))
    unit, eye_faces, polar = _uv_sphere(alpha, 32)
    face_polar = polar[eye_faces].mean(axis=1)
    label = np.where(face_polar < IRIS_PUPIL, 2, np.where(face_polar < IRIS_EDGE, 1, 0))
    pieces = _split_faces(unit, eye_faces, label, 3)
    eyes: dict[str, list[tuple[int, int]]] = {"Left": [], "Right": []}
    for k, name in enumerate(("eye_white", "iris", "pupil")):
        piece_pos, piece_faces, src = pieces[k]
        if name == "iris":  # a darker limbal ring at the iris' edge
            t = (polar[src] - IRIS_PUPIL) / (IRIS_EDGE - IRIS_PUPIL)
            piece_col = IRIS[None] * np.clip(1.15 - 0.6 * t ** 2, 0, 1 / IRIS.max())[:, None]
        else:
            piece_col = SCLERA if name == "eye_white" else PUPIL
        for side, centre in zip(("Left", "Right"), eye_centres):
            eyes[side].append((parts.add(name, centre + R_EYE * piece_pos, piece_faces, piece_col, 0.12),
                               len(piece_pos)))

    # Mouth: teeth, tongue and the cavity behind the lips.
    loop = head.mouth_loop
    rim = p[loop]
    upper_rim = rim[head.loop_side > 0]
    # the lip bump pushes the slit along the surface normal (forward and down): place the inside of
    # the mouth from where the lips really meet, not from Y_MOUTH
    lip_front = float(upper_rim[np.argmin(np.abs(upper_rim[:, 0])), 2])
    mouth_y = float(upper_rim[np.argmin(np.abs(upper_rim[:, 0])), 1])
    teeth: dict[str, tuple[int, int]] = {}
    for name, kw in (("upper", dict(z_front=lip_front - 0.0075, y_edge=mouth_y - 0.0022, height=0.0095,
                                    rx=0.0215, rz=0.021, upper=True, widths_mm=_UPPER_TEETH_MM)),
                     ("lower", dict(z_front=lip_front - 0.0115, y_edge=mouth_y - 0.0008, height=0.0075,
                                    rx=0.0195, rz=0.020, upper=False, widths_mm=_LOWER_TEETH_MM))):
        tp, tf, tc = _tooth_row(**kw)
        teeth[name] = (parts.add("teeth", tp, tf, tc, 0.3), len(tp))

    t_alpha = np.linspace(0, np.pi, 14)
    t_unit, t_faces, _ = _uv_sphere(t_alpha, 24)
    t_centre = np.array([0.0, mouth_y - 0.0085, lip_front - 0.041])
    t_pos = t_centre + t_unit * np.array([0.015, 0.0058, 0.024])
    groove = (t_pos[:, 1] > t_centre[1]) * 0.0012 * np.exp(-(t_pos[:, 0] / 0.004) ** 2)
    t_pos[:, 1] -= groove
    tongue_col = TONGUE[None] * (0.85 + 0.15 * _smoothstep((t_pos[:, 2] - t_centre[2] + 0.01) / 0.03))[:, None]
    tongue_start = parts.add("tongue", t_pos, t_faces, tongue_col, 0.35)

    # Cavity: rings behind the slit loop, an ellipse in each (upper half up, lower half down), closed
    # at the back. Ring 0 is the lip rim itself (glued to the skin in every pose).
    x_corner = float(np.max(np.abs(rim[:, 0])))
    shape = np.sqrt(np.clip(1 - (rim[:, 0] / x_corner) ** 2, 0, 1))
    # The face slopes back below the lower lip, so the cavity first goes straight back and only then
    # widens (a front ring that rose as fast as it deepened would show through the chin).
    depth = (0.0, 0.003, 0.007, 0.013, 0.020, 0.028, 0.036, 0.043)
    height = (0.0, 0.002, 0.004, 0.008, 0.012, 0.015, 0.013, 0.008)
    width = (1.0, 1.0, 1.0, 1.03, 1.08, 1.08, 0.95, 0.7)
    follow = (1.0, 0.9, 0.75, 0.6, 0.45, 0.3, 0.2, 0.1)  # share of a lip target's motion each ring copies
    rings, ring_col = [], []
    for d, h, w in zip(depth, height, width):
        flat = _smoothstep(d / 0.02)
        rz = rim[:, 2] - d  # parallel to the face's curve: a flat back would poke out at the corners
        rings.append(np.stack([rim[:, 0] * w, rim[:, 1] + head.loop_side * h * shape, rz], axis=1))
        inner_lip = _smoothstep(d / 0.006)
        ring_col.append(np.broadcast_to(LIPS * 0.6 * (1 - inner_lip) + MOUTH * inner_lip * (1 - 0.3 * flat), (len(rim), 3)))
    m = len(rim)
    back_point = np.array([[0.0, mouth_y - 0.002, lip_front - 0.049]])
    bag_pos = np.concatenate(rings + [back_point])
    idx = np.arange(len(rings) * m).reshape(len(rings), m)
    bag_faces = [_grid_faces([idx[k] for k in range(len(rings))], wrap=True)]
    j = np.arange(m)
    bag_faces.append(np.stack([idx[-1, j], np.full(m, len(bag_pos) - 1), idx[-1, (j + 1) % m]], axis=1))
    bag_faces = np.concatenate(bag_faces)
    cavity_centre = np.array([0.0, mouth_y - 0.002, lip_front - 0.02])
    bag_faces = _orient_outward(bag_pos, bag_faces, cavity_centre)[:, ::-1].copy()  # normals face the inside
    bag_start = parts.add("mouth_interior", bag_pos, bag_faces,
                          np.concatenate(ring_col + [MOUTH[None] * 0.7]), 0.85)

    verts, faces, colors, part_list = parts.finish()
    nv = len(verts)
    targets = np.zeros((NUM_BLENDSHAPES, nv, 3))

    def put(name: str, delta: np.ndarray, start: int = 0) -> None:
        targets[ARKIT_INDEX[name], start:start + len(delta)] += delta

    def field(weight: np.ndarray, vec: tuple[float, float, float]) -> np.ndarray:
        return _clip(weight)[:, None] * np.asarray(vec)[None]

    # --- jaw: rigid rotation/translation of everything below the mouth line, fading out ---------
    below_dist = (Y_MOUTH - y) + 0.012 * head.lens * head.below
    w_jaw = _clip(_smoothstep(below_dist / 0.012) * head.below * _smoothstep((z + 0.03) / 0.05))
    jaw_open = _jaw_open(p) * w_jaw[:, None]
    jaw_shift = {"jawForward": (0, 0, 0.008), "jawLeft": (0.008, 0, 0), "jawRight": (-0.008, 0, 0)}
    put("jawOpen", jaw_open)
    for name, vec in jaw_shift.items():
        put(name, field(w_jaw, vec))
    lo, n_lo = teeth["lower"]
    t_rest = verts[tongue_start:tongue_start + len(t_pos)]
    for start, pts in ((lo, verts[lo:lo + n_lo]), (tongue_start, t_rest)):  # rigid with the jaw
        put("jawOpen", _jaw_open(pts), start)
        for name, vec in jaw_shift.items():
            put(name, np.tile(vec, (len(pts), 1)), start)
    # tongueOut: the tip slides forward over the lower teeth and out, the root stays (it stretches)
    reach = _smoothstep((t_rest[:, 2] - (t_centre[2] - 0.024)) / 0.048)[:, None]
    put("tongueOut", reach * np.array([0.0, 0.0045, 0.027]), tongue_start)

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

    # --- the cavity follows the lips: ring k copies follow[k] of the rim's motion; with the jaw, the
    # lower half moves rigidly (weighted like the rim vertex it hangs from) so it carries the tongue.
    n_ring = len(rings) * m
    w_rim = np.tile(w_jaw[loop], len(rings))
    bag_rest = verts[bag_start:bag_start + n_ring]
    jaw_names = {"jawOpen", *jaw_shift}
    for i, name in enumerate(ARKIT_NAMES):
        rim_delta = targets[i, loop]
        if name in jaw_names:
            rigid = _jaw_open(bag_rest) if name == "jawOpen" else np.tile(jaw_shift[name], (n_ring, 1))
            delta = rigid * w_rim[:, None]
            delta[:m] = rim_delta
        else:
            delta = np.concatenate([rim_delta * f for f in follow])
        targets[i, bag_start:bag_start + n_ring] = delta
    targets[ARKIT_INDEX["jawOpen"], bag_start + n_ring] = _jaw_open(back_point)[0] * 0.5

    # --- eyes: lids rotate about the eye's x axis, eyeballs rotate in place ---------------------
    for side, centre, sx in (("Left", eye_centres[0], 1), ("Right", eye_centres[1], -1)):
        for kind, blink, squint, wide in (("upper", BLINK_UPPER, 0.22, -0.22), ("lower", -BLINK_LOWER, -0.16, 0.04)):
            start, count = lids[kind + side]
            lid = verts[start:start + count]
            put("eyeBlink" + side, _rotation_delta(lid, _rot_x(blink), centre), start)
            put("eyeSquint" + side, _rotation_delta(lid, _rot_x(squint), centre), start)
            put("eyeWide" + side, _rotation_delta(lid, _rot_x(wide), centre), start)
        for start, count in eyes[side]:
            ball = verts[start:start + count]
            put("eyeLookUp" + side, _rotation_delta(ball, _rot_x(-0.35), centre), start)
            put("eyeLookDown" + side, _rotation_delta(ball, _rot_x(0.35), centre), start)
            put("eyeLookOut" + side, _rotation_delta(ball, _rot_y(0.40 * sx), centre), start)
            put("eyeLookIn" + side, _rotation_delta(ball, _rot_y(-0.40 * sx), centre), start)

    morph = targets.astype(np.float32)
    morph[np.abs(morph) < 1e-7] = 0.0
    assert all(np.any(morph[i]) for i in range(NUM_BLENDSHAPES)), "every default target must move"
    avatar = Avatar(
        vertices=verts.astype(np.float32),
        faces=faces.astype(np.int32),
        morph_targets=morph,
        names_present=ARKIT_NAMES,
        name="pestalk_default_head",
        colors=colors.astype(np.float32),
        parts=part_list,
    )
    avatar.document, avatar.morph_meshes = avatar_document(avatar)
    return avatar


@functools.lru_cache(maxsize=1)
def default_avatar() -> Avatar:
    """Our own procedural head with all 52 ARKit morph targets (deterministic, cached, read-only).

    Generated at run time by :func:`build_head` (no asset file), so the package works offline and
    ships no third-party mesh.
    """
    head = build_head()
    for arr in (head.vertices, head.faces, head.morph_targets, head.colors):
        if arr is not None:
            arr.setflags(write=False)
    return head
