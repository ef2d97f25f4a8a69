"""Prometheus metrics, aggregated over every uvicorn worker (prometheus-client multiprocess mode).

``python -m app serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder (``FACEAPI_DATA_DIR/metrics``, emptied
at start) before uvicorn starts its workers; each worker writes its samples there and ``GET /metrics`` on any worker
merges all of them. Without that variable (``uvicorn app.main:app`` run directly, in-process tests) each process
reports only itself.

Counters and histograms of a worker that died stay in the totals; the ``live*`` gauges of a dead worker are dropped
(``mark_process_dead``) when it shuts down and, for a crashed worker, at the next scrape. Job counts by state are read
from the shared job store at scrape time.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import multiprocess as _mp
from prometheus_client.core import GaugeMetricFamily
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.jobs.procs import pid_alive

log = logging.getLogger("app.metrics")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
JOB_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

# ---- HTTP ----------------------------------------------------------------------------------------------------------
REQUESTS = Counter("faceapi_http_requests_total", "HTTP requests answered, by route template, status and the "
                   "backend that produced the answer (X-Face-Backend; none when the answer names no backend).",
                   ["method", "route", "status", "backend"])
REQUEST_SECONDS = Histogram("faceapi_http_request_duration_seconds", "Time from request start to the last byte "
                            "of the answer.", ["method", "route"], buckets=REQUEST_BUCKETS)
IN_PROGRESS = Gauge("faceapi_http_requests_in_progress", "Requests being answered (all workers).",
                    multiprocess_mode="livesum")
STAGE_SECONDS = Histogram("faceapi_stage_duration_seconds", "Time per processing stage, from the Server-Timing "
                          "header (route job:<kind> for jobs).", ["route", "stage"], buckets=STAGE_BUCKETS)

# ---- inference pool ------------------------------------------------------------------------------------------------
QUEUE_DEPTH = Gauge("faceapi_inference_queue_depth", "Requests waiting for an inference slot (all workers).",
                    multiprocess_mode="livesum")
RUNNING = Gauge("faceapi_inference_running", "Inference calls running (all workers).", multiprocess_mode="livesum")
SLOTS = Gauge("faceapi_inference_slots", "Inference slots (FACEAPI_INFERENCE_THREADS × live workers).",
              multiprocess_mode="livesum")
QUEUE_LIMIT = Gauge("faceapi_inference_queue_limit", "Requests allowed to wait (FACEAPI_MAX_QUEUE × live workers).",
                    multiprocess_mode="livesum")
BUSY = Counter("faceapi_inference_rejected_total", "Requests answered 503 busy because every slot was taken and "
               "the queue was full.")

# ---- models and workers --------------------------------------------------------------------------------------------
WORKERS = Gauge("faceapi_workers", "Live worker processes.", multiprocess_mode="livesum")
WORKER_START = Gauge("faceapi_worker_start_time_seconds", "Unix time each live worker started (label pid).",
                     multiprocess_mode="liveall")
MODELS_READY = Gauge("faceapi_models_ready", "Workers whose model loading has finished.", multiprocess_mode="livesum")
MODEL_LOADED = Gauge("faceapi_model_loaded", "Workers that have this model loaded.", ["model", "backend", "kind"],
                     multiprocess_mode="livesum")
MODEL_LOAD_SECONDS = Gauge("faceapi_model_load_seconds", "Seconds the model took to load, per worker (label pid).",
                           ["model", "backend", "kind"], multiprocess_mode="liveall")

# ---- jobs ----------------------------------------------------------------------------------------------------------
JOBS_FINISHED = Counter("faceapi_jobs_finished_total", "Jobs that reached a final state.", ["kind", "state"])
JOB_SECONDS = Histogram("faceapi_job_duration_seconds", "Job run time, started → finished (canceled while queued: "
                        "not counted).", ["kind", "state"], buckets=JOB_BUCKETS)
JOB_QUEUE_SECONDS = Histogram("faceapi_job_queue_seconds", "Job wait, submitted → started.", ["kind"],
                              buckets=JOB_BUCKETS)

# ---- access control ------------------------------------------------------------------------------------------------
AUTH_REFUSED = Counter("faceapi_auth_refused_total", "Requests refused with 401 (reason: missing or invalid).",
                       ["reason"])
RATE_LIMITED = Counter("faceapi_rate_limited_total", "Requests refused with 429, by API key id.", ["key"])

_STAGE = re.compile(r"^[A-Za-z0-9_.:-]{1,48}$")
_BACKEND = re.compile(r"^[A-Za-z0-9_.:-]{1,48}$")


def multiproc_dir() -> Path | None:
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def prepare_multiproc_dir(path: Path) -> Path:
    """Empty (or create) ``path`` and export it as PROMETHEUS_MULTIPROC_DIR: called by ``python -m app serve`` in
    the parent process before uvicorn starts the workers (they inherit the variable)."""
    path = Path(path)
    if path.is_dir():
        for f in path.glob("*.db"):
            f.unlink(missing_ok=True)
    path.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(path.resolve())
    return path


# ---- server-timing -------------------------------------------------------------------------------------------------
def observe_server_timing(route: str, header: str | None) -> None:
    """``decode;dur=12.3, detect;dur=40.1`` (milliseconds) into the stage histogram."""
    if not header:
        return
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        if not _STAGE.match(name):
            continue
        for p in params.split(";"):
            key, _, value = p.strip().partition("=")
            if key == "dur":
                with contextlib.suppress(ValueError):
                    STAGE_SECONDS.labels(route, name).observe(max(0.0, float(value)) / 1000.0)


# ---- HTTP middleware -----------------------------------------------------------------------------------------------
def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path:
        return str(path)
    return "other" if scope.get("endpoint") is not None else "unmatched"  # a mount (docs assets) / no route at all


class MetricsMiddleware:
    """Counts every HTTP request by route template (never the raw path: bounded label values), status and backend,
    times it, and feeds the answer's Server-Timing stages into the stage histogram."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        backend = "none"
        timing: str | None = None
        t0 = time.perf_counter()

        async def send_wrapper(msg: Message) -> None:
            nonlocal status, backend, timing
            if msg["type"] == "http.response.start":
                status = msg["status"]
                for k, v in msg.get("headers") or []:
                    if k.lower() == b"x-face-backend":
                        value = v.decode("latin-1")
                        backend = value if _BACKEND.match(value) else "other"
                    elif k.lower() == b"server-timing":
                        timing = v.decode("latin-1")
            await send(msg)

        IN_PROGRESS.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            IN_PROGRESS.dec()
            method = str(scope.get("method", ""))
            route = _route_of(scope)
            REQUESTS.labels(method, route, str(status), backend).inc()
            REQUEST_SECONDS.labels(method, route).observe(time.perf_counter() - t0)
            if timing and route != "/jobs/{job_id}/result":  # a job's stages are counted once, when it ends
                observe_server_timing(route, timing)


# ---- inference pool ------------------------------------------------------------------------------------------------
def pool_configured(threads: int, max_queue: int) -> None:
    SLOTS.set(threads)
    QUEUE_LIMIT.set(max_queue)


@contextlib.contextmanager
def queued() -> Iterator[Callable[[], None]]:
    """Counts a call as waiting until the returned ``started()`` is called (from the worker thread), then as
    running until the block ends."""
    state = {"started": False}
    QUEUE_DEPTH.inc()

    def started() -> None:
        state["started"] = True
        QUEUE_DEPTH.dec()
        RUNNING.inc()

    try:
        yield started
    finally:
        if state["started"]:
            RUNNING.dec()
        else:
            QUEUE_DEPTH.dec()


# ---- workers and models --------------------------------------------------------------------------------------------
def worker_started() -> None:
    WORKERS.set(1)
    WORKER_START.set(time.time())


def worker_stopped() -> None:
    """This worker's live gauges leave the totals (its counters stay)."""
    path = multiproc_dir()
    if path is not None:
        with contextlib.suppress(OSError):
            _mp.mark_process_dead(os.getpid(), str(path))
    else:
        WORKERS.set(0)


def record_models(hub: Any) -> None:
    for s in list(getattr(hub, "statuses", [])):
        labels = (s.name, s.backend, s.kind)
        MODEL_LOADED.labels(*labels).set(1 if s.loaded else 0)
        if s.load_seconds is not None:
            MODEL_LOAD_SECONDS.labels(*labels).set(s.load_seconds)
    MODELS_READY.set(1 if getattr(hub, "ready", False) else 0)


def watch_hub(hub: Any, poll: float = 0.2) -> threading.Thread:
    """Record the hub's models (name, backend, load time) once its background loading has finished."""

    def wait() -> None:
        while not getattr(hub, "ready", False):
            time.sleep(poll)
        try:
            record_models(hub)
        except Exception:  # noqa: BLE001 - metrics never take a worker down
            log.exception("recording model metrics failed")

    thread = threading.Thread(target=wait, name="metrics-hub", daemon=True)
    thread.start()
    return thread


# ---- jobs ----------------------------------------------------------------------------------------------------------
def job_finished(rec: Any) -> None:
    """Called once per job reaching a final state (JobService.notify is wrapped by :func:`instrument_jobs`)."""
    kind, state = str(rec.kind), str(rec.state)
    JOBS_FINISHED.labels(kind, state).inc()
    if rec.started_at is not None:
        JOB_QUEUE_SECONDS.labels(kind).observe(max(0.0, rec.started_at - rec.created_at))
        if rec.finished_at is not None:
            JOB_SECONDS.labels(kind, state).observe(max(0.0, rec.finished_at - rec.started_at))
    observe_server_timing(f"job:{kind}", (rec.result_headers or {}).get("Server-Timing"))


def instrument_jobs(svc: Any) -> None:
    """Wrap ``svc.notify`` (called by the runner, the sweeper and a cancel, once per job that ends)."""
    notify = svc.notify

    def notify_and_count(rec: Any) -> None:
        if getattr(rec, "terminal", False):
            try:
                job_finished(rec)
            except Exception:  # noqa: BLE001
                log.exception("recording job metrics failed")
        notify(rec)

    svc.notify = notify_and_count


class JobStateCollector:
    """``faceapi_jobs{state,kind}``: jobs in the shared store right now (read at scrape time, so every worker
    reports the same numbers and nothing is double counted)."""

    def __init__(self, db_path: Path, kinds: list[str], states: tuple[str, ...]) -> None:
        self.db_path = Path(db_path)
        self.kinds = kinds
        self.states = states

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("faceapi_jobs", "Jobs in the job store by state and kind (finished jobs stay "
                                   "until FACEAPI_JOB_TTL).", labels=["state", "kind"])
        counts = {(s, k): 0 for s in self.states for k in self.kinds}
        if self.db_path.is_file():
            try:
                conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=2)
                try:
                    for state, kind, n in conn.execute("SELECT state, kind, count(*) FROM jobs GROUP BY state, kind"):
                        counts[(state, kind)] = int(n)
                finally:
                    conn.close()
            except sqlite3.Error:
                log.warning("job counts unavailable", exc_info=True)
        for (state, kind), n in sorted(counts.items()):
            family.add_metric([state, kind], n)
        yield family


# ---- exposition ----------------------------------------------------------------------------------------------------
def reap_dead_workers(path: Path) -> list[int]:
    """Drop the live gauges of workers that died without shutting down (a crash, a kill -9)."""
    dead = []
    for f in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        pid_text = os.path.basename(f).rsplit("_", 1)[-1].removesuffix(".db")
        if pid_text.isdigit() and int(pid_text) not in dead and not pid_alive(int(pid_text)):
            dead.append(int(pid_text))
    for pid in dead:
        with contextlib.suppress(OSError):
            _mp.mark_process_dead(pid, str(path))
    return dead


def render(jobs: Any = None) -> bytes:
    """The text exposition of every worker's metrics plus the job store's counts."""
    from prometheus_client import generate_latest

    path = multiproc_dir()
    if path is not None:
        reap_dead_workers(path)
        registry = CollectorRegistry()
        _mp.MultiProcessCollector(registry, str(path))
    else:
        registry = CollectorRegistry()
        registry.register(_Forward(REGISTRY))
    if jobs is not None:
        from app.jobs.store import STATES

        registry.register(JobStateCollector(jobs.files.db_path, sorted(jobs.kinds), STATES))
    return generate_latest(registry)


class _Forward:
    """The process-wide registry inside a per-scrape one (so the job collector is never registered globally)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        yield from self.registry.collect()
