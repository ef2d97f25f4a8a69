"""Detection around faces already found, for video: instead of the whole frame, a window around where each face was
in the previous frame, searched shrunk so the face is about ``WINDOW_FACE`` px across (dlib's HOG costs in
proportion to the pixels it scans: a 720p frame takes 60–85 ms, a window 3–10 ms) with the analyser's quick pass (no
CNN confirmation, no retries), the landmarks found at full size. The whole frame is still searched every
``full_every`` frames (so a face that enters is found within that time), whenever nothing is known, and on any
frame where a known face is not found in its window.

Arrays in, arrays out: an analyser with ``get(img, quick=..., quick_scale=...)`` (the built-in dlib analyser) gets
the windows; any other analyser is simply called on the whole frame.
"""

from __future__ import annotations

import inspect
from typing import Any

import cv2
import numpy as np

from models.face import Face
from models.tracking.tracker import box_iou

WINDOW_MARGIN = 0.5  # a known face is looked for in its previous box grown by this share of its size each side
WINDOW_FACE = 160  # ... searched shrunk so the face is about this many pixels across (HOG's smallest face is 80 px;
# a face this size or smaller is searched at full size, where its box and landmarks are those of a whole-frame search)


def has_quick_pass(analyser: Any) -> bool:
    """Whether ``analyser.get`` takes ``quick`` and ``quick_scale`` (a cheap pass over a window)."""
    params = inspect.signature(analyser.get).parameters
    return "quick" in params and "quick_scale" in params


def scaled(face: Face, k: float = 1.0, dx: float = 0.0, dy: float = 0.0) -> Face:
    """``face`` found in an image scaled by 1/``k`` whose origin sits at (``dx``, ``dy``) of the frame, in frame
    pixels."""
    d = np.array([dx, dy], np.float32)
    return Face(bbox=np.asarray(face.bbox, np.float32) * k + np.concatenate([d, d]), score=face.score,
                kps=np.asarray(face.kps, np.float32) * k + d,
                landmarks=None if face.landmarks is None else np.asarray(face.landmarks, np.float32) * k + d,
                extra=dict(face.extra))


def detect_near(analyser: Any, frame: np.ndarray, box: np.ndarray, face_px: int = WINDOW_FACE,
                quick: bool | None = None) -> list[Face]:
    """Faces in the window around ``box`` (frame pixels), searched so the face is about ``face_px`` across, in
    frame pixels; [] when the window is degenerate. An analyser with a quick pass (``quick``: whether it has one,
    :func:`has_quick_pass` when not given) finds the landmarks at full size; any other is run on the shrunk
    window."""
    h, w = frame.shape[:2]
    size = float(max(box[2] - box[0], box[3] - box[1], 1.0))
    m = WINDOW_MARGIN * size
    x1, y1 = max(0, int(box[0] - m)), max(0, int(box[1] - m))
    x2, y2 = min(w, int(np.ceil(box[2] + m))), min(h, int(np.ceil(box[3] + m)))
    if x2 - x1 < 16 or y2 - y1 < 16:
        return []
    window = np.ascontiguousarray(frame[y1:y2, x1:x2])
    scale = min(1.0, face_px / size)
    if has_quick_pass(analyser) if quick is None else quick:
        return [scaled(f, 1.0, x1, y1) for f in analyser.get(window, quick=True, quick_scale=scale)]
    if scale < 1.0:
        window = cv2.resize(window, (max(1, round((x2 - x1) * scale)), max(1, round((y2 - y1) * scale))),
                            interpolation=cv2.INTER_AREA)
    k = ((x2 - x1) / window.shape[1] + (y2 - y1) / window.shape[0]) / 2
    return [scaled(f, k, x1, y1) for f in analyser.get(window)]


class WindowedDetector:
    """Per frame, in order: the faces of the frame, found in windows around last frame's faces when possible
    (see the module doc). ``full_every``: frames between whole-frame searches (1: every frame)."""

    def __init__(self, analyser: Any, full_every: int) -> None:
        self.analyser = analyser
        self.full_every = max(1, int(full_every))
        self.quick = has_quick_pass(analyser)
        self.windows = self.quick and self.full_every > 1
        self.hints: list[np.ndarray] = []
        self.since_full = 0
        self.full_frames = 0  # whole-frame searches so far (for tests and timings)

    def reset(self) -> None:
        """Forget the faces (a scene cut): the next frame is searched whole."""
        self.hints = []

    def detect(self, frame: np.ndarray) -> list[Face]:
        due = self.since_full + 1 >= self.full_every  # the whole frame every ``full_every`` frames
        faces = self._near(frame) if self.windows and self.hints and not due else None
        if faces is None:
            faces = self.analyser.get(frame)
            self.since_full = 0
            self.full_frames += 1
        else:
            self.since_full += 1
        self.hints = [np.asarray(f.bbox, np.float32) for f in faces]
        return faces

    def _near(self, frame: np.ndarray) -> list[Face] | None:
        """Each known face in its window (the detection overlapping its last box most), or None when one is not
        found there. Two windows that found the same face (people crossing) keep it once."""
        found: list[Face] = []
        for box in self.hints:
            got = [f for f in detect_near(self.analyser, frame, box, quick=True) if box_iou(f.bbox, box) > 0.0]
            if not got:
                return None
            best = max(got, key=lambda f: box_iou(f.bbox, box))
            if all(box_iou(best.bbox, other.bbox) < 0.5 for other in found):
                found.append(best)
        found.sort(key=lambda f: (f.area, f.score), reverse=True)
        return found
