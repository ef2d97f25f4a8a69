"""Built-in classical face swap: no network, only the 68 landmarks of both faces and their pixels.

1. Both faces get the same extended point set: the 68 landmarks, points over the forehead and an outer ring
   around the face. One Delaunay triangulation (computed on the target) is used for both sides, so every
   target triangle has its source triangle. The source is warped piecewise-affinely onto the target with a
   single ``cv2.remap`` (per-pixel triangle lookup, no seams between triangles). When the source's head is
   turned the other way than the target's, the source is mirrored first (far less stretching). The mesh is
   triangulated with the target's eyes held open, so the lids are mesh edges even on a shut eye, and a target
   eye narrower than the source's shows only the top of the source's opening down from its lash line: no
   doubled or ghosted eye on a shut or half-shut target.
2. Colour: LAB mean/std transfer inside the face, then the low-frequency colour (lighting, shading) is
   replaced by the target's with a per-channel ratio of masked blurs, so nothing steps at the outline.
   An optional Poisson pass (``cv2.seamlessClone``) is available; it tends to pull hair and background
   colour into the face, so it is off by default.
3. The result is alpha-blended with a feathered mask that lies strictly inside the target's face outline,
   so pixels outside the outline are bit-identical to the input. Over the forehead the mask stops where the
   skin of either face ends (``skin_extent``: hairline, fringe), so no hair band is pasted across the forehead;
   the lighting match ignores eyes, brows and lips (the target's eyes are not printed into the source's).
   Just under the hairline the lighting is matched again at a finer scale, so a bright forehead has no step
   where the swap ends, and where the source's own hair begins the swap stops a little below it.
   An open target mouth keeps its own inside (teeth), so a closed source mouth is not stretched over it.

A big source face is first downscaled to the target's size (no aliasing); a face cut by the image border
on either side is handled (the part of the source outside its image is never used).
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import Delaunay

from models.analysis.landmarks import (
    BROWS,
    CHIN,
    LEFT_EYE,
    RIGHT_EYE,
    face_outline,
    face_scale,
    forehead_points,
    mirror_68,
    outer_ring,
    yaw_ratio,
)
from models.base import LoadSpec
from models.face import Face

_SUBPIX_SHIFT = 4  # fixed-point bits for rasterising triangles
_POISSON_MAX_SIDE = 480  # the seamless clone runs at most at this resolution; its correction is smooth
_MIN_FOREHEAD = 0.06  # the swapped region always reaches this far above the brows (covers the brows themselves)
_TOP_FEATHER = 0.025  # soft edge at the hairline, fraction of the eyes-to-chin distance
_HAIR_MARGIN = 0.02  # the swap stops this much below where the source's hair begins
_TOP_BAND = 0.1  # below the hairline the lighting is matched at a finer scale over this depth (see _match_edge)
_RELIGHT_LIGHT = (0.67, 1.5)  # bounds of the lighting match's brightness gain (see _match_colour)
_NARROW_EYE = (0.3, 0.9)  # target/source eye opening: the source's slit shrinks to its lash line from 2nd to 1st
_LID_MARGIN = 0.12  # under a shut target eye, the source's lower lid is taken this much (× eye width) lower
_MIN_EYE_OPENING = 0.3  # eyes are held at least this open (lid gap / eye width) when the mesh is triangulated


def _landmarks(face: Face, which: str) -> np.ndarray:
    lm = None if face.landmarks is None else np.asarray(face.landmarks, dtype=np.float32)
    if lm is None or lm.shape != (68, 2):
        raise ValueError(f"the classical swap needs 68 landmarks on the {which} face")
    return lm


def _point_set(lm: np.ndarray, forehead_ratio: float, ring_scale: float) -> np.ndarray:
    return np.concatenate([lm, forehead_points(lm, forehead_ratio), outer_ring(lm, ring_scale, forehead_ratio)]).astype(
        np.float64
    )


def _up_vector(lm: np.ndarray) -> np.ndarray:
    """Chin → eye-midpoint vector: one unit of the forehead ratios."""
    eyes = (lm[LEFT_EYE].mean(axis=0) + lm[RIGHT_EYE].mean(axis=0)) / 2.0
    return (eyes - lm[CHIN]).astype(np.float32)


def skin_extent(img: np.ndarray, lm: np.ndarray, max_ratio: float) -> np.ndarray:
    """How far skin reaches above each brow point (10 values, fraction of the eyes-to-chin distance, in
    [``_MIN_FOREHEAD``, ``max_ratio``]): the forehead up to the hairline, a fringe or a hat.

    The skin reference is the face between the eyes and the mouth (cheeks and nose): the mean and spread of
    its smoothed LAB colour and its local texture (gradient energy). Walking up from each brow point, a
    sample is skin while its colour is within the reference's spread (brighter is allowed more: foreheads
    catch the light) and its texture is not hair-like; the walk stops at the second non-skin sample. Works
    for grey images too (lightness and texture only). Columns are smoothed with their neighbours, so one
    stray strand does not cut a notch."""
    h, w = img.shape[:2]
    size = face_scale(lm)
    up = _up_vector(lm)
    out = np.full(len(BROWS), float(max_ratio), np.float32)
    if max_ratio <= _MIN_FOREHEAD:
        return np.full(len(BROWS), float(max_ratio), np.float32)
    # Local window around the face only.
    pts = np.concatenate([lm, lm[BROWS] + max_ratio * up])
    x0 = max(0, int(np.floor(pts[:, 0].min())) - 4)
    y0 = max(0, int(np.floor(pts[:, 1].min())) - 4)
    x1 = min(w, int(np.ceil(pts[:, 0].max())) + 5)
    y1 = min(h, int(np.ceil(pts[:, 1].max())) + 5)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return out
    roi = img[y0:y1, x0:x1]
    loc = lm - (x0, y0)
    sig = max(0.8, 0.02 * size)
    lab = cv2.cvtColor(roi.astype(np.float32) * (1.0 / 255.0), cv2.COLOR_BGR2LAB)
    lab = cv2.GaussianBlur(lab, (0, 0), sig)
    grey = cv2.cvtColor(roi, cv2.COLOR_BGR2GRAY).astype(np.float32)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    tex = cv2.GaussianBlur(np.sqrt(gx * gx + gy * gy), (0, 0), sig * 1.5)
    # Reference: cheeks and nose between the lower eyelids and the upper lip.
    ref = np.zeros(roi.shape[:2], np.uint8)
    cheek_idx = [1, 2, 3, 31, 32, 33, 34, 35, 13, 14, 15, 46, 47, 40, 41]
    cv2.fillConvexPoly(ref, cv2.convexHull(np.round(loc[cheek_idx]).astype(np.int32)), 255)
    for eye in (LEFT_EYE, RIGHT_EYE):  # the eyes themselves are not skin
        cv2.fillConvexPoly(ref, cv2.convexHull(np.round(loc[eye]).astype(np.int32)), 0)
    sel = ref > 0
    if int(sel.sum()) < 16:
        return out
    rv = lab[sel]
    med = np.median(rv, axis=0)
    spread = np.maximum(np.percentile(np.abs(rv - med), 80, axis=0), [4.0, 2.5, 2.5]).astype(np.float32)
    tex_ref = float(np.percentile(tex[sel], 75))
    # A grey picture has no hue to tell a fringe from skin: the lightness alone is held tighter there.
    l_tol = 1.6 if float(np.abs(rv[:, 1:]).max()) < 1.0 else 2.5
    tex_limit = max(2.0 * tex_ref, tex_ref + 12.0)

    step = 1.0 / max(8.0, size)  # about one pixel per step
    ratios = np.arange(_MIN_FOREHEAD, max_ratio + 1e-6, step, dtype=np.float32)
    brow = loc[BROWS]
    found = np.empty(len(BROWS), np.float32)
    for i, b in enumerate(brow):
        xy = b[None, :] + ratios[:, None] * up[None, :]
        xi = np.clip(np.round(xy[:, 0]).astype(int), 0, roi.shape[1] - 1)
        yi = np.clip(np.round(xy[:, 1]).astype(int), 0, roi.shape[0] - 1)
        inside = (xy[:, 0] >= 0) & (xy[:, 0] <= roi.shape[1] - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= roi.shape[0] - 1)
        d = lab[yi, xi] - med
        dl = np.where(d[:, 0] > 0, d[:, 0] / 2.0, d[:, 0])  # brighter than the cheeks: highlight, allowed more
        dist = np.sqrt((dl / (l_tol * spread[0])) ** 2 + (d[:, 1] / (3.0 * spread[1])) ** 2
                       + (d[:, 2] / (3.0 * spread[2])) ** 2)
        skin = (dist <= 1.0) & (tex[yi, xi] <= tex_limit) & inside
        bad = ~skin
        stop = len(ratios)
        for k in range(len(ratios) - 1):
            if bad[k] and bad[k + 1]:
                stop = k
                break
        found[i] = ratios[stop - 1] if stop > 0 else _MIN_FOREHEAD
    # Each column may not reach much higher than its neighbours (a lone skin-coloured streak in a fringe).
    smooth = found.copy()
    for i in range(len(found)):
        lo, hi = max(0, i - 1), min(len(found), i + 2)
        smooth[i] = min(found[i], float(np.median(found[lo:hi])) + 0.03)
    return np.clip(smooth, _MIN_FOREHEAD, max_ratio).astype(np.float32)


def _feature_mask(lm: np.ndarray, shape: tuple[int, int], size: float) -> np.ndarray:
    """Boolean mask of the eyes, brows and lips (dilated): excluded from the lighting estimate, so the
    target's dark eyes, brows and lips are not multiplied into the source's (ghost eyes)."""
    out = np.zeros(shape, np.uint8)
    for idx in (LEFT_EYE, RIGHT_EYE, np.arange(48, 60)):
        cv2.fillConvexPoly(out, cv2.convexHull(np.round(lm[idx]).astype(np.int32)), 255)
    for idx in (np.arange(17, 22), np.arange(22, 27)):
        cv2.polylines(out, [np.round(lm[idx]).astype(np.int32)], False, 255, max(1, round(0.04 * size)))
    r = max(1, round(0.06 * size))
    out = cv2.dilate(out, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    return out > 0


def _eye_opening(lm: np.ndarray, eye: np.ndarray) -> float:
    """Height of the eye's opening over its width (the mean of the two lid-to-lid distances)."""
    e = lm[eye]
    width = max(float(np.linalg.norm(e[3] - e[0])), 1e-6)
    return float(np.linalg.norm(e[1] - e[5]) + np.linalg.norm(e[2] - e[4])) / (2.0 * width)


def _narrow_eyes(affines: np.ndarray, tris: np.ndarray, t_pts: np.ndarray, s_pts: np.ndarray) -> None:
    """Where the target's eye is narrower than the source's (shut, half shut), nothing of the source's eye
    opening but its upper lash line is shown; ``affines`` is changed in place for the triangles of each eye.

    Otherwise the whole source eye (upper lashes, white, iris, lower lid rim) is squeezed into the target's
    slit (a dark line, a bright line, a dark line: a doubled eye), and the rim of white that dlib's lower
    lid contour leaves inside the source's opening is copied under the target's lid as a bright spot. So the
    source's slit shrinks towards its upper lash line, and under the target's lower lid the source's lower
    lid contour is taken a little lower (``_LID_MARGIN`` of the eye width), both in proportion to how much
    narrower the target's eye is (``_NARROW_EYE``). The lid above stays the source's lid."""
    low_r, high_r = _NARROW_EYE
    for eye in (LEFT_EYE, RIGHT_EYE):
        ratio = _eye_opening(t_pts, eye) / max(_eye_opening(s_pts, eye), 1e-6)
        if ratio >= high_r:
            continue
        shut = 1.0 - float(np.clip((ratio - low_r) / (high_r - low_r), 0.0, 1.0))
        e = s_pts[eye]
        axis = e[3] - e[0]
        width = max(float(np.linalg.norm(axis)), 1e-6)
        down = np.array([-axis[1], axis[0]]) / width  # away from the brow (image y down)
        slit = s_pts.copy()
        below = s_pts.copy()
        for up, low in ((eye[1], eye[5]), (eye[2], eye[4])):
            slit[low] = s_pts[up] + (s_pts[low] - s_pts[up]) * (1.0 - shut)
            below[low] = s_pts[low] + down * (_LID_MARGIN * width * shut)
        inside = ((tris >= eye[0]) & (tris <= eye[-1])).all(axis=1)
        lower = ((tris == eye[4]) | (tris == eye[5])).any(axis=1)
        upper = ((tris == eye[1]) | (tris == eye[2])).any(axis=1)
        under = ~inside & lower & ~upper
        for sel, src in ((inside, slit), (under, below)):
            if sel.any():
                affines[sel] = _affines(t_pts, src, tris[sel])[0]


def _open_eyes(points: np.ndarray) -> np.ndarray:
    """A copy of a point set (68 landmarks first) with each eye opened to at least ``_MIN_EYE_OPENING``: the lids
    are moved apart about their midline. Only used to pick the triangulation.

    On a shut or narrow eye the lids almost meet (or cross), and the Delaunay triangulation of the raw points
    then joins lower-lid points to the brow and upper-lid points to the cheek: triangles that straddle the lid
    line. Their source triangles straddle the source's open eye, so its iris and lashes were copied above and
    below the target's lid line (a doubled, ghosted eye). With the eyes held open the lid contours are edges of
    the mesh, every triangle lies on one side of a lid, and the slit maps to the source's opening only."""
    out = np.array(points, dtype=np.float64, copy=True)
    for eye in (LEFT_EYE, RIGHT_EYE):
        e = out[eye]
        axis = e[3] - e[0]
        width = float(np.linalg.norm(axis))
        if width < 1e-6:
            continue
        normal = np.array([axis[1], -axis[0]]) / width  # towards the brow in image coordinates (y down)
        for up, low in ((1, 5), (2, 4)):
            mid = (e[up] + e[low]) / 2.0
            gap = float((e[up] - e[low]) @ normal)
            half = max(gap, _MIN_EYE_OPENING * width) / 2.0
            out[eye[up]] = mid + normal * half
            out[eye[low]] = mid - normal * half
    return out


def _triangles(points: np.ndarray) -> np.ndarray:
    return Delaunay(points, qhull_options="QJ Qbb Qc").simplices.astype(np.int64)


def _affines(dst_pts: np.ndarray, src_pts: np.ndarray, tris: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per triangle the 2×3 affine that maps destination coordinates to source coordinates, and whether the
    destination triangle is non-degenerate."""
    d = dst_pts[tris]  # (T, 3, 2)
    s = src_pts[tris]
    ones = np.ones((len(tris), 3, 1))
    dh = np.concatenate([d, ones], axis=2)  # (T, 3, 3): rows [x, y, 1]
    det = np.linalg.det(dh)
    ok = np.abs(det) > 1e-6
    dh[~ok] = np.eye(3)
    # Solve dh @ M = s for M (3, 2); the affine is M.T.
    m = np.linalg.solve(dh, s)
    return np.transpose(m, (0, 2, 1)), ok


def _erode(mask: np.ndarray, radius: float) -> np.ndarray:
    """Boolean erosion of a 0/255 mask by a disc of ``radius`` pixels (distance transform: fast for any
    radius). The image border does not erode: a face running off the image stays whole up to the edge."""
    if radius <= 0:
        return mask > 0
    padded = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_REPLICATE)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    return dist > radius


def _feather(mask: np.ndarray, radius: int) -> np.ndarray:
    """Float mask in [0, 1]: ``mask`` eroded by ``radius`` then smoothed by a tent kernel of the same radius
    (two box filters). The result is zero wherever the input mask is zero."""
    if radius < 1:
        return (mask > 0).astype(np.float32)
    soft = _erode(mask, radius).astype(np.float32)
    half = max(1, radius // 2)
    soft = cv2.blur(soft, (2 * half + 1, 2 * half + 1), borderType=cv2.BORDER_REPLICATE)
    soft = cv2.blur(soft, (2 * half + 1, 2 * half + 1), borderType=cv2.BORDER_REPLICATE)
    soft[mask == 0] = 0.0
    return soft


def _masked_blur(
    images: tuple[np.ndarray, ...], mask: np.ndarray, sigma: float, detail: float = 4.0
) -> list[np.ndarray]:
    """Gaussian blur of each of ``images`` (H, W, C float32) using only the pixels inside ``mask`` (bool):
    normalised convolution, so colours from outside the mask do not leak in (the mask's blur is shared). Blurs
    wider than ``detail`` pixels run on a copy downscaled to that many pixels per sigma (the result is smooth,
    so nothing is lost) and are scaled back up."""
    h, w = mask.shape
    m = mask.astype(np.float32)
    f = min(1.0, detail / sigma)
    size = (max(4, round(w * f)), max(4, round(h * f)))
    if f < 1.0:
        m_s = cv2.resize(m, size, interpolation=cv2.INTER_AREA)
        sigma_s = sigma * size[0] / w
    else:
        m_s, sigma_s = m, sigma
    den = np.maximum(cv2.GaussianBlur(m_s, (0, 0), sigma_s, borderType=cv2.BORDER_REPLICATE), 1e-4)[..., None]
    out = []
    for img in images:
        img_s = img * m[..., None]
        if f < 1.0:
            img_s = cv2.resize(img_s, size, interpolation=cv2.INTER_AREA)
        blurred = cv2.GaussianBlur(img_s, (0, 0), sigma_s, borderType=cv2.BORDER_REPLICATE) / den
        out.append(cv2.resize(blurred, (w, h), interpolation=cv2.INTER_LINEAR) if f < 1.0 else blurred)
    return out


def _match_colour(
    src: np.ndarray, dst: np.ndarray, stats_mask: np.ndarray, region: np.ndarray, relight_sigma: float
) -> np.ndarray:
    """Colour-correct the warped source ``src`` to the target ``dst`` (uint8 BGR, same size).

    1. LAB mean/std transfer per channel over the pixels in ``stats_mask`` (the face without its edge):
       global skin tone and contrast. Lightness contrast is matched within limits; chroma may drop to zero,
       so a grey target stays grey.
    2. When ``relight_sigma`` > 0, the low-frequency colour (lighting, shading, local tone) becomes the
       target's, multiplicatively per BGR channel: out = src × blur(dst) / blur(src), both blurs restricted
       to ``region`` (the face). Being a ratio, the source's shadows and detail keep the target's hue
       instead of turning grey, even for a black-and-white source.
    """
    s = cv2.cvtColor(src.astype(np.float32) * (1.0 / 255.0), cv2.COLOR_BGR2LAB)
    if int(stats_mask.sum()) >= 16:
        d = cv2.cvtColor(dst.astype(np.float32) * (1.0 / 255.0), cv2.COLOR_BGR2LAB)
        sv = s[stats_mask]
        dv = d[stats_mask]
        ms, ss = sv.mean(axis=0), sv.std(axis=0) + 1e-3
        md, sd = dv.mean(axis=0), dv.std(axis=0) + 1e-3
        ratio = np.clip(sd / ss, [0.6, 0.0, 0.0], [1.6, 1.6, 1.6]).astype(np.float32)
        s = (s - ms.astype(np.float32)) * ratio + md.astype(np.float32)
        s[..., 0] = np.clip(s[..., 0], 0.0, 100.0)
    bgr = np.clip(cv2.cvtColor(s.astype(np.float32), cv2.COLOR_LAB2BGR) * 255.0, 0.0, 255.0)
    if relight_sigma > 0 and int(region.sum()) >= 16:
        eps = 4.0
        dst_blur, src_blur = _masked_blur((dst.astype(np.float32), bgr), region, relight_sigma)
        gain = (dst_blur + eps) / (src_blur + eps)
        # Brightness and hue are bounded apart: the hue may move far (a grey source takes the target's skin
        # colour), the brightness only within _RELIGHT_LIGHT. Where the source is locally much darker than the
        # target (its fringe's shadow above the brows, a small blurred eye) an unbounded gain burns the skin
        # white there, the band and glowing brows a small grey source left.
        light = gain.mean(axis=2, keepdims=True)
        hue = np.clip(gain / light, 0.25, 4.0)
        bgr = bgr * (np.clip(light, *_RELIGHT_LIGHT) * hue)
    return np.clip(bgr + 0.5, 0, 255).astype(np.uint8)


def _match_edge(img: np.ndarray, dst: np.ndarray, region: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """``img`` (uint8 BGR) with its local brightness and colour at scale ``sigma`` matched to ``dst`` where
    ``weight`` (float in [0, 1]) is high: out = img × (1 + weight × (blur(dst) / blur(img) − 1)), blurs
    restricted to ``region``, the gain's brightness bounded by ``_RELIGHT_LIGHT``.

    Used under the hairline: the lighting match's wide blur cannot follow a forehead that brightens towards
    the top (a lit or shiny forehead), so the swapped skin ended in a visible step just above the brows."""
    rows = np.nonzero((weight > 0).any(axis=1))[0]
    if len(rows) == 0:
        return img
    # Only the rows of the band, with three sigmas of context above and below.
    y0, y1 = max(0, int(rows[0] - 3 * sigma)), min(img.shape[0], int(rows[-1] + 3 * sigma) + 1)
    sub = (slice(y0, y1),)
    if int(region[sub].sum()) < 16:
        return img
    src = img[sub].astype(np.float32)
    eps = 4.0
    dst_blur, src_blur = _masked_blur((dst[sub].astype(np.float32), src), region[sub], sigma, detail=2.0)
    gain = (dst_blur + eps) / (src_blur + eps)
    light = gain.mean(axis=2, keepdims=True)
    gain = np.clip(gain / light, 0.5, 2.0) * np.clip(light, *_RELIGHT_LIGHT)
    out = img.copy()
    out[sub] = np.clip(src * (1.0 + weight[sub][..., None] * (gain - 1.0)) + 0.5, 0, 255).astype(np.uint8)
    return out


def _poisson(src: np.ndarray, dst: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Seamless clone of ``src`` into ``dst`` (same size) inside ``mask`` (uint8 0/255), as float32 BGR.

    The clone's effect is ``src`` plus a smooth (harmonic) correction field, so for large regions it is
    computed at reduced resolution and the upsampled correction is added to the full-resolution ``src``.
    Both images are padded so the mask never touches the border (the clone misplaces or rejects such
    masks)."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    if len(xs) < 16:
        return dst.astype(np.float32)
    scale = min(1.0, _POISSON_MAX_SIDE / max(h, w))
    if scale < 1.0:
        size = (max(8, round(w * scale)), max(8, round(h * scale)))
        s_small = cv2.resize(src, size, interpolation=cv2.INTER_AREA)
        d_small = cv2.resize(dst, size, interpolation=cv2.INTER_AREA)
        m_small = cv2.resize(mask, size, interpolation=cv2.INTER_AREA)
        m_small = np.where(m_small >= 250, 255, 0).astype(np.uint8)
    else:
        s_small, d_small, m_small = src, dst, mask
    if int(np.count_nonzero(m_small)) < 16:
        return dst.astype(np.float32)
    pad = 4
    sp = cv2.copyMakeBorder(s_small, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    dp = cv2.copyMakeBorder(d_small, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    mp = cv2.copyMakeBorder(m_small, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    bx, by, bw, bh = cv2.boundingRect(mp)
    # OpenCV places the mask's bounding box at center - (bw // 2, bh // 2): this centre keeps it in place.
    center = (bx + bw // 2, by + bh // 2)
    try:
        cloned = cv2.seamlessClone(sp, dp, mp, center, cv2.NORMAL_CLONE)
    except cv2.error:
        return src.astype(np.float32)
    cloned = cloned[pad:-pad, pad:-pad].astype(np.float32)
    if scale >= 1.0:
        return cloned
    correction = cloned - s_small.astype(np.float32)
    correction = cv2.resize(correction, (w, h), interpolation=cv2.INTER_LINEAR)
    return src.astype(np.float32) + correction


def _should_mirror(src_lm: np.ndarray, dst_lm: np.ndarray, margin: float = 0.04) -> bool:
    """True when the source face, flipped horizontally, matches the target's head turn clearly better: a
    face turned the other way would otherwise be squeezed on one side and stretched on the other."""
    rs, rt = yaw_ratio(src_lm), yaw_ratio(dst_lm)
    return abs((1.0 - rs) - rt) + margin < abs(rs - rt)


def _mouth_mask(lm: np.ndarray, shape: tuple[int, int], size: float) -> np.ndarray:
    """Soft mask (float32 in [0, 1]) of an open mouth's inside (inner lip contour 60–67), or all zeros when
    the mouth is closed. Keeping the target's own teeth and mouth cavity avoids stretching the source's
    closed lips over an open mouth."""
    inner = lm[60:68].astype(np.float32)
    area = float(cv2.contourArea(inner))
    out = np.zeros(shape, np.float32)
    if area < 0.004 * size * size:
        return out
    mult = 1 << _SUBPIX_SHIFT
    cv2.fillPoly(out, [np.round(inner * mult).astype(np.int32)], 1.0, cv2.LINE_8, _SUBPIX_SHIFT)
    sigma = max(0.6, 0.015 * size)
    return cv2.GaussianBlur(out, (0, 0), sigma)


class ClassicalSwapper:
    """Landmark-driven face swap (see the module docstring). ``forehead_ratio`` sets how far above the
    brows the swapped region reaches (fraction of the eyes-to-chin distance); ``feather`` is the width of
    the soft edge as a fraction of the same distance; ``relight`` is the blur radius of the lighting match
    (same unit, 0 = mean/std transfer only); ``poisson`` adds the seamless-clone pass; ``mirror`` allows
    flipping the source to match the head turn; ``keep_mouth`` keeps an open target mouth's inside."""

    name = "builtin"
    needs_source_embedding = False

    @classmethod
    def load(cls, spec: LoadSpec) -> ClassicalSwapper:
        return cls()

    def __init__(
        self,
        forehead_ratio: float = 0.2,
        feather: float = 0.1,
        poisson: bool = False,
        relight: float = 0.15,
        mirror: bool = True,
        keep_mouth: bool = True,
    ) -> None:
        self.forehead_ratio = float(forehead_ratio)
        self.feather = float(feather)
        self.poisson = bool(poisson)
        self.relight = float(relight)
        self.mirror = bool(mirror)
        self.keep_mouth = bool(keep_mouth)
        self.ring_scale = 1.3

    def prepare(self) -> None:
        return None

    def get(self, img: np.ndarray, target: Face, source: Face, source_img: np.ndarray) -> np.ndarray:
        """A new image: ``img`` with ``target``'s face replaced by ``source``'s face from ``source_img``."""
        for name, arr in (("img", img), ("source_img", source_img)):
            if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
                raise ValueError(f"{name} must be a BGR uint8 image (H, W, 3), got {arr.dtype} {arr.shape}")
        t_lm = _landmarks(target, "target")
        s_lm = _landmarks(source, "source")
        out = img.copy()
        H, W = img.shape[:2]

        # --- target region of interest: the outer ring's box, clipped to the image ---------------------
        t_pts = _point_set(t_lm, self.forehead_ratio, self.ring_scale)
        x0 = max(0, int(np.floor(t_pts[:, 0].min())) - 1)
        y0 = max(0, int(np.floor(t_pts[:, 1].min())) - 1)
        x1 = min(W, int(np.ceil(t_pts[:, 0].max())) + 2)
        y1 = min(H, int(np.ceil(t_pts[:, 1].max())) + 2)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return out
        rw, rh = x1 - x0, y1 - y0
        t_loc = t_pts - (x0, y0)

        # --- source crop around its own ring, downscaled to the target's face size ---------------------
        s_pts = _point_set(s_lm, self.forehead_ratio, self.ring_scale)
        sh, sw = source_img.shape[:2]
        sx0 = max(0, int(np.floor(s_pts[:, 0].min())) - 2)
        sy0 = max(0, int(np.floor(s_pts[:, 1].min())) - 2)
        sx1 = min(sw, int(np.ceil(s_pts[:, 0].max())) + 3)
        sy1 = min(sh, int(np.ceil(s_pts[:, 1].max())) + 3)
        if sx1 - sx0 < 2 or sy1 - sy0 < 2:
            return out
        s_crop = source_img[sy0:sy1, sx0:sx1]
        s_lm_loc = s_lm - (sx0, sy0)
        if self.mirror and _should_mirror(s_lm, t_lm):
            s_crop = s_crop[:, ::-1]
            s_lm_loc = mirror_68(s_lm_loc, s_crop.shape[1])
        s_loc = _point_set(s_lm_loc, self.forehead_ratio, self.ring_scale)
        # How far each face's skin reaches above its brows (hairline, fringe): the swap stops at the lower of
        # the two, so neither the source's hair is pasted onto the target's forehead nor the target's fringe
        # replaced. Points correspond one to one (the source's are already mirrored when it was flipped).
        # Where the source's skin ends below the full height, its last samples are the hair's edge and shadow:
        # stop a little lower there (a dark line along the hairline otherwise).
        s_extent = skin_extent(np.ascontiguousarray(s_crop), s_lm_loc, self.forehead_ratio)
        s_extent = np.where(s_extent < self.forehead_ratio - 1e-3,
                            np.maximum(s_extent - _HAIR_MARGIN, _MIN_FOREHEAD), s_extent)
        forehead = np.minimum(s_extent, skin_extent(img, t_lm, self.forehead_ratio))
        t_size = face_scale(t_lm)
        factor = t_size / face_scale(s_lm)
        if factor < 0.9:
            ch, cw = s_crop.shape[:2]
            size = (max(2, round(cw * factor)), max(2, round(ch * factor)))
            s_crop = cv2.resize(s_crop, size, interpolation=cv2.INTER_AREA)
            fx, fy = size[0] / cw, size[1] / ch
            s_loc = np.stack([(s_loc[:, 0] + 0.5) * fx - 0.5, (s_loc[:, 1] + 0.5) * fy - 0.5], axis=1)
        ch, cw = s_crop.shape[:2]

        # --- piecewise-affine warp: one triangulation, applied to both sides -------------------------
        # The topology comes from the target's points with its eyes held open, so the lid contours are edges
        # of the mesh even when the target's eyes are shut (see _open_eyes).
        tris = _triangles(_open_eyes(t_loc))
        affines, ok = _affines(t_loc, s_loc, tris)
        _narrow_eyes(affines, tris, t_loc, s_loc)
        index = np.zeros((rh, rw), np.uint16)  # triangle id + 1, 0 = outside every triangle
        mult = 1 << _SUBPIX_SHIFT
        # Triangles inside the eyes first: where a shut eye's lids cross, the lids' triangles cover them.
        in_eye = ((tris >= LEFT_EYE[0]) & (tris <= LEFT_EYE[-1])).all(axis=1) | (
            (tris >= RIGHT_EYE[0]) & (tris <= RIGHT_EYE[-1])
        ).all(axis=1)
        for i in np.nonzero(ok)[0][np.argsort(~in_eye[ok], kind="stable")]:
            poly = np.round(t_loc[tris[i]] * mult).astype(np.int32)
            cv2.fillConvexPoly(index, poly, int(i) + 1, cv2.LINE_8, _SUBPIX_SHIFT)
        covered = index > 0
        tri = np.maximum(index.astype(np.int32) - 1, 0)
        coef = affines.reshape(-1, 6).astype(np.float32)[tri]  # (rh, rw, 6)
        gx = np.arange(rw, dtype=np.float32)[None, :]
        gy = np.arange(rh, dtype=np.float32)[:, None]
        map_x = coef[..., 0] * gx + coef[..., 1] * gy + coef[..., 2]
        map_y = coef[..., 3] * gx + coef[..., 4] * gy + coef[..., 5]
        map_x[~covered] = -1.0
        map_y[~covered] = -1.0
        warped = cv2.remap(s_crop, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        # Source pixels that exist: inside the (clipped) crop. Outside it lies beyond the source image.
        valid = covered & (map_x >= -0.5) & (map_x <= cw - 0.5) & (map_y >= -0.5) & (map_y <= ch - 0.5)

        # --- masks --------------------------------------------------------------------------------
        outline = face_outline(t_lm, self.forehead_ratio) - (x0, y0)
        hull = cv2.convexHull(np.round(outline * mult).astype(np.int32))
        face_mask = np.zeros((rh, rw), np.uint8)
        cv2.fillConvexPoly(face_mask, hull, 255, cv2.LINE_8, _SUBPIX_SHIFT)
        face_mask[~valid] = 0
        radius = max(1, round(self.feather * t_size))
        alpha = _feather(face_mask, radius)
        # The hairline: everything above the skin limit points is excluded, with a narrow soft edge of its own
        # (the wide feather of the outline would fade the brows when the skin ends just above them).
        t_up = _up_vector(t_lm)
        limit = t_lm[BROWS] + forehead[:, None] * t_up[None, :] - (x0, y0)
        top_mask = np.zeros((rh, rw), np.uint8)
        ext_l = limit[0] + (limit[0] - limit[1]) * 3.0
        ext_r = limit[-1] + (limit[-1] - limit[-2]) * 3.0
        top_poly = np.concatenate([[ext_l], limit, [ext_r], [ext_r - 3.0 * t_up], [ext_l - 3.0 * t_up]])
        cv2.fillPoly(top_mask, [np.round(top_poly * mult).astype(np.int32)], 255, cv2.LINE_8, _SUBPIX_SHIFT)
        # The band under the hairline where the lighting is matched at a finer scale (1 at the hairline, 0 from
        # _TOP_BAND below it), from the distance transform of the rows it can reach only.
        depth = _TOP_BAND * t_size
        hair_y = top_poly[: len(limit) + 2, 1]
        ys0 = min(rh, max(0, int(np.floor(hair_y.min())) - 1))
        ys1 = min(rh, max(ys0, int(np.ceil(hair_y.max() + depth)) + 2))
        hair_band = np.zeros((rh, rw), np.float32)
        if ys1 > ys0:
            below = cv2.distanceTransform(top_mask[ys0:ys1], cv2.DIST_L2, 3)
            hair_band[ys0:ys1] = np.clip(1.0 - below / depth, 0.0, 1.0)
        top_mask[face_mask == 0] = 0
        face_mask = top_mask
        alpha *= _feather(top_mask, max(1, round(_TOP_FEATHER * t_size)))
        if self.keep_mouth:
            alpha *= 1.0 - _mouth_mask(t_lm - (x0, y0), (rh, rw), t_size)
        if not np.any(alpha > 0):
            return out

        # Colour and blending only need the box around the face mask.
        bx, by, bw, bh = cv2.boundingRect(np.where(alpha > 0, 255, 0).astype(np.uint8))
        box = (slice(by, by + bh), slice(bx, bx + bw))
        face_mask, alpha, warped = face_mask[box], alpha[box], warped[box]
        target_roi = img[y0 + by : y0 + by + bh, x0 + bx : x0 + bx + bw]
        inner = _erode(face_mask, radius)
        stats_mask = inner if inner.sum() >= 16 else face_mask > 0
        # Skin only for the colour statistics and the lighting: eyes, brows and lips differ between the two
        # faces and would otherwise print the target's eyes into the source's (ghost eyes).
        features = _feature_mask(t_lm - (x0 + bx, y0 + by), (bh, bw), t_size)
        skin_stats = stats_mask & ~features
        skin_region = (face_mask > 0) & ~features
        light_region = skin_region if skin_region.sum() >= 16 else face_mask > 0
        corrected = _match_colour(
            warped, target_roi, skin_stats if skin_stats.sum() >= 16 else stats_mask, light_region,
            self.relight * t_size,
        )
        if self.relight > 0:
            corrected = _match_edge(corrected, target_roi, light_region, hair_band[box], depth / 2.0)

        if self.poisson:
            clone_mask = np.where(_erode(face_mask, 1.0), 255, 0).astype(np.uint8)
            blended_src = _poisson(corrected, target_roi, clone_mask)
        else:
            blended_src = corrected.astype(np.float32)

        a3 = alpha[..., None]
        mixed = blended_src * a3 + target_roi.astype(np.float32) * (1.0 - a3)
        mixed = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
        region = alpha > 0
        roi_out = out[y0 + by : y0 + by + bh, x0 + bx : x0 + bx + bw]
        roi_out[region] = mixed[region]
        return out
