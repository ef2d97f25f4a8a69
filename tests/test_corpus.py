"""A malformed-media corpus, generated here, sent to every image endpoint, to the video fields of /faceswap/video
and /lipsync, and to /lipsync's audio field, of a live 2-worker server (built-in models). Never a 5xx other than
503; every 4xx is JSON naming the field.

Run with ``-s`` to see the table (file → status per endpoint)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_hardening import png_bad_idat_crc, png_header_bomb, png_short_idat

RNG = np.random.default_rng(7)


def _img(w: int = 64, h: int = 48) -> Image.Image:
    return Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _save(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def _frames(n: int = 3) -> list[Image.Image]:
    return [_img() for _ in range(n)]


def image_corpus() -> dict[str, bytes]:
    png = _save(_img(), "PNG")
    jpg = _save(_img(), "JPEG")
    webp = _save(_img(), "WEBP")
    gif = _save(_img(), "GIF")
    tif = _save(_img(), "TIFF")
    bmp = _save(_img(), "BMP")
    c: dict[str, bytes] = {}
    c["zero.bin"] = b""
    c["one-byte.bin"] = b"\x89"
    # PNG
    c["png-truncated-half.png"] = png[: len(png) // 2]
    c["png-signature-only.png"] = png[:8]
    c["png-short-idat.png"] = png_short_idat()
    c["png-bad-idat-crc.png"] = png_bad_idat_crc()
    text = _chunk(b"tEXt", b"Comment\x00hello")
    c["png-bad-text-crc.png"] = png[:33] + text[:-1] + bytes([text[-1] ^ 0xFF]) + png[33:]
    c["png-header-bomb-99b.png"] = png_header_bomb()
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    c["png-bomb-60000x60000.png"] = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
                                     + _chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + _chunk(b"IEND", b""))
    c["png-16bit-rgb.png"] = _save(Image.fromarray(RNG.integers(0, 65535, (48, 64), dtype=np.uint16)), "PNG")
    c["png-animated.png"] = _save(_frames()[0], "PNG", save_all=True, append_images=_frames(2), duration=100)
    c["png-1x1.png"] = _save(_img(1, 1), "PNG")
    c["png-aspect-1x8000.png"] = _save(_img(1, 8000), "PNG")
    c["png-aspect-8000x1.png"] = _save(_img(8000, 1), "PNG")
    c["png-zip-polyglot.png"] = png + b"PK\x03\x04" + b"\x00" * 26 + b"evil.txt" + b"hello"
    # JPEG
    c["jpeg-truncated.jpg"] = jpg[: len(jpg) // 2]
    c["jpeg-truncated-eoi.jpg"] = jpg[: len(jpg) // 2] + b"\xff\xd9"
    c["jpeg-soi-garbage.jpg"] = b"\xff\xd8\xff" + bytes(RNG.integers(0, 256, 500, dtype=np.uint8))
    c["jpeg-cmyk.jpg"] = _save(_img().convert("CMYK"), "JPEG")
    exif = Image.Exif()
    exif[0x010E] = "x" * 60000  # ImageDescription: a ~60 KB EXIF block
    c["jpeg-huge-exif.jpg"] = _save(_img(), "JPEG", exif=exif.tobytes())
    sof = jpg.find(b"\xff\xc0")
    c["jpeg-header-bomb.jpg"] = jpg[: sof + 5] + struct.pack(">HH", 65000, 65000) + jpg[sof + 9 :]
    # WebP
    c["webp-truncated.webp"] = webp[: len(webp) // 2]
    bad = bytearray(webp)
    bad[4:8] = struct.pack("<I", 0x7FFFFFF0)
    c["webp-bad-riff-size.webp"] = bytes(bad)
    c["webp-animated.webp"] = _save(_frames()[0], "WEBP", save_all=True, append_images=_frames(2), duration=100)
    # GIF
    c["gif-truncated.gif"] = gif[: len(gif) // 2]
    c["gif-animated.gif"] = _save(_frames()[0], "GIF", save_all=True, append_images=_frames(2), duration=100)
    c["gif-header-bomb.gif"] = gif[:6] + struct.pack("<HH", 65535, 65535) + gif[10:40]
    c["gif-html-polyglot.gif"] = b"GIF89a/*<html><script>alert(1)</script>*/=1;" + b"\x00" * 20
    # TIFF
    pages = _frames(3)
    c["tiff-multipage.tif"] = _save(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    c["tiff-truncated.tif"] = tif[: len(tif) // 2]
    c["tiff-deflate-truncated.tif"] = _save(_img(), "TIFF", compression="tiff_deflate")[:60]
    c["tiff-header-bomb.tif"] = _save(Image.new("L", (1, 1)), "TIFF").replace(
        struct.pack("<HHII", 256, 4, 1, 1), struct.pack("<HHII", 256, 4, 1, 60000), 1)
    c["bmp-truncated.bmp"] = bmp[: len(bmp) // 2]
    # not images at all
    c["image.svg"] = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"></svg>'
    c["doc.pdf"] = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
    c["page.html"] = b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>"
    c["text.txt"] = b"just some text\n"
    c["icon.ico"] = _save(_img(16, 16), "ICO")
    return c


def _patch_durations(data: bytes, seconds: int) -> bytes:
    """Claim ``seconds`` in an MP4's headers: every mvhd and mdhd (version 0), and every stts (the sample table
    FFmpeg derives a track's duration from) with its sample durations stretched to add up to ``seconds``."""
    out = bytearray(data)
    scales = []
    for box in (b"mvhd", b"mdhd"):
        i = out.find(box)
        while i >= 0:
            if out[i + 4] == 0:
                (scale,) = struct.unpack(">I", out[i + 16 : i + 20])
                out[i + 20 : i + 24] = struct.pack(">I", min(scale * seconds, 0xFFFFFFFF))
                if box == b"mdhd":
                    scales.append(scale)
            i = out.find(box, i + 4)
    i, track = out.find(b"stts"), 0
    while i >= 0 and track < len(scales):
        (entries,) = struct.unpack(">I", out[i + 8 : i + 12])
        samples = sum(struct.unpack(">I", out[i + 12 + 8 * k : i + 16 + 8 * k])[0] for k in range(entries))
        delta = min(scales[track] * seconds // max(samples, 1), 0xFFFFFFFF)
        for k in range(entries):
            out[i + 16 + 8 * k : i + 20 + 8 * k] = struct.pack(">I", delta)
        i, track = out.find(b"stts", i + 4), track + 1
    i = out.find(b"elst")  # edit lists (in the movie's timescale, 1000 from PyAV) bound the track's duration too
    while i >= 0:
        if out[i + 4] == 0:
            out[i + 12 : i + 16] = struct.pack(">I", min(1000 * seconds, 0xFFFFFFFF))
        i = out.find(b"elst", i + 4)
    return bytes(out)


def video_corpus(tmp: Path) -> dict[str, bytes]:
    import av

    from testkit.clips import _encode_audio, write_audio, write_clip

    good = write_clip(tmp / "good.mp4", size=(96, 64), seconds=1.0, audio="aac").read_bytes()
    c: dict[str, bytes] = {}
    c["zero.mp4"] = b""
    c["mp4-truncated-half.mp4"] = good[: len(good) // 2]
    c["mp4-truncated-tail.mp4"] = good[: len(good) - len(good) // 4]
    c["mp4-wrong-codec.mp4"] = good.replace(b"avc1", b"zzzz")
    c["mp4-audio-wrong-codec.mp4"] = good.replace(b"mp4a", b"zzzz")
    c["mp4-10-hours.mp4"] = _patch_durations(good, 36_000)
    c["m4a-audio-only.m4a"] = write_audio(tmp / "a.m4a", "aac", container="mp4").read_bytes()
    c["wav-audio.wav"] = write_audio(tmp / "a.wav", "pcm").read_bytes()
    out = av.open(str(tmp / "empty.mp4"), "w", format="mp4")  # a video track without a frame, beside audio
    vs = out.add_stream("libx264", rate=25)
    vs.width, vs.height, vs.pix_fmt = 96, 64, "yuv420p"
    stream, frames = _encode_audio(out, "aac", 1.0, 48000, 2, "tone")
    for frame in frames:
        for p in stream.encode(frame):
            out.mux(p)
    for p in stream.encode(None):
        out.mux(p)
    out.close()
    c["mp4-zero-frames.mp4"] = (tmp / "empty.mp4").read_bytes()
    c["mkv-truncated.mkv"] = write_clip(tmp / "g.mkv", container="matroska").read_bytes()[:700]
    c["png-as-video.png"] = _save(_img(), "PNG")
    c["html-as-video.mp4"] = b"<html>no video</html>"
    return c


def _wav_claiming(seconds: int, rate: int = 16000) -> bytes:
    """A WAV header that declares ``seconds`` of 16-bit mono audio, followed by a tenth of a second of it."""
    data = (np.sin(np.arange(rate // 10) * 0.2) * 8000).astype("<i2").tobytes()
    size = min(seconds * rate * 2, 0xFFFFFFFF - 36)
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, rate, rate * 2, 2, 16)
    return b"RIFF" + struct.pack("<I", 36 + size) + b"WAVE" + fmt + b"data" + struct.pack("<I", size) + data


def audio_corpus(tmp: Path) -> dict[str, bytes]:
    from testkit.clips import write_audio, write_clip

    wav = write_audio(tmp / "ok.wav", "pcm").read_bytes()
    mp3 = write_audio(tmp / "ok.mp3", "mp3").read_bytes()
    c: dict[str, bytes] = {}
    c["zero.wav"] = b""
    c["one-byte.wav"] = b"R"
    c["wav-header-only.wav"] = wav[:44]
    c["wav-bad-format.wav"] = wav[:20] + struct.pack("<H", 0x7777) + wav[22:]
    c["wav-10-hours.wav"] = _wav_claiming(36_000)
    c["mp3-truncated.mp3"] = mp3[: len(mp3) // 3]
    c["mp3-garbage.mp3"] = b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(RNG.integers(0, 256, 2000, dtype=np.uint8))
    c["video-only.mp4"] = write_clip(tmp / "silent.mp4", size=(96, 64), seconds=1.0).read_bytes()
    c["png-as-audio.png"] = _save(_img(), "PNG")
    c["text-as-audio.wav"] = b"this is not audio at all\n" * 20
    return c


def _check(resp, field: str) -> str:  # noqa: ANN001
    status = resp.status_code
    assert status < 500 or status == 503, f"{status} {resp.text[:300]}"
    if 400 <= status < 500:
        assert resp.headers["content-type"].startswith("application/json"), resp.headers
        err = resp.json()["error"]
        assert err["field"] == field, (field, err)
        return f"{status} {err['code']}"
    return str(status)


IMAGE_ENDPOINTS = {  # path → (corpus field, the other files of the form)
    "/analyze": ("image", ()),
    "/enhance": ("image", ()),
    "/faceswap": ("source_image", ("target_image",)),
    "/swap_img": ("face", ("model",)),
}


@pytest.fixture(scope="module")
def hanks_bytes(hanks_path: Path) -> bytes:
    return hanks_path.read_bytes()


def test_image_corpus(builtin_server, hanks_bytes: bytes) -> None:  # noqa: ANN001
    corpus = image_corpus()
    assert len(corpus) >= 30
    rows = []
    with builtin_server.client() as c:
        for name, data in corpus.items():
            row = [name, str(len(data))]
            for path, (field, others) in IMAGE_ENDPOINTS.items():
                files = [(field, (name, data, "application/octet-stream"))]
                files += [(o, ("hanks.png", hanks_bytes, "image/png")) for o in others]
                row.append(_check(c.post(path, files=files), field))
            rows.append(row)
    _print_table(["file", "bytes", *IMAGE_ENDPOINTS], rows)
    by_name = {r[0]: r[2:] for r in rows}
    for name in ("png-short-idat.png", "png-bad-idat-crc.png", "png-header-bomb-99b.png", "png-truncated-half.png",
                 "jpeg-truncated.jpg", "jpeg-truncated-eoi.jpg", "webp-truncated.webp", "gif-truncated.gif",
                 "tiff-truncated.tif"):
        assert all(s == "422 invalid_media" for s in by_name[name]), (name, by_name[name])
    for name in ("image.svg", "doc.pdf", "page.html", "text.txt", "icon.ico", "one-byte.bin"):
        assert all(s == "415 unsupported_media_type" for s in by_name[name]), (name, by_name[name])


def test_video_corpus(builtin_server, hanks_bytes: bytes, tmp_path: Path) -> None:  # noqa: ANN001
    corpus = video_corpus(tmp_path)
    rows = []
    with builtin_server.client() as c:
        for name, data in corpus.items():
            files = [("source_image", ("hanks.png", hanks_bytes, "image/png")),
                     ("target_video", (name, data, "application/octet-stream"))]
            rows.append([name, str(len(data)), _check(c.post("/faceswap/video", files=files), "target_video")])
    _print_table(["file", "bytes", "/faceswap/video"], rows)
    by_name = {r[0]: r[2] for r in rows}
    assert by_name["mp4-10-hours.mp4"] == "413 too_large"
    assert by_name["m4a-audio-only.m4a"].startswith("415")
    assert by_name["mp4-truncated-half.mp4"].startswith("422")
    assert by_name["mp4-wrong-codec.mp4"] == "415 unsupported_media_type"


def test_lipsync_corpus(builtin_server, hanks_bytes: bytes, tmp_path: Path) -> None:  # noqa: ANN001
    """/lipsync: the video corpus in its ``video`` field (with good audio) and the audio corpus in its ``audio``
    field (with a still portrait)."""
    from testkit.clips import write_audio

    good_audio = write_audio(tmp_path / "speech.wav", "pcm", seconds=0.5).read_bytes()
    rows = []
    with builtin_server.client() as c:
        for name, data in video_corpus(tmp_path).items():
            files = [("video", (name, data, "application/octet-stream")),
                     ("audio", ("speech.wav", good_audio, "audio/wav"))]
            rows.append(["video", name, str(len(data)), _check(c.post("/lipsync", files=files), "video")])
        for name, data in audio_corpus(tmp_path).items():
            files = [("image", ("hanks.png", hanks_bytes, "image/png")),
                     ("audio", (name, data, "application/octet-stream"))]
            rows.append(["audio", name, str(len(data)), _check(c.post("/lipsync", data={"fps": "10"}, files=files),
                                                               "audio")])
    _print_table(["field", "file", "bytes", "/lipsync"], rows)
    by_name = {(r[0], r[1]): r[3] for r in rows}
    assert by_name[("video", "mp4-10-hours.mp4")] == "413 too_large"
    assert by_name[("video", "mp4-wrong-codec.mp4")].startswith("415")
    assert by_name[("video", "mp4-truncated-half.mp4")].startswith("422")
    audio = {name: status for (field, name), status in by_name.items() if field == "audio"}
    for name in ("one-byte.wav", "png-as-audio.png", "text-as-audio.wav", "wav-bad-format.wav"):
        assert audio[name] == "415 unsupported_media_type", (name, audio[name])
    for name in ("zero.wav", "wav-header-only.wav", "mp3-garbage.mp3", "video-only.mp4"):
        assert audio[name] == "422 invalid_media", (name, audio[name])
    # a header that claims 10 hours over 0.1 s of samples, and an MP3 cut short: what is there is lip-synced
    assert audio["wav-10-hours.wav"] == audio["mp3-truncated.mp3"] == "200"


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print()
    for r in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
