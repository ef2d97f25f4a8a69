"""End to end over HTTP: a real uvicorn with two workers on the built-in models, real faces, bad input."""

from __future__ import annotations

import concurrent.futures as cf
import io
import json
import socket
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import Server


def _decode(content: bytes) -> np.ndarray:
    arr = cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_UNCHANGED)
    assert arr is not None
    return arr


def _faces(client: httpx.Client, data: bytes, name: str = "t1.jpg") -> list[dict]:
    r = client.post("/analyze", files={"image": (name, data)})
    assert r.status_code == 200, r.text
    return r.json()["faces"]


def _png_bytes(bgr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", bgr)
    assert ok
    return buf.tobytes()


def _box_mask(shape: tuple[int, ...], bbox: list[float], grow: float) -> np.ndarray:
    x1, y1, x2, y2 = bbox
    w, h = x2 - x1, y2 - y1
    m = np.zeros(shape[:2], bool)
    xa, ya = max(int(x1 - grow * w), 0), max(int(y1 - grow * h), 0)
    xb, yb = min(int(x2 + grow * w) + 1, shape[1]), min(int(y2 + grow * h) + 1, shape[0])
    m[ya:yb, xa:xb] = True
    return m


# ---- operations ------------------------------------------------------------------------------------------


def test_health_ready_models(builtin_server: Server) -> None:
    with builtin_server.client() as c:
        h = c.get("/healthz")
        assert h.status_code == 200 and h.json()["status"] == "ok"
        r = c.get("/readyz")
        assert r.status_code == 200
        jobs = r.json()["jobs"]
        assert jobs["faceswap"]["ready"] and jobs["faceswap"]["backends"] == ["builtin"]
        # the neural weights are absent: readiness says which files and the exact command
        assert "inswapper_128.onnx" in jobs["faceswap"]["missing_files"]
        assert jobs["faceswap"]["command"].startswith("python -m app weights download")
        m = c.get("/models").json()
        names = {x["name"]: x for x in m["models"]}
        assert names["dlib_analyser"]["loaded"] and names["classical_swap"]["loaded"]
        assert "CPUExecutionProvider" in m["providers"]


def test_request_id_is_echoed(builtin_server: Server) -> None:
    with builtin_server.client() as c:
        r = c.get("/healthz", headers={"X-Request-ID": "abc-123"})
        assert r.headers["x-request-id"] == "abc-123"
        assert len(c.get("/healthz").headers["x-request-id"]) == 32


def test_logs_are_json_lines_with_the_request_id(builtin_server: Server) -> None:
    with builtin_server.client() as c:
        c.get("/healthz", headers={"X-Request-ID": "log-check-42"})
    time.sleep(0.3)
    lines = builtin_server.log_path.read_text().splitlines()  # type: ignore[union-attr]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert len(records) >= len(lines) - 2  # nothing but JSON (a line or two before logging is set up at most)
    hits = [r for r in records if r.get("request_id") == "log-check-42"]
    assert hits and hits[0]["path"] == "/healthz" and hits[0]["status"] == 200 and "ms" in hits[0]


def test_openapi_documents_every_error(builtin_server: Server) -> None:
    with builtin_server.client() as c:
        spec = c.get("/openapi.json").json()
    op = spec["paths"]["/faceswap"]["post"]
    for status in ("200", "413", "415", "422", "503"):
        assert status in op["responses"], status
    assert "image/png" in op["responses"]["200"]["content"]
    body = spec["components"]["schemas"][op["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
                                         .split("/")[-1]]
    assert {"source_image", "target_image", "backend", "format"} <= set(body["properties"])
    assert "/analyze" in spec["paths"] and "/readyz" in spec["paths"]
    assert spec["components"]["schemas"]["FaceOut"]["properties"]["bbox"]["examples"]


# ---- analyze -----------------------------------------------------------------------------------------------


def test_analyze_t1_finds_six_faces(builtin_server: Server, t1_path: Path) -> None:
    with builtin_server.client() as c:
        r = c.post("/analyze", files={"image": ("t1.jpg", t1_path.read_bytes())}, data={"embeddings": "true"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["width"], body["height"]) == (1280, 886)
    assert body["backend"] == "builtin" and r.headers["x-face-backend"] == "builtin"
    faces = body["faces"]
    assert len(faces) == 6
    areas = [(f["bbox"][2] - f["bbox"][0]) * (f["bbox"][3] - f["bbox"][1]) for f in faces]
    assert areas == sorted(areas, reverse=True)
    for f in faces:
        assert len(f["kps"]) == 5 and len(f["landmarks"]) == 68 and len(f["embedding"]) == 128


def test_analyze_honours_exif_orientation(builtin_server: Server, t1_bgr: np.ndarray) -> None:
    stored = Image.fromarray(cv2.rotate(t1_bgr, cv2.ROTATE_90_COUNTERCLOCKWISE)[..., ::-1])
    exif = Image.Exif()
    exif[0x0112] = 6  # the viewer rotates 90° clockwise: the upright group photo again
    buf = io.BytesIO()
    stored.save(buf, "JPEG", exif=exif.tobytes(), quality=92)
    with builtin_server.client() as c:
        r = c.post("/analyze", files={"image": ("rotated.jpg", buf.getvalue())})
    assert r.status_code == 200
    assert (r.json()["width"], r.json()["height"]) == (1280, 886)
    assert len(r.json()["faces"]) == 6


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "I;16"])
def test_analyze_accepts_odd_pixel_formats(builtin_server: Server, t1_bgr: np.ndarray, mode: str) -> None:
    rgb = Image.fromarray(t1_bgr[..., ::-1].copy())
    buf = io.BytesIO()
    if mode == "CMYK":
        rgb.convert("CMYK").save(buf, "JPEG", quality=92)
    elif mode == "I;16":
        Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257).save(buf, "PNG")
    else:
        rgb.convert(mode).save(buf, "PNG")
    with builtin_server.client() as c:
        faces = _faces(c, buf.getvalue(), f"t1-{mode}.img")
    assert len(faces) >= 5


# ---- faceswap ------------------------------------------------------------------------------------------------


def test_faceswap_changes_the_best_face_only(builtin_server: Server, t1_path: Path, hanks_path: Path,
                                             t1_bgr: np.ndarray) -> None:
    with builtin_server.client() as c:
        faces = _faces(c, t1_path.read_bytes())
        r = c.post("/faceswap", files={"source_image": ("hanks.png", hanks_path.read_bytes()),
                                       "target_image": ("t1.jpg", t1_path.read_bytes())})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert r.headers["x-face-backend"] == "builtin" and r.headers["x-faces-swapped"] == "1"
    assert "swap;dur=" in r.headers["server-timing"]
    out = _decode(r.content)
    assert out.shape == t1_bgr.shape
    # the decoder the server uses (Pillow) and OpenCV agree on baseline JPEG to within rounding
    ref = cv2.imread(str(hanks_path.parent / "t1.jpg"))
    diff = np.abs(out.astype(int) - ref.astype(int)).max(axis=2)
    best = faces[0]
    inner = _box_mask(out.shape, best["bbox"], -0.2)
    assert diff[inner].mean() > 8, "the best face region barely changed"
    outside = ~_box_mask(out.shape, best["bbox"], 0.6)
    assert np.percentile(diff[outside], 99.9) <= 2, "pixels away from the swapped face changed"
    for other in faces[1:]:
        assert diff[_box_mask(out.shape, other["bbox"], 0.0) & outside].mean() < 1.0


@pytest.mark.parametrize("fmt,media", [("jpeg", "image/jpeg"), ("webp", "image/webp")])
def test_faceswap_output_formats(builtin_server: Server, t1_path: Path, hanks_path: Path, fmt: str,
                                 media: str) -> None:
    with builtin_server.client() as c:
        r = c.post("/faceswap", files={"source_image": ("a", hanks_path.read_bytes()),
                                       "target_image": ("b", t1_path.read_bytes())}, data={"format": fmt})
    assert r.status_code == 200 and r.headers["content-type"] == media
    assert _decode(r.content).shape[:2] == (886, 1280)


def test_faceswap_keeps_transparency(builtin_server: Server, t1_bgr: np.ndarray, hanks_path: Path) -> None:
    rgba = np.dstack([t1_bgr, np.full(t1_bgr.shape[:2], 200, np.uint8)])
    with builtin_server.client() as c:
        r = c.post("/faceswap", files={"source_image": ("a", hanks_path.read_bytes()),
                                       "target_image": ("b.png", _png_bytes(rgba))})
    assert r.status_code == 200, r.text
    out = _decode(r.content)
    assert out.shape == (886, 1280, 4) and int(out[0, 0, 3]) == 200


def test_concurrent_swaps_on_two_workers_all_succeed_identically(builtin_server: Server, t1_path: Path,
                                                                  hanks_path: Path) -> None:
    files = {"source_image": ("a", hanks_path.read_bytes()), "target_image": ("b", t1_path.read_bytes())}

    def one(_: int) -> tuple[int, bytes]:
        with builtin_server.client() as c:
            r = c.post("/faceswap", files=files)
            return r.status_code, r.content

    with cf.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(one, range(12)))
    assert [s for s, _ in results] == [200] * 12
    assert len({content for _, content in results}) == 1
    with builtin_server.client() as c:
        assert c.get("/healthz").status_code == 200


# ---- bad input -------------------------------------------------------------------------------------------------


def _err(r: httpx.Response, status: int, field: str | None, code: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["field"] == field, err
    if code:
        assert err["code"] == code, err
    assert "Traceback" not in r.text
    return err


def test_no_face_in_source(builtin_server: Server, t1_path: Path) -> None:
    blank = _png_bytes(np.full((200, 200, 3), 127, np.uint8))
    with builtin_server.client() as c:
        r = c.post("/faceswap", files={"source_image": ("a.png", blank), "target_image": ("b", t1_path.read_bytes())})
    _err(r, 422, "source_image", "no_face")


def test_no_face_in_target(builtin_server: Server, hanks_path: Path) -> None:
    blank = _png_bytes(np.full((200, 200, 3), 127, np.uint8))
    with builtin_server.client() as c:
        r = c.post("/faceswap", files={"source_image": ("a", hanks_path.read_bytes()), "target_image": ("b", blank)})
    _err(r, 422, "target_image", "no_face")


def test_not_an_image_is_415_whatever_the_name(builtin_server: Server, hanks_path: Path) -> None:
    with builtin_server.client() as c:
        r = c.post("/faceswap", files={"source_image": ("face.png", b"just some text, not a picture"),
                                       "target_image": ("b", hanks_path.read_bytes())})
    _err(r, 415, "source_image", "unsupported_media_type")


def test_corrupt_image_is_422(builtin_server: Server, t1_path: Path, hanks_path: Path) -> None:
    data = t1_path.read_bytes()
    with builtin_server.client() as c:
        r = c.post("/faceswap", files={"source_image": ("a", hanks_path.read_bytes()),
                                       "target_image": ("b.jpg", data[: len(data) // 3])})
    _err(r, 422, "target_image", "invalid_media")


def test_upload_over_byte_limit_is_413(builtin_server: Server, hanks_path: Path) -> None:
    big = b"\x89PNG\r\n\x1a\n" + np.random.default_rng(1).bytes(5 * 1024 * 1024)  # limit is 4 MiB per file
    with builtin_server.client() as c:
        r = c.post("/faceswap", files={"source_image": ("a", hanks_path.read_bytes()), "target_image": ("b", big)})
    _err(r, 413, "target_image", "too_large")


def test_body_cap_allows_every_source_file_a_swap_may_send(builtin_server: Server, hanks_path: Path) -> None:
    """Three 3.5 MiB sources (under the 4 MiB per-file cap, 8 sources allowed) are not refused by the body cap: the
    swap's cap is (FACEAPI_MAX_SOURCE_IMAGES + 1) files at the per-file cap; the first bad file is then named."""
    junk = np.random.default_rng(2).bytes(int(3.5 * 1024 * 1024))
    files = [("source_image", (f"s{i}", junk)) for i in range(3)] + [("target_image", ("t", hanks_path.read_bytes()))]
    with builtin_server.client() as c:
        r = c.post("/faceswap", files=files)
    _err(r, 415, "source_image", "unsupported_media_type")


def _read_error_answer(sock: socket.socket) -> tuple[bytes, dict]:
    """(status line + headers, JSON body) of the server's answer on a raw socket."""
    raw = b""
    while b"}}" not in raw:
        part = sock.recv(65536)
        if not part:
            break
        raw += part
    head, _, body = raw.partition(b"\r\n\r\n")
    return head, json.loads(body[body.index(b"{"):])


def test_body_over_total_limit_is_refused_before_reading(builtin_server: Server) -> None:
    """Content-Length says 20 MiB: the answer comes after the headers alone, nothing of the body is awaited."""
    with socket.create_connection(("127.0.0.1", builtin_server.port), timeout=10) as sock:
        sock.sendall(b"POST /analyze HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: " + str(20 * 1024 * 1024).encode() + b"\r\n\r\n")
        head, body = _read_error_answer(sock)
    assert head.startswith(b"HTTP/1.1 413")
    assert body["error"]["code"] == "too_large"


def test_streamed_body_over_total_limit_is_413(builtin_server: Server) -> None:
    """No Content-Length (chunked): the stream is cut with a 413 as soon as it passes the limit."""
    with socket.create_connection(("127.0.0.1", builtin_server.port), timeout=20) as sock:
        sock.sendall(b"POST /analyze HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        head = b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        sock.sendall(f"{len(head):x}\r\n".encode() + head + b"\r\n")
        chunk = b"\0" * (512 * 1024)
        sent = 0
        try:
            while sent < 40 * len(chunk):  # 20 MiB, well over /analyze's 6 MiB body cap on this server
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent += len(chunk)
        except OSError:
            pass  # the server answered and closed while we were still sending
        head, body = _read_error_answer(sock)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert body["error"]["code"] == "too_large"


def test_wide_image_without_faces(builtin_server: Server, hanks_path: Path) -> None:
    wide = _png_bytes(np.full((500, 5000, 3), 128, np.uint8))  # the padded retry must not blow up
    with builtin_server.client() as c:
        r = c.post("/analyze", files={"image": ("wide.png", wide)})
        assert r.status_code == 200 and r.json()["faces"] == []  # analysis: no face is an answer
        r = c.post("/faceswap", files={"source_image": ("s", hanks_path.read_bytes()), "target_image": ("t", wide)})
    _err(r, 422, "target_image", "no_face")  # a swap needs one


def test_unknown_analyze_field_and_query_parameter_are_422(builtin_server: Server, hanks_path: Path) -> None:
    with builtin_server.client() as c:
        r = c.post("/analyze", files={"image": ("h.png", hanks_path.read_bytes())}, data={"embedding": "true"})
        _err(r, 422, "embedding", "unknown_field")
        r = c.post("/analyze?embeddings=true", files={"image": ("h.png", hanks_path.read_bytes())})
        _err(r, 422, "embeddings", "unknown_field")


def test_too_many_source_files_is_422(builtin_server: Server, hanks_path: Path) -> None:
    files = [("source_image", (f"s{i}.png", hanks_path.read_bytes())) for i in range(9)]
    with builtin_server.client() as c:
        r = c.post("/faceswap", files=[*files, ("target_image", ("t.png", hanks_path.read_bytes()))])
    _err(r, 422, "source_image", "too_many_files")


def test_too_many_pixels_is_413(builtin_server: Server, hanks_path: Path) -> None:
    bomb = _png_bytes(np.zeros((2000, 2000, 3), np.uint8))  # 4 MP > 3 MP limit, ~12 KB on the wire
    assert len(bomb) < 100_000
    with builtin_server.client() as c:
        r = c.post("/faceswap", files={"source_image": ("a", hanks_path.read_bytes()), "target_image": ("b", bomb)})
    _err(r, 413, "target_image", "too_large")


@pytest.mark.parametrize("field,value", [("format", "gif"), ("backend", "magic")])
def test_unknown_option_is_422_naming_it(builtin_server: Server, hanks_path: Path, field: str, value: str) -> None:
    with builtin_server.client() as c:
        r = c.post("/faceswap", files={"source_image": ("a", hanks_path.read_bytes()),
                                       "target_image": ("b", hanks_path.read_bytes())}, data={field: value})
    _err(r, 422, field, "invalid_field")


def test_missing_file_is_422_naming_it(builtin_server: Server, hanks_path: Path) -> None:
    with builtin_server.client() as c:
        r = c.post("/faceswap", files={"source_image": ("a", hanks_path.read_bytes())})
    _err(r, 422, "target_image", "missing_field")


def test_neural_backend_without_weights_is_503_with_command(builtin_server: Server, hanks_path: Path) -> None:
    with builtin_server.client() as c:
        r = c.post("/faceswap", files={"source_image": ("a", hanks_path.read_bytes()),
                                       "target_image": ("b", hanks_path.read_bytes())}, data={"backend": "neural"})
    err = _err(r, 503, "backend", "backend_unavailable")
    assert "python -m app weights download" in err["message"] and "inswapper_128" in err["message"]


def test_unknown_path_is_json_404(builtin_server: Server) -> None:
    with builtin_server.client() as c:
        _err(c.get("/nope"), 404, None, "not_found")


# ---- serving model ------------------------------------------------------------------------------------------


def test_healthz_answers_while_inference_runs(tmp_path: Path, t1_path: Path) -> None:
    """One worker, one inference slot: /healthz must not wait behind a running analysis."""
    server = Server({"FACEAPI_WEIGHTS_DIR": str(tmp_path / "w"), "FACEAPI_INFERENCE_THREADS": "1",
                     "FACEAPI_MAX_QUEUE": "0"}, workers=1, log_path=tmp_path / "log").start()
    try:
        big = cv2.resize(cv2.imread(str(t1_path)), None, fx=2.0, fy=2.0)
        data = _png_bytes(big)

        def slow() -> httpx.Response:
            with server.client() as c:
                return c.post("/analyze", files={"image": ("t1.png", data)}, data={"embeddings": "true"})

        with cf.ThreadPoolExecutor(2) as ex:
            fut = ex.submit(slow)
            time.sleep(0.3)  # the analysis is now running in the only slot
            with server.client() as c:
                h = c.get("/healthz")
                busy = c.post("/analyze", files={"image": ("t1.png", data)})
            assert not fut.done(), "/healthz (or the busy answer) waited for the running analysis"
            resp = fut.result()
        assert h.status_code == 200
        assert resp.status_code == 200
        # the slot is taken and the queue is 0: the second analysis is refused with Retry-After, not piled up
        assert busy.status_code == 503 and busy.headers["retry-after"] and busy.json()["error"]["code"] == "busy"
    finally:
        server.stop()
