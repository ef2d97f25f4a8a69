"""The built-in lip-sync *preview* (no download): the jaw and lips open with the loudness of each frame's audio
window, by a landmark-driven warp of the lower face, with a darkened mouth interior.

It is not a lip-reading model: every sound opens the mouth the same way, only by how loud it is. It exists so that
``/lipsync`` works on a fresh checkout and so that audio/video sync is testable without weights. Silence keeps the
mouth exactly as it is (the warp is the identity when the level is 0).
"""

from __future__ import annotations

import cv2
import numpy as np

from models.base import LoadSpec
from models.lipsync.geometry import face_size

SILENCE_DB = -50.0  # a window at or below this level keeps the mouth closed
LOUD_DB = -15.0  # at or above this level the mouth is fully open
MAX_OPEN = 0.5  # full opening: the lower lip drops this share of the mouth width
INNER_MID = [61, 62, 63, 65, 66, 67]  # the inner lips, where they meet


def loudness(samples: np.ndarray) -> float:
    """RMS of one frame's audio window in dBFS (−120 for silence or an empty window)."""
    if samples.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20.0 * np.log10(max(rms, 1e-6))


def openness(samples: np.ndarray) -> float:
    """How far the mouth opens for this window, in [0, 1]: linear in dB between ``SILENCE_DB`` and ``LOUD_DB``."""
    return float(np.clip((loudness(samples) - SILENCE_DB) / (LOUD_DB - SILENCE_DB), 0.0, 1.0))


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / max(e1 - e0, 1e-6), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


class PreviewLipSync:
    """The built-in backend (``builtin``): a landmark-driven jaw drop, arrays in and out."""

    name = "builtin"
    crop_size = None  # works on the frame itself, not on a 96² crop

    @classmethod
    def load(cls, spec: LoadSpec) -> PreviewLipSync:
        return cls()

    def prepare(self) -> None:
        return None

    def animate(self, frame: np.ndarray, landmarks: np.ndarray, level: float) -> np.ndarray:
        """``frame`` (BGR uint8) with the mouth of the face at ``landmarks`` (68 points, frame pixels) opened by
        ``level`` in [0, 1]. Returns the input object itself when there is nothing to do (level 0, tiny face)."""
        lm = np.asarray(landmarks, np.float32)
        mouth_w = float(np.linalg.norm(lm[54] - lm[48]))
        drop = float(np.clip(level, 0.0, 1.0)) * MAX_OPEN * mouth_w
        if drop < 0.5 or mouth_w < 4:
            return frame
        h, w = frame.shape[:2]
        size = face_size(lm)
        cx = float(lm[INNER_MID, 0].mean())
        y_lip = float(lm[[61, 62, 63, 65, 66, 67], 1].mean())  # where the lips meet
        chin = float(lm[8, 1])
        half = 0.5 * float(abs(lm[13, 0] - lm[3, 0]))
        # The region the warp touches: the lower face and a margin below the chin for the fade-out.
        x1 = max(0, int(cx - half * 1.15) - 2)
        x2 = min(w, int(cx + half * 1.15) + 3)
        y1 = max(0, int(float(lm[[31, 33, 35], 1].mean())) - 2)
        y2 = min(h, int(chin + drop + 0.35 * size) + 3)
        if x2 - x1 < 4 or y2 - y1 < 4:
            return frame
        ys, xs = np.mgrid[y1:y2, x1:x2].astype(np.float32)
        ramp = max(2.0, 0.05 * size)  # the cheeks stretch over this height instead of tearing at the lips' line
        v = _smoothstep(y_lip - 0.3 * ramp, y_lip + ramp, ys) * (1.0 - _smoothstep(chin + drop, chin + drop + 0.35
                                                                                    * size, ys))
        u = 1.0 - _smoothstep(0.45 * half, 1.0 * half, np.abs(xs - cx))
        disp = drop * u * v
        map_y = ys - disp
        roi = cv2.remap(frame, xs, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        # The mouth interior: the gap between the upper inner lip and the lowered lower inner lip, darkened.
        upper = lm[[60, 61, 62, 63, 64]]
        lower = lm[[64, 65, 66, 67, 60]].copy()
        lower[1:4, 1] += drop
        poly = np.concatenate([upper, lower[1:4]]) - np.array([x1, y1], np.float32)
        inner = np.zeros(roi.shape[:2], np.uint8)
        cv2.fillPoly(inner, [np.round(poly * 4).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=2)
        a = cv2.GaussianBlur(inner.astype(np.float32) / 255.0, (0, 0), max(0.8, 0.04 * mouth_w))
        a = (a * min(1.0, drop / 3.0))[..., None]
        dark = self._mouth_colour(frame, lm)
        roi = np.clip(roi.astype(np.float32) * (1.0 - a) + (roi.astype(np.float32) * 0.25 + dark * 0.75) * a + 0.5,
                      0, 255).astype(np.uint8)
        out = frame.copy()
        out[y1:y2, x1:x2] = roi
        return out

    @staticmethod
    def _mouth_colour(frame: np.ndarray, lm: np.ndarray) -> np.ndarray:
        """The shadowed inside of this mouth: the lips' own mean colour, dimmed (a grey face gets a grey-dark
        mouth, a warm one a dark red-brown), rather than one fixed colour that reads as a purple patch."""
        x, y, bw, bh = cv2.boundingRect(np.round(lm[48:60]).astype(np.int32))
        x, y = max(0, x), max(0, y)
        patch = frame[y:y + bh + 1, x:x + bw + 1]
        if patch.size == 0:
            return np.array([24, 22, 30], np.float32)
        lips = np.zeros(patch.shape[:2], np.uint8)
        cv2.fillPoly(lips, [np.round(lm[48:60] - (x, y)).astype(np.int32)], 255)
        mean = np.asarray(cv2.mean(patch, mask=lips if lips.any() else None)[:3], np.float32)
        return mean * 0.22

