"""A contact sheet: one avatar drawn in every viseme group and emotion template, as one image.

Why: a head that passes the morph-target tests can still look wrong (a bright mouth corner, teeth
that never show, eyes that do not close). Looking at every characteristic pose side by side is the
check a person does; this module makes that one command (``hub_scripts/contact_sheet.py``).

The poses come from the tables EmoStyle-Synth labels its data with, so the sheet shows the shapes
the model learns: the lower-face viseme targets (:data:`pestalk_hf.data.synth.VISEME_TARGETS`) and
the eight emotion prototypes (:data:`pestalk_hf.data.synth.EMOTION_PROTOTYPES`), plus a few rig
checks (jaw fully open, tongue out, both eyes blinked).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..blendshapes import ARKIT_INDEX, NUM_BLENDSHAPES
from .model import Avatar
from .render import Renderer

#: Rig checks drawn before the visemes: (label, {ARKit name: weight}).
RIG_POSES: tuple[tuple[str, dict[str, float]], ...] = (
    ("rest", {}),
    ("jaw open", {"jawOpen": 1.0}),
    ("tongue out", {"jawOpen": 0.45, "tongueOut": 1.0}),
    ("blink", {"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0}),
    ("smile", {"mouthSmileLeft": 0.8, "mouthSmileRight": 0.8, "cheekSquintLeft": 0.4, "cheekSquintRight": 0.4}),
)

# Readable names of the viseme groups (keys of synth.VISEME_TARGETS).
_VISEME_LABELS = {
    "PP": "/m b p/", "FF": "/f v/", "TH": "/th/", "DD": "/t d n l/", "KK": "/k g/", "CH": "/sh ch/",
    "SS": "/s z/", "RR": "/r/", "W": "/w/", "Y": "/y/", "H": "/h/", "AA": "/a/ (father)",
    "AE": "/ae/ (cat)", "AH": "/uh/ (cup)", "O": "/o/", "E": "/e/ (bed)", "I": "/i/ (see)",
    "@": "/schwa/", "ER": "/er/", "U": "/u/ (boot)",
}


def weight_vector(shapes: Mapping[str, float]) -> np.ndarray:
    """{ARKit name: weight} → (52,) float32 in internal order (unknown names raise KeyError)."""
    w = np.zeros(NUM_BLENDSHAPES, dtype=np.float32)
    for name, value in shapes.items():
        w[ARKIT_INDEX[name]] = value
    return w


def sheet_poses() -> list[tuple[str, np.ndarray]]:
    """(label, (52,) weights) for every tile: rig checks, the viseme groups, the 8 emotions."""
    from ..data.synth import EMOTION_PROTOTYPES, VISEME_TARGETS

    poses = [(label, weight_vector(shapes)) for label, shapes in RIG_POSES]
    poses += [(_VISEME_LABELS.get(k, k), weight_vector(v)) for k, v in VISEME_TARGETS.items() if k != "rest"]
    poses += [(emotion, weight_vector(v)) for emotion, v in EMOTION_PROTOTYPES.items()]
    return poses


def render_tiles(avatar: Avatar, poses: Sequence[tuple[str, np.ndarray]], tile: int = 256,
                 samples: int = 4) -> list[np.ndarray]:
    """One (tile, tile, 3) uint8 image per pose."""
    with Renderer(avatar, size=tile, samples=samples) as renderer:
        return [renderer.render(w) for _, w in poses]


def contact_sheet(avatars: Sequence[Avatar], tile: int = 256, columns: int = 11,
                  poses: Sequence[tuple[str, np.ndarray]] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 grid: for each avatar a title band then its poses, ``columns`` per row.

    Each tile carries its pose label in its top-left corner.
    """
    from PIL import Image, ImageDraw

    if not avatars:
        raise ValueError("contact_sheet: no avatars")
    poses = list(poses) if poses is not None else sheet_poses()
    rows_per = -(-len(poses) // columns)
    band = 28
    width = columns * tile
    height = len(avatars) * (band + rows_per * tile)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    y = 0
    for avatar in avatars:
        draw.text((8, y + 8), f"{avatar.name}  ({avatar.num_vertices} vertices, "
                              f"{len(avatar.names_present)}/52 ARKit shapes)", fill=(0, 0, 0))
        y += band
        for k, ((label, _), img) in enumerate(zip(poses, render_tiles(avatar, poses, tile))):
            x0, y0 = (k % columns) * tile, y + (k // columns) * tile
            sheet.paste(Image.fromarray(img), (x0, y0))
            draw.rectangle((x0 + 2, y0 + 2, x0 + 8 + 6 * len(label), y0 + 16), fill=(255, 255, 255))
            draw.text((x0 + 5, y0 + 3), label, fill=(0, 0, 0))
        y += rows_per * tile
    return np.asarray(sheet)
