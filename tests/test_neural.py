"""Neural backend on stand-in models: routing through insightface, the analyser and the swapper."""

from __future__ import annotations

import contextlib
import io
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from models.analysis.neural_analyser import NeuralAnalyser
from models.face import Face, best_face
from models.providers import CPU, CUDA, resolve_providers
from models.swap.inswapper import InSwapper, read_emap
from testkit import standins

CPU_ONLY = [CPU]


@pytest.fixture(scope="session")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return standins.make_weights_dir(tmp_path_factory.mktemp("neural_weights"), extras=True)


@pytest.fixture(scope="session")
def analyser(weights: Path) -> NeuralAnalyser:
    na = NeuralAnalyser(weights / "buffalo_l", CPU_ONLY)
    na.prepare()
    return na


@pytest.fixture(scope="session")
def swapper(weights: Path) -> InSwapper:
    sw = InSwapper(weights / "inswapper_128.onnx", CPU_ONLY)
    sw.prepare()
    return sw


def _zoo(path: Path):
    from insightface.model_zoo import get_model

    with contextlib.redirect_stdout(io.StringIO()):
        return get_model(str(path), providers=CPU_ONLY)


def test_providers() -> None:
    assert resolve_providers("cpu") == [CPU]
    assert resolve_providers("cuda") == [CUDA, CPU]
    auto = resolve_providers("auto")
    assert auto[-1] == CPU and auto in ([CPU], [CUDA, CPU])
    with pytest.raises(ValueError):
        resolve_providers("tpu")


def test_standins_route_through_insightface(weights: Path) -> None:
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX
    from insightface.model_zoo.attribute import Attribute
    from insightface.model_zoo.inswapper import INSwapper
    from insightface.model_zoo.landmark import Landmark
    from insightface.model_zoo.scrfd import SCRFD

    buffalo = weights / "buffalo_l"
    det = _zoo(buffalo / "det_10g.onnx")
    assert isinstance(det, SCRFD) and det.use_kps and det.fmc == 3 and det._num_anchors == 2
    rec = _zoo(buffalo / "w600k_r50.onnx")
    assert isinstance(rec, ArcFaceONNX) and rec.input_size == (112, 112)
    assert (rec.input_mean, rec.input_std) == (127.5, 127.5)
    assert (buffalo / "w600k_r50.onnx").stat().st_size < 2_000_000
    assert isinstance(_zoo(buffalo / "genderage.onnx"), Attribute)
    lmk = _zoo(buffalo / "1k3d68.onnx")
    assert isinstance(lmk, Landmark) and lmk.taskname == "landmark_3d_68"
    swap = _zoo(weights / "inswapper_128.onnx")
    assert isinstance(swap, INSwapper)
    assert swap.input_names == ["target", "source"] and swap.emap.shape == (512, 512)
    np.testing.assert_array_equal(read_emap(weights / "inswapper_128.onnx"), swap.emap)


def _match(faces: list[Face], known: list[standins.FaceSpec]) -> None:
    assert len(faces) == len(known)
    for bbox, kps in known:
        box = np.asarray(bbox, np.float32)
        found = min(faces, key=lambda f: float(np.abs(f.bbox - box).max()))
        np.testing.assert_allclose(found.bbox, box, atol=1.0)
        np.testing.assert_allclose(found.kps, np.asarray(kps, np.float32), atol=1.0)
        assert found.score == pytest.approx(0.9, abs=1e-6)


@pytest.mark.parametrize("dynamic", [True, False])
def test_scrfd_standin_decodes_known_faces(tmp_path: Path, t1: np.ndarray, dynamic: bool) -> None:
    path = standins.make_scrfd_for_image(tmp_path / "det_10g.onnx", t1.shape, standins.T1_FACES, dynamic=dynamic)
    det = _zoo(path)
    det.prepare(0, input_size=(640, 640), det_thresh=0.5)
    boxes, kpss = det.detect(t1)
    faces = [Face(bbox=b[:4], score=float(b[4]), kps=k) for b, k in zip(boxes, kpss, strict=True)]
    _match(faces, standins.T1_FACES)


def test_analyser_finds_the_known_faces(analyser: NeuralAnalyser, t1: np.ndarray) -> None:
    faces = analyser.get(t1, embeddings=True)
    _match(faces, standins.T1_FACES)
    areas = [f.area for f in faces]
    assert areas == sorted(areas, reverse=True)
    assert best_face(faces) is faces[0]
    for f in faces:
        assert f.embedding is not None and f.embedding.shape == (512,) and f.embedding.dtype == np.float32
        assert f.landmarks is not None and f.landmarks.shape == (68, 2)
        x1, y1, x2, y2 = f.bbox
        assert x1 - 20 < f.landmarks[:, 0].mean() < x2 + 20 and y1 - 20 < f.landmarks[:, 1].mean() < y2 + 20
        assert f.gender in (0, 1) and isinstance(f.age, int)
        assert "pose" in f.extra
    # Same face → same vector; different faces → different vectors.
    again = analyser.get(t1, embeddings=True)
    for a, b in zip(faces, again, strict=True):
        np.testing.assert_allclose(a.embedding, b.embedding, rtol=1e-5, atol=1e-5)
    emb = np.stack([f.normed_embedding for f in faces])
    sims = emb @ emb.T
    assert np.all(sims[~np.eye(len(faces), dtype=bool)] < 0.99)
    # Embeddings only on request; max_num limits the count.
    assert all(f.embedding is None for f in analyser.get(t1))
    assert len(analyser.get(t1, max_num=2)) == 2


def test_embedding_matches_insightface_arcface(analyser: NeuralAnalyser, weights: Path, t1: np.ndarray) -> None:
    from insightface.app.common import Face as InsightFace

    rec = _zoo(weights / "buffalo_l" / "w600k_r50.onnx")
    face = analyser.get(t1)[0]
    ours = analyser.embed(t1, face)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = rec.get(t1, InsightFace(kps=face.kps, bbox=face.bbox))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_analyser_matches_insightface_face_analysis(analyser: NeuralAnalyser, weights: Path, t1: np.ndarray) -> None:
    from insightface.app import FaceAnalysis

    app = FaceAnalysis(name=str(weights / "buffalo_l"), providers=CPU_ONLY,
                       allowed_modules=["detection", "recognition"])
    app.prepare(ctx_id=0, det_size=(640, 640))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = sorted(app.get(t1), key=lambda f: float(f.bbox[0]))
    ours = sorted(analyser.get(t1, embeddings=True), key=lambda f: float(f.bbox[0]))
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a.bbox, b.bbox, atol=1e-3)
        np.testing.assert_allclose(a.kps, b.kps, atol=1e-3)
        np.testing.assert_allclose(a.normed_embedding, b.normed_embedding, atol=1e-5)


def test_analyser_is_thread_safe(analyser: NeuralAnalyser, t1: np.ndarray) -> None:
    expected = analyser.get(t1, embeddings=True)
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda _: analyser.get(t1, embeddings=True), range(12)))
    for faces in results:
        assert len(faces) == len(expected)
        for a, b in zip(faces, expected, strict=True):
            np.testing.assert_array_equal(a.bbox, b.bbox)
            np.testing.assert_allclose(a.embedding, b.embedding, rtol=1e-5, atol=1e-6)


def test_analyser_requires_local_files(tmp_path: Path) -> None:
    standins.make_arcface(tmp_path / "w600k_r50.onnx")
    with pytest.raises(FileNotFoundError):
        NeuralAnalyser(tmp_path, CPU_ONLY).prepare()


def test_analyser_without_optional_models(tmp_path: Path, t1: np.ndarray) -> None:
    na = NeuralAnalyser(standins.make_buffalo_dir(tmp_path / "buffalo_l"), CPU_ONLY)
    faces = na.get(t1)  # prepares on first use
    _match(faces, standins.T1_FACES)
    assert all(f.landmarks is None and f.gender is None and f.age is None for f in faces)


def test_swapper_changes_only_the_target_face(analyser: NeuralAnalyser, swapper: InSwapper,
                                              t1: np.ndarray) -> None:
    assert swapper.name == "neural" and swapper.needs_source_embedding
    faces = analyser.get(t1, embeddings=True)
    target, source = faces[0], faces[1]
    out = swapper.get(t1, target, source, t1)
    assert out.shape == t1.shape and out.dtype == np.uint8
    assert not np.shares_memory(out, t1)
    changed = (out != t1).any(axis=2)
    x1, y1, x2, y2 = target.bbox
    cx, cy = int((x1 + x2) / 2), int((y1 + y2) / 2)
    # Inside the face: nearly every pixel changes.
    assert changed[cy - 20:cy + 20, cx - 20:cx + 20].mean() > 0.9
    # Nothing changes beyond a face-sized margin around the box; other faces are untouched.
    pad = int(max(x2 - x1, y2 - y1))
    ys, xs = np.nonzero(changed)
    assert xs.min() >= x1 - pad and xs.max() <= x2 + pad and ys.min() >= y1 - pad and ys.max() <= y2 + pad
    for other in faces[1:]:
        ox1, oy1, ox2, oy2 = other.bbox.astype(int)
        assert not changed[oy1:oy2, ox1:ox2].any()
    # The result depends on the source identity.
    out2 = swapper.get(t1, target, faces[2], t1)
    assert np.abs(out2.astype(int) - out.astype(int))[cy - 20:cy + 20, cx - 20:cx + 20].mean() > 1.0


def test_swapper_needs_an_embedding(swapper: InSwapper, t1: np.ndarray) -> None:
    bbox, kps = standins.T1_FACES[0]
    face = Face(bbox=np.asarray(bbox, np.float32), score=0.9, kps=np.asarray(kps, np.float32))
    with pytest.raises(ValueError):
        swapper.get(t1, face, face, t1)
