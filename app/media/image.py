"""Image decode/encode with the service's limits. Bytes are sniffed, never trusted by name."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from app.errors import InvalidMediaError, TooLargeError, UnsupportedMediaError

# Pillow's own bomb guard is replaced by our explicit pixel limit, checked from the header before decoding.
Image.MAX_IMAGE_PIXELS = None

_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "png"),
    (b"GIF87a", 0, "gif"),
    (b"GIF89a", 0, "gif"),
    (b"BM", 0, "bmp"),
    (b"II*\x00", 0, "tiff"),
    (b"MM\x00*", 0, "tiff"),
)

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def sniff_image(data: bytes) -> str | None:
    """The image format named by the file's first bytes, or None."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, offset, name in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            return name
    return None


@dataclass
class DecodedImage:
    bgr: np.ndarray  # uint8 (H, W, 3)
    alpha: np.ndarray | None  # uint8 (H, W) when the input had transparency
    format: str

    @property
    def width(self) -> int:
        return int(self.bgr.shape[1])

    @property
    def height(self) -> int:
        return int(self.bgr.shape[0])


def _to_rgb_and_alpha(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im).astype(np.float64)
        hi = 65535.0 if mode.startswith("I;16") else max(float(arr.max()), 1.0)
        gray = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2), None
    has_alpha = mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info)
    if has_alpha:
        rgba = np.asarray(im.convert("RGBA"))
        alpha = rgba[..., 3].copy()
        return np.ascontiguousarray(rgba[..., :3]), (alpha if alpha.min() < 255 else None)
    return np.asarray(im.convert("RGB")), None


def decode_image(data: bytes, field: str, max_pixels: int) -> DecodedImage:
    """Decode an uploaded image into BGR uint8 (+ alpha), honouring EXIF orientation.

    415 when the bytes are not an image format we read; 413 when width × height exceeds ``max_pixels``
    (checked from the header, before any pixel is decoded); 422 when the file is corrupt or truncated.
    """
    if not data:
        raise InvalidMediaError(field, f"{field} is empty")
    fmt = sniff_image(data)
    if fmt is None:
        raise UnsupportedMediaError(field, f"{field} is not a supported image (JPEG, PNG, WebP, BMP, TIFF, GIF)")
    try:
        im = Image.open(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad headers
        raise InvalidMediaError(field, f"{field} could not be read as {fmt}: {exc}") from None
    w, h = im.size
    if w * h > max_pixels:
        raise TooLargeError(field, f"{field} is {w}×{h} = {w * h} pixels, over the limit of {max_pixels}")
    if w < 1 or h < 1:
        raise InvalidMediaError(field, f"{field} has no pixels")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im.load()
            im = ImageOps.exif_transpose(im)
        rgb, alpha = _to_rgb_and_alpha(im)
    except Exception as exc:  # noqa: BLE001
        raise InvalidMediaError(field, f"{field} is corrupt or truncated ({fmt}): {exc}") from None
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    return DecodedImage(bgr=bgr, alpha=alpha, format=fmt)


def encode_image(bgr: np.ndarray, fmt: str, quality: int = 95, alpha: np.ndarray | None = None) -> tuple[bytes, str]:
    """Encode BGR uint8 (+ optional alpha, kept for PNG and WebP) → (bytes, media type)."""
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    if alpha is not None and fmt in ("png", "webp") and alpha.shape == bgr.shape[:2]:
        im = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    else:
        im = Image.fromarray(rgb, "RGB")
    buf = io.BytesIO()
    if fmt == "png":
        im.save(buf, "PNG", compress_level=1)
    elif fmt == "jpeg":
        im.save(buf, "JPEG", quality=quality)
    elif fmt == "webp":
        im.save(buf, "WEBP", quality=quality)
    else:
        raise ValueError(f"unknown output format {fmt}")
    return buf.getvalue(), MEDIA_TYPES[fmt]
