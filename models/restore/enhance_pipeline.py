"""The enhance pipeline over arrays: upscale the picture, then restore each given face on the result.

Order of work for ``enhance_image``:

1. The canvas: exactly round(w·scale) x round(h·scale). With ``background_enhance`` and a model upscaler
   the network upscales the background (also at scale 1, where it runs at its own scale and is shrunk back,
   which cleans the background up); otherwise Lanczos resizes it (a plain copy at scale 1).
2. Every face in ``faces`` (and only those, so swap + enhance can pass just the swapped faces) is moved
   to canvas coordinates and restored there. Points map with the pixel-centre convention that both
   OpenCV's resize and the upscaling networks follow: x' = (x + 0.5)·sx − 0.5, per axis, with
   sx = W'/w and sy = H'/h the exact factors of the rounded output size. Restoring on the canvas (and not
   on the input, pasting later) means every face lands at its upscaled position and the restorer sees the
   face at the canvas's resolution.
3. Masks: XSeg (``occlusion``) and BiSeNet (``parser``) run on the face's aligned 512 crop of the canvas,
   and multiply the paste alpha.
4. ``face_upsample``: when the face covers more canvas pixels than the 512 crop holds (large faces, large
   scales), the restored crop is upscaled by the model upscaler to the face's canvas size before it is
   pasted, instead of being stretched by the paste's bilinear warp. Faces smaller than the crop gain
   nothing from it and are pasted directly. It needs a neural restorer (the built-in one already works
   at canvas resolution) and a model upscaler; without either the flag changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import cast

import numpy as np

from models.base import CropRestorer, Occluder, Parser, Restorer, Upscaler
from models.face import Face
from models.masks.face_masks import FACE_CLASSES
from models.restore.restorer import CROP_SIZE, align_face, paste_restored
from models.restore.upscaler import LanczosUpscaler, output_size


def scale_face(face: Face, sx: float, sy: float) -> Face:
    """Copy of ``face`` in the coordinates of the image resized by (sx, sy) (pixel-centre convention)."""
    if sx == 1.0 and sy == 1.0:
        return face
    f = np.array([sx, sy], np.float64)

    def pts(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, np.float64).reshape(-1, 2)
        return ((a + 0.5) * f - 0.5).astype(np.float32)

    bbox = pts(face.bbox).reshape(4)
    landmarks = None if face.landmarks is None else pts(face.landmarks)
    return replace(face, bbox=bbox, kps=pts(face.kps), landmarks=landmarks, extra=dict(face.extra))


def face_masks(crop: np.ndarray, occlusion: Occluder | None, parser: Parser | None,
               parser_classes: Sequence[int] = FACE_CLASSES) -> np.ndarray | None:
    """Product of the optional XSeg and BiSeNet masks of an aligned crop (None when neither is given)."""
    mask: np.ndarray | None = None
    if occlusion is not None:
        mask = occlusion.mask(crop)
    if parser is not None:
        region = parser.region_mask(crop, parser_classes)
        mask = region if mask is None else mask * region
    return mask


def crop_footprint(m: np.ndarray, size: int = CROP_SIZE) -> float:
    """How many image pixels the side of a ``size`` crop made with image→crop matrix ``m`` spans."""
    return size / math.sqrt(abs(float(np.linalg.det(np.asarray(m, np.float64)[:, :2]))))


def _upsampled_paste(canvas: np.ndarray, crop: np.ndarray, m: np.ndarray, upscaler: Upscaler, blend: float,
                     mask: np.ndarray | None) -> np.ndarray:
    """Paste a restored crop after upscaling it to the face's canvas size (when that is larger)."""
    factor = min(crop_footprint(m, crop.shape[1]) / crop.shape[1], 8.0)
    if factor <= 1.0:
        return paste_restored(canvas, crop, m, blend, mask, inplace=True)
    big = upscaler.upscale(crop, factor)
    s = big.shape[1] / crop.shape[1]
    # crop pixel c ↦ big pixel (c + 0.5)·s − 0.5
    m_big = np.asarray(m, np.float64) * s
    m_big[:, 2] += 0.5 * s - 0.5
    return paste_restored(canvas, big, m_big, blend, mask, inplace=True)


def enhance_image(
    img: np.ndarray,
    faces: Sequence[Face],
    restorer: Restorer,
    upscaler: Upscaler | None = None,
    scale: float = 1,
    background_enhance: bool = False,
    face_upsample: bool = False,
    occlusion: Occluder | None = None,
    parser: Parser | None = None,
    fidelity: float = 0.5,
    blend: float = 0.8,
    restored: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
) -> np.ndarray:
    """Restore ``faces`` (coordinates of ``img``) and upscale ``img`` by ``scale``; see the module doc.
    ``restored``: the restorer's crops (and image→crop matrices) of ``faces``, already computed on ``img`` (a
    batch of video frames goes through the restorer at once); only with ``scale`` 1 and a crop restorer.

    Returns a new BGR uint8 image of exactly round(w·scale) x round(h·scale) pixels.
    """
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    h, w = img.shape[:2]
    out_w, out_h = output_size(img.shape, scale)
    model_up = upscaler if upscaler is not None and upscaler.learned else None
    if background_enhance and model_up is not None:
        canvas = model_up.upscale(img, scale)
    else:
        canvas = LanczosUpscaler().upscale(img, scale)
    assert canvas.shape[:2] == (out_h, out_w), (canvas.shape, out_w, out_h)
    sx, sy = out_w / w, out_h / h

    if restored is not None and (len(restored) != len(faces) or out_w != w or out_h != h or not restorer.gives_crops):
        raise ValueError("restored crops need one per face, scale 1 and a crop restorer")
    for i, face in enumerate(faces):
        placed = scale_face(face, sx, sy)
        mask = None
        if occlusion is not None or parser is not None:
            crop, _ = align_face(canvas, placed)
            mask = face_masks(crop, occlusion, parser)
        if restorer.gives_crops:
            # The canvas is this function's own array: paste in place, no whole-frame copy per face.
            if restored is not None:
                crop, m = restored[i]
            else:
                crop, m = cast(CropRestorer, restorer).restore_crop(canvas, placed, fidelity)
            if face_upsample and model_up is not None:
                canvas = _upsampled_paste(canvas, crop, m, model_up, blend, mask)
            else:
                canvas = paste_restored(canvas, crop, m, blend, mask, inplace=True)
        else:
            canvas = restorer.restore(canvas, placed, fidelity=fidelity, blend=blend, mask=mask)
    return canvas


__all__ = ["enhance_image", "face_masks", "scale_face", "crop_footprint"]
