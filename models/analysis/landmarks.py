"""Helpers for the iBUG 68-point landmark layout (the layout dlib's shape predictor produces).

Index groups (0-based), "left"/"right" meaning image-left/image-right as everywhere in ``models/``:
jaw 0–16, brows 17–21 / 22–26, nose bridge 27–30, nostrils 31–35, eyes 36–41 / 42–47,
outer lips 48–59, inner lips 60–67.
"""

from __future__ import annotations

import numpy as np

JAW = np.arange(0, 17)
LEFT_BROW = np.arange(17, 22)
RIGHT_BROW = np.arange(22, 27)
BROWS = np.arange(17, 27)
NOSE = np.arange(27, 36)
LEFT_EYE = np.arange(36, 42)
RIGHT_EYE = np.arange(42, 48)
MOUTH = np.arange(48, 68)
NOSE_TIP = 30
CHIN = 8
LEFT_MOUTH_CORNER = 48
RIGHT_MOUTH_CORNER = 54

# Index of each point's counterpart in a horizontally mirrored image (image-left <-> image-right).
MIRROR_68 = np.concatenate(
    [
        np.arange(16, -1, -1),  # jaw
        np.arange(26, 16, -1),  # brows
        np.arange(27, 31),  # nose bridge
        np.arange(35, 30, -1),  # nostrils
        [45, 44, 43, 42, 47, 46],  # image-left eye <- image-right eye
        [39, 38, 37, 36, 41, 40],  # image-right eye <- image-left eye
        [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55],  # outer lips
        [64, 63, 62, 61, 60, 67, 66, 65],  # inner lips
    ]
).astype(np.int64)


def _as68(landmarks: np.ndarray) -> np.ndarray:
    pts = np.asarray(landmarks, dtype=np.float32)
    if pts.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {pts.shape}")
    return pts


def kps_from_68(landmarks: np.ndarray) -> np.ndarray:
    """The 5 keypoints (left eye, right eye, nose tip, left mouth corner, right mouth corner) as (5, 2)
    float32: eye centres are the means of the six eye points, the rest are single landmarks."""
    pts = _as68(landmarks)
    return np.stack(
        [
            pts[LEFT_EYE].mean(axis=0),
            pts[RIGHT_EYE].mean(axis=0),
            pts[NOSE_TIP],
            pts[LEFT_MOUTH_CORNER],
            pts[RIGHT_MOUTH_CORNER],
        ]
    ).astype(np.float32)


def mirror_68(landmarks: np.ndarray, width: int) -> np.ndarray:
    """Landmarks of the same face in the image flipped horizontally (``img[:, ::-1]``) of the given width,
    re-indexed so that the layout stays image-left/image-right."""
    pts = _as68(landmarks).copy()
    pts[:, 0] = (width - 1) - pts[:, 0]
    return pts[MIRROR_68]


def face_scale(landmarks: np.ndarray) -> float:
    """A robust size of the face in pixels: the distance from the eye midpoint to the chin."""
    pts = _as68(landmarks)
    eyes = (pts[LEFT_EYE].mean(axis=0) + pts[RIGHT_EYE].mean(axis=0)) / 2.0
    return float(max(np.linalg.norm(pts[CHIN] - eyes), 1.0))


def forehead_points(landmarks: np.ndarray, ratio: float = 0.22) -> np.ndarray:
    """Points above the brows that close the face outline over the forehead: every brow point moved along
    the face's chin→eyes axis by ``ratio`` × (eyes-to-chin distance). Returns (10, 2) float32."""
    pts = _as68(landmarks)
    eyes = (pts[LEFT_EYE].mean(axis=0) + pts[RIGHT_EYE].mean(axis=0)) / 2.0
    up = eyes - pts[CHIN]
    return (pts[BROWS] + ratio * up).astype(np.float32)


def face_outline(landmarks: np.ndarray, forehead_ratio: float = 0.22) -> np.ndarray:
    """Closed outline of the face (jaw 0→16 then the forehead points from right to left), (27, 2) float32.
    Always in the same order, so outlines of two faces correspond point by point."""
    pts = _as68(landmarks)
    return np.concatenate([pts[JAW], forehead_points(pts, forehead_ratio)[::-1]]).astype(np.float32)


def outer_ring(landmarks: np.ndarray, scale: float = 1.25, forehead_ratio: float = 0.22) -> np.ndarray:
    """The face outline pushed outwards from the face centre by ``scale`` (27, 2): a ring of support points
    around the face so that a warp over the landmark triangulation covers a margin outside the outline."""
    outline = face_outline(landmarks, forehead_ratio)
    centre = _as68(landmarks)[NOSE].mean(axis=0)
    return (centre + (outline - centre) * scale).astype(np.float32)


def yaw_ratio(landmarks: np.ndarray) -> float:
    """Where the nose tip sits between the two ends of the jaw line, measured along the eye axis: about 0.5
    for a frontal face, larger when the face turns towards image-right, smaller towards image-left."""
    pts = _as68(landmarks).astype(np.float64)
    axis = pts[RIGHT_EYE].mean(axis=0) - pts[LEFT_EYE].mean(axis=0)
    axis /= max(float(np.linalg.norm(axis)), 1e-9)
    left, right, nose = pts[JAW[0]] @ axis, pts[JAW[-1]] @ axis, pts[NOSE_TIP] @ axis
    span = right - left
    if abs(span) < 1e-6:
        return 0.5
    return float((nose - left) / span)
