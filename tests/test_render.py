"""Headless rendering (moderngl EGL / llvmpipe) and MP4 muxing (PyAV)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pestalk_hf.animation import BlendshapeAnimation
from pestalk_hf.avatar import ARKIT, load_avatar

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
SIZE = 192


@pytest.fixture(scope="module")
def renderer():
    from pestalk_hf.avatar.render import Renderer

    try:
        r = Renderer(size=SIZE)
    except RuntimeError as exc:  # no EGL/OpenGL on this machine
        pytest.skip(f"offscreen OpenGL unavailable: {exc}")
    yield r
    r.close()


def _pose(**weights: float) -> np.ndarray:
    w = np.zeros(52, np.float32)
    for name, value in weights.items():
        w[ARKIT.index(name)] = value
    return w


def _foreground(img: np.ndarray, background: np.ndarray) -> np.ndarray:
    return np.abs(img.astype(int) - background[None, None]).sum(axis=2) > 30


def _diff_rows_cols(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    diff = np.abs(a.astype(int) - b.astype(int)).sum(axis=2) > 40
    return np.nonzero(diff)


def test_frame_is_not_blank(renderer):
    img = renderer.render(None)
    assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8
    bg = img[0, 0].astype(int)
    fg = _foreground(img, bg)
    assert 0.1 < fg.mean() < 0.9  # a head, framed, with background around it
    assert img[fg].std() > 5  # shaded, not a flat silhouette


def test_jaw_open_changes_the_mouth_region(renderer):
    rest = renderer.render(_pose())
    rows, cols = _diff_rows_cols(rest, renderer.render(_pose(jawOpen=1.0)))
    fg_rows = np.nonzero(_foreground(rest, rest[0, 0].astype(int)))[0]
    top, bottom = fg_rows.min(), fg_rows.max()
    assert len(rows) > 0.002 * SIZE * SIZE
    # changes sit in the lower part of the head, around the centre line
    assert np.median(rows) > top + 0.55 * (bottom - top)
    assert abs(np.median(cols) - SIZE / 2) < 0.1 * SIZE


def test_blink_left_changes_the_right_of_the_image_upper_face(renderer):
    rest = renderer.render(_pose())
    rows, cols = _diff_rows_cols(rest, renderer.render(_pose(eyeBlinkLeft=1.0)))
    assert len(rows) > 0
    assert np.median(cols) > SIZE / 2  # character's left = image right (camera in front)
    fg_rows = np.nonzero(_foreground(rest, rest[0, 0].astype(int)))[0]
    assert np.median(rows) < fg_rows.min() + 0.55 * (fg_rows.max() - fg_rows.min())


def test_ict_avatar_renders_and_moves(renderer):
    path = ASSETS / "avatars" / "ict_face_arkit52.glb"
    if not path.is_file():
        pytest.skip("needs ../shared/assets/avatars/ict_face_arkit52.glb")
    from pestalk_hf.avatar.render import render_frames

    frames = list(render_frames(np.stack([_pose(), _pose(jawOpen=1.0)]), avatar=load_avatar(path), size=128))
    assert len(frames) == 2
    rows, _ = _diff_rows_cols(frames[0], frames[1])
    assert len(rows) > 50


def test_render_rejects_bad_weights(renderer):
    with pytest.raises(ValueError):
        renderer.render(np.zeros(51))


def test_mp4_has_h264_and_aac_with_the_right_frames(tmp_path, renderer):
    import av

    frames = 15
    sr = 16000
    audio = (0.2 * np.sin(2 * np.pi * 220 * np.arange(frames * sr // 30) / sr)).astype(np.float32)
    w = np.zeros((frames, 52), np.float32)
    w[:, ARKIT.index("jawOpen")] = np.linspace(0, 1, frames)
    path = BlendshapeAnimation(w, audio=audio).to_mp4(tmp_path / "clip.mp4", size=128)
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio_stream = container.streams.audio[0]
        assert video.codec_context.name == "h264" and audio_stream.codec_context.name == "aac"
        assert video.average_rate == 30 and video.codec_context.pix_fmt == "yuv420p"
        assert (video.codec_context.width, video.codec_context.height) == (128, 128)
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == frames
    # the jaw opens over the clip, so first and last frames differ
    assert np.abs(decoded[0].astype(int) - decoded[-1].astype(int)).mean() > 0.2
    with av.open(str(path)) as container:
        samples = sum(f.samples for f in container.decode(audio=0))
    assert abs(samples - len(audio)) < 2048  # AAC priming/padding only
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]  # no temp file left


def test_mp4_rejects_odd_sizes(tmp_path):
    from pestalk_hf.exporters import write_mp4

    with pytest.raises(ValueError, match="even"):
        write_mp4(tmp_path / "x.mp4", [np.zeros((9, 8, 3), np.uint8)])
    assert not (tmp_path / "x.mp4").exists()
