"""AI provenance marks on every output, over HTTP (the shared two-worker server; apps in this process for the off
switch and C2PA): XMP with the IPTC digital source type and the software in PNG/JPEG/WebP from /faceswap and
/enhance, MP4 tags and the XMP box from /faceswap/video, the explicit off switch, /models, and a signed C2PA manifest
(a private test CA made here) read back with c2pa's Reader."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app import __version__
from app.config import Settings
from app.main import create_app
from app.media import decode_image, encode_image, provenance
from app.media.provenance import COMPOSITE, TRAINED
from app.media.writer import VideoWriter
from bench.provenance import make_test_cert
from testkit.clips import write_frames_clip
from testkit.server import Server

AGENT = f"Face studio {__version__}"
MEDIA = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def image_xmp(data: bytes) -> dict[str, str]:
    """The provenance fields of an image's XMP as Pillow reads it (PNG iTXt, JPEG APP1, WebP XMP chunk)."""
    im = Image.open(io.BytesIO(data))
    im.load()
    packet = im.info.get("xmp") or im.info.get(provenance.PNG_XMP_KEY)
    return provenance.read_xmp_fields(packet) if packet else {}


def assert_marked(data: bytes, uri: str = COMPOSITE) -> None:
    assert image_xmp(data) == {"DigitalSourceType": uri, "CreatorTool": AGENT, "softwareAgent": AGENT}


@pytest.fixture
def marks_default() -> Iterator[None]:
    """In-process tests switch the process-wide marks; put the default back afterwards."""
    yield
    provenance.configure(True)


def test_encode_image_marks_every_format_and_keeps_pixels_and_alpha(marks_default: None) -> None:
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    alpha = np.tile(np.linspace(0, 255, 60).astype(np.uint8), (40, 1))
    for fmt in ("png", "jpeg", "webp"):
        provenance.configure(False)
        plain, media_type = encode_image(bgr, fmt, 95, alpha)
        provenance.configure(True)
        marked, _ = encode_image(bgr, fmt, 95, alpha)
        created, _ = encode_image(bgr, fmt, 95, alpha, source="created")
        assert image_xmp(plain) == {}
        assert_marked(marked)
        assert_marked(created, TRAINED)
        a, b = decode_image(plain, "x", 10**6), decode_image(marked, "x", 10**6)
        assert np.array_equal(a.bgr, b.bgr), fmt  # the marks change no pixel
        assert (a.alpha is None) == (b.alpha is None) == (fmt == "jpeg")
        if fmt != "jpeg":
            assert np.array_equal(a.alpha, b.alpha)
        assert media_type == MEDIA[fmt]
    assert np.array_equal(decode_image(encode_image(bgr, "png")[0], "x", 10**6).bgr, bgr)  # PNG: lossless


def test_video_writer_marks_and_off_switch(tmp_path: Path, marks_default: None) -> None:
    frames = [np.full((48, 64, 3), 20 * i, np.uint8) for i in range(5)]
    for on in (True, False):
        provenance.configure(on)
        path = tmp_path / f"{on}.mp4"
        with VideoWriter(path, 25) as w:
            for f in frames:
                w.write(f)
            w.close()
        data = path.read_bytes()
        with av.open(str(path)) as c:
            tags = dict(c.metadata)
            assert sum(1 for _ in c.decode(video=0)) == 5
        assert data.find(b"moov") < data.find(b"mdat")  # +faststart: the index stays in front
        if on:
            assert tags["digital_source_type"] == COMPOSITE and tags["software_agent"] == AGENT
            assert provenance.read_xmp_fields(provenance.read_mp4_xmp(data) or b"")["DigitalSourceType"] == COMPOSITE
        else:
            assert "digital_source_type" not in tags and provenance.read_mp4_xmp(data) is None


def test_c2pa_settings_go_in_pairs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="FACEAPI_C2PA_CERT and FACEAPI_C2PA_KEY"):
        Settings(c2pa_cert=tmp_path / "cert.pem")
    assert Settings().provenance == "on"


# ---- over HTTP ----------------------------------------------------------------------------------------------


def _swap(client: httpx.Client | TestClient, source: Path, target: Path, fmt: str) -> bytes:
    r = client.post("/faceswap", data={"format": fmt}, files={
        "source_image": (source.name, source.read_bytes()), "target_image": (target.name, target.read_bytes())})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == MEDIA[fmt]
    return r.content


def _models(client: httpx.Client | TestClient) -> dict:
    r = client.get("/models")
    assert r.status_code == 200, r.text
    return r.json()["provenance"]


@contextmanager
def app_client(tmp: Path, **settings: object) -> Iterator[TestClient]:
    """An app in this process (built-in models) with these settings, ready; the default marks put back after."""
    s = Settings(weights_dir=tmp / "weights", data_dir=tmp / "data", temp_dir=tmp / "data" / "tmp",
                 enabled_jobs=["analyze", "faceswap"], **settings)
    try:
        with TestClient(create_app(s)) as client:
            deadline = time.monotonic() + 60
            while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.1)
            yield client
    finally:
        provenance.configure(True)


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_faceswap_and_enhance_outputs_carry_the_marks(builtin_server: Server, hanks_path: Path, t1_path: Path,
                                                      fmt: str) -> None:
    with builtin_server.client() as c:
        assert_marked(_swap(c, hanks_path, t1_path, fmt))
    with builtin_server.client() as c:
        r = c.post("/enhance", data={"format": fmt, "faces": "[]", "upscale": "2"},
                   files={"image": (hanks_path.name, hanks_path.read_bytes())})
    assert r.status_code == 200, r.text
    assert_marked(r.content)


def test_models_reports_the_marks(builtin_server: Server) -> None:
    with builtin_server.client() as c:
        status = _models(c)
    assert status == {
        "enabled": True, "c2pa": False, "software_agent": AGENT,
        "source_types": {"created": TRAINED, "edited": COMPOSITE},
    }
    with builtin_server.client() as c:
        schema = c.get("/openapi.json").json()
    ref = schema["paths"]["/models"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    model = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert "provenance" in model["properties"] and "provenance" in model["required"]


def test_video_swap_output_carries_the_marks(builtin_server: Server, hanks_path: Path, t1_bgr: np.ndarray,
                                             tmp_path: Path) -> None:
    frames = [np.ascontiguousarray(t1_bgr[240:480, 400 + 3 * i: 720 + 3 * i]) for i in range(6)]
    clip = write_frames_clip(tmp_path / "clip.mp4", frames, 25)
    with builtin_server.client() as c:
        r = c.post("/faceswap/video", files={"source_image": (hanks_path.name, hanks_path.read_bytes()),
                                             "target_video": (clip.name, clip.read_bytes())})
    assert r.status_code == 200, r.text
    assert r.headers["X-Audio"] == "copied"
    out = tmp_path / "out.mp4"
    out.write_bytes(r.content)
    with av.open(str(out)) as c:
        assert c.metadata["digital_source_type"] == COMPOSITE
        assert c.metadata["software_agent"] == AGENT
        assert COMPOSITE in c.metadata["comment"]
        assert len(c.streams.audio) == 1 and sum(1 for _ in c.decode(video=0)) == 6
    assert r.content.find(b"moov") < r.content.find(b"mdat")
    assert provenance.read_xmp_fields(provenance.read_mp4_xmp(r.content) or b"") == {
        "DigitalSourceType": COMPOSITE, "CreatorTool": AGENT, "softwareAgent": AGENT}


def test_off_switch_removes_the_marks(tmp_path: Path, hanks_path: Path, t1_path: Path) -> None:
    with app_client(tmp_path, provenance="off") as client:
        assert _models(client) == {"enabled": False, "c2pa": False, "software_agent": AGENT, "source_types": {}}
        for fmt in ("png", "jpeg", "webp"):
            data = _swap(client, hanks_path, hanks_path, fmt)
            assert image_xmp(data) == {} and b"digitalsourcetype" not in data.lower()


def test_c2pa_manifest_is_signed_and_read_back(tmp_path: Path, hanks_path: Path, t1_path: Path) -> None:
    cert, key, root = make_test_cert(tmp_path)
    with app_client(tmp_path, c2pa_cert=cert, c2pa_key=key) as client:
        assert _models(client)["c2pa"] is True
        for fmt in ("png", "jpeg", "webp"):
            data = _swap(client, hanks_path, hanks_path, fmt)
            assert_marked(data)  # the XMP survives signing
            decode_image(data, "x", 10**8)  # and the image still decodes under our strict checks
            store = provenance.read_c2pa(data, MEDIA[fmt], root.read_bytes())
            assert store["validation_state"] == "Trusted", store.get("validation_status")
            manifest = store["manifests"][store["active_manifest"]]
            assert manifest["claim_generator_info"][0]["name"] == "Face studio"
            assert manifest["claim_generator_info"][0]["version"] == __version__
            actions = next(a for a in manifest["assertions"] if a["label"].startswith("c2pa.actions"))
            assert [(a["action"], a["digitalSourceType"]) for a in actions["data"]["actions"]] == [
                ("c2pa.created", COMPOSITE), ("c2pa.edited", COMPOSITE)]
            assert provenance.read_c2pa(data, MEDIA[fmt])["validation_state"] != "Trusted"  # without the anchor
            if fmt == "jpeg":  # one changed byte of the picture breaks the hard binding
                cut = data.rfind(b"\xff\xd9") - 10
                bad = data[:cut] + bytes([data[cut] ^ 0x01]) + data[cut + 1:]
                broken = provenance.read_c2pa(bad, "image/jpeg", root.read_bytes())
                assert broken["validation_state"] == "Invalid"
                assert any("mismatch" in s["code"] for s in broken["validation_status"])


def test_bad_c2pa_key_stops_the_start(tmp_path: Path, marks_default: None) -> None:
    cert, _, _ = make_test_cert(tmp_path)
    (tmp_path / "other").mkdir()
    other_key = make_test_cert(tmp_path / "other")[1]
    with pytest.raises(ValueError, match="C2PA signing"):
        provenance.configure(True, cert, other_key)


def test_mp4_gets_a_c2pa_manifest(tmp_path: Path, marks_default: None) -> None:
    cert, key, root = make_test_cert(tmp_path)
    provenance.configure(True, cert, key)
    path = tmp_path / "out.mp4"
    with VideoWriter(path, 25) as w:
        for i in range(5):
            w.write(np.full((48, 64, 3), 40 * i, np.uint8))
        w.close()
    data = path.read_bytes()
    store = provenance.read_c2pa(data, "video/mp4", root.read_bytes())
    assert store["validation_state"] == "Trusted", store.get("validation_status")
    with av.open(str(path)) as c:
        assert c.metadata["digital_source_type"] == COMPOSITE and sum(1 for _ in c.decode(video=0)) == 5
    assert data.find(b"moov") < data.find(b"mdat")
    assert provenance.read_mp4_xmp(data) is not None
