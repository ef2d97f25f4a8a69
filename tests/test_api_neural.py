"""End to end on the neural path: a two-worker server whose weights dir holds interface-exact stand-ins."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from testkit import standins
from testkit.server import Server


@pytest.fixture(scope="module")
def neural_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    d = tmp_path_factory.mktemp("neural")
    weights = standins.make_weights_dir(d / "weights")  # a detector that finds t1.jpg's six faces
    server = Server({"FACEAPI_WEIGHTS_DIR": str(weights), "FACEAPI_EXECUTION_PROVIDER": "cpu"}, workers=2,
                    log_path=d / "server.log").start()
    yield server
    server.stop()


def test_ready_with_neural_models_loaded(neural_server: Server) -> None:
    with neural_server.client() as c:
        ready = c.get("/readyz").json()
        models = {m["name"]: m for m in c.get("/models").json()["models"]}
    assert ready["ready"]
    assert ready["jobs"]["faceswap"]["backends"] == ["neural", "builtin"]
    assert ready["jobs"]["faceswap"]["missing_files"] == []
    assert models["buffalo_l"]["loaded"] and models["inswapper_128"]["loaded"]


def test_analyze_neural(neural_server: Server, t1_path: Path) -> None:
    with neural_server.client() as c:
        r = c.post("/analyze", files={"image": ("t1.jpg", t1_path.read_bytes())}, data={"embeddings": "true"})
    assert r.status_code == 200 and r.headers["x-face-backend"] == "neural"
    faces = r.json()["faces"]
    assert len(faces) == 6 and all(len(f["embedding"]) == 512 for f in faces)
    boxes = sorted(tuple(round(v) for v in f["bbox"]) for f in faces)
    assert boxes == sorted(tuple(b) for b, _ in standins.T1_FACES)


def test_faceswap_auto_picks_neural_and_pastes_into_the_best_face(neural_server: Server, t1_path: Path,
                                                                  t1_bgr: np.ndarray) -> None:
    with neural_server.client() as c:
        r = c.post("/faceswap", files={"source_image": ("s.jpg", t1_path.read_bytes()),
                                       "target_image": ("t.jpg", t1_path.read_bytes())})
    assert r.status_code == 200, r.text
    assert r.headers["x-face-backend"] == "neural" and r.headers["x-faces-swapped"] == "1"
    out = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    diff = np.abs(out.astype(int) - t1_bgr.astype(int)).max(axis=2)
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b, _ in standins.T1_FACES]
    x1, y1, x2, y2 = standins.T1_FACES[int(np.argmax(areas))][0]
    w, h = x2 - x1, y2 - y1
    inner = diff[y1 + h // 4 : y2 - h // 4, x1 + w // 4 : x2 - w // 4]
    assert inner.mean() > 10, "the stand-in's colour did not reach the best face"
    far = np.ones_like(diff, bool)
    far[max(y1 - h, 0) : y2 + h, max(x1 - w, 0) : x2 + w] = False
    assert np.percentile(diff[far], 99.9) <= 2  # decoder rounding only


def test_backend_builtin_still_selectable(neural_server: Server, t1_path: Path, hanks_path: Path) -> None:
    with neural_server.client() as c:
        r = c.post("/faceswap", files={"source_image": ("s.png", hanks_path.read_bytes()),
                                       "target_image": ("t.jpg", t1_path.read_bytes())}, data={"backend": "builtin"})
    assert r.status_code == 200 and r.headers["x-face-backend"] == "builtin"


def _swap(server: Server, files: list, data: dict | None = None) -> tuple[int, np.ndarray]:
    with server.client() as c:
        r = c.post("/faceswap", files=files, data=data or {})
    assert r.status_code == 200, r.text
    assert r.headers["x-face-backend"] == "neural"
    return int(r.headers["x-faces-swapped"]), cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)


def test_neural_one_to_many_and_similarity(neural_server: Server, t1_path: Path, t1_bgr: np.ndarray) -> None:
    t1 = t1_path.read_bytes()
    n, out = _swap(neural_server, [("source_image", ("s.jpg", t1)), ("target_image", ("t.jpg", t1))],
                   {"mode": "one_to_many"})
    assert n == 6
    for (x1, y1, x2, y2), _ in standins.T1_FACES:
        assert np.abs(out[y1:y2, x1:x2].astype(int) - t1_bgr[y1:y2, x1:x2]).mean() > 5
    # every face of t1 is most similar to itself: six swaps, each face onto its own position
    n, _ = _swap(neural_server, [("source_image", ("s.jpg", t1)), ("target_image", ("t.jpg", t1))],
                 {"mode": "similarity"})
    assert n == 6


def test_neural_several_sources_average_their_identity(neural_server: Server, t1_path: Path,
                                                       t1_bgr: np.ndarray) -> None:
    t1 = t1_path.read_bytes()
    flipped = cv2.imencode(".png", np.ascontiguousarray(t1_bgr[::-1]))[1].tobytes()  # same faces found, other pixels
    once = _swap(neural_server, [("source_image", ("a.jpg", t1)), ("target_image", ("t.jpg", t1))])[1]
    twice = _swap(neural_server, [("source_image", ("a.jpg", t1)), ("source_image", ("b.jpg", t1)),
                                  ("target_image", ("t.jpg", t1))])[1]
    mixed = _swap(neural_server, [("source_image", ("a.jpg", t1)), ("source_image", ("b.png", flipped)),
                                  ("target_image", ("t.jpg", t1))])[1]
    assert np.array_equal(once, twice)  # the mean of one identity twice is that identity
    assert not np.array_equal(once, mixed)
