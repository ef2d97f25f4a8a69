"""The job store on a real SQLite file: transitions, atomic claims across threads and processes, idempotency keys,
the queue bound; the sweeper's TTL expiry, interrupted-worker marking and orphan-file removal; webhook retries."""

from __future__ import annotations

import http.server
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.config import Settings
from app.jobs.procs import HOST
from app.jobs.service import JobService
from app.jobs.store import JobRecord, QueueFull, SQLiteJobStore
from app.jobs.webhook import deliver


def _rec(job_id: str, key: str | None = None, owner: str | None = None, created: float | None = None) -> JobRecord:
    return JobRecord(id=job_id, kind="faceswap", owner=owner, idempotency_key=key, created_at=created or time.time(),
                     options={"mode": "one_to_one"})


@pytest.fixture()
def store(tmp_path: Path) -> SQLiteJobStore:
    s = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    yield s
    s.close()


def test_transitions(store: SQLiteJobStore) -> None:
    rec, created = store.create(_rec("a"), max_queued=10)
    assert created and rec.state == "queued" and store.queue_position(rec) == 0
    claimed = store.claim("w1", HOST, os.getpid(), ["faceswap"])
    assert claimed is not None and claimed.id == "a" and claimed.state == "running" and claimed.worker == "w1"
    assert store.claim("w2", HOST, os.getpid(), ["faceswap"]) is None  # nothing queued any more
    assert store.beat("w1", {"a": (3, 10)}) == set()
    got = store.get("a")
    assert got is not None and (got.progress_done, got.progress_total) == (3, 10)
    assert store.finish("a", "w2", "succeeded") is None  # not w2's job
    done = store.finish("a", "w1", "succeeded", result_path="result.png", result_media_type="image/png",
                        result_size=5, result_headers={"X-Face-Backend": "builtin"})
    assert done is not None and done.state == "succeeded" and done.finished_at is not None
    assert done.result_headers == {"X-Face-Backend": "builtin"}
    assert store.finish("a", "w1", "failed") is None  # terminal states are final
    assert store.request_cancel("a") == (store.get("a"), False)  # canceling a finished job changes nothing


def test_cancel_queued_at_once_and_running_by_flag(store: SQLiteJobStore) -> None:
    store.create(_rec("q"), 10)
    rec, now = store.request_cancel("q")
    assert now and rec is not None and rec.state == "canceled" and rec.error_code == "canceled"
    store.create(_rec("r"), 10)
    store.claim("w1", HOST, os.getpid(), ["faceswap"])
    rec, now = store.request_cancel("r")
    assert not now and rec is not None and rec.state == "running" and rec.cancel_requested
    assert store.beat("w1", {}) == {"r"}  # the running worker learns it at its next heartbeat
    assert store.request_cancel("nope") == (None, False)


def test_idempotency_key_and_owner_scope(store: SQLiteJobStore) -> None:
    first, created = store.create(_rec("k1", key="shoot-42"), 10)
    again, created2 = store.create(_rec("k2", key="shoot-42"), 10)
    assert created and not created2 and again.id == "k1"
    other, created3 = store.create(_rec("k3", key="shoot-42", owner="alice"), 10)
    assert created3 and other.id == "k3"  # keys are per owner
    assert store.get("k3") is None and store.get("k3", owner="alice") is not None  # one owner never sees another's
    assert store.find_by_key("shoot-42").id == "k1"  # type: ignore[union-attr]
    assert [r.id for r in store.list()] == ["k1"]


def test_queue_bound(store: SQLiteJobStore) -> None:
    for i in range(3):
        store.create(_rec(f"j{i}"), 3)
    with pytest.raises(QueueFull):
        store.create(_rec("j3"), 3)
    store.claim("w", HOST, os.getpid(), ["faceswap"])
    store.create(_rec("j3"), 3)  # a claimed job frees a place
    assert store.count_queued() == 3
    assert [r.id for r in store.list(state="queued", limit=2)] == ["j3", "j2"]  # newest first


def _claim_all(path: str, worker: str, out: multiprocessing.Queue) -> None:
    s = SQLiteJobStore(Path(path))
    got = []
    while (rec := s.claim(worker, HOST, os.getpid(), ["faceswap"])) is not None:
        got.append(rec.id)
    out.put(got)


def test_claims_are_atomic_across_threads_and_processes(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    s = SQLiteJobStore(path)
    n = 120
    for i in range(n):
        s.create(_rec(f"job{i:03d}", created=1000.0 + i), n)
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(str(path), f"p{i}", out)) for i in range(2)]
    for p in procs:
        p.start()
    thread_results: list[list[str]] = []

    def in_thread(worker: str) -> None:
        got = []
        while (rec := s.claim(worker, HOST, os.getpid(), ["faceswap"])) is not None:
            got.append(rec.id)
        thread_results.append(got)

    threads = [threading.Thread(target=in_thread, args=(f"t{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    proc_results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    claimed = [j for r in thread_results + proc_results for j in r]
    assert sorted(claimed) == [f"job{i:03d}" for i in range(n)]  # every job exactly once
    assert {r.worker for r in s.list(limit=n)} <= {"p0", "p1", "t0", "t1", "t2"}
    s.close()


# ---- the sweeper ----------------------------------------------------------------------------------------------------


@pytest.fixture()
def service(tmp_path: Path) -> JobService:
    settings = Settings(data_dir=tmp_path / "data", job_ttl=60, job_heartbeat_timeout=3)
    svc = JobService(settings, hub=None, kinds={})
    yield svc
    svc.store.close()


def _with_files(svc: JobService, job_id: str) -> Path:
    d = svc.files.job_dir(job_id)
    (d / "inputs" / "image").mkdir(parents=True)
    (d / "inputs" / "image" / "0.png").write_bytes(b"x")
    (d / "work").mkdir()
    return d


def test_ttl_expires_records_and_files(service: JobService) -> None:
    service.store.create(_rec("old"), 10)
    service.store.claim("w", HOST, os.getpid(), ["faceswap"])
    service.store.finish("old", "w", "succeeded")
    d = _with_files(service, "old")
    assert service.sweeper.expire(time.time()) == []  # not yet
    assert service.sweeper.expire(time.time() + 61) == ["old"]
    assert service.store.get("old") is None and not d.exists()


def test_dead_and_silent_workers_are_marked_interrupted(service: JobService) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    service.store.create(_rec("dead", created=1.0), 10)
    service.store.claim("gone", HOST, dead.pid, ["faceswap"])
    service.store.create(_rec("silent", created=2.0), 10)
    service.store.claim("elsewhere", "another-host", 1, ["faceswap"])
    service.store.create(_rec("alive", created=3.0), 10)
    service.store.claim("me-too", HOST, os.getpid(), ["faceswap"])
    dirs = {j: _with_files(service, j) for j in ("dead", "silent", "alive")}
    assert service.sweeper.mark_dead(time.time()) == ["dead"]  # a dead pid of this host: at once
    assert sorted(service.sweeper.mark_dead(time.time() + 10)) == ["alive", "silent"]  # no heartbeat for > 3 s
    for job_id in ("dead", "silent"):
        rec = service.store.get(job_id)
        assert rec is not None and rec.state == "failed" and rec.error_code == "interrupted"
        assert not dirs[job_id].exists()


def test_orphan_files_are_removed(service: JobService) -> None:
    service.store.create(_rec("kept"), 10)
    kept = _with_files(service, "kept")
    orphan = _with_files(service, "orphan")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale_upload = service.files.staging / f"{dead.pid}-abc"
    stale_upload.mkdir()
    live_upload = service.files.new_staging("mine")
    assert service.sweeper.remove_orphans() == 2
    assert kept.exists() and not orphan.exists() and not stale_upload.exists() and live_upload.exists()


def test_webhook_retries_with_backoff() -> None:
    hits: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            hits.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(500 if len(hits) < 3 else 204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_port}/hook"
        assert deliver(url, '{"id": "x"}', "x", retries=3, timeout=2, backoff=0.05)
        assert len(hits) == 3 and hits[0] == b'{"id": "x"}'
        assert not deliver(url.replace(str(srv.server_port), "1"), "{}", "y", retries=1, timeout=1, backoff=0.01)
    finally:
        srv.shutdown()
