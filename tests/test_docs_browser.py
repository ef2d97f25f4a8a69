"""/docs in a real browser (headless Chromium): it renders every endpoint, with no CDN (every other host blocked)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from testkit.server import Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium; CI installs it)")


def _chromium(url: str, tmp: Path, *extra: str) -> str:
    assert CHROMIUM is not None
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp / 'profile'}", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
           "--virtual-time-budget=15000", "--window-size=1280,3000", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout


def test_swagger_ui_renders_every_endpoint_offline(builtin_server: Server, tmp_path: Path) -> None:
    dom = _chromium(builtin_server.url + "/docs", tmp_path, "--dump-dom")
    for path in ("/faceswap", "/swap_img", "/swap_url", "/enhance", "/analyze", "/healthz", "/readyz", "/models"):
        assert f'data-path="{path}"' in dom, path


def test_an_operation_shows_its_fields_and_errors(builtin_server: Server, tmp_path: Path) -> None:
    url = builtin_server.url + "/docs#/face%20swap/faceswap_endpoint_faceswap_post"
    dom = _chromium(url, tmp_path, "--dump-dom")
    for text in ("source_image", "target_image", "face_refinement_steps", "codeformer_fidelity", ">413<", ">415<",
                 ">422<", ">503<", "unsupported_media_type"):
        assert text in dom, text
    shot = tmp_path / "docs.png"
    _chromium(url, tmp_path, f"--screenshot={shot}")
    assert shot.stat().st_size > 50_000  # a rendered page, not a blank one


def test_redoc_renders_offline(builtin_server: Server, tmp_path: Path) -> None:
    dom = _chromium(builtin_server.url + "/redoc", tmp_path, "--dump-dom")
    assert "/swap_url" in dom and "Face studio" in dom
