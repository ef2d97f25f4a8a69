"""/enhance and swap + enhance over HTTP: stand-in GFPGAN, CodeFormer, Real-ESRGAN, XSeg, BiSeNet; real faces."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from testkit import standins
from testkit.server import Server
from testkit.standins_enhance import make_enhance_weights

FACES = standins.T1_FACES


@pytest.fixture(scope="module")
def enhance_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    d = tmp_path_factory.mktemp("enhance")
    weights = standins.make_weights_dir(d / "weights")
    make_enhance_weights(weights)
    server = Server({"FACEAPI_WEIGHTS_DIR": str(weights), "FACEAPI_EXECUTION_PROVIDER": "cpu",
                     "FACEAPI_MAX_OUTPUT_PIXELS": str(30_000_000)}, workers=2, log_path=d / "server.log").start()
    yield server
    server.stop()


def _png(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


def _decode(content: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_COLOR)


def _enhance(server: Server, data: bytes, **fields: object) -> httpx.Response:
    with server.client() as c:
        return c.post("/enhance", files={"image": ("t1.png", data)}, data={k: str(v) for k, v in fields.items()})


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(int) - b.astype(int)).max(axis=2)


def _inside(bbox, scale: float, grow: float, shape) -> np.ndarray:  # noqa: ANN001
    x1, y1, x2, y2 = (v * scale for v in bbox)
    w, h = x2 - x1, y2 - y1
    m = np.zeros(shape[:2], bool)
    m[max(int(y1 - grow * h), 0) : int(y2 + grow * h), max(int(x1 - grow * w), 0) : int(x2 + grow * w)] = True
    return m


def test_readiness_lists_the_enhancers(enhance_server: Server) -> None:
    with enhance_server.client() as c:
        jobs = c.get("/readyz").json()["jobs"]
        models = {m["name"] for m in c.get("/models").json()["models"] if m["loaded"]}
    assert jobs["enhance"]["ready"] and jobs["enhance"]["backends"] == ["gfpgan", "codeformer", "builtin"]
    assert {"gfpgan", "codeformer", "real_esrgan_x2", "real_esrgan_x4", "xseg_1", "bisenet_resnet_34"} <= models


@pytest.mark.parametrize("enhancer", ["gfpgan", "codeformer", "builtin"])
def test_each_enhancer_restores_only_the_faces(enhance_server: Server, t1_bgr: np.ndarray, enhancer: str) -> None:
    r = _enhance(enhance_server, _png(t1_bgr), enhancer=enhancer)
    assert r.status_code == 200, r.text
    assert r.headers["x-face-backend"] == enhancer and r.headers["x-faces-enhanced"] == "6"
    assert r.headers["x-upscaler"] == "none" and r.headers["x-analysis-backend"] == "neural"
    out = _decode(r.content)
    assert out.shape == t1_bgr.shape
    d = _diff(out, t1_bgr)
    near = np.zeros(d.shape, bool)
    for bbox, _ in FACES:
        near |= _inside(bbox, 1, 0.9, d.shape)
        assert d[_inside(bbox, 1, -0.25, d.shape)].mean() > 1.0, bbox
    assert d[~near].max() == 0


def test_codeformer_fidelity_changes_the_result(enhance_server: Server, t1_bgr: np.ndarray) -> None:
    a = _enhance(enhance_server, _png(t1_bgr), enhancer="codeformer", codeformer_fidelity=0.0)
    b = _enhance(enhance_server, _png(t1_bgr), enhancer="codeformer", codeformer_fidelity=1.0)
    assert a.status_code == b.status_code == 200
    assert not np.array_equal(_decode(a.content), _decode(b.content))


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_upscale_is_exact_and_faces_land_at_their_upscaled_positions(enhance_server: Server, t1_bgr: np.ndarray,
                                                                      scale: int) -> None:
    r = _enhance(enhance_server, _png(t1_bgr), enhancer="gfpgan", upscale=scale)
    plain = _enhance(enhance_server, _png(t1_bgr), enhancer="gfpgan", upscale=scale, faces="[]")
    assert r.status_code == plain.status_code == 200, r.text
    assert plain.headers["x-faces-enhanced"] == "0"
    out, base = _decode(r.content), _decode(plain.content)
    assert out.shape == (886 * scale, 1280 * scale, 3)
    assert r.headers["x-upscaler"] == ("none" if scale == 1 else "lanczos")
    d = _diff(out, base)
    near = np.zeros(d.shape, bool)
    for bbox, _ in FACES:  # every face restored at its scaled box, none left at pre-upscale coordinates
        assert d[_inside(bbox, scale, -0.25, d.shape)].mean() > 1.0, (scale, bbox)
        near |= _inside(bbox, scale, 0.9, d.shape)
    assert d[~near].max() == 0


@pytest.mark.parametrize("scale,model", [(2, "real_esrgan_x2"), (3, "real_esrgan_x4"), (4, "real_esrgan_x4")])
def test_background_enhance_uses_the_matching_realesrgan(enhance_server: Server, t1_bgr: np.ndarray, scale: int,
                                                         model: str) -> None:
    r = _enhance(enhance_server, _png(t1_bgr), upscale=scale, background_enhance="true", face_upsample="true")
    assert r.status_code == 200, r.text
    assert r.headers["x-upscaler"] == model and r.headers["x-face-backend"] == "gfpgan"
    assert _decode(r.content).shape == (886 * scale, 1280 * scale, 3)


def test_supplied_faces_skip_detection(enhance_server: Server, t1_bgr: np.ndarray) -> None:
    with enhance_server.client() as c:
        analysis = c.post("/analyze", files={"image": ("t1.png", _png(t1_bgr))}).json()
    detected = _enhance(enhance_server, _png(t1_bgr), enhancer="gfpgan", upscale=2)
    supplied = _enhance(enhance_server, _png(t1_bgr), enhancer="gfpgan", upscale=2, faces=json.dumps(analysis))
    only_list = _enhance(enhance_server, _png(t1_bgr), enhancer="gfpgan", upscale=2,
                         faces=json.dumps(analysis["faces"][:2]))
    assert supplied.status_code == 200 and supplied.headers["x-analysis-backend"] == "supplied"
    assert supplied.headers["x-faces-enhanced"] == "6" and only_list.headers["x-faces-enhanced"] == "2"
    assert np.abs(_decode(supplied.content).astype(int) - _decode(detected.content)).mean() < 0.2


def test_occlusion_mask_on_and_off(enhance_server: Server, t1_bgr: np.ndarray) -> None:
    off = _enhance(enhance_server, _png(t1_bgr), enhancer="gfpgan")
    on = _enhance(enhance_server, _png(t1_bgr), enhancer="gfpgan", occlusion_mask="true")
    assert off.status_code == on.status_code == 200
    a, b = _decode(off.content), _decode(on.content)
    assert not np.array_equal(a, b)
    assert _diff(b, t1_bgr).sum() < _diff(a, t1_bgr).sum()  # occluded parts keep the original pixels


@pytest.mark.parametrize("fields,field", [
    ({"codeformer_fidelity": 1.5}, "codeformer_fidelity"),
    ({"upscale": 5}, "upscale"),
    ({"upscale": 0}, "upscale"),
    ({"blend": 101}, "blend"),
    ({"enhancer": "magic"}, "enhancer"),
    ({"faces": "{not json"}, "faces"),
    ({"faces": json.dumps({"nope": []})}, "faces"),
    ({"faces": json.dumps([{"bbox": [1, 2, 3], "score": 1, "kps": [[0, 0]] * 5}])}, "faces"),
    ({"faces": json.dumps([{"bbox": [5000, 5000, 5100, 5100], "score": 0.9,
                            "kps": [[5020, 5020], [5080, 5020], [5050, 5050], [5030, 5080], [5070, 5080]]}])},
     "faces"),
    ({"faces": json.dumps({"width": 640, "height": 480, "faces": []})}, "faces"),
    ({"sharpen": "yes"}, "sharpen"),
    ({"faces": json.dumps([{"bbox": [100, 100, 200, 200], "score": 1, "kps": [[150, 150]] * 5}])}, "faces"),
    ({"faces": json.dumps([{"bbox": [452, 300, 577, 424], "score": 1,
                            "kps": [[491, 321], [540, 334], [509, 365], [481, 368], [531, 380]]}] * 65)}, "faces"),
])
def test_bad_enhance_input_is_422_naming_the_field(enhance_server: Server, t1_bgr: np.ndarray, fields: dict,
                                                   field: str) -> None:
    r = _enhance(enhance_server, _png(t1_bgr), **fields)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


def test_options_in_the_query_string_are_refused_not_ignored(enhance_server: Server, t1_bgr: np.ndarray) -> None:
    with enhance_server.client() as c:
        r = c.post("/enhance?upscale=2", files={"image": ("t1.png", _png(t1_bgr))})
    assert r.status_code == 422 and r.json()["error"]["field"] == "upscale"


def test_realesrgan_working_size_counts_against_the_output_limit(enhance_server: Server) -> None:
    # 8 MP at upscale 1 is within the 30 MP output limit, but the x2 network would produce 32 MP
    big = _png(np.full((2000, 4000, 3), 100, np.uint8))
    r = _enhance(enhance_server, big, faces="[]", background_enhance="true")
    assert r.status_code == 413 and r.json()["error"]["field"] == "background_enhance"
    r = _enhance(enhance_server, big, faces="[]")
    assert r.status_code == 200


def test_no_face_is_422_and_output_pixel_limit_is_413(enhance_server: Server) -> None:
    blank = _png(np.full((300, 300, 3), 100, np.uint8))
    r = _enhance(enhance_server, blank, backend="builtin")  # the stand-in detector "finds" faces anywhere
    assert r.status_code == 422 and r.json()["error"] == {
        "code": "no_face", "field": "image", "message": r.json()["error"]["message"]}
    big = _png(np.full((2000, 2000, 3), 100, np.uint8))
    r = _enhance(enhance_server, big, upscale=4, faces="[]")
    assert r.status_code == 413 and r.json()["error"]["field"] == "upscale"


def test_builtin_server_enhances_without_downloads(builtin_server: Server, t1_bgr: np.ndarray) -> None:
    r = _enhance(builtin_server, _png(t1_bgr), upscale=2)
    assert r.status_code == 200 and r.headers["x-face-backend"] == "builtin"
    assert _decode(r.content).shape == (886 * 2, 1280 * 2, 3)
    for fields, field in (({"enhancer": "gfpgan"}, "enhancer"), ({"occlusion_mask": "true"}, "occlusion_mask")):
        r = _enhance(builtin_server, _png(t1_bgr), **fields)
        assert r.status_code == 503 and r.json()["error"]["field"] == field
        assert "python -m app weights download" in r.json()["error"]["message"]


# ---- swap + enhance -------------------------------------------------------------------------------------


def _swap(server: Server, source: bytes, target: bytes, **fields: object) -> httpx.Response:
    with server.client() as c:
        return c.post("/swap_img", files={"face": ("f.png", source), "model": ("m.png", target)},
                      data={k: str(v) for k, v in fields.items()})


def test_swap_then_enhance_touches_only_the_swapped_face(enhance_server: Server, t1_bgr: np.ndarray) -> None:
    t1 = _png(t1_bgr)
    plain = _swap(enhance_server, t1, t1)
    enhanced = _swap(enhance_server, t1, t1, use_codeformer="true", codeformer_fidelity=0.3)
    assert plain.status_code == enhanced.status_code == 200, enhanced.text
    assert enhanced.headers["x-face-enhancer"] == "codeformer" and "x-face-enhancer" not in plain.headers
    d = _diff(_decode(enhanced.content), _decode(plain.content))
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b, _ in FACES]
    best = FACES[int(np.argmax(areas))][0]
    assert d[_inside(best, 1, -0.25, d.shape)].mean() > 1.0
    assert d[~_inside(best, 1, 0.9, d.shape)].max() == 0


def test_swap_with_upscale(enhance_server: Server, t1_bgr: np.ndarray) -> None:
    r = _swap(enhance_server, _png(t1_bgr), _png(t1_bgr), upscale=2, background_enhance="true", mode="one_to_many")
    assert r.status_code == 200, r.text
    assert r.headers["x-face-enhancer"] == "gfpgan" and r.headers["x-faces-swapped"] == "6"
    assert _decode(r.content).shape == (886 * 2, 1280 * 2, 3)


def test_swap_enhance_on_builtin_server(builtin_server: Server, t1_bgr: np.ndarray, hanks_path: Path) -> None:
    r = _swap(builtin_server, hanks_path.read_bytes(), _png(t1_bgr), upscale=2)
    assert r.status_code == 200 and r.headers["x-face-enhancer"] == "builtin"
    assert _decode(r.content).shape == (886 * 2, 1280 * 2, 3)
    r = _swap(builtin_server, hanks_path.read_bytes(), _png(t1_bgr), use_codeformer="true")
    assert r.status_code == 503 and r.json()["error"]["field"] == "use_codeformer"
