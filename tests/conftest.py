"""Shared fixtures: the real test faces that packages ship, and real servers (uvicorn, several workers)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from testkit.server import REPO, Server  # noqa: F401 - REPO is re-exported for the tests


def insightface_images() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("insightface")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "data" / "images"


@pytest.fixture(scope="session")
def t1_path() -> Path:
    return insightface_images() / "t1.jpg"


@pytest.fixture(scope="session")
def hanks_path() -> Path:
    return insightface_images() / "Tom_Hanks_54745.png"


@pytest.fixture(scope="session")
def t1_bgr(t1_path: Path) -> np.ndarray:
    img = cv2.imread(str(t1_path))
    assert img is not None
    return img


@pytest.fixture(scope="session")
def hanks_bgr(hanks_path: Path) -> np.ndarray:
    img = cv2.imread(str(hanks_path))
    assert img is not None
    return img


@pytest.fixture(scope="session")
def builtin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Two workers on the built-in models only (an empty weights dir), with small limits to test against."""
    d = tmp_path_factory.mktemp("builtin")
    (d / "bucket").mkdir()
    server = Server(
        {
            "FACEAPI_WEIGHTS_DIR": str(d / "weights"),
            "FACEAPI_STORAGE_URL": str(d / "bucket"),
            "FACEAPI_MAX_UPLOAD_BYTES": str(4 * 1024 * 1024),
            "FACEAPI_MAX_IMAGE_PIXELS": str(3_000_000),
            "FACEAPI_DATA_DIR": str(d / "data"),
            "FACEAPI_TEMP_DIR": str(d / "data" / "tmp"),
            "FACEAPI_MAX_VIDEO_SECONDS": "30",
        },
        workers=2,
        log_path=d / "server.log",
    ).start()
    server.bucket = d / "bucket"  # type: ignore[attr-defined]
    server.data = d / "data"  # type: ignore[attr-defined]
    yield server
    server.stop()


# ---- enhancement stand-ins, shared by the model-level tests -------------------------------------------------


@pytest.fixture(scope="session")
def t1(t1_bgr: np.ndarray) -> np.ndarray:
    return t1_bgr


@pytest.fixture(scope="session")
def faces() -> list:
    """t1.jpg's six faces (box + 5 points) as Face records."""
    from models.face import Face
    from testkit import standins

    return [Face(bbox=np.asarray(b, np.float32), score=0.9, kps=np.asarray(k, np.float32))
            for b, k in standins.T1_FACES]


@pytest.fixture(scope="session")
def enhance_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from testkit import standins_enhance

    return standins_enhance.make_enhance_weights(tmp_path_factory.mktemp("enhance_weights"))


def _prepared(model):  # noqa: ANN001, ANN202
    model.prepare()
    return model


@pytest.fixture(scope="session")
def gfpgan(enhance_weights: Path):  # noqa: ANN201
    from models.restore.restorer import FaceRestorer

    return _prepared(FaceRestorer(enhance_weights / "gfpgan_1.4.onnx", ["CPUExecutionProvider"], "gfpgan"))


@pytest.fixture(scope="session")
def codeformer(enhance_weights: Path):  # noqa: ANN201
    from models.restore.restorer import FaceRestorer

    return _prepared(FaceRestorer(enhance_weights / "codeformer.onnx", ["CPUExecutionProvider"], "codeformer"))


@pytest.fixture(scope="session")
def x2(enhance_weights: Path):  # noqa: ANN201
    from models.restore.upscaler import RealEsrganUpscaler

    return _prepared(RealEsrganUpscaler(enhance_weights / "real_esrgan_x2.onnx", ["CPUExecutionProvider"], 2))


@pytest.fixture(scope="session")
def x4(enhance_weights: Path):  # noqa: ANN201
    from models.restore.upscaler import RealEsrganUpscaler

    return _prepared(RealEsrganUpscaler(enhance_weights / "real_esrgan_x4.onnx", ["CPUExecutionProvider"], 4))


@pytest.fixture(scope="session")
def xseg(enhance_weights: Path):  # noqa: ANN201
    from models.masks.face_masks import OcclusionMasker

    return _prepared(OcclusionMasker(enhance_weights / "xseg_1.onnx", ["CPUExecutionProvider"]))


@pytest.fixture(scope="session")
def parser(enhance_weights: Path):  # noqa: ANN201
    from models.masks.face_masks import FaceParser

    return _prepared(FaceParser(enhance_weights / "bisenet_resnet_34.onnx", ["CPUExecutionProvider"]))
