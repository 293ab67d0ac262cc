"""Per-frame ARKit blendshape labels from MediaPipe Face Landmarker (Tasks API, VIDEO mode).

MediaPipe's blendshape model outputs 52 scores: ``_neutral`` plus 51 ARKit names (no ``tongueOut``).
:func:`pestalk_hf.blendshapes.from_mediapipe` (the project's one conversion table) maps them to the 52
ARKit names in alphabetical order with ``tongueOut = 0``, as the paper's 3D-EmoStyle labels do.

VIDEO mode (not IMAGE) is used because it tracks the face between frames: labels are smoother and
the face detector only runs when tracking is lost. A fresh landmarker is created per clip because
VIDEO mode requires strictly increasing timestamps and its tracking state must not leak across clips.
When several faces are found, the largest (landmark bounding-box area in pixels) is kept: in
talking-head footage the speaker is the dominant face; background faces are smaller.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from ..blendshapes import MEDIAPIPE_NAMES, from_mediapipe
from ..modeling.configuration_pestalk import ARKIT_BLENDSHAPE_NAMES
from .video_io import VideoFrame

@dataclass
class FrameLabels:
    """Labels for the frames of one clip.

    ``times`` (N,) seconds; ``blendshapes`` (N, 52) float32, NaN rows where no face was found;
    ``num_faces`` (N,) how many faces MediaPipe returned per frame.
    """

    times: np.ndarray
    blendshapes: np.ndarray
    num_faces: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        """(N,) bool: a face was found in this frame."""
        return ~np.isnan(self.blendshapes[:, 0])


class FaceBlendshapeLabeler:
    """Runs MediaPipe Face Landmarker over a clip's frames and returns ARKit blendshape tracks.

    ``max_faces`` > 1 lets the largest face win when several are visible (it costs nothing measurable
    while one face is tracked: detection only runs when tracking is lost).
    """

    def __init__(
        self,
        model_path: str | Path,
        max_faces: int = 2,
        min_face_detection_confidence: float = 0.5,
        min_face_presence_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
    ) -> None:
        model_path = Path(model_path)
        if not model_path.is_file():
            raise ValueError(f"MediaPipe face landmarker bundle not found: {model_path} (face_landmarker.task)")
        if max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {max_faces}")
        self.model_path = model_path
        self.max_faces = max_faces
        self.confidences = (min_face_detection_confidence, min_face_presence_confidence, min_tracking_confidence)

    def _create(self):  # -> vision.FaceLandmarker (import kept local: mediapipe is slow to import)
        from mediapipe.tasks.python import BaseOptions, vision

        det, pres, track = self.confidences
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=vision.RunningMode.VIDEO,
            num_faces=self.max_faces,
            min_face_detection_confidence=det,
            min_face_presence_confidence=pres,
            min_tracking_confidence=track,
            output_face_blendshapes=True,
        )
        return vision.FaceLandmarker.create_from_options(options)

    def label(self, frames: Iterable[VideoFrame]) -> FrameLabels:
        """Label every frame (in decode order). Frames must come from one clip."""
        import mediapipe as mp

        times: list[float] = []
        rows: list[np.ndarray] = []
        counts: list[int] = []
        nan_row = np.full(len(ARKIT_BLENDSHAPE_NAMES), np.nan, dtype=np.float32)
        last_ms = -1
        with self._create() as landmarker:
            for frame in frames:
                # VIDEO mode needs strictly increasing integer milliseconds, even for broken/duplicate pts.
                ms = max(last_ms + 1, int(round(frame.time * 1000)))
                last_ms = ms
                image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame.rgb))
                result = landmarker.detect_for_video(image, ms)
                times.append(frame.time)
                counts.append(len(result.face_blendshapes))
                if not result.face_blendshapes:
                    rows.append(nan_row)
                    continue
                h, w = frame.rgb.shape[:2]
                best = int(np.argmax([_bbox_area(lms, w, h) for lms in result.face_landmarks]))
                categories = result.face_blendshapes[best]
                if len(categories) != len(MEDIAPIPE_NAMES):  # from_mediapipe would zero-fill the rest
                    raise ValueError(
                        f"MediaPipe returned {len(categories)} blendshapes, expected {len(MEDIAPIPE_NAMES)}: "
                        "is this the face_landmarker.task bundle with the blendshape model?"
                    )
                rows.append(from_mediapipe(list(categories)))
        blendshapes = np.stack(rows) if rows else np.zeros((0, len(ARKIT_BLENDSHAPE_NAMES)), np.float32)
        return FrameLabels(np.asarray(times, dtype=np.float64), blendshapes, np.asarray(counts, dtype=np.int32))


def _bbox_area(landmarks, width: int, height: int) -> float:
    xs = np.fromiter((p.x for p in landmarks), dtype=np.float32)
    ys = np.fromiter((p.y for p in landmarks), dtype=np.float32)
    return float((xs.max() - xs.min()) * width * (ys.max() - ys.min()) * height)
