"""/metrics over HTTP on a real ``python -m app serve`` with two workers (prometheus-client multiprocess mode):
counters that add up across both workers, stage histograms from Server-Timing, busy 503s, models and jobs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from testkit.server import Server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Built-in models only; one inference slot and no queue per worker, so concurrent swaps meet 503 busy."""
    d = tmp_path_factory.mktemp("metrics")
    (d / "bucket").mkdir()
    s = Server({
        "FACEAPI_WEIGHTS_DIR": str(d / "weights"), "FACEAPI_STORAGE_URL": str(d / "bucket"),
        "FACEAPI_DATA_DIR": str(d / "data"), "FACEAPI_TEMP_DIR": str(d / "tmp"),
        "FACEAPI_INFERENCE_THREADS": "1", "FACEAPI_MAX_QUEUE": "0",
    }, workers=2, log_path=d / "server.log")
    s.data = d / "data"  # type: ignore[attr-defined]
    s.start()
    try:
        yield s
    finally:
        s.stop()


def scrape(s: Server) -> dict[str, list]:
    """name → samples (each sample: name, labels, value) of every family in /metrics."""
    r = httpx.get(s.url + "/metrics", timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(r.text):
        out.setdefault(fam.name, []).extend(fam.samples)
    return out


def value(m: dict[str, list], sample: str, **labels: str) -> float:
    """Sum of the samples called ``sample`` whose labels include ``labels``."""
    fam = sample.removesuffix("_total").removesuffix("_count").removesuffix("_sum").removesuffix("_bucket")
    return sum(x.value for x in m.get(fam, []) if x.name == sample and labels.items() <= x.labels.items())


def _swap_files(t1_path: Path, hanks_path: Path) -> list:
    return [("source_image", ("hanks.png", hanks_path.read_bytes())),
            ("target_image", ("t1.jpg", t1_path.read_bytes()))]


def test_request_counters_add_up_across_both_workers(server: Server) -> None:
    pids: dict[int, int] = {}
    for _ in range(300):  # each call opens a new connection: either worker may answer
        r = httpx.get(server.url + "/healthz", timeout=10)
        assert r.status_code == 200
        pid = r.json()["pid"]
        pids[pid] = pids.get(pid, 0) + 1
        if len(pids) == 2 and sum(pids.values()) >= 10:
            break
    assert len(pids) == 2, f"only worker(s) {pids} answered"
    m = scrape(server)
    # each worker counted its own answers in its own file; the scrape (on one worker) reports their sum
    assert value(m, "faceapi_http_requests_total", route="/healthz", status="200", method="GET") == sum(pids.values())
    assert value(m, "faceapi_http_request_duration_seconds_count", route="/healthz") == sum(pids.values())
    assert value(m, "faceapi_workers") == 2
    started = {int(x.labels["pid"]) for x in m["faceapi_worker_start_time_seconds"]}
    assert started == set(pids)
    # a second round grows the same counter
    for _ in range(5):
        httpx.get(server.url + "/healthz", timeout=10)
    assert value(scrape(server), "faceapi_http_requests_total", route="/healthz") == sum(pids.values()) + 5
    # unknown paths share one label instead of one series each
    httpx.get(server.url + "/no/such/path/123", timeout=10)
    m = scrape(server)
    assert value(m, "faceapi_http_requests_total", route="unmatched", status="404") == 1
    assert not any("/no/such" in x.labels.get("route", "") for x in m["faceapi_http_requests"])


def test_models_and_inference_pool_of_both_workers(server: Server) -> None:
    m = scrape(server)
    loaded = [x for x in m["faceapi_model_loaded"] if x.labels["backend"] == "builtin"]
    assert loaded and all(x.value == 2 for x in loaded), loaded  # both workers loaded each built-in model
    load_times = [x for x in m["faceapi_model_load_seconds"] if x.labels["backend"] == "builtin"]
    assert {x.labels["pid"] for x in load_times} and len({x.labels["pid"] for x in load_times}) == 2
    assert all(x.value >= 0 for x in load_times)
    assert value(m, "faceapi_models_ready") == 2
    assert value(m, "faceapi_inference_slots") == 2  # 1 thread × 2 workers
    assert value(m, "faceapi_inference_queue_depth") == 0
    assert value(m, "faceapi_inference_running") == 0


def test_swap_stages_backend_and_busy_503s(server: Server, t1_path: Path, hanks_path: Path) -> None:
    r = httpx.post(server.url + "/faceswap", files=_swap_files(t1_path, hanks_path), timeout=60)
    assert r.status_code == 200, r.text
    stages = [p.split(";")[0].strip() for p in r.headers["server-timing"].split(",")]
    m = scrape(server)
    assert value(m, "faceapi_http_requests_total", route="/faceswap", status="200", backend="builtin") == 1
    for stage in stages:
        assert value(m, "faceapi_stage_duration_seconds_count", route="/faceswap", stage=stage) == 1, stage
    assert value(m, "faceapi_stage_duration_seconds_sum", route="/faceswap") > 0

    # one slot and no queue per worker: concurrent swaps on fresh connections meet 503 busy
    codes: list[int] = []

    def swap() -> None:
        resp = httpx.post(server.url + "/faceswap", files=_swap_files(t1_path, hanks_path),
                          data={"face_refinement_steps": "3"}, timeout=60)
        codes.append(resp.status_code)
        if resp.status_code == 503:
            assert resp.json()["error"]["code"] == "busy" and resp.headers["retry-after"]

    threads = [threading.Thread(target=swap) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(codes) <= {200, 503} and codes.count(503) >= 1, codes
    m = scrape(server)
    assert value(m, "faceapi_inference_rejected_total") == codes.count(503)
    assert value(m, "faceapi_http_requests_total", route="/faceswap", status="503") == codes.count(503)
    assert value(m, "faceapi_http_requests_total", route="/faceswap", status="200") == 1 + codes.count(200)


def test_job_counts_by_state_and_duration(server: Server, t1_path: Path, hanks_path: Path) -> None:
    r = httpx.post(server.url + "/faceswap", files=_swap_files(t1_path, hanks_path),
                   headers={"Prefer": "respond-async"}, timeout=60)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    deadline = time.monotonic() + 60
    while httpx.get(f"{server.url}/jobs/{job_id}", timeout=10).json()["state"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    m = scrape(server)
    assert value(m, "faceapi_jobs", state="succeeded", kind="faceswap") == 1
    assert value(m, "faceapi_jobs", state="queued", kind="faceswap") == 0  # every kind × state is reported
    assert value(m, "faceapi_jobs_finished_total", kind="faceswap", state="succeeded") == 1
    assert value(m, "faceapi_job_duration_seconds_count", kind="faceswap", state="succeeded") == 1
    assert value(m, "faceapi_job_duration_seconds_sum", kind="faceswap") > 0
    assert value(m, "faceapi_job_queue_seconds_count", kind="faceswap") == 1
    assert value(m, "faceapi_stage_duration_seconds_count", route="job:faceswap") >= 1
    assert value(m, "faceapi_http_requests_total", route="/faceswap", status="202") == 1


def test_grafana_dashboard_charts_every_metric_and_only_those() -> None:
    import json
    import re

    from prometheus_client.metrics import MetricWrapperBase

    from app import metrics
    from testkit.server import REPO

    dash = json.loads((REPO / "deploy" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    used = {re.sub(r"_(bucket|sum|count|total)$", "", n) for e in exprs for n in re.findall(r"faceapi_[a-z_]+", e)}
    declared = {m._name for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)} | {"faceapi_jobs"}
    assert used == declared, (used - declared, declared - used)
