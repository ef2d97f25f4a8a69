"""The mouth region of a face in image coordinates, feathered: used to keep a target's own mouth over a swap."""

from __future__ import annotations

import cv2
import numpy as np

from models import align
from models.base import Parser
from models.face import Face
from models.masks.face_masks import MOUTH_CLASSES

OUTER_LIPS = slice(48, 60)  # iBUG-68 outer lip contour


def mouth_polygon(face: Face) -> np.ndarray:
    """The mouth outline (N, 2) float32: the 68-landmark outer lips when present, else an ellipse through the two
    mouth corners of the 5 key points, as tall as 45 % of their distance (a closed or half-open mouth)."""
    if face.landmarks is not None and len(face.landmarks) >= 60:
        return np.asarray(face.landmarks[OUTER_LIPS], np.float32)
    left, right = np.asarray(face.kps[3], np.float32), np.asarray(face.kps[4], np.float32)
    center = (left + right) / 2
    axis = right - left
    half_w = float(np.linalg.norm(axis)) / 2
    angle = float(np.degrees(np.arctan2(axis[1], axis[0])))
    axes = (max(int(round(half_w)), 1), max(int(round(half_w * 0.45)), 1))
    pts = cv2.ellipse2Poly((int(round(center[0])), int(round(center[1]))), axes, int(round(angle)), 0, 360, 15)
    return pts.astype(np.float32)


def mouth_mask(face: Face, shape: tuple[int, ...], grow: float = 0.15) -> np.ndarray:
    """Float32 mask (H, W) in [0, 1]: 1 inside the mouth outline grown by ``grow`` of its width, feathered over about
    a fifth of the mouth width so the kept mouth blends into the swapped face."""
    h, w = shape[:2]
    poly = mouth_polygon(face)
    center = poly.mean(axis=0)
    width = float(np.ptp(poly[:, 0])) or 1.0
    grown = center + (poly - center) * (1.0 + grow)
    mask = np.zeros((h, w), np.float32)
    cv2.fillPoly(mask, [np.round(grown).astype(np.int32)], 1.0)
    sigma = max(width / 10.0, 1.0)
    return cv2.GaussianBlur(mask, (0, 0), sigma)


def parsed_mouth_mask(parser: Parser, img: np.ndarray, face: Face, size: int = 512) -> np.ndarray:
    """Float32 mask (H, W): BiSeNet's mouth classes (inner mouth, upper and lower lip) of ``face``, parsed on its
    ffhq-aligned crop of ``img`` (the original frame) and warped back, feathered."""
    m = align.estimate_norm(face.kps, size, "ffhq")
    crop = cv2.warpAffine(img, m, (size, size), borderValue=0.0)
    region = parser.region_mask(crop, MOUTH_CLASSES)
    return cv2.warpAffine(region, align.invert(m), (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR,
                          borderValue=0.0)


def keep_mouths(swapped: np.ndarray, original: np.ndarray, faces: list[Face], parser: Parser | None = None
                ) -> np.ndarray:
    """``swapped`` with the mouth of each of ``faces`` (positions in ``original``) blended back from ``original``:
    the face parser's mouth classes when one is loaded, else the landmark outline (:func:`mouth_mask`)."""
    if not faces:
        return swapped
    alpha = np.zeros(swapped.shape[:2], np.float32)
    for face in faces:
        mask = parsed_mouth_mask(parser, original, face) if parser is not None else mouth_mask(face, swapped.shape)
        np.maximum(alpha, mask, out=alpha)
    a = alpha[..., None]
    out = swapped.astype(np.float32) * (1.0 - a) + original.astype(np.float32) * a
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
