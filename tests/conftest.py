"""Shared fixtures: the real test faces that packages ship, and real servers (uvicorn, several workers)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``python -m app serve`` in a subprocess (the README's server command), on a free loopback port."""

    def __init__(self, env: dict[str, str], workers: int = 2, log_path: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "FACEAPI_HOST": "127.0.0.1",
            "FACEAPI_PORT": str(self.port),
            "FACEAPI_WORKERS": str(workers),
            "FACEAPI_LOG_LEVEL": "INFO",
            **env,
        }
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0, expect_ready: bool = True) -> Server:
        out = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve"], cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; log: {self.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(self.url + "/readyz", timeout=2)
                if r.status_code == 200 or (not expect_ready and not r.json().get("loading")):
                    return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"server not ready in {timeout}s; log: {self.log_path}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, **kw)


@pytest.fixture(scope="session")
def builtin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Two workers on the built-in models only (an empty weights dir), with small limits to test against."""
    d = tmp_path_factory.mktemp("builtin")
    server = Server(
        {
            "FACEAPI_WEIGHTS_DIR": str(d / "weights"),
            "FACEAPI_MAX_UPLOAD_BYTES": str(4 * 1024 * 1024),
            "FACEAPI_MAX_IMAGE_PIXELS": str(3_000_000),
        },
        workers=2,
        log_path=d / "server.log",
    ).start()
    yield server
    server.stop()
