"""Decode/encode: sniffing, limits, EXIF orientation and the odd pixel formats users send."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from app.errors import InvalidMediaError, TooLargeError, UnsupportedMediaError
from app.media import decode_image, encode_image, sniff_image


def _png(im: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


def _rgb_image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), "RGB")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"])
def test_sniff_known_formats(fmt: str) -> None:
    buf = io.BytesIO()
    _rgb_image().save(buf, fmt)
    assert sniff_image(buf.getvalue()) == {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp", "BMP": "bmp",
                                           "TIFF": "tiff", "GIF": "gif"}[fmt]


def test_sniff_ignores_names_and_rejects_text() -> None:
    assert sniff_image(b"%PDF-1.7 fake") is None
    assert sniff_image(b"hello, I am a .png by name only") is None
    with pytest.raises(UnsupportedMediaError) as e:
        decode_image(b"GIF-not really", "image", 10**6)
    assert e.value.field == "image" and e.value.status == 415


def test_rgb_roundtrip_is_bgr() -> None:
    im = _rgb_image()
    d = decode_image(_png(im), "image", 10**6)
    assert d.bgr.shape == (30, 40, 3) and d.bgr.dtype == np.uint8 and d.alpha is None
    np.testing.assert_array_equal(d.bgr[..., ::-1], np.asarray(im))


def test_pixel_limit_checked_before_decoding() -> None:
    data = _png(Image.new("L", (3000, 2000)))  # compresses to a few KB: a small decompression bomb
    with pytest.raises(TooLargeError) as e:
        decode_image(data, "target_image", 5_000_000)
    assert e.value.status == 413 and e.value.field == "target_image"


def test_truncated_file_is_422() -> None:
    buf = io.BytesIO()
    _rgb_image().resize((400, 300)).save(buf, "JPEG")
    with pytest.raises(InvalidMediaError) as e:
        decode_image(buf.getvalue()[: len(buf.getvalue()) // 2], "source_image", 10**7)
    assert e.value.status == 422 and e.value.field == "source_image"


def test_exif_orientation_is_applied() -> None:
    base = np.zeros((20, 60, 3), np.uint8)
    base[:, :10] = (255, 0, 0)  # red stripe on the left of the upright picture
    stored = Image.fromarray(base).transpose(Image.Transpose.ROTATE_90)  # stored rotated: 60 tall, 20 wide
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO()
    stored.save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    d = decode_image(buf.getvalue(), "image", 10**6)
    assert (d.width, d.height) == (60, 20)


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "LA", "I;16"])
def test_modes_decode_to_bgr(mode: str) -> None:
    rgb = _rgb_image()
    if mode == "I;16":
        arr = (np.asarray(rgb.convert("L")).astype(np.uint16) * 257)
        im = Image.fromarray(arr)
        data = _png(im)
    elif mode == "CMYK":
        buf = io.BytesIO()
        rgb.convert("CMYK").save(buf, "JPEG")
        data = buf.getvalue()
    else:
        data = _png(rgb.convert(mode))
    d = decode_image(data, "image", 10**6)
    assert d.bgr.shape == (30, 40, 3) and d.bgr.dtype == np.uint8
    if mode == "I;16":
        np.testing.assert_allclose(d.bgr[..., 0], np.asarray(rgb.convert("L")), atol=1)


def test_alpha_is_kept_through_png() -> None:
    rgba = np.dstack([np.asarray(_rgb_image()), np.full((30, 40), 128, np.uint8)])
    d = decode_image(_png(Image.fromarray(rgba, "RGBA")), "image", 10**6)
    assert d.alpha is not None and int(d.alpha[0, 0]) == 128
    data, media = encode_image(d.bgr, "png", alpha=d.alpha)
    assert media == "image/png"
    back = Image.open(io.BytesIO(data))
    assert back.mode == "RGBA" and np.asarray(back)[0, 0, 3] == 128


@pytest.mark.parametrize("fmt,media", [("png", "image/png"), ("jpeg", "image/jpeg"), ("webp", "image/webp")])
def test_encode_formats(fmt: str, media: str) -> None:
    bgr = np.zeros((10, 12, 3), np.uint8)
    data, mt = encode_image(bgr, fmt)
    assert mt == media and sniff_image(data) == fmt
