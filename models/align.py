"""Five-point face alignment: templates, similarity estimation, crops and the feathered paste-back.

Points are ordered left eye, right eye, nose tip, left mouth corner, right mouth corner (image left/right).
Arithmetic follows the reference pipeline on purpose (float32 points, Umeyama's least squares, OpenCV's
bilinear warp with a black border), so crops and pasted results match it pixel for pixel.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# ArcFace template for a 112x112 crop.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
# FFHQ template for a 512x512 crop (restoration networks, lip sync crops).
FFHQ_512 = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935], [201.26117, 371.41043],
     [313.08905, 371.15118]],
    dtype=np.float32,
)


def template_points(size: int, template: str = "arcface") -> np.ndarray:
    """Destination points (5, 2) float32 of ``template`` for a ``size`` x ``size`` crop.

    arcface: multiples of 112 scale the 112 template; multiples of 128 scale it by size/128 and shift it
    right by 8·size/128 px (the inswapper 128 crop). ffhq: the 512 template scaled by size/512.
    """
    if template == "arcface":
        if size % 112 == 0:
            return ARCFACE_112 * (float(size) / 112.0)
        if size % 128 == 0:
            ratio = float(size) / 128.0
            dst = ARCFACE_112 * ratio
            dst[:, 0] += 8.0 * ratio
            return dst
        raise ValueError(f"arcface crops must be a multiple of 112 or 128 px, got {size}")
    if template == "ffhq":
        return FFHQ_512 * (float(size) / 512.0)
    raise ValueError(f"unknown alignment template {template!r}")


ARCFACE_128 = template_points(128, "arcface")


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) mapping ``src`` onto ``dst``.

    Umeyama (PAMI 1991). Returns the 3x3 homogeneous matrix in float64; the centring and covariance are
    computed in the points' own dtype (float32 for detector points), as the reference pipeline does.
    """
    src = np.asarray(src)
    dst = np.asarray(dst)
    n, dim = src.shape
    src_mean = src.mean(axis=0)
    dst_mean = dst.mean(axis=0)
    src_c = src - src_mean
    dst_c = dst - dst_mean
    cov = dst_c.T @ src_c / n

    signs = np.ones((dim,), dtype=np.float64)
    if np.linalg.det(cov) < 0:
        signs[-1] = -1.0
    out = np.eye(dim + 1, dtype=np.float64)
    u, s, vt = np.linalg.svd(cov)
    rank = int(np.count_nonzero(s > s.max() * max(cov.shape) * np.finfo(float).eps))
    if rank == 0:
        return out * np.nan
    if rank == dim - 1:
        if np.linalg.det(u) * np.linalg.det(vt) > 0:
            out[:dim, :dim] = u @ vt
        else:
            flip = signs.copy()
            flip[-1] = -1.0
            out[:dim, :dim] = u @ np.diag(flip) @ vt
    else:
        out[:dim, :dim] = u @ np.diag(signs) @ vt
    scale = 1.0 / src_c.var(axis=0).sum() * (s @ signs)
    out[:dim, dim] = dst_mean - scale * (out[:dim, :dim] @ src_mean.T)
    out[:dim, :dim] *= scale
    return out


def estimate_norm(kps: np.ndarray, size: int = 112, template: str | np.ndarray = "arcface") -> np.ndarray:
    """2x3 affine matrix (float64) taking image points ``kps`` (5, 2) onto the template of a ``size`` crop.

    ``template`` is "arcface" / "ffhq" or explicit destination points (5, 2) in crop pixels.
    """
    kps = np.asarray(kps, dtype=np.float32).reshape(5, 2)
    if isinstance(template, str):
        dst = template_points(size, template)
    else:
        dst = np.asarray(template, dtype=np.float32).reshape(5, 2)
    return umeyama(kps, dst)[0:2, :]


def norm_crop(img: np.ndarray, kps: np.ndarray, size: int = 112, template: str | np.ndarray = "arcface"
              ) -> tuple[np.ndarray, np.ndarray]:
    """Aligned ``size`` x ``size`` crop and the 2x3 matrix that produced it (image → crop)."""
    m = estimate_norm(kps, size, template)
    crop = cv2.warpAffine(img, m, (size, size), borderValue=0.0)
    return crop, m


def transform_points(pts: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to points (N, 2)."""
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    m = np.asarray(m, dtype=np.float64)
    return (pts @ m[:, :2].T + m[:, 2]).astype(np.float32)


def invert(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix (crop → image)."""
    return cv2.invertAffineTransform(np.asarray(m, dtype=np.float64))


def paste_window(shape: tuple[int, ...], crop_hw: tuple[int, int], m: np.ndarray, extra: int = 4,
                 x_align: int = 1) -> tuple[int, int, int, int] | None:
    """Image window (x0, y0, x1, y1) holding everything a paste-back of a ``crop_hw`` crop made with the
    image→crop matrix ``m`` can touch, or None when it is off the image.

    The window is the projected crop's bounding box plus a zero margin wider than the erosion half-width
    and the blur radius (+ ``extra``), so working inside it gives the result of working on the whole image.
    ``x_align`` rounds x0 down to a multiple: 64 keeps OpenCV's vectorised column blocks where the whole-frame
    filters have them, so the blur's float rounding matches the whole-frame result bit for bit.
    """
    h, w = shape[:2]
    ch, cw = crop_hw
    corners = np.array([[0, 0], [cw, 0], [0, ch], [cw, ch]], dtype=np.float64)
    proj = transform_points(corners, invert(m))
    bx0, by0 = proj.min(axis=0)
    bx1, by1 = proj.max(axis=0)
    size = int(math.sqrt(max(bx1 - bx0, 1.0) * max(by1 - by0, 1.0)))
    margin = max(size // 10, 10) + 2 * max(size // 20, 5) + extra
    x0 = max((int(math.floor(bx0)) - margin) // x_align * x_align, 0)
    y0 = max(int(math.floor(by0)) - margin, 0)
    x1 = min(int(math.ceil(bx1)) + margin + 1, w)
    y1 = min(int(math.ceil(by1)) + margin + 1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def _feather_alpha(alpha: np.ndarray, size: int, fast: bool) -> np.ndarray:
    """Erode by max(size//10, 10) and blur by 2·max(size//20, 5)+1, in place of the binarised warped mask.

    ``fast``: for faces over 256 px the same erosion and blur run on a copy shrunk to about 128 px per face side
    and the result is resized back, which costs O(window) instead of O(window × kernel) and differs from the
    exact result by a fraction of a level of alpha (what the restorers use; the swapper keeps the exact path).
    """
    if fast and size > 256:
        f = size / 128.0
        rh, rw = alpha.shape
        small = cv2.resize(alpha, (max(int(round(rw / f)), 1), max(int(round(rh / f)), 1)),
                           interpolation=cv2.INTER_AREA)
        small = _feather_alpha(small, int(size / f), fast=False)
        return cv2.resize(small, (rw, rh), interpolation=cv2.INTER_LINEAR)
    k = max(size // 10, 10)
    alpha = cv2.erode(alpha, np.ones((k, k), np.uint8), iterations=1)
    k = max(size // 20, 5)
    return cv2.GaussianBlur(alpha, (2 * k + 1, 2 * k + 1), 0)


def paste_back(img: np.ndarray, crop: np.ndarray, m: np.ndarray, mask: np.ndarray | None = None,
               fast: bool = False) -> np.ndarray:
    """Blend an aligned ``crop`` (made with matrix ``m``) back into a copy of ``img``.

    The crop and a white crop-sized mask are warped back with the inverse transform; the warped mask is
    binarised (>20 → 255), eroded by a k×k square with k = max(s//10, 10) and blurred with a Gaussian of
    size 2·max(s//20, 5)+1, where s = int(√(mask height · mask width)); the result is the alpha of a
    linear blend. ``mask`` (optional, crop-sized, float in [0, 1]) is warped back too and multiplies that
    alpha, e.g. a face-parsing mask for a restored 512 crop. Mask processing and blending run inside the
    face's window only, which gives the same pixels as processing the whole frame. ``fast`` feathers large
    faces at reduced resolution (see ``_feather_alpha``).
    """
    out = img.copy()
    ch, cw = crop.shape[:2]
    im = invert(m)
    roi = paste_window(img.shape, (ch, cw), m, extra=4, x_align=64)
    if roi is None:
        return out
    x0, y0, x1, y1 = roi
    # The warps keep the frame's origin and stop at the window's far corner (x1, y1): OpenCV's sampling coordinates
    # depend on the absolute pixel position (OpenCV 5 computes them in float32 per row), so a warp with the origin
    # shifted to (x0, y0) differs by one level here and there (measured: >99 % of 2,000 random faces, even with
    # only rows shifted), while a smaller destination with the same origin gives the same pixels (0 differences
    # in 3,000 random faces). Everything after them is translation-invariant and runs on the window only.
    warped = cv2.warpAffine(crop, im, (x1, y1), borderValue=0.0)[y0:y1, x0:x1]
    white = np.full((ch, cw), 255, dtype=np.float32)
    alpha = cv2.warpAffine(white, im, (x1, y1), borderValue=0.0)[y0:y1, x0:x1].copy()
    full = alpha > 20
    alpha[full] = 255
    # Bounding box of the full (255) pixels, as np.where + min/max would give it, at a fraction of the cost.
    bx, by, bw, bh = cv2.boundingRect(full.view(np.uint8))
    if bw == 0:
        return out
    size = int(np.sqrt((bh - 1) * (bw - 1)))
    alpha = _feather_alpha(alpha, size, fast)
    alpha /= 255
    if mask is not None:
        extra = cv2.warpAffine(np.asarray(mask, dtype=np.float32).reshape(ch, cw), im, (x1, y1), borderValue=0.0)
        extra = extra[y0:y1, x0:x1]
        alpha *= np.clip(extra, 0.0, 1.0)
    # Where alpha is 0 the blend gives the original pixel exactly (0·warped + 1·pixel), so only the box of
    # non-zero alpha is blended.
    nx, ny, nw, nh = cv2.boundingRect((alpha > 0).view(np.uint8))
    if nw == 0:
        return out
    alpha = alpha[ny:ny + nh, nx:nx + nw]
    warped = warped[ny:ny + nh, nx:nx + nw]
    region = out[y0 + ny:y0 + ny + nh, x0 + nx:x0 + nx + nw]
    out[y0 + ny:y0 + ny + nh, x0 + nx:x0 + nx + nw] = _blend(alpha, warped, region)
    return out


def _blend(alpha: np.ndarray, fg: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """uint8 of alpha·fg + (1 − alpha)·bg in float32, the reference's own operations in its order (so bit-exact
    with ``(a[..., None] * fg + (1 - a[..., None]) * bg.astype(float32)).astype(uint8)``), without broadcasting
    a one-channel alpha over three channels (numpy's slow path) and with fewer temporaries."""
    if fg.ndim == 2:
        a = alpha
    else:
        a = cv2.merge([alpha] * fg.shape[2]) if fg.shape[2] > 1 else alpha.reshape(*alpha.shape, 1)
    fg_part = np.multiply(a, fg, dtype=np.float32)
    bg_part = np.subtract(np.float32(1), a, dtype=np.float32)
    np.multiply(bg_part, bg, out=bg_part, dtype=np.float32)
    np.add(fg_part, bg_part, out=fg_part)
    return fg_part.astype(np.uint8)
