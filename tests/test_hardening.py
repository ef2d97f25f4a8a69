"""Regression tests for issue 12's defects: strict image decoding, slow clients, clean error messages, the
documented errors, and nothing written outside the server's directories."""

from __future__ import annotations

import io
import re
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from app.errors import ApiError
from app.media.image import decode_image

# ---- 1. corrupt images are refused (422 invalid_media), never decoded into black rows --------------------------


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def _png(w: int, h: int, raw: bytes, interlace: int = 0, colour: int = 2) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw))
            + _chunk(b"IEND", b""))


def _pixels(h: int = 120, w: int = 160) -> np.ndarray:
    return np.random.default_rng(12).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_short_idat() -> bytes:
    """A well-formed PNG (every CRC right, IEND present) whose IDAT holds only half of the rows."""
    arr = _pixels()
    raw = b"".join(b"\x00" + arr[y].tobytes() for y in range(arr.shape[0] // 2))
    return _png(arr.shape[1], arr.shape[0], raw)


def png_bad_idat_crc() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_pixels()).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    i = data.find(b"IDAT")
    (length,) = struct.unpack(">I", data[i - 4 : i])
    data[i + 4 + length] ^= 0xFF  # the first CRC byte
    return bytes(data)


def png_header_bomb() -> bytes:
    """99 bytes declaring 6300×6300 (39.7 MP): the IDAT is cut off, there is no IEND."""
    ihdr = struct.pack(">IIBBBBB", 6300, 6300, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 200_000, 9)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat)
    return data[:99]


def _adam7_png(arr: np.ndarray) -> bytes:
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    raw = b""
    for x0, y0, dx, dy in passes:
        sub = arr[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    return _png(arr.shape[1], arr.shape[0], raw, interlace=1)


LEAK = re.compile(r"0x[0-9a-f]{6,}|<_io\.|object at|Errno|Traceback|PIL|libpng|/tmp/|/work/", re.I)


def _refused(data: bytes, max_pixels: int = 40_000_000) -> ApiError:
    with pytest.raises(ApiError) as err:
        decode_image(data, "image", max_pixels)
    assert err.value.status == 422 and err.value.code == "invalid_media" and err.value.field == "image"
    assert not LEAK.search(err.value.message), err.value.message
    return err.value


def test_png_with_missing_rows_is_refused() -> None:
    assert "rows are missing" in _refused(png_short_idat()).message


def test_png_with_bad_crc_is_refused() -> None:
    assert "checksum" in _refused(png_bad_idat_crc()).message


def test_png_header_bomb_is_refused_at_once() -> None:
    data = png_header_bomb()
    assert len(data) == 99
    t = time.process_time()
    assert "truncated" in _refused(data).message
    assert time.process_time() - t < 0.05


def test_png_bomb_with_iend_is_refused_without_decoding() -> None:
    ihdr = struct.pack(">IIBBBBB", 6300, 6300, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 99)) \
        + _chunk(b"IEND", b"")
    t = time.process_time()
    assert "ends early" in _refused(data).message
    assert time.process_time() - t < 0.05


def test_interlaced_and_palette_pngs_still_decode() -> None:
    arr = _pixels(37, 53)
    d = decode_image(_adam7_png(arr), "image", 10**6)
    assert np.array_equal(d.bgr[..., ::-1], arr)
    for mode in ("P", "1", "LA", "I;16"):
        buf = io.BytesIO()
        im = Image.fromarray(arr).convert("L" if mode == "I;16" else mode)
        if mode == "I;16":
            im = Image.fromarray(np.asarray(im).astype(np.uint16) * 257)
        im.save(buf, "PNG")
        assert decode_image(buf.getvalue(), "image", 10**6).width == 53


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "GIF", "TIFF", "BMP"])
def test_truncated_files_of_every_format_are_refused(fmt: str) -> None:
    buf = io.BytesIO()
    Image.fromarray(_pixels()).save(buf, fmt)
    data = buf.getvalue()
    assert decode_image(data, "image", 10**6).height == 120
    for cut in (len(data) // 2, len(data) - 7):
        _refused(data[:cut])


def test_jpeg_cut_short_with_an_end_marker_is_refused() -> None:
    """libjpeg pads a scan that breaks off and only warns: a JPEG cut in half with an end-of-image marker appended
    used to decode (grey lower half). Every valid flavour still decodes: progressive, 4:4:4, 4:2:2, optimised,
    greyscale, CMYK, restart markers."""
    import cv2

    rgb = _pixels(240, 320)
    variants = {}
    for label, kw in {"baseline": {}, "progressive": {"progressive": True}, "444": {"subsampling": 0},
                      "422": {"subsampling": 1}, "optimised": {"optimize": True}}.items():
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "JPEG", quality=90, **kw)
        variants[label] = buf.getvalue()
    for label, mode in (("grey", "L"), ("cmyk", "CMYK")):
        buf = io.BytesIO()
        Image.fromarray(rgb).convert(mode).save(buf, "JPEG", quality=90)
        variants[label] = buf.getvalue()
    variants["restart-markers"] = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_RST_INTERVAL, 4])[1].tobytes()
    for label, data in variants.items():
        assert decode_image(data, "image", 40_000_000).bgr.shape[:2] == (240, 320), label
        err = _refused(data[: len(data) * 2 // 3] + b"\xff\xd9")
        assert err.status == 422 and err.code == "invalid_media" and "breaks off" in err.message, (label, err.message)


def test_unreadable_header_names_no_repr() -> None:
    buf = io.BytesIO()
    Image.fromarray(_pixels()).save(buf, "TIFF", compression="tiff_deflate")
    msg = _refused(buf.getvalue()[:40]).message
    assert msg.startswith("image ") and "TIFF" in msg


def test_corrupt_pngs_over_http(builtin_server) -> None:  # noqa: ANN001
    with builtin_server.client() as c:
        for name, data in (("short", png_short_idat()), ("crc", png_bad_idat_crc()), ("bomb", png_header_bomb())):
            for path in ("/analyze", "/enhance"):
                t = time.monotonic()
                r = c.post(path, files={"image": (f"{name}.png", data, "image/png")})
                assert r.status_code == 422, (name, path, r.text)
                err = r.json()["error"]
                assert err["code"] == "invalid_media" and err["field"] == "image", err
                assert not LEAK.search(err["message"]), err
                assert time.monotonic() - t < 1.0, (name, path)
            r = c.post("/faceswap", files={"source_image": ("s.png", data, "image/png"),
                                           "target_image": ("t.png", data, "image/png")})
            assert r.status_code == 422 and r.json()["error"]["field"] == "source_image", r.text


# ---- 2. slow clients are cut off; connections are capped per worker -----------------------------------------------

HEADER_TIMEOUT, BODY_TIMEOUT, MIN_RATE, MAX_CONNECTIONS = 2.0, 2.0, 200, 24
SLACK = 1.5


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """One worker, built-in models, short read timeouts and a small connection cap (default pixel limit)."""
    from testkit.server import Server

    d = tmp_path_factory.mktemp("guarded")
    (d / "home").mkdir()
    server = Server(
        {
            "HOME": str(d / "home"),  # a fresh home: nothing may be written there (see test_nothing_written_in_home)
            "XDG_CACHE_HOME": "", "XDG_CONFIG_HOME": "", "XDG_DATA_HOME": "",
            "FACEAPI_WEIGHTS_DIR": str(d / "weights"),
            "FACEAPI_STORAGE_URL": str(d / "bucket"),
            "FACEAPI_DATA_DIR": str(d / "data"),
            "FACEAPI_TEMP_DIR": str(d / "data" / "tmp"),
            "FACEAPI_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
            "FACEAPI_BODY_TIMEOUT": str(BODY_TIMEOUT),
            "FACEAPI_MIN_UPLOAD_RATE": str(MIN_RATE),
            "FACEAPI_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        },
        workers=1,
        log_path=d / "server.log",
    ).start()
    server.home = d / "home"  # type: ignore[attr-defined]
    yield server
    server.stop()


def _slow_clients(port: int, n: int, head: bytes, drip: bytes, limit: float) -> list[tuple[float, bytes]]:
    """``n`` raw connections that send ``head`` at once, then ``drip`` one byte a second, for at most ``limit``
    seconds: (seconds until the server closed the connection, or inf; what the server answered) for each."""
    import select
    import socket

    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.setblocking(False)
        if head:
            s.sendall(head)
        socks.append(s)
    t0 = time.monotonic()
    closed: dict[int, float] = {}
    got = {i: b"" for i in range(n)}
    pos = 0
    try:
        while len(closed) < n and time.monotonic() - t0 < limit:
            tick = time.monotonic()
            for i, s in enumerate(socks):
                if i not in closed and pos < len(drip):
                    try:
                        s.send(drip[pos : pos + 1])
                    except OSError:
                        closed[i] = time.monotonic() - t0
            pos += 1
            while time.monotonic() - tick < 1.0 and len(closed) < n:
                open_socks = [s for i, s in enumerate(socks) if i not in closed]
                ready, _, _ = select.select(open_socks, [], [], max(0.0, 1.0 - (time.monotonic() - tick)))
                for s in ready:
                    i = socks.index(s)
                    try:
                        chunk = s.recv(65536)
                    except OSError:
                        chunk = b""
                    if chunk:
                        got[i] += chunk
                    else:
                        closed[i] = time.monotonic() - t0
    finally:
        for s in socks:
            s.close()
    return [(closed.get(i, float("inf")), got[i]) for i in range(n)]


def _assert_cut(results: list[tuple[float, bytes]], timeout: float) -> None:
    for took, answer in results:
        assert took <= timeout + SLACK, f"held {took:.1f} s, answer {answer[:80]!r}"
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b'"code": "request_timeout"' in answer


def test_slow_headers_are_cut_off(guarded_server) -> None:  # noqa: ANN001
    drip = b"Host: x\r\nUser-Agent: " + b"a" * 60 + b"\r\n\r\n"
    results = _slow_clients(guarded_server.port, 20, b"POST /analyze HTTP/1.1\r\n", drip, HEADER_TIMEOUT + 10)
    _assert_cut(results, HEADER_TIMEOUT)
    # a connection that sends nothing at all is cut off too
    _assert_cut(_slow_clients(guarded_server.port, 1, b"", b"", HEADER_TIMEOUT + 10), HEADER_TIMEOUT)


def test_slow_body_is_cut_off(guarded_server) -> None:  # noqa: ANN001
    head = (b"POST /analyze HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 100000\r\n\r\n")
    drip = b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n" + b"x" * 200
    results = _slow_clients(guarded_server.port, 20, head, drip, BODY_TIMEOUT + 10)
    _assert_cut(results, BODY_TIMEOUT)
    # a body that stops altogether is cut off after BODY_TIMEOUT
    _assert_cut(_slow_clients(guarded_server.port, 1, head + b"--b\r\n", b"", BODY_TIMEOUT + 10), BODY_TIMEOUT)
    with guarded_server.client() as c:  # the worker still serves normal requests
        assert c.get("/healthz").status_code == 200


def test_connections_over_the_cap_get_503(guarded_server) -> None:  # noqa: ANN001
    import json
    import socket

    idle = [socket.create_connection(("127.0.0.1", guarded_server.port), timeout=5) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", guarded_server.port), timeout=5) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 "), answer
        assert b"retry-after: 1" in head.lower()
        assert json.loads(body)["error"]["code"] == "busy"
    finally:
        for s in idle:
            s.close()
    time.sleep(0.3)
    with guarded_server.client() as c:
        assert c.get("/healthz").status_code == 200


def test_header_bomb_png_is_fast_over_http(guarded_server) -> None:  # noqa: ANN001
    """With the default pixel limit (40 MP) the 99-byte 6300×6300 PNG is not refused by size: it must be 422 fast."""
    with guarded_server.client() as c:
        t = time.monotonic()
        r = c.post("/analyze", files={"image": ("bomb.png", png_header_bomb(), "image/png")})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_media", r.text
        assert time.monotonic() - t < 0.5


# ---- 3. messages name what is wrong with the file, never internals ------------------------------------------------


def test_video_and_audio_probe_messages_leak_nothing(tmp_path) -> None:  # noqa: ANN001
    from app.media.audio import probe_audio
    from app.media.video import probe_video

    cases = {
        "trunc.mp4": b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + b"\x00\x00\x10\x00moov"
        + b"\x01" * 64,
        "junk.webm": b"\x1a\x45\xdf\xa3" + b"\xff" * 200,
        "bad.wav": b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\xff" * 40,
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        for probe in (probe_video, probe_audio):
            try:
                probe(path, "video")
            except ApiError as exc:
                assert exc.field == "video" and not LEAK.search(exc.message), exc.message
                assert str(tmp_path) not in exc.message and name not in exc.message



def test_media_reasons_name_no_path(tmp_path) -> None:  # noqa: ANN001
    """The audio muxer's 422 messages carry FFmpeg's reason, never its exception text (which names the file)."""
    import av

    from app.media.video import media_reason

    path = tmp_path / "secret-upload-name.mp4"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(av.FFmpegError) as info:
        av.open(str(path))
    assert str(path) in str(info.value)  # what would have leaked
    reason = media_reason(info.value)
    assert reason and str(tmp_path) not in reason and "secret" not in reason and not LEAK.search(reason)
    assert media_reason(ValueError(f"bad {path}")) == "the data is not valid"


def test_a_crashed_job_says_where_to_look_not_what_crashed(tmp_path, t1_path, monkeypatch) -> None:  # noqa: ANN001
    """An unexpected exception in a job is logged; the job's error names its id, not the exception's text."""
    import dataclasses

    from fastapi.testclient import TestClient

    from app.config import Settings
    from app.jobs import kinds
    from app.main import create_app

    def crash(ctx):  # noqa: ANN001, ANN202
        raise RuntimeError(f"cannot open {ctx.workdir}/secret at 0x7fa7deadbeef")

    monkeypatch.setitem(kinds.KINDS, "enhance", dataclasses.replace(kinds.KINDS["enhance"], run=crash))
    settings = Settings(enabled_jobs=["analyze", "enhance"], data_dir=tmp_path / "data",
                        temp_dir=tmp_path / "data" / "tmp", storage_url=str(tmp_path / "bucket"))
    with TestClient(create_app(settings)) as client:
        r = client.post("/jobs/enhance", files={"image": ("t1.jpg", t1_path.read_bytes())})
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 30
        while (job := client.get(r.headers["location"]).json())["state"] not in ("failed", "succeeded"):
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
    assert job["state"] == "failed" and job["error"]["code"] == "internal_error", job
    message = job["error"]["message"]
    assert job["id"] in message and "secret" not in message and "RuntimeError" not in message
    assert not LEAK.search(message) and str(tmp_path) not in message

# ---- 4. errors as documented ----------------------------------------------------------------------------------------


def test_bad_json_is_one_400_invalid_body(builtin_server) -> None:  # noqa: ANN001
    bodies = {"malformed": b'{"face_filename": "a.png",', "not utf-8": b'{"face_filename": "\xff\xfe"}',
              "deep": b"[" * 100_000 + b"]" * 100_000, "trailing": b'{"face_filename": "a"} x'}
    with builtin_server.client() as c:
        for name, body in bodies.items():
            r = c.post("/swap_url", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 400, (name, r.text)
            assert r.json()["error"]["code"] == "invalid_body" and r.json()["error"]["field"] is None, (name, r.text)
            assert not LEAK.search(r.json()["error"]["message"])


def test_400_is_in_the_openapi_schema(builtin_server) -> None:  # noqa: ANN001
    with builtin_server.client() as c:
        paths = c.get("/openapi.json").json()["paths"]
    posts = ["/analyze", "/enhance", "/faceswap", "/swap_img", "/faceswap/video", "/swap_url"]
    posts += [p for p in paths if p.startswith("/jobs/") and "post" in paths[p] and "{" not in p]
    for path in posts:
        assert "400" in paths[path]["post"]["responses"], path


def test_analyze_without_a_face_is_200_and_the_readme_says_so(builtin_server) -> None:  # noqa: ANN001
    from testkit.server import REPO

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 120, 200)).save(buf, "PNG")
    with builtin_server.client() as c:
        r = c.post("/analyze", files={"image": ("blank.png", buf.getvalue(), "image/png")})
    assert r.status_code == 200 and r.json()["faces"] == []
    row = next(line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("| 422 | `no_face`"))
    assert "`/analyze` is not an error" in row


# ---- 6. nothing is written outside the configured directories ------------------------------------------------------


def test_nothing_written_in_home(guarded_server) -> None:  # noqa: ANN001
    """ONNX Runtime's telemetry wrote ~/.cache/Microsoft/DeveloperTools/.onnxruntime/ at import: the server, started
    with a fresh HOME, loaded and used, leaves HOME empty."""
    with guarded_server.client() as c:
        assert c.get("/readyz").status_code == 200
        buf = io.BytesIO()
        Image.fromarray(_pixels()).save(buf, "PNG")
        assert c.post("/analyze", files={"image": ("a.png", buf.getvalue(), "image/png")}).status_code == 200
    written = sorted(str(p.relative_to(guarded_server.home)) for p in guarded_server.home.rglob("*"))
    assert written == [], written
