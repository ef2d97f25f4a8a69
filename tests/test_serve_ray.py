"""The app on a real local Ray cluster, deployed from serve/cpu.yaml (with the FaceModels deployment switched on)
by `serve run` (the README's command): a swap and /swap_url through Ray's HTTP proxy give the same image as the app
in-process, and the model calls of concurrent requests are grouped into batches by FaceModels."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from testkit.server import REPO, free_port

APP = "faceapi"
BATCH_WAIT_S = 0.25  # long enough that requests sent together meet in one batch


def _decode(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img is not None
    return img


def _env(root: Path) -> dict[str, str]:
    return {
        "FACEAPI_WEIGHTS_DIR": str(root / "weights"),  # empty: the built-in models
        "FACEAPI_DATA_DIR": str(root / "data"),
        "FACEAPI_TEMP_DIR": str(root / "data" / "tmp"),
        "FACEAPI_STORAGE_URL": str(root / "bucket"),
        "FACEAPI_INFERENCE_THREADS": "4",
        "FACEAPI_LOG_LEVEL": "WARNING",
    }


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, hanks_path: Path, t1_path: Path) -> Path:
    d = tmp_path_factory.mktemp("serve")
    for sub in ("weights", "data", "bucket/faces", "bucket/shoots"):
        (d / sub).mkdir(parents=True)
    (d / "bucket" / "faces" / "hanks.png").write_bytes(hanks_path.read_bytes())
    (d / "bucket" / "shoots" / "group.jpg").write_bytes(t1_path.read_bytes())
    return d


@pytest.fixture(scope="module")
def ray_url(root: Path) -> Iterator[str]:
    """A 2-CPU Ray started here (its files under the test's temp dir), the app deployed on it from
    serve/cpu.yaml with the test's paths by `serve run --non-blocking`; Ray is shut down afterwards."""
    import ray
    from ray import serve

    environ = dict(os.environ)  # ray.init sets variables of this process (PYTHONBREAKPOINT): put them back after
    temp = Path(f"/tmp/rt{os.getpid()}")  # Ray's socket paths must stay under 107 bytes: a short link
    temp.unlink(missing_ok=True)
    temp.symlink_to(root, target_is_directory=True)
    try:
        try:
            ctx = ray.init(num_cpus=2, num_gpus=0, _temp_dir=str(temp / "ray"), include_dashboard=False,
                           namespace="serve", log_to_driver=False, configure_logging=False)
        except Exception as exc:  # noqa: BLE001 - only the cluster's start may skip the test
            pytest.skip(f"Ray cannot start here: {exc}")
        port = free_port()
        config = yaml.safe_load((REPO / "serve" / "cpu.yaml").read_text())
        config["http_options"] = {"host": "127.0.0.1", "port": port}
        app = config["applications"][0]
        app["args"].update(batch=True, batch_wait_timeout_s=BATCH_WAIT_S)  # the batched path (cpu.yaml: off)
        app["deployments"].append({"name": "FaceModels", "num_replicas": 1, "ray_actor_options": {"num_cpus": 1}})
        app["runtime_env"]["env_vars"].update(_env(root))
        (root / "serve.yaml").write_text(yaml.safe_dump(config))
        deploy = subprocess.run(
            [str(Path(sys.executable).parent / "serve"), "run", "--non-blocking", "--address",
             ctx.address_info["address"], str(root / "serve.yaml")],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            status = serve.status().applications.get(APP)
            assert status is None or status.status not in ("DEPLOY_FAILED", "UNHEALTHY"), status
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"the Serve application did not become ready: {status}"
            time.sleep(0.3)
        yield url
    finally:
        if ray.is_initialized():
            try:
                serve.shutdown()
            finally:
                ray.shutdown()
        temp.unlink()
        os.environ.clear()
        os.environ.update(environ)


@pytest.fixture(scope="module")
def local(root: Path) -> Iterator[TestClient]:
    """The same app in-process (what uvicorn serves), with the same settings: the reference answers."""
    env = _env(root)
    settings = Settings(**{k.removeprefix("FACEAPI_").lower(): v for k, v in env.items()}
                        | {"data_dir": str(root / "local-data"), "temp_dir": str(root / "local-data" / "tmp")})
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        yield client


def _swap_form(hanks_path: Path, t1_path: Path) -> dict:
    return {"files": {"source_image": ("hanks.png", hanks_path.read_bytes(), "image/png"),
                      "target_image": ("group.jpg", t1_path.read_bytes(), "image/jpeg")},
            "data": {"mode": "one_to_many", "format": "png"}}


def test_faceswap_through_ray_equals_the_app_in_process(ray_url: str, local: TestClient, hanks_path: Path,
                                                         t1_path: Path) -> None:
    expected = local.post("/faceswap", **_swap_form(hanks_path, t1_path))
    assert expected.status_code == 200, expected.text
    assert int(expected.headers["x-faces-swapped"]) == 6

    def one(_: int) -> httpx.Response:
        return httpx.post(ray_url + "/faceswap", timeout=120, **_swap_form(hanks_path, t1_path))

    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # sent together: their model calls share batches
        answers = list(pool.map(one, range(4)))
    want = _decode(expected.content)
    for r in answers:
        assert r.status_code == 200, r.text
        assert r.headers["x-face-backend"] == "builtin" and r.headers["x-faces-swapped"] == "6"
        assert np.array_equal(_decode(r.content), want)

    from ray import serve

    sizes = serve.get_deployment_handle("FaceModels", app_name=APP).batch_sizes.remote().result(timeout_s=30)
    # 4 requests × (source + target detection) and 4 × 6 face swaps went through FaceModels
    assert sum(n * k for n, k in sizes["detect"].items()) == 8
    assert sum(n * k for n, k in sizes["swap"].items()) == 24
    assert max(sizes["detect"]) >= 2 and max(sizes["swap"]) >= 2, sizes


def test_swap_url_through_ray(ray_url: str, local: TestClient, root: Path, hanks_path: Path,
                              t1_path: Path) -> None:
    r = httpx.post(ray_url + "/swap_url", timeout=120,
                   json={"face_filename": "faces/hanks.png", "model_filenames": ["shoots/group.jpg"] * 2,
                         "options": {"mode": "one_to_many"}})
    assert r.status_code == 200, r.text
    urls = r.json()["urls"]
    assert len(urls) == 2 and len(set(urls)) == 2
    expected = _decode(local.post("/faceswap", **_swap_form(hanks_path, t1_path)).content)
    for url in urls:
        path = Path(url.removeprefix("file://"))
        assert path.is_relative_to(root / "bucket" / "results") and path.suffix == ".png"
        assert np.array_equal(_decode(path.read_bytes()), expected)
