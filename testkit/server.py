"""A real server for tests and benchmarks: ``python -m app serve`` (the README's command) in a subprocess."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``python -m app serve`` in a subprocess (the README's server command), on a free loopback port."""

    def __init__(self, env: dict[str, str], workers: int = 2, log_path: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "FACEAPI_HOST": "127.0.0.1",
            "FACEAPI_PORT": str(self.port),
            "FACEAPI_WORKERS": str(workers),
            "FACEAPI_LOG_LEVEL": "INFO",
            **env,
        }
        self.log_path = log_path
        self.workers = workers
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0) -> Server:
        out = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve"], cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        settled: set[int] = set()  # worker pids seen ready (each worker loads its own models)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; log: {self.log_path}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                r = httpx.get(self.url + "/readyz", timeout=2)  # a new connection: any worker may answer
                body = r.json()
                if r.status_code == 200:
                    settled.add(body["pid"])
                    if len(settled) >= self.workers:
                        return self
                    continue
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready in {timeout}s; log: {self.log_path}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, **kw)


TERMINAL = ("succeeded", "failed", "canceled")


def wait_for_job(client: httpx.Client, location: str, timeout: float = 60.0) -> dict:
    """Poll a job (``location`` = ``/jobs/{id}``) until it reaches a terminal state; its JSON. Fails after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (job := client.get(location).json())["state"] not in TERMINAL:
        assert time.monotonic() < deadline, f"{location} still {job['state']} after {timeout} s"
        time.sleep(0.2)
    return job
