"""`BlendshapeAnimation`: the model's output as a value object that saves itself in every format.

One object carries what an animator or a viewer needs: the (T, 52) weights in the internal ARKit
order at ``fps``, optionally the emotion probabilities and the retrieved style (library speaker,
emotion, similarity) and the input audio (16 kHz mono) so the MP4 has sound. Writers live in
:mod:`pestalk_hf.exporters` (frames drawn by :mod:`pestalk_hf.avatar.render`); every one writes atomically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import exporters
from .audio import pcm16_to_float
from .avatar import Avatar, default_avatar
from .blendshapes import ARKIT_NAMES, NUM_BLENDSHAPES

ALL_FORMATS: tuple[str, ...] = ("csv", "json", "npz", "glb", "mp4", "png")
DEFAULT_FPS = 30
AUDIO_SAMPLE_RATE = 16000


@dataclass
class BlendshapeAnimation:
    """Blendshape weights over time.

    Attributes:
        weights: (T, 52) float32 in [0, 1], columns in :attr:`names` (internal ARKit order).
        fps: frames per second (30 for PESTalk).
        names: the 52 column names; must be the internal order (converters handle other orders).
        emotion_probabilities: optional ``{emotion: probability}`` from the emotion classifier.
        style: optional ``{"speaker": str, "emotion": str, "similarity": float, ...}`` (JSON-safe).
        audio: optional mono waveform at :attr:`sample_rate`, muxed into the MP4: float32 in [-1, 1], or
            int16 PCM (``k / 32768``; what the pipeline keeps: half the memory for long clips). Other
            dtypes are converted to float32. :meth:`audio_float32` gives float32 either way.
        sample_rate: sample rate of :attr:`audio` (16 kHz in this project).
    """

    weights: np.ndarray
    fps: float = DEFAULT_FPS
    names: tuple[str, ...] = ARKIT_NAMES
    emotion_probabilities: dict[str, float] | None = None
    style: dict[str, Any] | None = None
    audio: np.ndarray | None = field(default=None, repr=False)
    sample_rate: int = AUDIO_SAMPLE_RATE

    def __post_init__(self) -> None:
        self.weights = exporters.check_weights(self.weights)
        self.names = tuple(self.names)
        if self.names != ARKIT_NAMES:
            raise ValueError("BlendshapeAnimation.names must be the 52 ARKit names in alphabetical order; "
                             "convert other orders with pestalk_hf.blendshapes first")
        if not np.isfinite(self.fps) or self.fps <= 0:
            raise ValueError(f"BlendshapeAnimation.fps must be positive, got {self.fps}")
        if self.audio is not None:
            audio = np.asarray(self.audio)
            self.audio = (audio if audio.dtype == np.int16 else audio.astype(np.float32, copy=False)).reshape(-1)
        if self.emotion_probabilities is not None:
            self.emotion_probabilities = {str(k): float(v) for k, v in self.emotion_probabilities.items()}

    # -- basic properties ----------------------------------------------------------------------

    @property
    def num_frames(self) -> int:
        return int(self.weights.shape[0])

    @property
    def duration(self) -> float:
        """Length in seconds (frames / fps)."""
        return self.num_frames / float(self.fps)

    def __len__(self) -> int:
        return self.num_frames

    def audio_float32(self) -> np.ndarray | None:
        """:attr:`audio` as float32 in [-1, 1] (a converted copy when it is held as int16 PCM)."""
        return None if self.audio is None else pcm16_to_float(self.audio)

    def weight(self, name: str) -> np.ndarray:
        """(T,) curve of one blendshape by ARKit name."""
        if name not in ARKIT_NAMES:
            raise ValueError(f"unknown blendshape {name!r}")
        return self.weights[:, ARKIT_NAMES.index(name)]

    # -- writers ---------------------------------------------------------------------------

    def to_livelink_csv(self, path: str | Path) -> Path:
        """Live Link Face CSV (Unreal/MetaHuman, Blender add-ons). Metadata is not stored."""
        exporters.write_livelink_csv(path, self.weights, self.fps)
        return Path(path)

    def to_json(self, path: str | Path) -> Path:
        """Self-describing JSON with weights rounded to 1e-6 (audio is not stored)."""
        exporters.write_json(path, self._json_payload())
        return Path(path)

    def to_npz(self, path: str | Path) -> Path:
        """Compressed NPZ of plain arrays (load with ``allow_pickle=False``), audio included."""
        arrays: dict[str, np.ndarray] = {
            "weights": self.weights,
            "fps": np.asarray(float(self.fps)),
            "names": np.asarray(self.names, dtype=str),
        }
        if self.emotion_probabilities is not None:
            arrays["emotion_names"] = np.asarray(list(self.emotion_probabilities), dtype=str)
            arrays["emotion_probabilities"] = np.asarray(list(self.emotion_probabilities.values()), dtype=np.float32)
        if self.style is not None:
            arrays["style_json"] = np.asarray(json.dumps(self.style, allow_nan=False))
        if self.audio is not None:
            arrays["audio"] = self.audio
            arrays["sample_rate"] = np.asarray(int(self.sample_rate))
        exporters.write_npz(path, arrays)
        return Path(path)

    def to_glb(self, path: str | Path, avatar: Avatar | None = None) -> Path:
        """The avatar (default: our procedural head) with this animation on its morph weights."""
        exporters.write_animation_glb(path, self.weights, self.fps, avatar or default_avatar())
        return Path(path)

    def to_mp4(self, path: str | Path, avatar: Avatar | None = None, size: int = 512) -> Path:
        """Rendered video (H.264, ``fps``) with the audio as AAC when present."""
        from .avatar.render import render_frames

        if int(self.fps) != self.fps:
            raise ValueError(f"to_mp4 needs an integer fps, got {self.fps}")
        exporters.write_mp4(path, render_frames(self.weights, avatar=avatar, size=size), fps=int(self.fps),
                  audio=self.audio, sample_rate=self.sample_rate)
        return Path(path)

    def plot(self, path: str | Path, lower_face_names: Sequence[str] | None = None) -> Path:
        """PNG of the curves: lower face (speech-driven) above, upper face (emotion) below."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from .modeling.configuration_pestalk import DEFAULT_LOWER_FACE_NAMES

        lower = set(lower_face_names or DEFAULT_LOWER_FACE_NAMES)
        t = np.arange(self.num_frames) / self.fps
        fig, axes = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True, constrained_layout=True)
        for ax, part, group in ((axes[0], "lower face", True), (axes[1], "upper face", False)):
            idx = [i for i, n in enumerate(self.names) if (n in lower) == group]
            curves = self.weights[:, idx]
            # the six most active curves get colours and a legend; the rest are grey context
            top = list(np.argsort(-np.ptp(curves, axis=0)))[:6] if len(t) else []
            for j in range(len(idx)):
                if j not in top:
                    ax.plot(t, curves[:, j], lw=0.6, color="0.6", alpha=0.5)
            for rank, j in enumerate(top):
                ax.plot(t, curves[:, j], lw=1.5, color=f"C{rank}", label=self.names[idx[j]])
            ax.set_ylabel(f"{part} ({len(idx)})")
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            ax.legend(loc="upper right", fontsize=7, ncol=3)
        axes[1].set_xlabel("time (s)")
        title = f"{self.num_frames} frames @ {self.fps:g} fps"
        if self.style:
            title += " | style: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                              for k, v in self.style.items())
        if self.emotion_probabilities:
            best = max(self.emotion_probabilities, key=self.emotion_probabilities.get)
            title += f" | emotion: {best} ({self.emotion_probabilities[best]:.2f})"
        fig.suptitle(title, fontsize=9)
        with exporters.atomic_path(path, ".png") as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)
        return Path(path)

    def save(self, out_dir: str | Path, stem: str = "animation", formats: Sequence[str] = ALL_FORMATS,
             avatar: Avatar | None = None) -> dict[str, Path]:
        """Write several formats as ``out_dir/stem.<ext>``; returns ``{format: path}``.

        ``stem`` is a file name without extension: it may not contain a path separator, be ``.``/``..``
        or empty, so every file lands inside ``out_dir``.
        """
        check_stem(stem)
        if isinstance(formats, str):
            formats = (formats,)
        unknown = [f for f in formats if f not in ALL_FORMATS]
        if unknown:
            raise ValueError(f"save: unknown formats {unknown}; choose from {ALL_FORMATS}")
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise ValueError(f"save: the output path {out} exists and is not a folder")
        out.mkdir(parents=True, exist_ok=True)
        writers = {
            "csv": lambda p: self.to_livelink_csv(p),
            "json": lambda p: self.to_json(p),
            "npz": lambda p: self.to_npz(p),
            "glb": lambda p: self.to_glb(p, avatar=avatar),
            "mp4": lambda p: self.to_mp4(p, avatar=avatar),
            "png": lambda p: self.plot(p),
        }
        return {fmt: writers[fmt](out / f"{stem}.{fmt}") for fmt in dict.fromkeys(formats)}

    # -- readers -----------------------------------------------------------------------------

    @classmethod
    def from_livelink_csv(cls, path: str | Path, fps: float = DEFAULT_FPS) -> BlendshapeAnimation:
        """Read a Live Link Face CSV (rows are consecutive frames at ``fps``)."""
        return cls(weights=exporters.read_livelink_csv(path), fps=fps)

    @classmethod
    def from_json(cls, path: str | Path) -> BlendshapeAnimation:
        """Read a file written by :meth:`to_json` (columns re-ordered by name if needed)."""
        data = json.loads(Path(path).read_text())
        if data.get("format") != exporters.JSON_FORMAT:
            raise ValueError(f"{path}: not a {exporters.JSON_FORMAT} JSON file")
        weights = np.asarray(data["weights"], dtype=np.float32).reshape(-1, len(data["names"]))
        return cls(weights=_reorder(weights, data["names"], str(path)), fps=float(data["fps"]),
                   emotion_probabilities=data.get("emotion_probabilities"), style=data.get("style"))

    @classmethod
    def from_npz(cls, path: str | Path) -> BlendshapeAnimation:
        """Read a file written by :meth:`to_npz` (no pickle)."""
        with np.load(path, allow_pickle=False) as z:
            emotions = None
            if "emotion_names" in z:
                emotions = dict(zip(z["emotion_names"].tolist(), z["emotion_probabilities"].tolist()))
            style = json.loads(str(z["style_json"])) if "style_json" in z else None
            audio = z["audio"] if "audio" in z else None
            sample_rate = int(z["sample_rate"]) if "sample_rate" in z else AUDIO_SAMPLE_RATE
            return cls(weights=_reorder(z["weights"], z["names"].tolist(), str(path)), fps=float(z["fps"]),
                       emotion_probabilities=emotions, style=style, audio=audio, sample_rate=sample_rate)

    @classmethod
    def from_glb(cls, path: str | Path, fps: float = DEFAULT_FPS,
                 animation: int | str | None = None) -> BlendshapeAnimation:
        """Read the morph-weights animation of a glTF/GLB (e.g. a Face Cap capture), resampled to ``fps``."""
        return cls(weights=exporters.read_animation_glb(path, fps=fps, animation=animation), fps=fps)

    def _json_payload(self) -> dict[str, Any]:
        return {
            "format": exporters.JSON_FORMAT,
            "version": exporters.JSON_VERSION,
            "fps": float(self.fps),
            "num_frames": self.num_frames,
            "duration": self.duration,
            "names": list(self.names),
            "weights": self.weights,  # rounded to 1e-6 and written block by block by write_json
            "emotion_probabilities": self.emotion_probabilities,
            "style": self.style,
        }


def check_stem(stem: Any) -> str:
    """A file stem for :meth:`BlendshapeAnimation.save`: a plain name, never a path."""
    if not isinstance(stem, str):
        raise TypeError(f"save: stem must be a string, got {type(stem).__name__}")
    seps = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if not stem.strip() or stem in (".", "..") or any(sep in stem for sep in seps) or "\0" in stem:
        raise ValueError(f"save: stem {stem!r} must be a plain file name (no path separators, not '.' or '..')")
    return stem


def _reorder(weights: np.ndarray, names: Sequence[str], source: str) -> np.ndarray:
    names = [str(n) for n in names]
    if sorted(names) != sorted(ARKIT_NAMES) or len(names) != NUM_BLENDSHAPES:
        raise ValueError(f"{source}: columns must be the 52 ARKit names, got {len(names)} names")
    return np.asarray(weights, dtype=np.float32)[:, [names.index(n) for n in ARKIT_NAMES]]
