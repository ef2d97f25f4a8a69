"""Our InSwapper against insightface's own INSwapper on the same stand-in model, image and points."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import pytest

from models.align import ARCFACE_112
from models.face import Face
from models.swap.inswapper import InSwapper
from testkit import standins

CPU_ONLY = ["CPUExecutionProvider"]


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return standins.make_inswapper(tmp_path_factory.mktemp("parity") / "inswapper_128.onnx")


@pytest.fixture(scope="session")
def reference(model_path: Path):
    from insightface.model_zoo import get_model
    from insightface.model_zoo.inswapper import INSwapper

    with contextlib.redirect_stdout(io.StringIO()):
        ref = get_model(str(model_path), providers=CPU_ONLY)
    assert isinstance(ref, INSwapper)
    return ref


@pytest.fixture(scope="session")
def ours(model_path: Path) -> InSwapper:
    sw = InSwapper(model_path, CPU_ONLY)
    sw.prepare()
    return sw


def _source_embedding(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(512).astype(np.float32) * 7.0


def _compare(reference, ours: InSwapper, img: np.ndarray, kps: np.ndarray, emb: np.ndarray, label: str) -> int:
    from insightface.app.common import Face as InsightFace

    kps = np.asarray(kps, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage's estimate() deprecation inside insightface
        theirs = reference.get(img, InsightFace(kps=kps), InsightFace(embedding=emb), paste_back=True)
    target = Face(bbox=np.zeros(4, np.float32), score=0.9, kps=kps)
    source = Face(bbox=np.zeros(4, np.float32), score=0.9, kps=kps, embedding=emb)
    mine = ours.get(img, target, source, img)
    diff = int(np.abs(theirs.astype(np.int16) - mine.astype(np.int16)).max())
    changed = int((mine != img).any(axis=2).sum())
    print(f"parity {label}: max abs pixel difference {diff}, pixels changed by the swap {changed}")
    assert changed > 500  # the swap really did something
    return diff


def test_latent_matches_reference(reference, ours: InSwapper) -> None:
    emb = _source_embedding(1)
    np.testing.assert_array_equal(ours.emap, reference.emap)
    source = Face(bbox=np.zeros(4, np.float32), score=1.0, kps=np.zeros((5, 2), np.float32), embedding=emb)
    lat = np.dot((emb / np.linalg.norm(emb)).reshape(1, -1), reference.emap)
    lat /= np.linalg.norm(lat)
    np.testing.assert_allclose(ours.latent(source), lat, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("index", [0, 3])
def test_parity_on_t1_faces(reference, ours: InSwapper, t1: np.ndarray, index: int) -> None:
    _bbox, kps = standins.T1_FACES[index]
    assert _compare(reference, ours, t1, np.asarray(kps), _source_embedding(index), f"t1 face {index}") == 0


@pytest.mark.parametrize("corner", ["top-left", "bottom-right"])
def test_parity_near_the_border(reference, ours: InSwapper, t1: np.ndarray, corner: str) -> None:
    h, w = t1.shape[:2]
    centre = np.array([25.0, 30.0]) if corner == "top-left" else np.array([w - 20.0, h - 15.0])
    kps = (ARCFACE_112 - 56.0) * 0.9 + centre
    assert _compare(reference, ours, t1, kps, _source_embedding(7), f"border {corner}") == 0


def test_parity_rotated_large_face(reference, ours: InSwapper, t1: np.ndarray) -> None:
    angle = 0.35
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) * 3.2
    kps = (ARCFACE_112 - 56.0) @ rot.T + np.array([640.0, 430.0])
    assert _compare(reference, ours, t1, kps, _source_embedding(9), "rotated large face") == 0
