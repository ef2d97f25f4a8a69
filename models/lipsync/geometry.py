"""Face geometry shared by the lip-sync backends: the crop box (Wav2Lip's padded box), its 5-frame smoothing, the
feathered lower-face mask from the 68 landmarks, and the paste of a predicted crop back into the frame.

Arrays in, arrays out (BGR uint8 frames, float32 pixel coordinates); nothing here reads files.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

# iBUG-68 (0-based): the jaw from below the ears round the chin, the nose from its bridge to its base.
JAW = tuple(range(2, 15))
NOSE = (29, 31, 32, 33, 34, 35)
LOWER_FACE = JAW + NOSE
OUTER_LIPS = tuple(range(48, 60))
INNER_LIPS = tuple(range(60, 68))
Pads = tuple[int, int, int, int]  # top, bottom, left, right (pixels), as Wav2Lip's --pads


def face_size(landmarks: np.ndarray) -> float:
    """A face scale in pixels: the distance from the jaw's left end to its right end."""
    lm = np.asarray(landmarks, np.float32)
    return max(float(np.linalg.norm(lm[16] - lm[0])), 1.0)


def crop_box(bbox: np.ndarray, landmarks: np.ndarray | None, pads: Pads, width: int, height: int) -> np.ndarray:
    """Wav2Lip's face crop: the detector box (grown to hold every landmark, so the chin is always inside whatever
    the detector's box convention) padded by ``pads`` and clipped to the frame; float32 x1, y1, x2, y2."""
    x1, y1, x2, y2 = (float(v) for v in bbox)
    if landmarks is not None:
        lm = np.asarray(landmarks, np.float32)
        x1, y1 = min(x1, float(lm[:, 0].min())), min(y1, float(lm[:, 1].min()))
        x2, y2 = max(x2, float(lm[:, 0].max())), max(y2, float(lm[:, 1].max()))
    top, bottom, left, right = pads
    box = np.array([max(0.0, x1 - left), max(0.0, y1 - top), min(float(width), x2 + right),
                    min(float(height), y2 + bottom)], np.float32)
    return box


def smooth_boxes(boxes: Sequence[np.ndarray]) -> np.ndarray:
    """The mean of a window of boxes (Wav2Lip smooths its boxes over 5 frames)."""
    return np.mean(np.stack([np.asarray(b, np.float32) for b in boxes]), axis=0).astype(np.float32)


def int_box(box: np.ndarray, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Whole-pixel box inside the frame, or None when it is smaller than 8 px either way."""
    x1, y1 = max(0, int(round(float(box[0])))), max(0, int(round(float(box[1]))))
    x2, y2 = min(width, int(round(float(box[2])))), min(height, int(round(float(box[3]))))
    if x2 - x1 < 8 or y2 - y1 < 8:
        return None
    return x1, y1, x2, y2


def crop(frame: np.ndarray, box: tuple[int, int, int, int], size: int = 96) -> np.ndarray:
    """The box resized to ``size``² (BGR uint8), as Wav2Lip's datagen does."""
    x1, y1, x2, y2 = box
    return cv2.resize(frame[y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_AREA)


def lower_face_mask(landmarks: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Float32 alpha in [0, 1] over ``box`` (its height × width): the convex hull of the jaw and the nose, shrunk
    a little and feathered (Gaussian, σ ≈ 4 % of the face width), so a pasted mouth fades into the cheeks instead
    of showing the reference's hard square."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    lm = np.asarray(landmarks, np.float32)
    pts = lm[list(LOWER_FACE)] - np.array([x1, y1], np.float32)
    size = face_size(lm)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(pts).astype(np.int32)), 255)
    erode = max(1, int(round(size * 0.03)))
    mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode + 1, 2 * erode + 1)))
    sigma = max(1.0, size * 0.04)
    alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), sigma)
    return alpha


def paste(frame: np.ndarray, pred: np.ndarray, box: tuple[int, int, int, int], alpha: np.ndarray) -> np.ndarray:
    """``frame`` with ``pred`` (any size, resized to the box) blended in over the box by ``alpha`` (box-sized).
    Only the box is touched; the input frame is not modified."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    if pred.shape[:2] != (h, w):
        pred = cv2.resize(pred, (w, h), interpolation=cv2.INTER_CUBIC if w > pred.shape[1] else cv2.INTER_AREA)
    out = frame.copy()
    roi = out[y1:y2, x1:x2].astype(np.float32)
    a = alpha[..., None]
    out[y1:y2, x1:x2] = np.clip(roi * (1.0 - a) + pred.astype(np.float32) * a + 0.5, 0, 255).astype(np.uint8)
    return out
