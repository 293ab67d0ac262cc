"""ARKit-rigged avatars: load any glTF/GLB head with ARKit morph targets, or build our own.

An :class:`Avatar` is a triangle mesh in world space plus its morph targets re-ordered into the
internal ARKit order (:data:`ARKIT`, alphabetical), so that ``vertices + w @ morph_targets`` poses
it for a (52,) weight vector ``w`` whatever the rig's own names and order were. It keeps the
source glTF document, so an animation can be written back onto the *original* asset
(:mod:`pestalk_hf.exporters`), retargeted onto its own target names and order; an avatar built in
code gets one from :func:`avatar_document`.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..blendshapes import ARKIT_NAMES, NUM_BLENDSHAPES, MorphTargetMatch, match_morph_targets
from .color import srgb_to_linear
from .gltf_io import GltfDocument, read_gltf

#: Order of the first axis of :attr:`Avatar.morph_targets` (52 ARKit names, alphabetical).
ARKIT: tuple[str, ...] = ARKIT_NAMES

DEFAULT_SKIN = (0.80, 0.66, 0.58)
# Colours for a part whose material says nothing about colour (no COLOR_0, no baseColorFactor; a
# texture we do not sample). glTF's default would be white: a plaster head whose eyes and teeth look
# like its skin. A part's role is guessed from its material, mesh and node names (facecap: "eyeLeft",
# "teeth"); anything unnamed is skin. These (and DEFAULT_SKIN, IRIS_COLOR, PUPIL_COLOR) are sRGB, as
# chosen by eye; they are converted to linear (glTF's and the renderer's space) where they are used.
ROLE_COLORS: dict[str, tuple[float, float, float]] = {
    "eye": (0.92, 0.91, 0.88), "teeth": (0.93, 0.90, 0.82), "tongue": (0.78, 0.40, 0.42),
    "mouth": (0.16, 0.05, 0.06), "hair": (0.20, 0.14, 0.10), "skin": DEFAULT_SKIN,
}
_ROLE_PATTERNS = (  # first match wins; "eyelid"/"eyebrow"/"eyelash" are not eyeballs
    ("hair", re.compile(r"brow|lash|hair|beard", re.I)),
    ("skin", re.compile(r"lid|skin|head|face|body", re.I)),
    ("eye", re.compile(r"eye|iris|pupil|sclera|cornea", re.I)),
    ("teeth", re.compile(r"teeth|tooth|gum|dent", re.I)),
    ("tongue", re.compile(r"tongue", re.I)),
    ("mouth", re.compile(r"mouth|cavity|throat|oral", re.I)),
)
IRIS_COLOR, PUPIL_COLOR = (0.30, 0.42, 0.52), (0.04, 0.04, 0.05)
# Caps for hostile avatar files (ICT-FaceKit, a detailed head, has 24.6 k vertices and 52 targets);
# at the vertex cap the loader holds ≈ 190 MB of float32 morph deltas.
MAX_AVATAR_VERTICES = 300_000
MAX_MORPH_TARGETS = 1024


@dataclass(frozen=True)
class MorphMesh:
    """A glTF mesh of the source document that carries ARKit morph targets."""

    mesh_index: int
    target_names: tuple[str, ...]
    match: MorphTargetMatch
    node_indices: tuple[int, ...]


@dataclass(frozen=True)
class AvatarPart:
    """A contiguous block of an avatar's vertices and faces drawn with one material.

    Attributes:
        name: material name (``skin``, ``eye_white``, ``teeth`` … for our head; the asset's own
            material, mesh or node name for a loaded one).
        vertices: ``(start, stop)`` range of :attr:`Avatar.vertices` the part owns.
        faces: ``(start, stop)`` range of :attr:`Avatar.faces`; they index only the part's vertices.
        base_color: linear RGB in [0, 1], the material's ``baseColorFactor`` (glTF's space;
            per-vertex colours, if any, are :attr:`Avatar.colors`).
        roughness: the material's roughness in [0, 1] (the renderer makes smooth parts glossy).
        role: what the part is (``skin``, ``eye``, ``teeth``, ``tongue``, ``mouth``, ``hair``; see
            :func:`part_role`); the renderer darkens the cavities of ``skin`` parts.
    """

    name: str
    vertices: tuple[int, int]
    faces: tuple[int, int]
    base_color: tuple[float, float, float]
    roughness: float = 0.7
    role: str = "skin"


@dataclass(eq=False)  # arrays: identity equality only
class Avatar:
    """A posable head.

    Attributes:
        vertices: (V, 3) float32 rest positions in world space (all morph weights 0).
        faces: (F, 3) int32 triangle indices.
        morph_targets: (52, V, 3) float32 position deltas in :data:`ARKIT` order; zeros for shapes
            the rig lacks. Rig targets that map to one ARKit shape (left/right halves) are summed.
        names_present: ARKit names the rig drives, in :data:`ARKIT` order.
        name: human-readable name (file stem for loaded avatars).
        colors: optional (V, 3) float32 *linear* RGB in [0, 1] (glTF's ``baseColorFactor × COLOR_0``)
            used by the renderer, which shades in linear and encodes to sRGB.
        document: the source glTF (single buffer) used to re-export the original asset.
        morph_meshes: the meshes of ``document`` with ARKit targets and how their names matched.
        unmatched_targets: rig target names that are not ARKit shapes (left at weight 0).
        source_path: file the avatar was loaded from (None for generated ones).
        parts: the material blocks of vertices/faces, in order (empty: one skin-coloured block).
    """

    vertices: np.ndarray
    faces: np.ndarray
    morph_targets: np.ndarray
    names_present: tuple[str, ...]
    name: str = "avatar"
    colors: np.ndarray | None = None
    document: GltfDocument | None = None
    morph_meshes: tuple[MorphMesh, ...] = ()
    unmatched_targets: tuple[str, ...] = ()
    source_path: Path | None = None
    parts: tuple[AvatarPart, ...] = ()
    _sparse_targets: Any = field(default=None, repr=False, compare=False)
    _moving: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        v, f, m = self.vertices, self.faces, self.morph_targets
        if v.ndim != 2 or v.shape[1] != 3:
            raise ValueError(f"Avatar.vertices must be (V, 3), got {v.shape}")
        if f.ndim != 2 or f.shape[1] != 3:
            raise ValueError(f"Avatar.faces must be (F, 3), got {f.shape}")
        if m.shape != (NUM_BLENDSHAPES,) + v.shape:
            raise ValueError(f"Avatar.morph_targets must be (52, {v.shape[0]}, 3), got {m.shape}")
        if f.size and (f.min() < 0 or f.max() >= v.shape[0]):
            raise ValueError("Avatar.faces index outside the vertex array")
        for part in self.parts:
            (v0, v1), (f0, f1) = part.vertices, part.faces
            if not (0 <= v0 <= v1 <= v.shape[0] and 0 <= f0 <= f1 <= f.shape[0]):
                raise ValueError(f"Avatar part {part.name!r}: range outside the mesh")
            if f1 > f0 and (f[f0:f1].min() < v0 or f[f0:f1].max() >= v1):
                raise ValueError(f"Avatar part {part.name!r}: a face uses a vertex of another part")

    def gloss(self) -> np.ndarray:
        """(V,) float32 specular strength in [0, 1] per vertex (1 − the part's roughness; 0.3 elsewhere)."""
        out = np.full(self.num_vertices, 0.3, dtype=np.float32)
        for part in self.parts:
            out[part.vertices[0]:part.vertices[1]] = 1.0 - part.roughness
        return out

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def moving_vertices(self) -> np.ndarray:
        """Indices of the vertices some morph target moves (the rest never change)."""
        if self._moving is None:
            from scipy.sparse import csr_matrix

            self._moving = np.flatnonzero(np.any(self.morph_targets != 0, axis=(0, 2)))
            # (3M, 52) sparse: posing costs O(non-zero deltas), not O(52 × V)
            flat = self.morph_targets[:, self._moving].reshape(NUM_BLENDSHAPES, -1).T
            self._sparse_targets = csr_matrix(flat)
        return self._moving

    def pose(self, weights: np.ndarray) -> np.ndarray:
        """(52,) weights → (V, 3) posed vertices; (T, 52) → (T, V, 3).

        Only the moving vertices are touched, with a sparse product, so posing stays cheap per
        frame even for big meshes.
        """
        w = np.asarray(weights, dtype=np.float32)
        if w.shape[-1] != NUM_BLENDSHAPES:
            raise ValueError(f"Avatar.pose: weights must end in 52, got {w.shape}")
        moving = self.moving_vertices
        flat = w.reshape(-1, NUM_BLENDSHAPES)
        out = np.broadcast_to(self.vertices, (flat.shape[0],) + self.vertices.shape).copy()
        offsets = np.asarray(self._sparse_targets @ flat.T, dtype=np.float32).T  # (N, 3M)
        out[:, moving] += offsets.reshape(flat.shape[0], len(moving), 3)
        return out.reshape(w.shape[:-1] + self.vertices.shape)

    def face_box(self) -> tuple[np.ndarray, np.ndarray]:
        """(3,) min and max corners of the region the morph targets visibly move (what a camera frames).

        Vertices moved by less than 10% of the largest displacement (neck skin dragged by the
        jaw, say) are ignored so that heads with shoulders are still framed on the face.
        """
        reach = np.linalg.norm(self.morph_targets, axis=2).max(axis=0)
        moving = reach > 0.1 * reach.max() if reach.max() > 0 else np.ones(len(reach), dtype=bool)
        pts = self.vertices[moving]
        return pts.min(axis=0), pts.max(axis=0)

    def face_region(self) -> tuple[np.ndarray, float]:
        """Centre and radius of :meth:`face_box`."""
        lo, hi = self.face_box()
        return ((lo + hi) / 2).astype(np.float32), float(np.linalg.norm(hi - lo) / 2)


class VertexNormals:
    """Area-weighted unit vertex normals for a fixed topology, fast enough to run every frame.

    The face→vertex accumulation is a precomputed sparse incidence matrix, so one frame costs a
    cross product and one sparse product instead of a slow ``np.add.at`` scatter. With
    ``rest``/``moving`` given, faces that touch no moving vertex are summed once up front and
    only the moving part is recomputed per frame.
    """

    def __init__(self, faces: np.ndarray, num_vertices: int, rest: np.ndarray | None = None,
                 moving: np.ndarray | None = None) -> None:
        from scipy.sparse import csr_matrix

        f = np.asarray(faces, dtype=np.int64)
        self._static = np.zeros((num_vertices, 3), dtype=np.float32)
        self._rows = np.arange(num_vertices)
        if rest is not None and moving is not None:
            is_moving = np.zeros(num_vertices, dtype=bool)
            is_moving[moving] = True
            dynamic = is_moving[f].any(axis=1)
            static_faces = f[~dynamic]
            fn = _face_cross(np.asarray(rest, dtype=np.float32), static_faces)
            for k in range(3):
                for c in range(3):
                    self._static[:, c] += np.bincount(static_faces[:, k], weights=fn[:, c],
                                                      minlength=num_vertices).astype(np.float32)
            f = f[dynamic]
            self._rows = np.unique(f)
        local = np.searchsorted(self._rows, f.ravel())
        self._flat_faces = f.ravel()
        self._corners = np.empty((len(self._flat_faces), 3), dtype=np.float32)
        self.incidence = csr_matrix((np.ones(len(local), dtype=np.float32), (local, np.repeat(np.arange(len(f)), 3))),
                                    shape=(len(self._rows), len(f)))

    def __call__(self, vertices: np.ndarray) -> np.ndarray:
        v = np.asarray(vertices, dtype=np.float32)
        np.take(v, self._flat_faces, axis=0, out=self._corners)  # much faster than v[faces]
        tri = self._corners.reshape(-1, 3, 3)
        n = self._static.copy()
        n[self._rows] += self.incidence @ np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        length = np.linalg.norm(n, axis=1, keepdims=True)
        n /= np.maximum(length, 1e-20)
        n[length[:, 0] <= 1e-20] = (0.0, 1.0, 0.0)  # isolated/degenerate vertices
        return n


def _face_cross(v: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = v[faces]
    return np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit area-weighted vertex normals (V, 3) float32; isolated vertices get +Y."""
    return VertexNormals(faces, len(vertices))(vertices)


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------


def load_avatar(path: str | Path, *, external_files: bool = False) -> Avatar:
    """Load any ARKit-rigged ``.glb``/``.gltf`` (all meshes of the default scene, baked to world space).

    Morph targets are matched by name (``mesh.extras.targetNames``) with
    :func:`~pestalk_hf.blendshapes.match_morph_targets`, so ``eyeBlinkLeft``, ``eyeBlink_L``,
    ``EyeBlinkLeft`` or ``blendShape1.eyeBlinkLeft`` all work. Meshes without ARKit targets (eyes,
    teeth) are kept as static geometry. Raises ValueError if no mesh has any ARKit morph target, or if
    the file is refused (see :func:`~pestalk_hf.avatar.gltf_io.read_gltf`: only self-contained files unless
    ``external_files=True``, which the CLI sets for a ``.gltf`` with files beside it; never a server),
    or if it declares more than :data:`MAX_AVATAR_VERTICES` vertices (checked before decoding).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"load_avatar: {path} does not exist")
    try:
        doc = read_gltf(path, external_files=external_files)
        _check_vertex_budget(doc, path)
        return _avatar_from_document(doc, path)
    except ValueError:
        raise
    except (KeyError, IndexError, TypeError, AttributeError, OverflowError, struct.error) as exc:
        # a malformed document (a missing key, an index out of range): the file's fault, not a bug
        raise ValueError(f"load_avatar: {path.name} is not a well-formed glTF 2.0 file "
                         f"({type(exc).__name__}: {exc})") from None


def _avatar_from_document(doc: GltfDocument, path: Path) -> Avatar:
    gltf = doc.gltf
    world = doc.node_world_matrices()
    parents = {c: i for i, n in enumerate(gltf.get("nodes", [])) for c in n.get("children", [])
               if isinstance(c, int)}
    verts, faces, colors, targets, parts = [], [], [], [], []
    morph_meshes: dict[int, MorphMesh] = {}
    unmatched: list[str] = []
    offset = 0
    for node_index in sorted(world):
        node = gltf["nodes"][node_index]
        if "mesh" not in node:
            continue
        mesh_index = node["mesh"]
        mesh = gltf["meshes"][mesh_index]
        names = target_names(mesh)
        match = match_morph_targets(names) if names else None
        if match and match.mapping:
            if mesh_index in morph_meshes:
                old = morph_meshes[mesh_index]
                morph_meshes[mesh_index] = MorphMesh(mesh_index, old.target_names, old.match,
                                                     old.node_indices + (node_index,))
            else:
                morph_meshes[mesh_index] = MorphMesh(mesh_index, tuple(names), match, (node_index,))
                unmatched += match.unmatched
        # Skinned meshes ignore their node's transform (glTF spec); use the bind pose as is.
        matrix = np.eye(4) if "skin" in node else world[node_index]
        for prim in mesh.get("primitives", []):
            tri = _triangles(doc, prim)
            if tri is None:
                continue
            pos = doc.accessor(prim["attributes"]["POSITION"]).astype(np.float64)
            world_pos = pos @ matrix[:3, :3].T + matrix[:3, 3]
            verts.append(world_pos)
            names_here = _part_names(gltf, prim, mesh, node_index, parents)
            rgb, rough, vertex_rgb = _primitive_colors(doc, prim, world_pos, names_here)
            colors.append(vertex_rgb)
            f_start = sum(len(f) for f in faces)
            parts.append(AvatarPart(names_here[0], (offset, offset + len(pos)), (f_start, f_start + len(tri)),
                                    rgb, rough, part_role(names_here)))
            faces.append(tri + offset)
            deltas = np.zeros((NUM_BLENDSHAPES, pos.shape[0], 3), dtype=np.float32)
            if match and match.mapping:
                for rig_idx, our_idx in match.mapping.items():
                    tgt = prim.get("targets", [])
                    if rig_idx < len(tgt) and "POSITION" in tgt[rig_idx]:
                        deltas[our_idx] += doc.accessor(tgt[rig_idx]["POSITION"]) @ matrix[:3, :3].T
            targets.append(deltas)
            offset += pos.shape[0]
    if not morph_meshes:
        found = sorted({n for m in gltf.get("meshes", []) for n in target_names(m)})
        detail = f"its morph targets are {found[:10]}{'…' if len(found) > 10 else ''}" if found else \
            "it has no named morph targets (mesh.extras.targetNames)"
        raise ValueError(f"load_avatar: {path} has no ARKit morph targets ({detail}); "
                         f"expected names like {ARKIT[:3]} or their _L/_R variants")
    if not verts:
        raise ValueError(f"load_avatar: {path} has no triangle geometry in its default scene")
    morph = np.concatenate(targets, axis=1).astype(np.float32)
    driven = {i for m in morph_meshes.values() for i in m.match.mapping.values()}
    present = tuple(n for i, n in enumerate(ARKIT) if i in driven)
    return Avatar(
        vertices=np.concatenate(verts).astype(np.float32),
        faces=np.concatenate(faces).astype(np.int32),
        morph_targets=morph,
        names_present=present,
        name=path.stem,
        colors=np.concatenate(colors).astype(np.float32),
        document=doc,
        morph_meshes=tuple(morph_meshes[k] for k in sorted(morph_meshes)),
        unmatched_targets=tuple(dict.fromkeys(unmatched)),
        source_path=path,
        parts=tuple(parts),
    )


def _check_vertex_budget(doc: GltfDocument, path: Path) -> None:
    """Refuse a rig whose declared geometry would need more than the cap, before any decoding.

    The loader holds 52 × vertices × 3 float32 deltas: a 300-byte file declaring millions of
    vertices must fail here, not after gigabytes are allocated.
    """
    gltf = doc.gltf
    nodes, meshes, accessors = gltf.get("nodes", []), gltf.get("meshes", []), gltf.get("accessors", [])
    total = 0
    for node_index in doc.node_world_matrices():
        mesh_index = nodes[node_index].get("mesh")
        if mesh_index is None:
            continue
        if not isinstance(mesh_index, int) or not 0 <= mesh_index < len(meshes):
            raise ValueError(f"load_avatar: {path.name}: node {node_index} names mesh {mesh_index!r}, which does not exist")
        for prim in meshes[mesh_index].get("primitives", []):
            if len(prim.get("targets", [])) > MAX_MORPH_TARGETS:
                raise ValueError(f"load_avatar: {path.name}: a primitive has {len(prim['targets'])} morph targets, "
                                 f"over the cap of {MAX_MORPH_TARGETS}")
            acc = prim.get("attributes", {}).get("POSITION")
            if isinstance(acc, int) and 0 <= acc < len(accessors):
                count = accessors[acc].get("count", 0)
                total += count if isinstance(count, int) else 0
    if total > MAX_AVATAR_VERTICES:
        raise ValueError(f"load_avatar: {path.name} declares {total} vertices, over the cap of "
                         f"{MAX_AVATAR_VERTICES} (real heads have tens of thousands)")


def target_names(mesh: dict[str, Any]) -> list[str]:
    """A glTF mesh's morph-target names (``mesh.extras.targetNames``, or its first primitive's)."""
    names = (mesh.get("extras") or {}).get("targetNames")
    if not names:
        prims = mesh.get("primitives", [])
        names = (prims[0].get("extras") or {}).get("targetNames") if prims else None
    return [str(n) for n in names] if names else []


def _triangles(doc: GltfDocument, prim: dict[str, Any]) -> np.ndarray | None:
    """(F, 3) triangle indices of a primitive (strips/fans converted); None for points/lines."""
    mode = prim.get("mode", 4)
    if mode not in (4, 5, 6) or "POSITION" not in prim.get("attributes", {}):
        return None
    if "indices" in prim:
        idx = doc.accessor(prim["indices"])[:, 0].astype(np.int64)
    else:
        idx = np.arange(doc.gltf["accessors"][prim["attributes"]["POSITION"]]["count"])
    if mode == 4:
        return idx[: len(idx) // 3 * 3].reshape(-1, 3)
    n = len(idx) - 2
    if n <= 0:
        return None
    k = np.arange(n)
    if mode == 5:  # strip: flip every other triangle to keep the winding
        a, b, c = idx[k], idx[k + 1], idx[k + 2]
        odd = k % 2 == 1
        a, b = np.where(odd, b, a), np.where(odd, a, b)
        return np.stack([a, b, c], axis=1)
    return np.stack([np.full(n, idx[0]), idx[k + 1], idx[k + 2]], axis=1)


def _part_names(gltf: dict[str, Any], prim: dict[str, Any], mesh: dict[str, Any], node_index: int,
                parents: dict[int, int]) -> list[str]:
    """Names that say what a primitive is: its material, mesh, node and the node's ancestors."""
    names = []
    material = prim.get("material")
    if isinstance(material, int) and 0 <= material < len(gltf.get("materials", [])):
        names.append(gltf["materials"][material].get("name"))
    names.append(mesh.get("name"))
    node, seen = node_index, set()
    while node is not None and node not in seen:  # a cyclic hierarchy is the file's fault: stop
        seen.add(node)
        names.append(gltf["nodes"][node].get("name"))
        node = parents.get(node)
    names = [str(n) for n in names if n]
    return names or [f"node{node_index}"]


def part_role(names: list[str]) -> str:
    """Guess what a part is (``eye``, ``teeth``, ``tongue``, ``mouth``, ``hair`` or ``skin``) from its names.

    The most specific name decides: the mesh and node names are tried before the material's
    (facecap's single material is called "lambert5"), the node before its parents ("eyeLeft" under
    "head_grp" is an eye).
    """
    for name in names[1:] + names[:1]:
        for role, pattern in _ROLE_PATTERNS:
            if pattern.search(name):
                return role
    return "skin"


def _primitive_colors(doc: GltfDocument, prim: dict[str, Any], world_pos: np.ndarray,
                      names: list[str]) -> tuple[tuple[float, float, float], float, np.ndarray]:
    """(base RGB, roughness, (V, 3) per-vertex RGB) of a primitive, as glTF defines its colour.

    The colour is ``baseColorFactor × COLOR_0`` (either may be absent), linear RGB as glTF stores
    both; a ``baseColorTexture`` is not sampled (its texels are sRGB: sampling one would need
    :func:`.color.srgb_to_linear`). A material that gives no colour at all (no factor and no
    COLOR_0: the glTF default would be white) gets the colour of its role (:func:`part_role`); an
    eyeball painted that way gets an iris and pupil on its front (+Z, where glTF heads look).
    """
    attrs = prim.get("attributes", {})
    mat: dict[str, Any] = {}
    if isinstance(prim.get("material"), int) and 0 <= prim["material"] < len(doc.gltf.get("materials", [])):
        mat = doc.gltf["materials"][prim["material"]]
    pbr = mat.get("pbrMetallicRoughness") or {}
    factor = pbr.get("baseColorFactor")
    rough = pbr.get("roughnessFactor", 1.0 if pbr else 0.7)
    rough = float(np.clip(rough, 0.0, 1.0)) if isinstance(rough, (int, float)) else 0.7
    count = len(world_pos)
    if factor is not None or "COLOR_0" in attrs:
        base = np.clip(np.asarray((factor or [1.0, 1.0, 1.0])[:3], dtype=np.float32), 0, 1)
        rgb = np.tile(base, (count, 1))
        if "COLOR_0" in attrs:
            rgb = rgb * np.clip(doc.accessor(attrs["COLOR_0"])[:, :3].astype(np.float32), 0, 1)
        return tuple(float(c) for c in base), rough, rgb
    role = part_role(names)
    base = srgb_to_linear(ROLE_COLORS[role]).astype(np.float32)
    rgb = np.tile(base, (count, 1))
    if role == "eye" and count:
        centre = (world_pos.min(axis=0) + world_pos.max(axis=0)) / 2
        d = world_pos - centre
        polar = np.arccos(np.clip(d[:, 2] / np.maximum(np.linalg.norm(d, axis=1), 1e-12), -1, 1))
        rgb[polar < 0.42] = srgb_to_linear(IRIS_COLOR)
        rgb[polar < 0.18] = srgb_to_linear(PUPIL_COLOR)
        rough = min(rough, 0.25)  # wet
    return tuple(float(c) for c in base), rough, rgb


def avatar_document(avatar: Avatar) -> tuple[GltfDocument, tuple[MorphMesh, ...]]:
    """Build a self-contained glTF document for an avatar that has none (the procedural head).

    One mesh, one node, one scene. The mesh has one primitive per :class:`AvatarPart` (the whole
    avatar as one ``skin`` part if it has none), each with its own named material
    (``baseColorFactor`` = the part's colour, double-sided), POSITION, NORMAL, COLOR_0 where the
    part's colours vary (``COLOR_0 × baseColorFactor`` = :attr:`Avatar.colors`, as glTF multiplies
    them; both are linear RGB in glTF), and 52 sparse morph targets (POSITION and NORMAL deltas; a
    target that leaves the part alone is an all-zero accessor without data) named in internal ARKit
    order.
    """
    doc = GltfDocument({"asset": {"version": "2.0", "generator": "pestalk_hf"}}, b"")
    verts = np.ascontiguousarray(avatar.vertices, dtype=np.float32)
    normals = VertexNormals(avatar.faces, len(verts))(verts)
    # only faces around moving vertices are recomputed per target (the rest is summed once)
    normals_of = VertexNormals(avatar.faces, len(verts), verts, avatar.moving_vertices)
    moved_normals = []
    for i in range(NUM_BLENDSHAPES):
        moved = normals_of(verts + avatar.morph_targets[i]) - normals
        moved[np.abs(moved) < 1e-5] = 0.0
        moved_normals.append(moved)
    colors = np.clip(avatar.colors, 0, 1).astype(np.float32) if avatar.colors is not None else None
    parts = avatar.parts or (AvatarPart("skin", (0, len(verts)), (0, len(avatar.faces)),
                                        (1.0, 1.0, 1.0) if colors is not None
                                        else tuple(float(c) for c in srgb_to_linear(DEFAULT_SKIN))),)
    materials, primitives = [], []
    for part in parts:
        (v0, v1), (f0, f1) = part.vertices, part.faces
        base = np.asarray(part.base_color, dtype=np.float32)
        attributes = {
            "POSITION": doc.add_accessor(verts[v0:v1], "VEC3", target=34962),
            "NORMAL": doc.add_accessor(normals[v0:v1], "VEC3", target=34962, with_bounds=False),
        }
        if colors is not None and not np.allclose(colors[v0:v1], base[None], atol=1 / 512):
            # factor = the part's brightest colour per channel, so COLOR_0 = colours / factor stays in [0, 1]
            base = np.maximum(colors[v0:v1].max(axis=0), 1e-3)
            attributes["COLOR_0"] = doc.add_accessor(np.clip(colors[v0:v1] / base, 0, 1), "VEC3",
                                                     target=34962, with_bounds=False)
        indices = doc.add_accessor((avatar.faces[f0:f1] - v0).astype(np.uint32).ravel(), "SCALAR", target=34963)
        targets = [{"POSITION": doc.add_sparse_vec3(avatar.morph_targets[i, v0:v1]),
                    "NORMAL": doc.add_sparse_vec3(moved_normals[i][v0:v1])} for i in range(NUM_BLENDSHAPES)]
        materials.append({"name": part.name,
                          "pbrMetallicRoughness": {"baseColorFactor": [float(c) for c in base] + [1.0],
                                                   "metallicFactor": 0.0, "roughnessFactor": float(part.roughness)},
                          "doubleSided": True})
        primitives.append({"attributes": attributes, "indices": indices, "material": len(materials) - 1,
                           "mode": 4, "targets": targets})
    doc.gltf.update({
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"name": avatar.name, "mesh": 0}],
        "materials": materials,
        "meshes": [{"name": avatar.name, "primitives": primitives,
                    "weights": [0.0] * NUM_BLENDSHAPES, "extras": {"targetNames": list(ARKIT_NAMES)}}],
    })
    match = match_morph_targets(ARKIT_NAMES)
    return doc, (MorphMesh(0, tuple(ARKIT_NAMES), match, (0,)),)
