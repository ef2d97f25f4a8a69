"""``python -m app`` as a user runs it: subprocesses with FACEAPI_* in the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.test_weights import FileServer, payload, server, sha  # noqa: F401 (server is a fixture)

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, weights_dir: Path, jobs: str = "analyze,faceswap") -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "FACEAPI_WEIGHTS_DIR": str(weights_dir),
        "FACEAPI_ENABLED_JOBS": jobs,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    return subprocess.run(
        [sys.executable, "-m", "app", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def test_weights_list_reports_missing_files_and_the_command(tmp_path: Path) -> None:
    r = run("weights", "list", weights_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = {line.split()[0]: line for line in r.stdout.splitlines() if line.strip()}
    for name in ("inswapper_128", "buffalo_l", "wav2lip_gan", "gfpgan_1.4", "realistic_vision_v6"):
        assert name in lines
    assert "missing" in lines["inswapper_128"] and "required" in lines["inswapper_128"]
    assert "554.3 MB" in lines["inswapper_128"]
    assert "python -m app weights download buffalo_l inswapper_128" in r.stdout
    assert str(tmp_path) in r.stdout


def test_weights_verify_on_empty_dir(tmp_path: Path) -> None:
    r = run("weights", "verify", weights_dir=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "inswapper_128: missing" in r.stdout
    strict = run("weights", "verify", "--strict", weights_dir=tmp_path)
    assert strict.returncode == 1
    # --strict only cares about the named entries when names are given
    (tmp_path / "2dfan4.onnx").write_bytes(b"landmarks")
    assert run("weights", "verify", "--strict", "2dfan4", weights_dir=tmp_path).returncode == 0


def test_weights_verify_fails_on_a_corrupt_file(tmp_path: Path) -> None:
    (tmp_path / "inswapper_128.onnx").write_bytes(b"not the real model")
    r = run("weights", "verify", weights_dir=tmp_path)
    assert r.returncode == 1
    assert "inswapper_128: size mismatch" in r.stdout


def test_weights_download_unknown_name_exits_2(tmp_path: Path) -> None:
    r = run("weights", "download", "no_such_model", weights_dir=tmp_path)
    assert r.returncode == 2
    assert "no_such_model" in r.stderr
    assert "inswapper_128" in r.stderr and "faceswap" in r.stderr  # the valid names are listed
    assert list(tmp_path.iterdir()) == []  # nothing was fetched


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run(weights_dir=tmp_path).returncode == 2
    assert run("weights", weights_dir=tmp_path).returncode == 2


def write_manifest(path: Path, fs: FileServer) -> dict[str, bytes]:
    """A two-entry manifest on the local server: a required and an optional file of the faceswap job."""
    req, opt = payload(80_000, seed=21), payload(30_000, seed=22)
    path.write_text(
        f"""
[weights.swapper]
filename = "swapper.onnx"
urls = ["{fs.base}/down/swapper.onnx", "{fs.add("swapper.onnx", req)}"]
size = {len(req)}
sha256 = "{sha(req)}"
license = "test"
jobs = ["faceswap"]
required = true
description = "required test file"

[weights.mask]
filename = "masks/mask.onnx"
urls = ["{fs.add("mask.onnx", opt)}"]
license = "test"
jobs = ["faceswap"]
required = false
description = "optional test file, no sha256"
"""
    )
    fs.add("down/swapper.onnx", b"", mode="fail")
    return {"swapper.onnx": req, "masks/mask.onnx": opt}


def test_download_through_the_cli(server: FileServer, tmp_path: Path) -> None:  # noqa: F811
    manifest = tmp_path / "manifest.toml"
    files = write_manifest(manifest, server)
    wd = tmp_path / "weights"
    common = ("weights", "--manifest", str(manifest))

    # No names: the required files of the enabled jobs only.
    r = run(*common, "download", "--no-progress", weights_dir=wd, jobs="faceswap")
    assert r.returncode == 0, r.stderr
    assert (wd / "swapper.onnx").read_bytes() == files["swapper.onnx"]
    assert not (wd / "masks").exists()
    assert "trying the next mirror" in r.stderr

    # A job name with --all brings the optional file too; it has no sha256, so it is trusted on first use.
    r = run(*common, "download", "--no-progress", "--all", "faceswap", weights_dir=wd)
    assert r.returncode == 0, r.stderr
    assert (wd / "masks" / "mask.onnx").read_bytes() == files["masks/mask.onnx"]
    assert "trusted on first use" in r.stderr
    assert "swapper: present and verified" in r.stderr

    r = run(*common, "list", weights_dir=wd)
    assert r.returncode == 0 and r.stdout.count("present") == 2

    assert run(*common, "verify", weights_dir=wd).returncode == 0
    (wd / "masks" / "mask.onnx").write_bytes(payload(30_000, seed=23))  # same size, other bytes
    r = run(*common, "verify", weights_dir=wd)
    assert r.returncode == 1
    assert "mask: sha mismatch" in r.stdout


def test_download_failure_exits_1(server: FileServer, tmp_path: Path) -> None:  # noqa: F811
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(
        f"""
[weights.broken]
filename = "broken.onnx"
urls = ["{server.add("broken.onnx", b"x", mode="fail")}"]
license = "test"
jobs = ["analyze"]
required = true
"""
    )
    r = run("weights", "--manifest", str(manifest), "download", "--no-progress", "broken", weights_dir=tmp_path)
    assert r.returncode == 1
    assert "broken" in r.stderr and "500" in r.stderr
