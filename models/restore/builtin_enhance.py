"""The built-in face restorer: classical image processing, no weights to download.

It is the honest lower-quality path. It cannot invent detail the way GFPGAN or CodeFormer do; it only
cleans up what is there, inside a feathered face-shaped mask:

1. edge-preserving denoise (OpenCV's non-local means with a small filter strength), which removes JPEG
   blocking and sensor noise on the skin without smearing edges;
2. local contrast: CLAHE on the L channel of LAB (colour untouched), mixed in partially;
3. detail: an unsharp mask on L whose radius follows the face size, so a 100 px face and a 1000 px face
   get the same visual amount of sharpening.

Strength follows ``fidelity`` like CodeFormer's weight (0 = strongest clean-up, 1 = gentlest), and
``blend`` mixes the result with the original exactly as the neural restorers do. The face mask lives in
the same 512 FFHQ crop space as theirs (``models.restore.restorer.align_face``), so occlusion and parsing masks
fit it unchanged; it is warped into the image and the work is done at the image's own resolution, inside
the face's window only.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from models import align
from models.base import LoadSpec
from models.face import Face
from models.restore.restorer import CROP_SIZE, TEMPLATE, _fit_mask

# Face oval in the 512 FFHQ crop (eyes at y≈240, mouth at y≈371): centre and half-axes, in pixels.
OVAL_CENTRE = (256.0, 292.0)
OVAL_AXES = (158.0, 198.0)
OVAL_FEATHER = 18.0  # Gaussian sigma of the oval's edge, crop pixels
# Non-local means is the costly step; faces larger than this (image pixels across the crop) are denoised
# on a downscaled copy and only the removed noise is upscaled back.
DENOISE_MAX_SIDE = 640


@functools.lru_cache(maxsize=4)
def face_oval(size: int = CROP_SIZE) -> np.ndarray:
    """Feathered face oval (size, size) float32 in the FFHQ crop, 1 on the face, 0 outside."""
    r = size / CROP_SIZE
    mask = np.zeros((size, size), np.float32)
    centre = (int(round(OVAL_CENTRE[0] * r)), int(round(OVAL_CENTRE[1] * r)))
    axes = (int(round(OVAL_AXES[0] * r)), int(round(OVAL_AXES[1] * r)))
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 1.0, thickness=-1, lineType=cv2.LINE_AA)
    mask = cv2.GaussianBlur(mask, (0, 0), OVAL_FEATHER * r)
    mask.setflags(write=False)
    return mask


def _denoise(region: np.ndarray, h: float) -> np.ndarray:
    """Non-local means on colour; large regions are filtered at a reduced size (noise residual upscaled)."""
    rh, rw = region.shape[:2]
    side = max(rh, rw)
    if side <= DENOISE_MAX_SIDE:
        return cv2.fastNlMeansDenoisingColored(region, None, h, h, 7, 21)
    f = DENOISE_MAX_SIDE / side
    small = cv2.resize(region, (max(1, int(rw * f)), max(1, int(rh * f))), interpolation=cv2.INTER_AREA)
    clean = cv2.fastNlMeansDenoisingColored(small, None, h, h, 7, 21)
    residual = small.astype(np.float32) - clean.astype(np.float32)
    residual = cv2.resize(residual, (rw, rh), interpolation=cv2.INTER_LINEAR)
    return np.clip(region.astype(np.float32) - residual, 0, 255).astype(np.uint8)


def noise_sigma(region: np.ndarray) -> float:
    """Standard deviation of the region's white noise, in grey levels (Immerkær 1996: the mean absolute
    response of a Laplacian-difference kernel that cancels smooth structure; edges are left out)."""
    grey = cv2.cvtColor(region, cv2.COLOR_BGR2GRAY).astype(np.float32) if region.ndim == 3 else region
    if min(grey.shape[:2]) < 8:
        return 0.0
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    resp = np.abs(cv2.filter2D(grey, -1, kernel)[1:-1, 1:-1])
    # Structure (edges) answers strongly too: keep the calmer 80 % of pixels, rescaled for the cut-off tail.
    edges = cv2.Canny(np.clip(grey, 0, 255).astype(np.uint8), 60, 150)[1:-1, 1:-1] > 0
    edges = cv2.dilate(edges.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    calm = resp[~edges]
    if calm.size < 64:
        return 0.0
    return float(math.sqrt(math.pi / 2.0) * calm.mean() / 6.0)


def enhance_region(region: np.ndarray, face_px: float, strength: float = 0.75) -> np.ndarray:
    """Classical clean-up of a BGR uint8 region holding a face about ``face_px`` pixels wide.

    ``strength`` in [0, 1] scales every step. Returns a new uint8 array of the same shape.
    """
    k = float(np.clip(strength, 0.0, 1.0))
    if k <= 0.0:
        return region.copy()
    # 1. denoise with a filter strength that follows the measured noise (at least 2, at most 14): gentle
    #    on a clean photo, firm on a grainy one. Fidelity scales it down.
    sigma_n = noise_sigma(region)
    den = _denoise(region, float(np.clip((1.5 + 1.3 * sigma_n) * (0.5 + 0.5 * k), 2.0, 14.0)))
    lab = cv2.cvtColor(den, cv2.COLOR_BGR2LAB)
    lum = lab[:, :, 0]
    lumf = lum.astype(np.float32)
    # 2. local contrast: CLAHE with tiles about a third of the face across. Only its smooth part is used
    #    (the difference blurred at ~1/60 of the face), so it reshapes shading without stretching the
    #    1-level steps of flat skin into visible contour lines.
    grid = int(np.clip(round(max(region.shape[:2]) / max(face_px / 3.0, 8.0)), 2, 16))
    clahe = cv2.createCLAHE(clipLimit=1.2 + 0.8 * k, tileGridSize=(grid, grid)).apply(lum)
    shade = cv2.GaussianBlur(clahe.astype(np.float32) - lumf, (0, 0), max(1.0, face_px / 60.0))
    lumf += (0.3 * k) * shade
    # 3. unsharp mask; radius ~1/150 of the face width (at least 0.8 px). Differences under ~1.5 levels
    #    are cored out (they are noise and quantisation), large ones soft-limited (no halos).
    sigma = max(0.8, face_px / 150.0)
    detail = lumf - cv2.GaussianBlur(lumf, (0, 0), sigma)
    core = max(1.5, 0.5 * sigma_n)
    detail = np.sign(detail) * np.maximum(np.abs(detail) - core, 0.0)
    limit = 16.0
    detail = limit * np.tanh(detail / limit)
    lumf += (0.5 + 0.8 * k) * detail
    lab[:, :, 0] = np.clip(lumf, 0, 255).round().astype(np.uint8)
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)


class BuiltinRestorer:
    """Classical restoration inside a feathered face oval; the interface of ``models.restore.restorer.FaceRestorer``."""

    name = "builtin"
    gives_crops = False  # restores in place through ``restore``; no ``restore_crop``

    @classmethod
    def load(cls, spec: LoadSpec) -> BuiltinRestorer:
        return cls()

    def prepare(self) -> None:
        pass

    def face_alpha(self, img_shape: tuple[int, ...], face: Face, mask: np.ndarray | None = None
                   ) -> tuple[np.ndarray, tuple[int, int, int, int], float] | None:
        """Alpha (roi h, roi w) float32 of the face oval (× ``mask``) warped into the image, its window
        (x0, y0, x1, y1), and the face size in image pixels (the crop's width); None when off-image."""
        m = align.estimate_norm(face.kps, CROP_SIZE, TEMPLATE)
        im = align.invert(m)
        crop_alpha = face_oval(CROP_SIZE)
        if mask is not None:
            crop_alpha = crop_alpha * _fit_mask(mask, (CROP_SIZE, CROP_SIZE))
        ys, xs = np.nonzero(crop_alpha > 1e-3)
        if ys.size == 0:
            return None
        pts = np.array([[xs.min(), ys.min()], [xs.max() + 1, ys.min()], [xs.min(), ys.max() + 1],
                        [xs.max() + 1, ys.max() + 1]], np.float64)
        proj = pts @ im[:, :2].T + im[:, 2]
        h, w = img_shape[:2]
        x0 = max(int(math.floor(proj[:, 0].min())) - 2, 0)
        y0 = max(int(math.floor(proj[:, 1].min())) - 2, 0)
        x1 = min(int(math.ceil(proj[:, 0].max())) + 3, w)
        y1 = min(int(math.ceil(proj[:, 1].max())) + 3, h)
        if x1 <= x0 or y1 <= y0:
            return None
        shifted = im.copy()
        shifted[:, 2] -= (x0, y0)
        alpha = cv2.warpAffine(crop_alpha, shifted, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderValue=0.0)
        face_px = CROP_SIZE * math.sqrt(abs(np.linalg.det(im[:, :2])))
        return alpha, (x0, y0, x1, y1), face_px

    def restore(self, img: np.ndarray, face: Face, fidelity: float = 0.5, blend: float = 0.8,
                mask: np.ndarray | None = None) -> np.ndarray:
        """Copy of ``img`` with ``face`` cleaned up: blend·enhanced + (1 − blend)·original inside the face
        oval (× ``mask``, crop space of ``models.restore.restorer.align_face``); pixels outside are untouched."""
        out = img.copy()
        blend = float(np.clip(blend, 0.0, 1.0))
        if blend <= 0.0:
            return out
        got = self.face_alpha(img.shape, face, mask)
        if got is None:
            return out
        alpha, (x0, y0, x1, y1), face_px = got
        h, w = img.shape[:2]
        # Filter a margin of context around the window so the filters see real neighbours at its edge.
        margin = int(max(8, face_px / 20))
        cx0, cy0 = max(x0 - margin, 0), max(y0 - margin, 0)
        cx1, cy1 = min(x1 + margin, w), min(y1 + margin, h)
        strength = 1.0 - 0.6 * float(np.clip(fidelity, 0.0, 1.0))
        enhanced = enhance_region(img[cy0:cy1, cx0:cx1], face_px, strength)
        enhanced = enhanced[y0 - cy0:y1 - cy0, x0 - cx0:x1 - cx0].astype(np.float32)
        a = (alpha * blend)[:, :, None]
        region = out[y0:y1, x0:x1].astype(np.float32)
        out[y0:y1, x0:x1] = np.clip(region + a * (enhanced - region) + 0.5, 0, 255).astype(np.uint8)
        return out
