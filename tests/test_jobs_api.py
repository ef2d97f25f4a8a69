"""Jobs over HTTP on a real ``python -m app serve`` with two workers sharing one data dir: submit → 202 +
Location, every worker answers the same, SSE, Range download, cancel, idempotency, webhook, a full queue, TTL
expiry, and a worker killed mid-job (its job ends failed/interrupted and leaves no files)."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.jobs.procs import HOST
from app.jobs.store import JobRecord, SQLiteJobStore
from testkit.server import Server

LONG = {"mode": "one_to_many", "face_refinement_steps": "5", "upscale": "4"}  # several seconds on the builtin backend


def _server(tmp: Path, **env: str) -> Server:
    (tmp / "bucket").mkdir(parents=True, exist_ok=True)
    s = Server({
        "FACEAPI_WEIGHTS_DIR": str(tmp / "weights"), "FACEAPI_STORAGE_URL": str(tmp / "bucket"),
        "FACEAPI_DATA_DIR": str(tmp / "data"), "FACEAPI_TEMP_DIR": str(tmp / "tmp"),
        "FACEAPI_JOB_HEARTBEAT_TIMEOUT": "3", **env,
    }, workers=2, log_path=tmp / "server.log")
    s.data = tmp / "data"  # type: ignore[attr-defined]
    return s


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """The main server, and one with a queue of one job and a TTL of 2 s; started side by side."""
    main = _server(tmp_path_factory.mktemp("jobs"), FACEAPI_JOB_QUEUE="8")
    small = _server(tmp_path_factory.mktemp("jobs_small"), FACEAPI_JOB_QUEUE="1", FACEAPI_JOB_TTL="2")
    errors: list[BaseException] = []

    def start(s: Server) -> None:
        try:
            s.start()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in (main, small)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        if errors:
            raise errors[0]
        yield main, small
    finally:
        main.stop()
        small.stop()


@pytest.fixture(scope="module")
def server(servers: tuple[Server, Server]) -> Server:
    return servers[0]


@pytest.fixture(scope="module")
def small_server(servers: tuple[Server, Server]) -> Server:
    return servers[1]


def _files(t1_path: Path, hanks_path: Path, sources: int = 1) -> list:
    src = hanks_path.read_bytes() if sources == 1 else t1_path.read_bytes()
    return [*(("source_image", (f"s{i}.png", src)) for i in range(sources)),
            ("target_image", ("t1.jpg", t1_path.read_bytes()))]


def _submit(s: Server, files: list, data: dict | None = None, headers: dict | None = None,
            path: str = "/jobs/faceswap") -> httpx.Response:
    return httpx.post(s.url + path, files=files, data=data or {}, headers=headers or {}, timeout=60)


def _wait(s: Server, job_id: str, states: tuple[str, ...], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{s.url}/jobs/{job_id}", timeout=10).json()
        if job.get("state") in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not in {states} after {timeout}s: {job}")


def _leftovers(data: Path, job_id: str) -> list[str]:
    return [str(p) for p in (data / "jobs" / job_id).rglob("*")] + [str(p) for p in (data / "staging").iterdir()]


def test_submit_poll_from_any_worker_and_download_a_range(server: Server, t1_path: Path, hanks_path: Path) -> None:
    r = _submit(server, _files(t1_path, hanks_path), {"mode": "one_to_many"}, {"Prefer": "respond-async"},
                path="/faceswap")  # the synchronous endpoint, asked for a job
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/jobs/{job['id']}" == job["urls"]["self"]
    assert r.headers["preference-applied"] == "respond-async"
    assert job["state"] in ("queued", "running") and job["kind"] == "faceswap" and len(job["id"]) >= 20
    assert job["options"]["mode"] == "one_to_many" and job["progress"]["unit"] == "steps"
    done = _wait(server, job["id"], ("succeeded", "failed"))
    assert done["state"] == "succeeded", done
    assert done["progress"]["fraction"] == 1.0 and done["metrics"]["run_seconds"] > 0
    assert done["result"]["media_type"] == "image/png" and done["result"]["headers"]["X-Face-Backend"] == "builtin"
    # Fresh connections: whichever worker answers, the job is the same.
    pids, bodies = set(), []
    for i in range(200):
        r = httpx.get(f"{server.url}/jobs/{job['id']}", timeout=10)
        pids.add(r.headers["x-worker-pid"])
        bodies.append(r.json())
        if i >= 39 and len(pids) == 2:
            break
    assert len(pids) == 2 and len(bodies) >= 40
    assert all(b == bodies[0] for b in bodies)
    r = httpx.get(f"{server.url}/jobs/{job['id']}/result", headers={"Range": "bytes=0-7"}, timeout=10)
    assert r.status_code == 206 and r.content == b"\x89PNG\r\n\x1a\n"
    assert r.headers["content-range"] == f"bytes 0-7/{done['result']['size']}"
    assert r.headers["x-face-backend"] == "builtin"
    full = httpx.get(f"{server.url}/jobs/{job['id']}/result", timeout=10)
    assert full.status_code == 200 and len(full.content) == done["result"]["size"]
    listed = httpx.get(f"{server.url}/jobs", params={"state": "succeeded"}).json()["jobs"]
    assert job["id"] in [j["id"] for j in listed]
    assert httpx.delete(f"{server.url}/jobs/{job['id']}").status_code == 204
    assert httpx.get(f"{server.url}/jobs/{job['id']}").status_code == 404
    assert not (server.data / "jobs" / job["id"]).exists()  # type: ignore[attr-defined]


def test_enhance_job_through_both_doors(server: Server, hanks_path: Path) -> None:
    image = [("image", ("hanks.png", hanks_path.read_bytes()))]
    via_endpoint = _submit(server, image, {"upscale": "2"}, {"Prefer": "respond-async"}, path="/enhance")
    via_jobs = _submit(server, image, {"upscale": "2", "blend": "50"}, path="/jobs/enhance")
    assert via_endpoint.status_code == via_jobs.status_code == 202, (via_endpoint.text, via_jobs.text)
    for r in (via_endpoint, via_jobs):
        done = _wait(server, r.json()["id"], ("succeeded", "failed"))
        assert done["state"] == "succeeded" and done["kind"] == "enhance", done
        assert done["result"]["headers"]["X-Upscaler"] == "lanczos"
    assert via_jobs.json()["options"]["blend"] == 50
    r = _submit(server, image, {"faces": "not json"}, path="/jobs/enhance")  # refused at submit, not run
    assert r.status_code == 422 and r.json()["error"]["field"] == "faces"


def test_bad_submissions_name_the_field(server: Server, t1_path: Path, hanks_path: Path) -> None:
    r = _submit(server, _files(t1_path, hanks_path), {"mdoe": "sorted"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "mdoe"
    r = _submit(server, _files(t1_path, hanks_path)[:1])
    assert r.status_code == 422 and r.json()["error"] == {"code": "missing_field", "field": "target_image",
                                                          "message": "target_image is required"}
    r = _submit(server, _files(t1_path, hanks_path), {"upscale": "9"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "upscale"
    assert _submit(server, _files(t1_path, hanks_path), path="/jobs/nope").status_code == 404
    assert httpx.get(f"{server.url}/jobs/unknown-id").json()["error"]["code"] == "not_found"


def test_sse_progress_then_final_event(server: Server, t1_path: Path, hanks_path: Path) -> None:
    job = _submit(server, _files(t1_path, hanks_path, sources=4), {"mode": "one_to_many",
                                                                  "face_refinement_steps": "3"}).json()
    events: list[tuple[str, dict]] = []
    with httpx.stream("GET", f"{server.url}/jobs/{job['id']}/events", timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name or "", json.loads(line[6:])))
    names = [n for n, _ in events]
    assert names[-1] == "succeeded" and names[:-1] and set(names[:-1]) == {"progress"}, names
    assert events[-1][1]["result"]["size"] > 0


def test_result_is_409_until_succeeded_and_cancel_stops_a_running_job(server: Server, t1_path: Path,
                                                                        hanks_path: Path) -> None:
    job = _submit(server, _files(t1_path, hanks_path, sources=8), LONG).json()
    _wait(server, job["id"], ("running",))
    r = httpx.get(f"{server.url}/jobs/{job['id']}/result")
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_ready"
    r = httpx.post(f"{server.url}/jobs/{job['id']}/cancel", timeout=30)  # any worker: the flag is in the store
    assert r.status_code in (200, 202)
    final = _wait(server, job["id"], ("canceled", "succeeded", "failed"))
    assert final["state"] == "canceled" and final["error"]["code"] == "canceled" and final["result"] is None
    assert _leftovers(server.data, job["id"]) == []  # type: ignore[attr-defined]
    r = httpx.post(f"{server.url}/jobs/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "canceled"  # again: unchanged


def test_idempotency_key_returns_the_same_job_and_webhook_fires(server: Server, t1_path: Path,
                                                               hanks_path: Path) -> None:
    got: list[dict] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        headers = {"Idempotency-Key": f"k-{time.time()}", "X-Webhook-Url": f"http://127.0.0.1:{hook.server_port}/"}
        first = _submit(server, _files(t1_path, hanks_path), headers=headers)
        second = _submit(server, _files(t1_path, hanks_path), headers=headers)
        assert first.status_code == 202 and second.status_code == 200
        assert first.json()["id"] == second.json()["id"]
        other = _submit(server, _files(t1_path, hanks_path), headers={"Idempotency-Key": "another"})
        assert other.status_code == 202 and other.json()["id"] != first.json()["id"]
        _wait(server, first.json()["id"], ("succeeded",))
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [g["id"] for g in got] == [first.json()["id"]] and got[0]["state"] == "succeeded"
    finally:
        hook.shutdown()


def test_kill_9_of_the_running_worker_marks_the_job_interrupted(server: Server, t1_path: Path,
                                                                hanks_path: Path) -> None:
    data: Path = server.data  # type: ignore[attr-defined]
    job = _submit(server, _files(t1_path, hanks_path, sources=8), LONG).json()
    _wait(server, job["id"], ("running",))
    store = SQLiteJobStore(data / "jobs.sqlite3")
    rec = store.get(job["id"])
    store.close()
    assert rec is not None and rec.worker_pid
    os.kill(rec.worker_pid, signal.SIGKILL)
    final = _wait(server, job["id"], ("failed", "succeeded", "canceled"), timeout=30)
    assert final["state"] == "failed" and final["error"]["code"] == "interrupted", final
    assert _leftovers(data, job["id"]) == []


# ---- a server with a queue of one and a TTL of 2 s ------------------------------------------------------------------


def test_full_queue_answers_503_with_retry_after(small_server: Server, t1_path: Path, hanks_path: Path) -> None:
    accepted, refused = [], None
    for _ in range(6):
        r = _submit(small_server, _files(t1_path, hanks_path, sources=8), LONG)
        if r.status_code == 503:
            refused = r
            break
        assert r.status_code == 202
        accepted.append(r.json()["id"])
    assert refused is not None and refused.json()["error"]["code"] == "queue_full"
    assert int(refused.headers["retry-after"]) > 0
    for job_id in accepted:
        assert httpx.delete(f"{small_server.url}/jobs/{job_id}", timeout=30).status_code == 204


def test_finished_jobs_expire_after_the_ttl(small_server: Server, t1_path: Path, hanks_path: Path) -> None:
    job = _submit(small_server, _files(t1_path, hanks_path)).json()
    _wait(small_server, job["id"], ("succeeded",))
    deadline = time.monotonic() + 15
    while httpx.get(f"{small_server.url}/jobs/{job['id']}").status_code != 404:
        assert time.monotonic() < deadline, "not expired"
        time.sleep(0.2)
    assert httpx.get(f"{small_server.url}/jobs/{job['id']}/result").status_code == 404
    assert not (small_server.data / "jobs" / job["id"]).exists()  # type: ignore[attr-defined]


def test_a_whole_server_restart_leaves_no_orphans(small_server: Server) -> None:
    """Files without a record, uploads cut off by a dead process, and a job left `running` by a dead worker: after
    a restart the files are gone and the job is failed/interrupted."""
    data: Path = small_server.data  # type: ignore[attr-defined]
    small_server.stop()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store = SQLiteJobStore(data / "jobs.sqlite3")
    store.create(JobRecord(id="left-running", kind="faceswap", created_at=time.time()), 10)
    store.claim("crashed", HOST, dead.pid, ["faceswap"])
    store.close()
    planted = [data / "jobs" / "left-running" / "inputs" / "target_image" / "0.jpg",
               data / "jobs" / "no-record" / "work" / "partial.png",
               data / "staging" / f"{dead.pid}-cut-off" / "inputs" / "source_image" / "0.png"]
    for p in planted:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    small_server.env["FACEAPI_JOB_TTL"] = "3600"  # keep the interrupted record to look at
    small_server.start()
    job = _wait(small_server, "left-running", ("failed",), timeout=30)
    assert job["error"]["code"] == "interrupted"
    assert not any(p.exists() for p in planted)
    assert [p.name for p in (data / "jobs").iterdir()] == [] and list((data / "staging").iterdir()) == []
