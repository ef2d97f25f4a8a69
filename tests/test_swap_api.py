"""The full swap API over HTTP on real faces: modes, several sources, refinement, /swap_img, /swap_url."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from testkit import standins
from testkit.server import Server

FACES = standins.T1_FACES  # (bbox, kps) of t1.jpg's six faces


def _png(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


def _decode(content: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_COLOR)


def _crop(img: np.ndarray, bbox, margin: float = 0.8, size: int = 260) -> np.ndarray:  # noqa: ANN001
    x1, y1, x2, y2 = bbox
    w, h = x2 - x1, y2 - y1
    cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, max(w, h) * (0.5 + margin)
    xa, ya = int(max(cx - half, 0)), int(max(cy - half, 0))
    xb, yb = int(min(cx + half, img.shape[1])), int(min(cy + half, img.shape[0]))
    return cv2.resize(img[ya:yb, xa:xb], (size, size), interpolation=cv2.INTER_CUBIC)


def _region_change(out: np.ndarray, ref: np.ndarray, bbox) -> float:  # noqa: ANN001
    x1, y1, x2, y2 = (int(v) for v in bbox)
    w, h = x2 - x1, y2 - y1
    a = out[y1 + h // 4 : y2 - h // 4, x1 + w // 4 : x2 - w // 4].astype(int)
    b = ref[y1 + h // 4 : y2 - h // 4, x1 + w // 4 : x2 - w // 4].astype(int)
    return float(np.abs(a - b).mean())


def _analyze(c: httpx.Client, img: np.ndarray) -> list[dict]:
    r = c.post("/analyze", files={"image": ("x.png", _png(img))}, data={"embeddings": "true"})
    assert r.status_code == 200, r.text
    return r.json()["faces"]


def _dist(a: list[float], b: list[float]) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


# ---- modes ------------------------------------------------------------------------------------------------


def test_one_to_many_changes_all_six_faces(builtin_server: Server, t1_bgr: np.ndarray, hanks_path: Path) -> None:
    with builtin_server.client() as c:
        r = c.post("/swap_img", files={"face": ("f.png", hanks_path.read_bytes()), "model": ("m.png", _png(t1_bgr))},
                   data={"mode": "one_to_many"})
    assert r.status_code == 200, r.text
    assert r.headers["x-faces-swapped"] == "6" and r.headers["content-type"] == "image/png"
    out = _decode(r.content)
    for bbox, _ in FACES:
        assert _region_change(out, t1_bgr, bbox) > 6, bbox


def test_options_as_query_parameters(builtin_server: Server, t1_bgr: np.ndarray, hanks_path: Path) -> None:
    with builtin_server.client() as c:
        r = c.post("/swap_img?mode=one_to_many", files={"face": ("f", hanks_path.read_bytes()),
                                                        "model": ("m", _png(t1_bgr))})
        assert r.status_code == 200 and r.headers["x-faces-swapped"] == "6"
        bad = c.post("/swap_img?upscale=9", files={"face": ("f", hanks_path.read_bytes()),
                                                   "model": ("m", _png(t1_bgr))})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "upscale"


@pytest.fixture(scope="module")
def two_by_two(t1_bgr: np.ndarray) -> dict[str, np.ndarray]:
    """Source: Ross | Chandler side by side; target: Joey | Phoebe side by side (distinct people)."""
    a, b, cc, d = (_crop(t1_bgr, FACES[i][0]) for i in (3, 1, 5, 2))
    return {"source": np.hstack([a, b]), "target": np.hstack([cc, d]), "A": a, "B": b}


@pytest.mark.parametrize("direction", ["left_to_right", "right_to_left"])
def test_sorted_maps_two_source_faces_in_order(builtin_server: Server, two_by_two: dict[str, np.ndarray],
                                               direction: str) -> None:
    """The swap of a face depends only on its source and its own region, so each half of the sorted result must
    match the half of an all-A (or all-B) swap that the order prescribes."""
    target = two_by_two["target"]
    half = target.shape[1] // 2

    def post(source: np.ndarray, mode: str) -> np.ndarray:
        with builtin_server.client() as c:
            r = c.post("/faceswap", files={"source_image": ("s.png", _png(source)),
                                           "target_image": ("t.png", _png(target))},
                       data={"mode": mode, "direction": direction})
        assert r.status_code == 200, r.text
        assert r.headers["x-faces-swapped"] == "2"
        return _decode(r.content).astype(int)

    got = post(two_by_two["source"], "sorted")
    all_a, all_b = post(two_by_two["A"], "one_to_many"), post(two_by_two["B"], "one_to_many")
    left_src, right_src = (all_a, all_b) if direction == "left_to_right" else (all_b, all_a)
    wrong_left, wrong_right = (all_b, all_a) if direction == "left_to_right" else (all_a, all_b)

    def err(a: np.ndarray, b: np.ndarray, side: slice) -> float:
        return float(np.abs(a[:, side] - b[:, side]).mean())

    left, right = slice(0, half), slice(half, None)
    assert err(got, left_src, left) < err(got, wrong_left, left) / 3
    assert err(got, right_src, right) < err(got, wrong_right, right) / 3


def test_similarity_sends_a_face_back_to_its_own_position(builtin_server: Server, t1_bgr: np.ndarray) -> None:
    ross = _crop(t1_bgr, FACES[3][0])
    with builtin_server.client() as c:
        r = c.post("/faceswap", files={"source_image": ("s.png", _png(ross)), "target_image": ("t.png", _png(t1_bgr))},
                   data={"mode": "similarity"})
    assert r.status_code == 200, r.text
    assert r.headers["x-faces-swapped"] == "1"
    out = _decode(r.content)
    changes = [_region_change(out, t1_bgr, bbox) for bbox, _ in FACES]
    assert int(np.argmax(changes)) == 3
    assert all(ch < 0.5 for i, ch in enumerate(changes) if i != 3), changes


def test_similarity_below_threshold_swaps_nothing(builtin_server: Server, t1_bgr: np.ndarray,
                                                  hanks_path: Path) -> None:
    target = _crop(t1_bgr, FACES[3][0])  # Ross alone; Tom Hanks is nobody here
    with builtin_server.client() as c:
        r = c.post("/faceswap", files={"source_image": ("s.png", hanks_path.read_bytes()),
                                       "target_image": ("t.png", _png(target))}, data={"mode": "similarity"})
    assert r.status_code == 200 and r.headers["x-faces-swapped"] == "0"
    assert np.array_equal(_decode(r.content), target)


def test_face_refinement_steps_are_honoured(builtin_server: Server, t1_bgr: np.ndarray, hanks_path: Path) -> None:
    files = {"face": ("f.png", hanks_path.read_bytes()), "model": ("m.png", _png(t1_bgr))}
    with builtin_server.client() as c:
        one = c.post("/swap_img", files=files, data={"face_refinement_steps": "1"})
        three = c.post("/swap_img", files=files, data={"face_refinement_steps": "3"})
    assert one.status_code == three.status_code == 200
    assert "refine;dur=" in three.headers["server-timing"] and "refine" not in one.headers["server-timing"]
    assert _decode(one.content).shape == _decode(three.content).shape
    assert not np.array_equal(_decode(one.content), _decode(three.content))


def test_several_source_images_are_accepted(builtin_server: Server, t1_bgr: np.ndarray, hanks_path: Path) -> None:
    with builtin_server.client() as c:
        r = c.post("/faceswap", files=[("source_image", ("a.png", hanks_path.read_bytes())),
                                       ("source_image", ("b.png", _png(_crop(t1_bgr, FACES[3][0])))),
                                       ("target_image", ("t.png", _png(t1_bgr)))])
        assert r.status_code == 200 and r.headers["x-faces-swapped"] == "1"
        blank = _png(np.full((120, 120, 3), 90, np.uint8))
        r = c.post("/faceswap", files=[("source_image", ("a.png", hanks_path.read_bytes())),
                                       ("source_image", ("b.png", blank)),
                                       ("target_image", ("t.png", _png(t1_bgr)))])
    assert r.status_code == 422 and r.json()["error"]["field"] == "source_image"
    assert "file 2 of 2" in r.json()["error"]["message"]


@pytest.mark.parametrize("field,value", [("upscale", "5"), ("codeformer_fidelity", "1.5"),
                                         ("face_refinement_steps", "6"), ("mode", "all_of_them"),
                                         ("direction", "up"), ("use_codeformer", "perhaps")])
def test_out_of_range_options_are_422_naming_the_field(builtin_server: Server, hanks_path: Path, field: str,
                                                       value: str) -> None:
    with builtin_server.client() as c:
        r = c.post("/swap_img", files={"face": ("f", hanks_path.read_bytes()), "model": ("m", hanks_path.read_bytes())},
                   data={field: value})
    assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text


def test_unknown_form_field_is_422(builtin_server: Server, hanks_path: Path) -> None:
    with builtin_server.client() as c:
        r = c.post("/faceswap", files={"source_image": ("f", hanks_path.read_bytes()),
                                       "target_image": ("m", hanks_path.read_bytes())}, data={"moed": "sorted"})
    assert r.status_code == 422
    assert r.json()["error"] == {"code": "unknown_field", "field": "moed",
                                 "message": r.json()["error"]["message"]}


# ---- /swap_url ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bucket(builtin_server: Server, t1_bgr: np.ndarray, hanks_path: Path) -> Path:
    root: Path = builtin_server.bucket  # type: ignore[attr-defined]
    (root / "faces").mkdir(exist_ok=True)
    (root / "shoots").mkdir(exist_ok=True)
    (root / "faces" / "hanks.png").write_bytes(hanks_path.read_bytes())
    (root / "faces" / "blank.png").write_bytes(_png(np.full((100, 100, 3), 128, np.uint8)))
    (root / "shoots" / "group.png").write_bytes(_png(t1_bgr))
    (root / "shoots" / "ross.png").write_bytes(_png(_crop(t1_bgr, FACES[3][0])))
    (root / "shoots" / "empty.png").write_bytes(_png(np.full((100, 100, 3), 128, np.uint8)))
    (root / "shoots" / "notes.txt").write_bytes(b"not an image")
    return root


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _url_to_path(url: str) -> Path:
    assert url.startswith("file://")
    return Path(url.removeprefix("file://"))


def test_swap_url_all_succeed_200(builtin_server: Server, bucket: Path) -> None:
    before = {p: p.read_bytes() for p in bucket.rglob("*") if p.is_file()}
    with builtin_server.client() as c:
        r = c.post("/swap_url", json={"face_filename": "faces/hanks.png",
                                      "model_filenames": ["shoots/group.png", "shoots/ross.png"],
                                      "options": {"mode": "one_to_many", "format": "jpeg"}})
    assert r.status_code == 200, r.text
    assert r.headers["x-face-backend"] == "builtin"
    body = r.json()
    assert set(body) == {"urls"} and len(body["urls"]) == 2
    for url, stem in zip(body["urls"], ("group", "ross"), strict=True):
        path = _url_to_path(url)
        assert path.is_relative_to(bucket / "results" / "shoots") and path.name.startswith(stem + "-")
        assert path.suffix == ".jpg" and _decode(path.read_bytes()) is not None
    for p, data in before.items():  # inputs untouched
        assert p.read_bytes() == data
    # a second run writes new files; nothing is overwritten
    with builtin_server.client() as c:
        again = c.post("/swap_url", json={"face_filename": "faces/hanks.png", "model_filenames": ["shoots/ross.png"]})
    assert again.status_code == 200 and again.json()["urls"][0] not in body["urls"]


def test_swap_url_partial_206(builtin_server: Server, bucket: Path) -> None:
    with builtin_server.client() as c:
        r = c.post("/swap_url", json={"face_filename": "faces/hanks.png",
                                      "model_filenames": ["shoots/ross.png", "shoots/empty.png", "shoots/missing.png",
                                                          "shoots/notes.txt"]})
    assert r.status_code == 206, r.text
    body = r.json()
    assert len(body["urls"]) == 1
    failed = {f["filename"]: f["error"] for f in body["failed"]}
    assert set(failed) == {"shoots/empty.png", "shoots/missing.png", "shoots/notes.txt"}
    assert "no face" in failed["shoots/empty.png"] and "not in the bucket" in failed["shoots/missing.png"]
    assert "not a supported image" in failed["shoots/notes.txt"]


def test_swap_url_all_fail_400(builtin_server: Server, bucket: Path) -> None:
    with builtin_server.client() as c:
        r = c.post("/swap_url", json={"face_filename": "faces/hanks.png",
                                      "model_filenames": ["shoots/empty.png", "shoots/nothing.png"]})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "all_failed" and len(r.json()["failed"]) == 2


def test_swap_url_source_without_face_400(builtin_server: Server, bucket: Path) -> None:
    with builtin_server.client() as c:
        r = c.post("/swap_url", json={"face_filename": "faces/blank.png", "model_filenames": ["shoots/ross.png"]})
    assert r.status_code == 400 and r.json()["error"]["field"] == "face_filename"


def test_swap_url_missing_source_404(builtin_server: Server, bucket: Path) -> None:
    with builtin_server.client() as c:
        r = c.post("/swap_url", json={"face_filename": "faces/nobody.png", "model_filenames": ["shoots/ross.png"]})
    assert r.status_code == 404 and r.json()["error"]["field"] == "face_filename"


@pytest.mark.parametrize("name", ["../outside.png", "shoots/../../outside.png", "/etc/passwd", "file:///etc/passwd",
                                  "s3://other-bucket/x.png", "shoots\\..\\..\\x.png", "shoots/a\x00.png", "~/x.png"])
@pytest.mark.parametrize("where", ["face", "model"])
def test_swap_url_refuses_names_escaping_the_bucket(builtin_server: Server, bucket: Path, name: str,
                                                    where: str) -> None:
    outside = bucket.parent
    before_outside = set(os.listdir(outside))
    before_bucket = _listing(bucket)
    body = {"face_filename": name if where == "face" else "faces/hanks.png",
            "model_filenames": ["shoots/ross.png", name] if where == "model" else ["shoots/ross.png"]}
    with builtin_server.client() as c:
        r = c.post("/swap_url", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "unsafe_path"
    assert r.json()["error"]["field"] == ("face_filename" if where == "face" else "model_filenames[1]")
    assert set(os.listdir(outside)) == before_outside and _listing(bucket) == before_bucket


def test_swap_url_refuses_a_symlink_out_of_the_bucket(builtin_server: Server, bucket: Path, tmp_path: Path,
                                                      hanks_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(hanks_path.read_bytes())
    link = bucket / "faces" / "link.png"
    if not link.exists():
        link.symlink_to(secret)
    target_link = bucket / "shoots" / "link.png"
    if not target_link.exists():
        target_link.symlink_to(secret)
    with builtin_server.client() as c:
        r = c.post("/swap_url", json={"face_filename": "faces/link.png", "model_filenames": ["shoots/ross.png"]})
        assert r.status_code == 400 and r.json()["error"] == {
            "code": "unsafe_path", "field": "face_filename", "message": r.json()["error"]["message"]}
        r = c.post("/swap_url", json={"face_filename": "faces/hanks.png",
                                      "model_filenames": ["shoots/ross.png", "shoots/link.png"]})
    assert r.status_code == 206 and r.json()["failed"][0]["filename"] == "shoots/link.png"
    assert not list(tmp_path.glob("*-*.png")) and not (tmp_path / "results").exists()  # nothing written outside


def test_swap_url_refuses_overlong_name_components(builtin_server: Server, bucket: Path) -> None:
    with builtin_server.client() as c:
        r = c.post("/swap_url", json={"face_filename": "faces/" + "x" * 300 + ".png",
                                      "model_filenames": ["shoots/ross.png"]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "unsafe_path"


def test_swap_url_unavailable_restorer_fails_fast(builtin_server: Server, bucket: Path) -> None:
    before = _listing(bucket)
    with builtin_server.client() as c:
        r = c.post("/swap_url", json={"face_filename": "faces/hanks.png", "model_filenames": ["shoots/ross.png"],
                                      "options": {"use_codeformer": True}})
    assert r.status_code == 503 and r.json()["error"]["field"] == "use_codeformer"
    assert _listing(bucket) == before  # nothing was swapped or written


def test_swap_url_targets_wait_for_a_slot_instead_of_failing_busy(tmp_path: Path, t1_bgr: np.ndarray,
                                                                  hanks_path: Path) -> None:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    (bucket / "face.png").write_bytes(hanks_path.read_bytes())
    names = []
    for i in range(3):
        (bucket / f"t{i}.png").write_bytes(_png(_crop(t1_bgr, FACES[3][0])))
        names.append(f"t{i}.png")
    server = Server({"FACEAPI_WEIGHTS_DIR": str(tmp_path / "w"), "FACEAPI_STORAGE_URL": str(bucket),
                     "FACEAPI_INFERENCE_THREADS": "1", "FACEAPI_MAX_QUEUE": "0",
                     "FACEAPI_SWAP_URL_CONCURRENCY": "3"}, workers=1, log_path=tmp_path / "log").start()
    try:
        with server.client() as c:
            r = c.post("/swap_url", json={"face_filename": "face.png", "model_filenames": names})
        assert r.status_code == 200, r.text
        assert len(r.json()["urls"]) == 3
    finally:
        server.stop()


@pytest.mark.parametrize("body,field", [
    ({"face_filename": "faces/hanks.png", "model_filenames": []}, "model_filenames"),
    ({"face_filename": "faces/hanks.png", "model_filenames": ["a.png"], "options": {"upscale": 5}}, "options.upscale"),
    ({"face_filename": "faces/hanks.png", "model_filenames": ["a.png"], "options": {"colour": "red"}},
     "options.colour"),
    ({"face_filename": "faces/hanks.png", "model_filenames": ["a.png"], "extra": 1}, "extra"),
    ({"model_filenames": ["a.png"]}, "face_filename"),
])
def test_swap_url_body_validation_422(builtin_server: Server, body: dict, field: str) -> None:
    with builtin_server.client() as c:
        r = c.post("/swap_url", json=body)
    assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text
