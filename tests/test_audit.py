"""The audit log over real HTTP (two workers, API keys on): one line per request and per job with the sha256 of every
input and output, and ``python -m app audit find`` answering "did this server make this file?"."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.audit import AuditLog, log_files
from testkit.server import REPO, Server, wait_for_job

KEY = "audit-test-key-0123456789"
KEY_ID = hashlib.sha256(KEY.encode()).hexdigest()[:12]
LINE_KEYS = {"time", "type", "request_id", "key_id", "endpoint", "status", "backend", "pid", "ms", "inputs",
             "outputs", "job_id", "kind", "state", "error"}
DIGEST_KEYS = {"name", "sha256", "bytes", "media_type"}


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    d = tmp_path_factory.mktemp("audit")
    log = d / "audit" / "audit.log"
    server = Server({
        "FACEAPI_WEIGHTS_DIR": str(d / "weights"), "FACEAPI_DATA_DIR": str(d / "data"),
        "FACEAPI_TEMP_DIR": str(d / "data" / "tmp"), "FACEAPI_STORAGE_URL": str(d / "bucket"),
        "FACEAPI_ENABLED_JOBS": "analyze,faceswap,enhance", "FACEAPI_API_KEYS": KEY,
        "FACEAPI_AUDIT_LOG": str(log), "FACEAPI_AUDIT_LOG_MAX_BYTES": "2048", "FACEAPI_AUDIT_LOG_BACKUPS": "100",
    }, workers=2, log_path=d / "server.log").start()
    server.bucket = d / "bucket"  # type: ignore[attr-defined]
    yield server, log
    server.stop()


def audit_find(log: Path, digest: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", "audit", "find", digest, "--log", str(log)], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)


def lines(log: Path) -> list[dict]:
    return [json.loads(line) for f in log_files(log) for line in f.read_text().splitlines()]


def wait_found(log: Path, digest: str, timeout: float = 10.0) -> subprocess.CompletedProcess:
    """The line is appended once the answer has gone out: the client can be a moment ahead of it."""
    deadline = time.monotonic() + timeout
    while (done := audit_find(log, digest)).returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    return done


def test_swap_enhance_and_job_outputs_are_found(audited: tuple[Server, Path], t1_path: Path,
                                                hanks_path: Path) -> None:
    server, log = audited
    source, target = hanks_path.read_bytes(), t1_path.read_bytes()
    with server.client(headers={"X-API-Key": KEY}) as c:
        swap = c.post("/faceswap", files={"source_image": ("s.png", source), "target_image": ("t.jpg", target)},
                      data={"format": "png"})
        assert swap.status_code == 200, swap.text
        enh = c.post("/enhance", files={"image": ("t.jpg", target)}, data={"faces": "[]", "upscale": "2"})
        assert enh.status_code == 200, enh.text
        sub = c.post("/jobs/enhance", files={"image": ("t.jpg", target)}, data={"faces": "[]"})
        assert sub.status_code == 202, sub.text
        job = wait_for_job(c, sub.headers["Location"])
        assert job["state"] == "succeeded", job
        result = c.get(sub.headers["Location"] + "/result")
        assert result.status_code == 200

    swap_sha = hashlib.sha256(swap.content).hexdigest()
    found = wait_found(log, swap_sha)
    assert found.returncode == 0, found.stderr
    assert "made by this server" in found.stderr
    entry = json.loads(found.stdout.splitlines()[0])
    assert entry["endpoint"] == "/faceswap" and entry["status"] == 200 and entry["backend"] == "builtin"
    assert entry["key_id"] == KEY_ID
    assert entry["request_id"] == swap.headers["X-Request-ID"]
    assert {i["name"]: i["sha256"] for i in entry["inputs"]} == {
        "source_image": hashlib.sha256(source).hexdigest(), "target_image": hashlib.sha256(target).hexdigest()}
    assert entry["outputs"] == [{"name": "response", "sha256": swap_sha, "bytes": len(swap.content),
                                 "media_type": "image/png"}]

    enh_found = wait_found(log, hashlib.sha256(enh.content).hexdigest())
    assert enh_found.returncode == 0, enh_found.stderr
    assert json.loads(enh_found.stdout.splitlines()[0])["endpoint"] == "/enhance"

    job_found = wait_found(log, hashlib.sha256(result.content).hexdigest())
    assert job_found.returncode == 0, job_found.stderr
    job_line = next(json.loads(s) for s in job_found.stdout.splitlines() if json.loads(s)["type"] == "job")
    assert job_line["job_id"] == job["id"] and job_line["state"] == "succeeded" and job_line["key_id"] == KEY_ID
    assert job_line["inputs"][0]["sha256"] == hashlib.sha256(target).hexdigest()
    submit_line = next(e for e in lines(log) if e.get("job_id") == job["id"] and e["type"] == "request")
    assert submit_line["status"] == 202 and submit_line["outputs"] == []

    # the source picture was read, never made: exit 1, and the answer says it is only an input
    only_input = audit_find(log, hashlib.sha256(source).hexdigest())
    assert only_input.returncode == 1 and "only appears as an input" in only_input.stderr
    assert only_input.stdout.strip()  # the lines are still printed

    unrelated = audit_find(log, hashlib.sha256(b"a file this server never saw").hexdigest())
    assert unrelated.returncode == 1 and not unrelated.stdout.strip() and "not found" in unrelated.stderr


def test_swap_url_files_are_hashed(audited: tuple[Server, Path], t1_path: Path, hanks_path: Path) -> None:
    server, log = audited
    bucket: Path = server.bucket  # type: ignore[attr-defined]
    (bucket / "in").mkdir(parents=True, exist_ok=True)
    (bucket / "in" / "face.png").write_bytes(hanks_path.read_bytes())
    (bucket / "in" / "group.jpg").write_bytes(t1_path.read_bytes())
    with server.client(headers={"X-API-Key": KEY}) as c:
        r = c.post("/swap_url", json={"face_filename": "in/face.png", "model_filenames": ["in/group.jpg"]})
    assert r.status_code == 200, r.text
    written = Path(r.json()["urls"][0].removeprefix("file://"))
    found = wait_found(log, hashlib.sha256(written.read_bytes()).hexdigest())
    assert found.returncode == 0, found.stderr
    # (the same swap on /faceswap made the same bytes: that line is found too)
    entry = next(e for e in map(json.loads, found.stdout.splitlines()) if e["endpoint"] == "/swap_url")
    assert entry["key_id"] == KEY_ID and entry["status"] == 200
    assert {i["name"]: i["sha256"] for i in entry["inputs"]} == {
        "in/face.png": hashlib.sha256(hanks_path.read_bytes()).hexdigest(),
        "in/group.jpg": hashlib.sha256(t1_path.read_bytes()).hexdigest()}
    assert written.as_posix().endswith(next(o["name"] for o in entry["outputs"] if o["name"] != "response"))


def test_lines_hold_digests_only_and_rotate(audited: tuple[Server, Path], t1_path: Path) -> None:
    server, log = audited
    with server.client(headers={"Authorization": f"Bearer {KEY}"}) as c:
        for _ in range(6):
            assert c.post("/analyze", files={"image": ("t.jpg", t1_path.read_bytes())}).status_code == 200
        assert c.post("/analyze").status_code == 422  # a refused request gets its line too, without outputs
    time.sleep(0.5)
    files = log_files(log)
    assert len(files) > 2, files  # 2 KiB per file: rotated, nothing lost or clobbered across the two workers
    assert all(f.stat().st_size <= 2048 for f in files)
    entries = lines(log)
    assert sum(e["endpoint"] == "/analyze" and e["status"] == 200 for e in entries) >= 6
    for e in entries:
        assert set(e) <= LINE_KEYS, e
        assert e["key_id"] == KEY_ID
        for d in e["inputs"] + e["outputs"]:
            assert set(d) <= DIGEST_KEYS and len(d["sha256"]) == 64, d
    assert max(len(line) for f in files for line in f.read_text().splitlines()) < 1500  # digests, never pixels
    refused = [e for e in entries if e["endpoint"] == "/analyze" and e["status"] == 422]
    assert refused and refused[0]["outputs"] == []


def _writer(path: str, n: int, tag: int) -> None:
    log = AuditLog(Path(path), max_bytes=20_000, backups=1000)
    for i in range(n):
        log.write({"writer": tag, "i": i, "pad": "x" * (50 + (i * 37) % 300)})


def test_concurrent_processes_rotate_without_losing_or_mixing_lines(tmp_path: Path) -> None:
    """Four processes append to one log that rotates every 20 kB: every line arrives once and whole, no file
    grows past the limit."""
    path = tmp_path / "audit.log"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), 300, t)) for t in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    files = log_files(path)
    assert len(files) > 10
    assert all(f.stat().st_size <= 20_000 for f in files)
    seen = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert sorted((e["writer"], e["i"]) for e in seen) == [(t, i) for t in range(4) for i in range(300)]
    assert os.path.exists(str(path) + ".lock")


def test_rotation_drops_the_oldest(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.log", max_bytes=1024, backups=2)
    for i in range(40):
        log.write({"i": i, "pad": "y" * 100})
    files = log_files(tmp_path / "a.log")
    assert [f.name for f in files] == ["a.log.2", "a.log.1", "a.log"]
    kept = [json.loads(line)["i"] for f in files for line in f.read_text().splitlines()]
    assert kept == list(range(kept[0], 40)) and kept[0] > 0
