"""Avatars: load an ARKit-rigged glTF/GLB, build our own head, write its glTF, draw it.

The data path is audio → model → animation → **avatar** → files: this subpackage poses and draws
heads and never imports :mod:`pestalk_hf.exporters` (which writes files and may import it).
Inside it, imports run one way::

    color            srgb_to_linear / linear_to_srgb (glTF colours are linear; screens show sRGB)
    gltf_io          glTF 2.0 / GLB container reading and writing (numpy + stdlib only)
      ↑
    model            Avatar, VertexNormals, load_avatar, avatar_document
      ↑
    procedural_head  build_head, default_avatar (our own head, generated in code)
      ↑
    render           Renderer, render_frames, cavity_occlusion (moderngl EGL, headless)
      ↑
    contact_sheet    every viseme group and emotion template of avatars in one image
"""

from .color import linear_to_srgb, srgb_to_linear
from .model import (
    ARKIT,
    DEFAULT_SKIN,
    MAX_AVATAR_VERTICES,
    MAX_MORPH_TARGETS,
    ROLE_COLORS,
    Avatar,
    AvatarPart,
    MorphMesh,
    VertexNormals,
    avatar_document,
    load_avatar,
    part_role,
    target_names,
    vertex_normals,
)
from .procedural_head import build_head, default_avatar

__all__ = [
    "ARKIT",
    "DEFAULT_SKIN",
    "MAX_AVATAR_VERTICES",
    "MAX_MORPH_TARGETS",
    "ROLE_COLORS",
    "Avatar",
    "AvatarPart",
    "MorphMesh",
    "VertexNormals",
    "avatar_document",
    "build_head",
    "default_avatar",
    "linear_to_srgb",
    "load_avatar",
    "part_role",
    "srgb_to_linear",
    "target_names",
    "vertex_normals",
]
