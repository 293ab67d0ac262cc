"""Offscreen rendering of a posed avatar and MP4 muxing, headless and CPU-only.

Why this design: the CLI, the Space and the benchmarks all run on machines without a display or
GPU. moderngl's standalone EGL context renders with Mesa llvmpipe there; the morphing and the
per-frame normals are done with numpy (one small matmul + one sparse product), the GPU side is a
plain per-vertex Lambert + rim shader. Back faces are drawn dark red so the inside of an opened mouth reads
as a mouth. Frames go to H.264 (yuv420p) + AAC with PyAV, which bundles FFmpeg (no binary needed).
"""

from __future__ import annotations

import queue
import threading

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .avatar import Avatar, VertexNormals, default_avatar

# Lighting is per vertex (Gouraud): the meshes are dense enough that it looks like per-pixel
# shading, and on llvmpipe the fragment stage is the bottleneck, so the fragment shader only picks
# the front colour or, for back faces (the inside of an opened mouth), a dark red.
VERTEX_SHADER = """
#version 330
uniform mat4 mvp;
uniform vec3 eye;
in vec3 in_position;
in vec3 in_normal;
in vec3 in_color;
out vec3 v_front;
out vec3 v_back;
void main() {
    vec3 n = normalize(in_normal);
    vec3 view = normalize(eye - in_position);
    const vec3 key = vec3(0.3482, 0.4352, 0.8704);
    const vec3 fill = vec3(-0.7036, 0.1173, 0.7036);
    float diffuse = max(dot(n, key), 0.0) * 0.75 + max(dot(n, fill), 0.0) * 0.25;
    float facing = 1.0 - max(dot(n, view), 0.0);
    float h = pow(max(dot(n, normalize(key + view)), 0.0), 16.0);
    v_front = in_color * (0.28 + 0.72 * diffuse) + vec3(0.10 * h + 0.15 * facing * facing * facing);
    v_back = vec3(0.22, 0.06, 0.07) * (0.5 + 0.5 * abs(dot(n, view)));
    gl_Position = mvp * vec4(in_position, 1.0);
}
"""

FRAGMENT_SHADER = """
#version 330
in vec3 v_front;
in vec3 v_back;
out vec4 f_color;
void main() {
    f_color = vec4(gl_FrontFacing ? v_front : v_back, 1.0);
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


class Renderer:
    """Render an :class:`Avatar` posed by (52,) weight vectors to RGB uint8 images.

    The camera looks at the region the morph targets move (:meth:`Avatar.face_region`) from the
    front (+Z), so any ARKit head is framed on its face whatever its units are.
    """

    def __init__(self, avatar: Avatar | None = None, size: int | tuple[int, int] = 512,
                 background: tuple[float, float, float] = (0.93, 0.94, 0.96), fov_deg: float = 24.0,
                 samples: int = 1) -> None:
        self.avatar = avatar if avatar is not None else default_avatar()
        self.width, self.height = (size, size) if isinstance(size, int) else size
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"Renderer: size must be positive, got {size}")
        self.background = background
        self.ctx = create_context()
        self._normals = VertexNormals(self.avatar.faces, self.avatar.num_vertices, self.avatar.vertices,
                                      self.avatar.moving_vertices)
        self.prog = self.ctx.program(vertex_shader=VERTEX_SHADER, fragment_shader=FRAGMENT_SHADER)
        verts = self.avatar.vertices.astype("f4")
        colors = self.avatar.colors if self.avatar.colors is not None else np.full_like(verts, 0.8)
        self.vbo_pos = self.ctx.buffer(verts.tobytes(), dynamic=True)
        self.vbo_nrm = self.ctx.buffer(self._normals(verts).tobytes(), dynamic=True)
        self.vbo_col = self.ctx.buffer(np.ascontiguousarray(colors, dtype="f4").tobytes())
        self.ibo = self.ctx.buffer(self.avatar.faces.astype("i4").tobytes())
        self.vao = self.ctx.vertex_array(self.prog, [(self.vbo_pos, "3f", "in_position"),
                                                     (self.vbo_nrm, "3f", "in_normal"),
                                                     (self.vbo_col, "3f", "in_color")], self.ibo)
        samples = min(samples, self.ctx.max_samples)
        self.msaa = self.ctx.framebuffer(
            color_attachments=[self.ctx.renderbuffer((self.width, self.height), 4, samples=samples)],
            depth_attachment=self.ctx.depth_renderbuffer((self.width, self.height), samples=samples),
        ) if samples > 1 else None
        self.fbo = self.ctx.simple_framebuffer((self.width, self.height), components=4)
        centre, radius = self.avatar.face_region()
        distance = radius / np.tan(np.radians(fov_deg) / 2) * 1.2  # a little margin around the face
        eye = centre + np.array([0.0, 0.0, distance], dtype=np.float32)
        view = _look_at(eye.astype(np.float64), centre.astype(np.float64), np.array([0.0, 1.0, 0.0]))
        proj = _perspective(fov_deg, self.width / self.height, distance * 0.05, distance + radius * 20)
        self.prog["mvp"].write((proj @ view).T.astype("f4").tobytes())
        self.prog["eye"].value = tuple(float(v) for v in eye)

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
        target.clear(*self.background, 1.0, depth=1.0)
        self.vao.render()
        if self.msaa is not None:
            self.ctx.copy_framebuffer(self.fbo, self.msaa)
        data = self.fbo.read(components=3, alignment=1)
        return np.frombuffer(data, dtype=np.uint8).reshape(self.height, self.width, 3)[::-1].copy()

    def close(self) -> None:
        """Free the GL objects and the context."""
        self.ctx.release()

    def __enter__(self) -> Renderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def render_frames(weights: np.ndarray, avatar: Avatar | None = None, size: int = 512) -> Iterator[np.ndarray]:
    """Yield one (size, size, 3) uint8 frame per row of (T, 52) ``weights``."""
    w = np.asarray(weights, dtype=np.float32)
    if w.ndim != 2 or w.shape[1] != 52:
        raise ValueError(f"render_frames: weights must be (T, 52), got {w.shape}")
    with Renderer(avatar, size=size) as renderer:
        for row in w:
            yield renderer.render(row)


def write_mp4(path: str | Path, frames: Iterable[np.ndarray], fps: int = 30, audio: np.ndarray | None = None,
              sample_rate: int = 16000, crf: int = 20) -> None:
    """Encode RGB frames as H.264 (yuv420p, ``fps``) plus optional mono float audio as AAC.

    Written to a temporary file in the destination folder and renamed when complete.
    """
    import av

    from .exporters import atomic_path

    if fps <= 0 or int(fps) != fps:
        raise ValueError(f"write_mp4: fps must be a positive integer, got {fps}")
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError("write_mp4: no frames")
    h, w = np.asarray(first).shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"write_mp4: H.264 yuv420p needs even sizes, got {w}x{h}")
    with atomic_path(path, ".mp4") as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            video = container.add_stream("libx264", rate=int(fps))
            video.width, video.height, video.pix_fmt = w, h, "yuv420p"
            video.options = {"crf": str(crf), "preset": "veryfast"}
            astream = container.add_stream("aac", rate=int(sample_rate), layout="mono") if audio is not None else None
            # Encode on a worker thread while the next frame renders: x264 and llvmpipe release the GIL,
            # so the two overlap on two cores.
            pending: queue.Queue = queue.Queue(maxsize=8)
            errors: list[BaseException] = []

            def encode() -> None:
                try:
                    while (item := pending.get()) is not None:
                        container.mux(video.encode(item))
                except BaseException as err:  # re-raised in the caller's thread
                    errors.append(err)
                    while pending.get() is not None:
                        pass

            worker = threading.Thread(target=encode, daemon=True)
            worker.start()
            try:
                for count, frame in enumerate(_chain(first, it)):
                    img = np.ascontiguousarray(frame, dtype=np.uint8)
                    if img.shape != (h, w, 3):
                        raise ValueError(f"write_mp4: every frame must be ({h}, {w}, 3) uint8, got {img.shape}")
                    vf = av.VideoFrame.from_ndarray(img, format="rgb24")
                    vf.pts = count
                    pending.put(vf)
            finally:
                pending.put(None)
                worker.join()
            if errors:
                raise errors[0]
            container.mux(video.encode())
            if astream is not None:
                samples = np.asarray(audio, dtype=np.float32).reshape(-1)
                chunk = 1024
                for start in range(0, samples.size, chunk):
                    af = av.AudioFrame.from_ndarray(samples[None, start:start + chunk], format="fltp", layout="mono")
                    af.sample_rate = int(sample_rate)
                    af.pts = start
                    container.mux(astream.encode(af))
                container.mux(astream.encode())


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest
