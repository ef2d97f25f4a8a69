"""Image decode/encode with the service's limits. Bytes are sniffed, never trusted by name."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps

from app.errors import InvalidMediaError, TooLargeError, UnsupportedMediaError
from app.media import provenance
from app.media.provenance import SourceType

# Pillow's own bomb guard is replaced by our explicit pixel limit, checked from the header before decoding.
Image.MAX_IMAGE_PIXELS = None
# A file whose data runs out must fail to load, never come back padded with black rows.
ImageFile.LOAD_TRUNCATED_IMAGES = False

_FORMAT_NAMES = {"jpeg": "JPEG", "png": "PNG", "gif": "GIF", "bmp": "BMP", "tiff": "TIFF", "webp": "WebP"}

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

# Checks every decoded upload passes, ``check(bgr, field)``, each free to raise an ApiError (the content gate,
# app/services/nsfw.py, adds itself when it is on).
DECODE_CHECKS: list[Callable[[np.ndarray, str], None]] = []


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
    return np.asarray(im if im.mode == "RGB" else im.convert("RGB")), None  # convert() of RGB would copy


class _Corrupt(Exception):
    """What is wrong with the file, in words for its sender (becomes a 422 ``invalid_media``)."""


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _png_raw_size(w: int, h: int, depth: int, colour: int, interlace: int) -> int:
    """Bytes the inflated IDAT stream of a complete image holds: per row a filter byte plus the packed samples."""
    bits = depth * _PNG_CHANNELS[colour]

    def size(pw: int, ph: int) -> int:
        return 0 if pw == 0 or ph == 0 else ph * (1 + (pw * bits + 7) // 8)

    if not interlace:
        return size(w, h)
    return sum(size((w - x0 + dx - 1) // dx, (h - y0 + dy - 1) // dy) for x0, y0, dx, dy in _ADAM7)


def _png_chunks(data: bytes) -> tuple[tuple[int, int, int, int, int], list[memoryview]]:
    """Walk a PNG's chunks checking every CRC and the IEND; the IHDR fields and the IDAT payloads."""
    view = memoryview(data)
    pos, ihdr, idat, seen_iend = 8, None, [], False
    while pos < len(data):
        if pos + 8 > len(data):
            raise _Corrupt("is truncated (it ends inside a chunk header)")
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        if length > 0x7FFFFFFF or pos + 12 + length > len(data):
            raise _Corrupt(f"is truncated (its {ctype.decode('latin-1')!r} chunk runs past the end of the file)")
        body = view[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(body, zlib.crc32(ctype)) != crc:
            raise _Corrupt(f"is corrupt (the checksum of its {ctype.decode('latin-1')!r} chunk does not match)")
        if pos == 8:
            if ctype != b"IHDR" or length != 13:
                raise _Corrupt("is corrupt (it does not start with an IHDR chunk)")
            ihdr = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            seen_iend = True
            break
        pos += 12 + length
    if ihdr is None:
        raise _Corrupt("is truncated (it has no IHDR chunk)")
    if not seen_iend:
        raise _Corrupt("is truncated (it ends before its IEND chunk)")
    if not idat:
        raise _Corrupt("has no image data (no IDAT chunk)")
    w, h, depth, colour, _comp, _filt, interlace = ihdr
    if colour not in _PNG_CHANNELS or depth not in (1, 2, 4, 8, 16) or interlace not in (0, 1):
        raise _Corrupt("is corrupt (its IHDR header is invalid)")
    return (w, h, depth, colour, interlace), idat


def _png_check_data(ihdr: tuple[int, int, int, int, int], idat: list[memoryview]) -> None:
    """Inflate the IDAT stream (in bounded steps, nothing kept) and require every row of the image."""
    need = _png_raw_size(*ihdr)
    z = zlib.decompressobj()
    got = 0
    try:
        for part in idat:
            buf = part
            while buf:
                out = z.decompress(buf, 1 << 20)
                got += len(out)
                buf = z.unconsumed_tail
                if z.eof:
                    break
            if z.eof:
                break
        got += len(z.flush())
    except zlib.error:
        raise _Corrupt("is corrupt (its compressed image data is damaged)") from None
    if got < need:
        raise _Corrupt(f"is truncated (its image data ends early: {got} of {need} bytes, rows are missing)")


def _webp_check(data: bytes) -> None:
    (riff,) = struct.unpack("<I", data[4:8])
    if riff + 8 > len(data):
        raise _Corrupt(f"is truncated (its RIFF header declares {riff + 8} bytes, the file has {len(data)})")
    pos, end = 12, riff + 8
    while pos < end:
        if pos + 8 > end:
            raise _Corrupt("is truncated (it ends inside a chunk header)")
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        if pos + 8 + size > end:
            raise _Corrupt(f"is truncated (its {data[pos:pos + 4].decode('latin-1')!r} chunk runs past the end)")
        pos += 8 + size + (size & 1)


def _jpeg_check(data: bytes) -> None:
    sos = data.find(b"\xff\xda")
    if sos < 0:
        raise _Corrupt("is truncated (it has no image scan)")
    if data.rfind(b"\xff\xd9") < sos:
        raise _Corrupt("is truncated (it ends before its end-of-image marker)")


def _mjpeg_decodes(data: bytes, strict: bool) -> bool:
    """Whether FFmpeg's JPEG decoder reads ``data`` to one frame; ``strict`` turns its concealment off (a scan
    that breaks off, an overread, a bad marker inside the entropy-coded data is an error instead of grey blocks).
    PyAV is imported here, not with the module: the image helpers do not load it otherwise (app/media/__init__)."""
    import av

    try:
        ctx = av.CodecContext.create("mjpeg", "r")
        if strict:
            ctx.options = {"err_detect": "explode+crccheck+bitstream+buffer"}
        return len(ctx.decode(av.Packet(data))) > 0
    except (av.FFmpegError, ValueError):
        return False


def _jpeg_check_scan(data: bytes) -> None:
    """libjpeg (Pillow) pads a scan that breaks off with grey and only warns, so a JPEG cut short with an
    end-of-image marker appended decoded as a picture. FFmpeg's decoder in strict mode notices; a file only it
    cannot read at all (a JPEG flavour it lacks, e.g. arithmetic coding) is left to Pillow. ≈ 36 ms at 12 MP."""
    if not _mjpeg_decodes(data, strict=True) and _mjpeg_decodes(data, strict=False):
        raise _Corrupt("is truncated or corrupt (its image data breaks off before the picture is complete)")


def _load_error(exc: BaseException) -> str:
    """A Pillow/codec failure during load, as words about the file (never the library's text or a repr)."""
    text = str(exc).lower()
    if isinstance(exc, MemoryError):
        return "is too large to decode"
    if "truncated" in text or isinstance(exc, EOFError) or "premature" in text:
        return "is truncated (its image data ends early)"
    return "is corrupt (its image data could not be decoded)"


def decode_image(data: bytes, field: str, max_pixels: int) -> DecodedImage:
    """Decode an uploaded image into BGR uint8 (+ alpha), honouring EXIF orientation.

    415 when the bytes are not an image format we read; 413 when width × height exceeds ``max_pixels``
    (checked from the header, before any pixel is decoded); 422 ``invalid_media`` when the file is corrupt or
    truncated. Decoding is strict: a PNG's chunk CRCs, IEND and the full length of its inflated image data are
    checked (a 99-byte file that declares 6300×6300 is refused at once, not decoded into black rows), a JPEG
    must reach its end-of-image marker, a WebP its RIFF length, and whatever the codec reports as truncated
    fails instead of being padded. Messages say what is wrong with the file, never a library's text.
    """
    if not data:
        raise InvalidMediaError(field, f"{field} is empty")
    fmt = sniff_image(data)
    if fmt is None:
        raise UnsupportedMediaError(field, f"{field} is not a supported image (JPEG, PNG, WebP, BMP, TIFF, GIF)")
    name = _FORMAT_NAMES[fmt]
    png: tuple | None = None
    try:
        if fmt == "png":
            png = _png_chunks(data)
        elif fmt == "webp":
            _webp_check(data)
        elif fmt == "jpeg":
            _jpeg_check(data)
    except _Corrupt as exc:
        raise InvalidMediaError(field, f"{field} ({name}) {exc}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - Pillow raises many types for bad headers
        raise InvalidMediaError(field, f"{field} is not a readable {name} file (its header is corrupt or "
                                       "truncated)") from None
    w, h = im.size
    if w * h > max_pixels:
        raise TooLargeError(field, f"{field} is {w}×{h} = {w * h} pixels, over the limit of {max_pixels}")
    if w < 1 or h < 1:
        raise InvalidMediaError(field, f"{field} has no pixels")
    try:
        if png is not None:
            _png_check_data(*png)
        elif fmt == "jpeg":
            _jpeg_check_scan(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im.load()
            if im.size != (w, h):
                raise _Corrupt(f"decodes to {im.size[0]}×{im.size[1]} pixels, not the {w}×{h} its header declares")
            ImageOps.exif_transpose(im, in_place=True)  # no copy of the picture when nothing needs turning
        rgb, alpha = _to_rgb_and_alpha(im)
    except _Corrupt as exc:
        raise InvalidMediaError(field, f"{field} ({name}) {exc}") from None
    except Exception as exc:  # noqa: BLE001 - codecs raise OSError, ValueError, SyntaxError, struct.error…
        raise InvalidMediaError(field, f"{field} ({name}) {_load_error(exc)}") from None
    im.close()  # Pillow's copy (4 bytes a pixel) is not needed once the array exists (bench/memory.py)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    del rgb
    for check in DECODE_CHECKS:
        check(bgr, field)
    return DecodedImage(bgr=bgr, alpha=alpha, format=fmt)


def encode_image(bgr: np.ndarray, fmt: str, quality: int = 95, alpha: np.ndarray | None = None,
                 source: SourceType = "edited") -> tuple[bytes, str]:
    """Encode BGR uint8 (+ optional alpha, kept for PNG and WebP) → (bytes, media type).

    The image carries the AI provenance marks (app/media/provenance.py: XMP with the IPTC digital source type of
    ``source`` and the software, plus a signed C2PA manifest when configured) unless they are turned off.
    """
    if alpha is not None and fmt in ("png", "webp") and alpha.shape == bgr.shape[:2]:
        im = Image.fromarray(np.dstack([bgr[..., ::-1], alpha]), "RGBA")
    else:
        # Pillow swaps BGR → RGB while copying into its own buffer: no RGB copy of the array on top (432 MB of
        # peak for a 144 MP result; bench/memory.py)
        im = Image.frombuffer("RGB", (bgr.shape[1], bgr.shape[0]), np.ascontiguousarray(bgr), "raw", "BGR", 0, 1)
    buf = io.BytesIO()
    if fmt not in MEDIA_TYPES:
        raise ValueError(f"unknown output format {fmt}")
    marks = provenance.image_save_options(fmt, source)
    if fmt == "png":
        im.save(buf, "PNG", compress_level=1, **marks)
    elif fmt == "jpeg":
        im.save(buf, "JPEG", quality=quality, **marks)
    else:
        im.save(buf, "WEBP", quality=quality, **marks)
    return provenance.finish_image(buf.getvalue(), MEDIA_TYPES[fmt], source), MEDIA_TYPES[fmt]
