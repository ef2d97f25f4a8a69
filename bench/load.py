"""Load test: the repo's locustfile.py, headless, against a real server on the built-in backend.

For each worker count (1, 2, … up to the cores) a ``python -m app serve`` (testkit.server.Server, built-in models
only: an empty weights directory) is started and warmed up (unmeasured requests to the three routes); then Locust
runs in a subprocess (gevent stays out of this process) at 1, 2, 4 and 8 users for a fixed time each, the worker
counts taking turns at each user count so that on a shared machine they meet about the same background load.
Users send the next request as soon as the last answer arrives (closed loop), so requests/s is the server's
capacity at that concurrency and latency grows with the queue. Then an overload run: one worker with a short
inference queue (FACEAPI_MAX_QUEUE) and more users than it admits, to show that what it cannot take comes back at
once as 503 ``busy`` with Retry-After, not as a timeout.

Latencies are of the 200 answers of all three routes together (and per route at the median); ``busy_share`` is
the 503 ``busy`` answers out of all answers and ``busy_p95`` their latency. Locust rounds times above 100 ms to
two significant digits, so percentiles are that coarse. Locust itself runs on the same machine: ``server_cpu`` and
``locust_cpu`` are the cores each used on average during the step (CPU seconds / ``run_s``, the time from spawning
the users to the last answer; Locust's includes its own start-up), ``cpu_ms_per_req`` the server's CPU per answer
(what the requests cost, whatever share of the cores the server got), and ``load1`` the machine's load average when
the step began, so a run on a busy machine shows as one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from app.config import Settings
from bench.report import ROOT, table, write
from testkit.server import Server

ROUTES = ("/faceswap", "/analyze", "/enhance")
BUSY = "[503 busy]"
COLUMNS = ["workers", "queue", "users", "run_s", "requests", "rps", "ok_rps", "p50", "p95", "p99", "swap_p50",
           "analyze_p50", "enhance_p50", "busy_share", "busy_p95", "failures", "server_cpu", "cpu_ms_per_req",
           "locust_cpu", "load1"]


def hist_pct(hist: dict[str, int], q: float) -> float | None:
    """The ``q``-th percentile of a Locust response-time histogram (``{"rounded ms": count}``)."""
    total = sum(hist.values())
    if not total:
        return None
    seen = 0
    for ms in sorted(hist, key=float):
        seen += hist[ms]
        if seen >= q / 100 * total:
            return float(ms)
    return float(max(hist, key=float))


def merged(entries: list[dict[str, Any]], names: set[str]) -> dict[str, int]:
    hist: dict[str, int] = {}
    for e in entries:
        if e["name"] in names:
            for ms, n in e["response_times"].items():
                hist[ms] = hist.get(ms, 0) + n
    return hist


def run_locust(url: str, users: int, seconds: int, out: Path, wait: float = 0.0) -> dict[str, Any]:
    """One headless Locust run of locustfile.py: its per-name stats (Locust's JSON) and requests/s.

    Locust spawns every user at once, stops them after ``seconds`` and lets each finish the request it is in
    (``--stop-timeout``), so the latencies include the slowest requests and the server is idle for the next run.
    Requests/s = answers / (first spawn → last answer): for a closed loop that is about the steady rate, as each
    user's partly finished last request pays for the extra time it adds."""
    cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfile.py"), "--headless", "--host", url,
           "-u", str(users), "-r", "1000", "-t", f"{seconds}s", "--stop-timeout", "300", "--only-summary",
           "--loglevel", "INFO", "--json-file", str(out)]
    env = {**os.environ, "LOAD_WAIT": str(wait)}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=seconds + 600, check=False)
    path = Path(f"{out}.json")
    if not path.exists():
        raise RuntimeError(f"locust wrote no stats (exit {done.returncode}):\n{done.stderr[-3000:]}")
    entries = json.loads(path.read_text())
    requests = sum(e["num_requests"] for e in entries)
    # "[2026-12-03 13:21:39,504] host/INFO/locust.runners: Ramping to 4 users ..." (local time, as time.time())
    ramp = re.search(r"^\[([\d-]+ [\d:]+),(\d+)\][^\n]*Ramping to", done.stderr, re.M)
    if ramp is None:
        raise RuntimeError(f"no 'Ramping to' line in Locust's log:\n{done.stderr[-3000:]}")
    start = time.mktime(time.strptime(ramp[1], "%Y-%m-%d %H:%M:%S")) + int(ramp[2]) / 1000
    end = max((e["last_request_timestamp"] for e in entries if e["last_request_timestamp"]), default=start + seconds)
    window = max(end - start, 1e-3)
    return {"entries": entries, "requests": requests, "rps": requests / window, "window_s": window,
            "failures": sum(e["num_failures"] for e in entries)}


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of a process and all its descendants so far (/proc), e.g. a server's workers."""
    procs: dict[int, tuple[int, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            procs[int(d.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    tree, total = {root}, 0.0
    for _ in range(4):  # depth: server → uvicorn workers → their helpers
        tree |= {pid for pid, (ppid, _) in procs.items() if ppid in tree}
    for pid in tree:
        total += procs.get(pid, (0, 0.0))[1]
    return total


def step(server: Server, workers: int, queue: int, users: int, seconds: int, out: Path) -> dict[str, Any]:
    """One measured Locust run, with the machine's load and the CPU the server and Locust used (in cores)."""
    assert server.proc is not None
    load1 = os.getloadavg()[0]
    server_cpu, locust_cpu = tree_cpu_seconds(server.proc.pid), resource.getrusage(resource.RUSAGE_CHILDREN)
    run = run_locust(server.url, users, seconds, out)
    server_cpu = tree_cpu_seconds(server.proc.pid) - server_cpu
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    row = summarize(run, workers, queue, users, load1)
    row["server_cpu"] = server_cpu / run["window_s"]
    row["cpu_ms_per_req"] = 1000 * server_cpu / run["requests"] if run["requests"] else None
    row["locust_cpu"] = (after.ru_utime + after.ru_stime - locust_cpu.ru_utime - locust_cpu.ru_stime) / run["window_s"]
    return row


def summarize(run: dict[str, Any], workers: int, queue: int, users: int, load1: float) -> dict[str, Any]:
    entries = run["entries"]
    ok = merged(entries, set(ROUTES))
    busy = merged(entries, {f"{r} {BUSY}" for r in ROUTES})
    n_ok, n_busy, n = sum(ok.values()), sum(busy.values()), run["requests"]
    row: dict[str, Any] = {
        "workers": workers, "queue": queue, "users": users, "requests": n, "rps": run["rps"],
        "ok_rps": run["rps"] * n_ok / n if n else 0.0,
        "p50": hist_pct(ok, 50), "p95": hist_pct(ok, 95), "p99": hist_pct(ok, 99),
        "swap_p50": hist_pct(merged(entries, {"/faceswap"}), 50),
        "analyze_p50": hist_pct(merged(entries, {"/analyze"}), 50),
        "enhance_p50": hist_pct(merged(entries, {"/enhance"}), 50),
        "busy_share": f"{100 * n_busy / n:.0f}%" if n else "-", "busy_p95": hist_pct(busy, 95),
        "failures": run["failures"], "load1": load1, "run_s": run["window_s"],
    }
    row["per_name"] = {e["name"]: {"requests": e["num_requests"], "failures": e["num_failures"],
                                   "p50": hist_pct(e["response_times"], 50), "p95": hist_pct(e["response_times"], 95),
                                   "p99": hist_pct(e["response_times"], 99)} for e in entries}
    return row


def warm_up(url: str, workers: int) -> None:
    """Requests to each route before measuring (not counted): the first call of a process pays for lazy imports and
    allocator growth."""
    from testkit.standins import t1_path

    images = Path(t1_path()).parent
    t1 = ("t1.jpg", (images / "t1.jpg").read_bytes(), "image/jpeg")
    hanks = ("hanks.png", (images / "Tom_Hanks_54745.png").read_bytes(), "image/png")
    for _ in range(2 * workers):  # a new connection each round, so that each worker is likely to get one
        with httpx.Client(base_url=url, timeout=120) as c:
            c.post("/faceswap", files={"source_image": hanks, "target_image": t1}).raise_for_status()
            c.post("/analyze", files={"image": t1}).raise_for_status()
            c.post("/enhance", files={"image": t1}, data={"format": "jpeg"}).raise_for_status()


def serve(tmp: Path, workers: int, extra: dict[str, str] | None = None) -> Server:
    d = Path(tempfile.mkdtemp(prefix=f"w{workers}-", dir=tmp))
    env = {"FACEAPI_WEIGHTS_DIR": str(d / "weights"), "FACEAPI_DATA_DIR": str(d / "data"),
           "FACEAPI_TEMP_DIR": str(d / "data" / "tmp"), **(extra or {})}
    return Server(env, workers=workers, log_path=d / "server.log").start()


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        yield server
    finally:
        server.stop()


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(args: argparse.Namespace) -> None:
    cores = os.cpu_count() or 1
    seconds = max(1, round(args.seconds))
    settings = Settings()  # what the servers get too: they inherit this environment
    worker_counts = [w for w in ints(args.workers) if w <= cores] or [1]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmpdir, contextlib.ExitStack() as stack:
        tmp = Path(tmpdir)
        # every worker count's server up at once (idle ones cost nothing), and the worker counts take turns at each
        # user count: on a shared machine both then meet about the same background load
        servers = {}
        for workers in worker_counts:
            servers[workers] = stack.enter_context(running(serve(tmp, workers)))
            warm_up(servers[workers].url, workers)
        for users in ints(args.users):
            for workers, server in servers.items():
                rows.append(step(server, workers, settings.max_queue, users, seconds, tmp / f"w{workers}-u{users}"))
                print(table(rows[-1:], COLUMNS).splitlines()[-1], flush=True)
        stack.close()
        rows.sort(key=lambda r: (r["workers"], r["users"]))
        overload: list[dict[str, Any]] = []
        if args.overload_users > 0:
            queue = args.overload_queue
            with running(serve(tmp, 1, {"FACEAPI_MAX_QUEUE": str(queue)})) as server:
                warm_up(server.url, 1)
                overload.append(step(server, 1, queue, args.overload_users, seconds, tmp / "overload"))
    print(f"\n**load**: locustfile.py (swap 3 : analyze 2 : enhance 1, closed loop), built-in backend, "
          f"{seconds} s per step, latencies in ms of the 200 answers\n")
    print(table(rows + overload, COLUMNS))
    path = write("load", {
        "seconds_per_step": seconds, "users": ints(args.users), "workers": worker_counts,
        "inference_threads": settings.inference_threads, "mix": {"/faceswap": 3, "/analyze": 2, "/enhance": 1},
        "files": {"source": "insightface Tom_Hanks_54745.png", "target": "insightface t1.jpg (1280×886, 6 faces)"},
        "rows": rows, "overload": overload,
    })
    print(f"\nwrote {path}")
