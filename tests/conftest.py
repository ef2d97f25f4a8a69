"""Shared fixtures: the real test faces that packages ship, and real servers (uvicorn, several workers)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.server import REPO, Server  # noqa: F401 - REPO is re-exported for the tests


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
        },
        workers=2,
        log_path=d / "server.log",
    ).start()
    server.bucket = d / "bucket"  # type: ignore[attr-defined]
    yield server
    server.stop()
