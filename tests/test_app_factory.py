"""The Settings given to create_app are the ones every dependency and middleware sees (not the environment's)."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app


def test_create_app_settings_reach_every_dependency(tmp_path: Path, t1_path: Path) -> None:
    settings = Settings(weights_dir=tmp_path / "w", data_dir=tmp_path / "data", temp_dir=tmp_path / "data" / "tmp",
                        max_upload_bytes=4096, max_image_pixels=1000)
    app = create_app(settings)
    with TestClient(app) as client:
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/models").json()["weights_dir"] == str(tmp_path / "w")
        r = client.post("/analyze", files={"image": ("t1.jpg", t1_path.read_bytes(), "image/jpeg")})
        assert r.status_code == 413, r.text  # t1.jpg is far over 4096 bytes: the per-file cap of these settings
        assert r.json()["error"]["field"] in ("image", None)
        small = tmp_path / "small.png"
        cv2.imwrite(str(small), np.zeros((40, 40, 3), np.uint8))  # 1600 pixels > max_image_pixels=1000
        r = client.post("/analyze", files={"image": ("small.png", small.read_bytes(), "image/png")})
        assert r.status_code == 413 and r.json()["error"]["field"] == "image", r.text
    assert (tmp_path / "data" / "tmp").is_dir()  # uploads spool under this app's FACEAPI_TEMP_DIR
