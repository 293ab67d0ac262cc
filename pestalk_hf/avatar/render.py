"""Offscreen rendering of a posed avatar, headless and CPU-only (MP4 muxing: :func:`pestalk_hf.exporters.write_mp4`).

Why this design: the CLI, the Space and the benchmarks all run on machines without a display or
GPU. moderngl's standalone EGL context renders with Mesa llvmpipe there; the morphing and the
per-frame normals are done with numpy (one small matmul + one sparse product), the GPU side is a
soft per-vertex shader (hemisphere ambient, wrapped key, fill, gloss per material). Back faces are
drawn dark red so the inside of a head without a mouth cavity still reads as a mouth.

Colour: material colours are linear RGB (glTF's ``baseColorFactor × COLOR_0``, :attr:`Avatar.colors`),
shading is done in linear light into a half-float framebuffer (so multisampling also averages linear
light), and the result is encoded to sRGB once, on read-back, with :func:`.color.linear_to_srgb`;
three.js (``outputColorSpace = SRGBColorSpace``) and Blender do the same, so a GLB looks alike in
our MP4, the Space's viewer and those tools. ``background`` is an sRGB colour as shown.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..blendshapes import ARKIT_NAMES
from .color import linear_to_srgb, srgb_to_linear
from .model import Avatar, VertexNormals
from .procedural_head import default_avatar

# Lighting is per vertex (Gouraud): the meshes are dense enough that it looks like per-pixel
# shading, and on llvmpipe the fragment stage is the bottleneck, so the fragment shader only picks
# the front colour or, for back faces (the inside of a head without a mouth cavity), a dark red.
# Soft studio light: a sky/ground hemisphere for the ambient, a wrapped key light (no hard
# terminator on the cheeks) and a fill from the other side; the highlight's strength is the part's
# gloss (1 − roughness), so eyes and teeth shine and skin stays matte. All terms are linear light:
# a face turned to the camera gets ≈ 0.94 × its colour (it shows the material's colour as chosen),
# the side away from the key ≈ 0.3 (≈ 0.58 once encoded to sRGB). ``unlit`` = 1 draws the bare
# material colours (what KHR_materials_unlit would show; the check that colours are carried right).
# ``back_color`` (linear) is :data:`BACK_FACE_SRGB` decoded.
VERTEX_SHADER = """
#version 330
uniform mat4 mvp;
uniform vec3 eye;
uniform float unlit;
uniform vec3 back_color;
in vec3 in_position;
in vec3 in_normal;
in vec4 in_color;
out vec3 v_front;
out vec3 v_back;
void main() {
    vec3 n = normalize(in_normal);
    vec3 view = normalize(eye - in_position);
    const vec3 key = vec3(0.3482, 0.4352, 0.8704);
    const vec3 fill = vec3(-0.7036, 0.1173, 0.7036);
    float hemi = mix(0.55, 1.0, 0.5 + 0.5 * n.y);
    float wrap_key = max((dot(n, key) + 0.35) / 1.35, 0.0);
    float diffuse = 0.78 * wrap_key + 0.20 * max(dot(n, fill), 0.0);
    float facing = 1.0 - max(dot(n, view), 0.0);
    float h = pow(max(dot(n, normalize(key + view)), 0.0), mix(12.0, 60.0, in_color.a));
    vec3 base = in_color.rgb;
    vec3 lit = base * (0.12 * hemi + diffuse) + vec3((0.02 + 0.3 * in_color.a) * h)
               + base * 0.06 * facing * facing;
    v_front = mix(lit, base, unlit);
    v_back = back_color * (0.5 + 0.5 * abs(dot(n, view)));
    gl_Position = mvp * vec4(in_position, 1.0);
}
"""

#: sRGB colour of back faces: the inside of a head without a mouth cavity reads as a dark mouth.
BACK_FACE_SRGB = (0.16, 0.05, 0.06)

FRAGMENT_SHADER = """
#version 330
in vec3 v_front;
in vec3 v_back;
out vec4 f_color;
void main() {
    f_color = vec4(gl_FrontFacing ? v_front : v_back, 1.0);
}
"""


# Depth pass for the occlusion bake: NDC depth into a float texture.
DEPTH_VERTEX_SHADER = """
#version 330
uniform mat4 mvp;
in vec3 in_position;
out float v_depth;
void main() {
    gl_Position = mvp * vec4(in_position, 1.0);
    v_depth = gl_Position.z;
}
"""
DEPTH_FRAGMENT_SHADER = """
#version 330
in float v_depth;
out float f_depth;
void main() {
    f_depth = v_depth;
}
"""


def _look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    f = target - eye
    f /= np.linalg.norm(f)
    s = np.cross(f, up)
    s /= np.linalg.norm(s)
    u = np.cross(s, f)
    m = np.eye(4)
    m[0, :3], m[1, :3], m[2, :3] = s, u, -f
    m[:3, 3] = -m[:3, :3] @ eye
    return m


def _perspective(fov_y_deg: float, aspect: float, near: float, far: float) -> np.ndarray:
    f = 1.0 / np.tan(np.radians(fov_y_deg) / 2)
    m = np.zeros((4, 4))
    m[0, 0], m[1, 1] = f / aspect, f
    m[2, 2] = (far + near) / (near - far)
    m[2, 3] = 2 * far * near / (near - far)
    m[3, 2] = -1.0
    return m


def create_context() -> Any:
    """A headless moderngl context: EGL (Mesa llvmpipe on CPU machines), else the default backend."""
    import moderngl

    try:
        return moderngl.create_standalone_context(backend="egl")
    except Exception as egl_error:  # noqa: BLE001 - fall back, report both if that fails too
        try:
            return moderngl.create_standalone_context()
        except Exception as exc:
            raise RuntimeError(f"no offscreen OpenGL context (EGL: {egl_error}; default: {exc}); "
                               "install Mesa EGL (libegl1, libgl1-mesa-dri)") from exc


def _sphere_directions(n: int) -> np.ndarray:
    """(n, 3) unit vectors spread evenly over the sphere (Fibonacci lattice; deterministic)."""
    k = np.arange(n) + 0.5
    polar = np.arccos(1 - 2 * k / n)
    azimuth = np.pi * (1 + 5 ** 0.5) * k
    return np.stack([np.sin(polar) * np.cos(azimuth), np.cos(polar), np.sin(polar) * np.sin(azimuth)], axis=1)


def cavity_occlusion(ctx: Any, avatar: Avatar, weights: np.ndarray, directions: int = 48,
                     resolution: int = 160) -> np.ndarray:
    """(V,) ambient visibility in [0, 1] of every vertex of ``avatar`` posed by (52,) ``weights``.

    Why: most rigs (facecap, ICT) model the inside of the mouth as part of the skin mesh and give it
    the skin's colour, so an open mouth would be drawn pink and lit inside. Baking ambient occlusion
    once (with the jaw open, so the mouth's inside is what it is when seen) darkens it, and the
    nostrils and ears a little, on any head, with no per-frame cost. Visibility is the cosine-weighted
    share of ``directions`` (an even spread over the sphere, the vertex's own hemisphere counted)
    from which the vertex is not hidden, tested against an orthographic depth map per direction.
    """
    verts = np.ascontiguousarray(avatar.pose(np.clip(weights, 0.0, 1.0)), dtype="f4")
    normals = VertexNormals(avatar.faces, avatar.num_vertices)(verts)
    lo, hi = verts.min(axis=0), verts.max(axis=0)
    centre, radius = (lo + hi) / 2, max(float(np.linalg.norm(hi - lo) / 2), 1e-6)
    prog = ctx.program(vertex_shader=DEPTH_VERTEX_SHADER, fragment_shader=DEPTH_FRAGMENT_SHADER)
    vbo = ctx.buffer(verts.tobytes())
    ibo = ctx.buffer(avatar.faces.astype("i4").tobytes())
    vao = ctx.vertex_array(prog, [(vbo, "3f", "in_position")], ibo)
    tex = ctx.texture((resolution, resolution), 1, dtype="f4")
    depth = ctx.depth_renderbuffer((resolution, resolution))
    fbo = ctx.framebuffer(color_attachments=[tex], depth_attachment=depth)
    ortho = np.diag([1 / radius, 1 / radius, -2 / (3 * radius), 1.0])
    ortho[2, 3] = -(3.5 * radius + 0.5 * radius) / (3 * radius)  # depth range [0.5 r, 3.5 r] from the eye
    homog = np.concatenate([verts, np.ones((len(verts), 1), np.float32)], axis=1).astype(np.float64)
    bias = 3.0 / resolution  # ≈ 2 texels of world size, in NDC depth (steep slopes, no self-shadowing)
    seen = np.zeros(len(verts))
    total = np.zeros(len(verts))
    try:
        fbo.use()
        ctx.enable(ctx.DEPTH_TEST)
        ctx.disable(ctx.CULL_FACE)
        for d in _sphere_directions(directions):
            up = np.array([0.0, 0.0, 1.0]) if abs(d[1]) > 0.9 else np.array([0.0, 1.0, 0.0])
            mvp = ortho @ _look_at(centre + 2 * radius * d, centre.astype(np.float64), up)
            prog["mvp"].write(mvp.T.astype("f4").tobytes())
            fbo.clear(1.0e9, depth=1.0)
            vao.render()
            stored = np.frombuffer(tex.read(), dtype="f4").reshape(resolution, resolution)
            ndc = homog @ mvp.T
            col = np.clip(((ndc[:, 0] + 1) / 2 * resolution).astype(int), 0, resolution - 1)
            row = np.clip(((ndc[:, 1] + 1) / 2 * resolution).astype(int), 0, resolution - 1)
            weight = np.clip(normals @ d, 0.0, None)
            seen += weight * (ndc[:, 2] <= stored[row, col] + bias)
            total += weight
    finally:
        for obj in (vao, vbo, ibo, fbo, tex, depth, prog):
            obj.release()
    return (seen / np.maximum(total, 1e-9)).astype(np.float32)


def _framing(avatar: Avatar, aspect: float) -> tuple[np.ndarray, float, float]:
    """(centre, radius, half-height of the view at the centre) that frames the face, mouth included.

    The box of what the morph targets move (:meth:`Avatar.face_box`: brows to chin) fits the
    view with 30 % margin, a little below centre (the jaw opens downwards), so the mouth is large
    in the frame whatever the head's units and proportions; the camera looks from the front.
    """
    lo, hi = avatar.face_box()
    centre, radius = avatar.face_region()
    # the box is measured at rest: the margin leaves room for an open jaw below and the forehead above
    half_h = max((hi[1] - lo[1]) / 2, (hi[0] - lo[0]) / 2 / aspect) * 1.3
    centre[1] -= 0.05 * (hi[1] - lo[1])
    return centre, radius, float(half_h)


class Renderer:
    """Render an :class:`Avatar` posed by (52,) weight vectors to RGB uint8 images.

    The camera looks at the region the morph targets move (:func:`_framing`) from the front (+Z),
    so any ARKit head is framed on its face, mouth included, whatever its units are. Each vertex
    has its part's own colour (:attr:`Avatar.colors`, linear, from the asset's materials) and gloss.
    ``background`` is an sRGB colour; ``unlit=True`` draws the bare material colours, no lighting.
    """

    def __init__(self, avatar: Avatar | None = None, size: int | tuple[int, int] = 512,
                 background: tuple[float, float, float] = (0.93, 0.94, 0.96), fov_deg: float = 24.0,
                 samples: int = 1, unlit: bool = False) -> None:
        self.avatar = avatar if avatar is not None else default_avatar()
        self.width, self.height = (size, size) if isinstance(size, int) else size
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"Renderer: size must be positive, got {size}")
        self.background = background
        self._clear = tuple(float(c) for c in srgb_to_linear(background))  # the framebuffer holds linear light
        self.ctx = create_context()
        self._normals = VertexNormals(self.avatar.faces, self.avatar.num_vertices, self.avatar.vertices,
                                      self.avatar.moving_vertices)
        self.prog = self.ctx.program(vertex_shader=VERTEX_SHADER, fragment_shader=FRAGMENT_SHADER)
        verts = self.avatar.vertices.astype("f4")
        colors = (self.avatar.colors if self.avatar.colors is not None
                  else np.full_like(verts, srgb_to_linear(0.8)))  # light grey as shown
        colors = self._shade_cavities(colors)
        rgba = np.concatenate([colors, self.avatar.gloss()[:, None]], axis=1)  # each part's own colour + gloss
        self.vbo_pos = self.ctx.buffer(verts.tobytes(), dynamic=True)
        self.vbo_nrm = self.ctx.buffer(self._normals(verts).tobytes(), dynamic=True)
        self.vbo_col = self.ctx.buffer(np.ascontiguousarray(rgba, dtype="f4").tobytes())
        self.ibo = self.ctx.buffer(self.avatar.faces.astype("i4").tobytes())
        self.vao = self.ctx.vertex_array(self.prog, [(self.vbo_pos, "3f", "in_position"),
                                                     (self.vbo_nrm, "3f", "in_normal"),
                                                     (self.vbo_col, "4f", "in_color")], self.ibo)
        self.prog["unlit"].value = 1.0 if unlit else 0.0
        self.prog["back_color"].value = tuple(float(c) for c in srgb_to_linear(BACK_FACE_SRGB))
        # half-float colour buffers: linear light keeps 11 significant bits until it is encoded
        # (< 0.1 of an 8-bit sRGB code; 8-bit linear would band in the darks, where sRGB spends
        # most of its codes), at half the read-back of 32-bit floats
        size2 = (self.width, self.height)
        samples = min(samples, self.ctx.max_samples)
        self.msaa = self.ctx.framebuffer(
            color_attachments=[self.ctx.renderbuffer(size2, 4, samples=samples, dtype="f2")],
            depth_attachment=self.ctx.depth_renderbuffer(size2, samples=samples),
        ) if samples > 1 else None
        self.fbo = self.ctx.framebuffer(color_attachments=[self.ctx.renderbuffer(size2, 4, dtype="f2")],
                                        depth_attachment=self.ctx.depth_renderbuffer(size2))
        centre, radius, half_h = _framing(self.avatar, self.width / self.height)
        distance = half_h / np.tan(np.radians(fov_deg) / 2)
        eye = centre + np.array([0.0, 0.0, distance], dtype=np.float32)
        view = _look_at(eye.astype(np.float64), centre.astype(np.float64), np.array([0.0, 1.0, 0.0]))
        proj = _perspective(fov_deg, self.width / self.height, distance * 0.05, distance + radius * 20)
        self.prog["mvp"].write((proj @ view).T.astype("f4").tobytes())
        self.prog["eye"].value = tuple(float(v) for v in eye)

    def _shade_cavities(self, colors: np.ndarray) -> np.ndarray:
        """Darken the skin where :func:`cavity_occlusion` finds it hidden (a mouth's inside, nostrils).

        Not for a head that models its mouth cavity as a part of its own (ours: already dark). The
        darkening curve was chosen by eye as a factor on the shown (sRGB) colour; the linear
        colours are scaled by its linear value, which looks the same (a product of sRGB values
        decodes to nearly the product of their linear values).
        """
        roles = {p.role for p in self.avatar.parts}
        skin = [p for p in self.avatar.parts if p.role == "skin"] or ([] if self.avatar.parts else None)
        if skin == [] or "mouth" in roles or "jawOpen" not in self.avatar.names_present:
            return colors
        weights = np.zeros(52, dtype=np.float32)
        weights[ARKIT_NAMES.index("jawOpen")] = 1.0
        seen = cavity_occlusion(self.ctx, self.avatar, weights)
        shade = srgb_to_linear(0.25 + 0.75 * np.clip((seen - 0.05) / 0.45, 0.0, 1.0) ** 1.5)
        out = np.array(colors, dtype=np.float32)
        for v0, v1 in ([p.vertices for p in skin] if skin else [(0, len(out))]):
            out[v0:v1] *= shade[v0:v1, None]
        return out

    def render(self, weights: np.ndarray | None = None) -> np.ndarray:
        """(52,) weights (None = neutral) → (H, W, 3) uint8 RGB image."""
        w = np.zeros(52, dtype=np.float32) if weights is None else np.asarray(weights, dtype=np.float32)
        if w.shape != (52,):
            raise ValueError(f"Renderer.render: weights must have shape (52,), got {w.shape}")
        verts = self.avatar.pose(np.clip(w, 0.0, 1.0)).astype("f4", copy=False)
        self.vbo_pos.write(verts.tobytes())
        self.vbo_nrm.write(self._normals(verts).tobytes())
        target = self.msaa or self.fbo
        target.use()
        self.ctx.enable(self.ctx.DEPTH_TEST)
        self.ctx.disable(self.ctx.CULL_FACE)
        target.clear(*self._clear, 1.0, depth=1.0)
        self.vao.render()
        if self.msaa is not None:
            self.ctx.copy_framebuffer(self.fbo, self.msaa)
        data = self.fbo.read(components=3, alignment=1, dtype="f2")
        linear = np.frombuffer(data, dtype=np.float16).reshape(self.height, self.width, 3)[::-1]
        return encode_srgb8(linear)

    def close(self) -> None:
        """Free the GL objects and the context."""
        self.ctx.release()

    def __enter__(self) -> Renderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Linear → 8-bit sRGB by table: 2^14 linear steps keep every output within one code of the exact
# curve (the steepest part, near black, is 12.92 × 255 / 2^14 ≈ 0.2 codes per step) and cost a few
# ms per 512² frame instead of a float power per channel.
_LUT_STEPS = 1 << 14
_SRGB8_LUT = np.round(linear_to_srgb(np.linspace(0.0, 1.0, _LUT_STEPS + 1)) * 255).astype(np.uint8)


def encode_srgb8(linear: np.ndarray) -> np.ndarray:
    """(…, 3) linear light (clipped to [0, 1]) → uint8 sRGB (:func:`.color.linear_to_srgb`, tabulated)."""
    idx = np.multiply(linear, _LUT_STEPS, dtype=np.float32)
    idx += 0.5
    np.clip(idx, 0, _LUT_STEPS, out=idx)
    return np.take(_SRGB8_LUT, idx.astype(np.uint16))


def render_frames(weights: np.ndarray, avatar: Avatar | None = None, size: int = 512) -> Iterator[np.ndarray]:
    """Yield one (size, size, 3) uint8 frame per row of (T, 52) ``weights``."""
    w = np.asarray(weights, dtype=np.float32)
    if w.ndim != 2 or w.shape[1] != 52:
        raise ValueError(f"render_frames: weights must be (T, 52), got {w.shape}")
    with Renderer(avatar, size=size) as renderer:
        for row in w:
            yield renderer.render(row)
