"""The audit log: one JSON line per processing request or finished job, naming who asked (the API key's id, never
the key), what ran (endpoint, backend) and the SHA-256 of every input and output — never pixels — so that
``python -m app audit find SHA256`` can answer "did this server make this file?".

A line is appended for every ``POST`` (the processing endpoints, job submits and cancels) and for every job that
ends. Inputs are hashed where they are read (``app/uploads.py`` for uploads, ``/swap_url`` for bucket files, the job
runner for job inputs), outputs where they are produced (the response body of a request, the files ``/swap_url``
writes, a job's result file).

Several worker processes append to the same file. Each line is written with one ``write(2)`` on an ``O_APPEND``
descriptor while holding an exclusive ``flock`` on ``<log>.lock``; the size check and the rotation (``<log>`` →
``<log>.1`` → … → ``<log>.N``, the oldest dropped) happen under the same lock, so workers neither interleave lines
nor rotate over each other.
"""

from __future__ import annotations

import contextvars
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_THREAD_HASH = 1024 * 1024  # response chunks bigger than this are hashed off the event loop


def digest_entry(name: str, sha256: str, size: int, media_type: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "sha256": sha256, "bytes": size}
    if media_type:
        out["media_type"] = media_type
    return out


@dataclass
class Record:
    """What one request or job read and produced, filled in as it runs."""

    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, kind: str, name: str, sha256: str, size: int, media_type: str | None = None) -> None:
        with self._lock:
            (self.inputs if kind == "input" else self.outputs).append(digest_entry(name, sha256, size, media_type))


current: contextvars.ContextVar[Record | None] = contextvars.ContextVar("audit_record", default=None)


class Hasher:
    """SHA-256 of a file read in chunks; ``done()`` records it as an input (or output) of the current request."""

    def __init__(self, name: str, kind: str = "input") -> None:
        self.name, self.kind = name, kind
        self.h = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self.h.update(chunk)
        self.size += len(chunk)

    def done(self, media_type: str | None = None) -> None:
        rec = current.get()
        if rec is not None:
            rec.add(self.kind, self.name, self.h.hexdigest(), self.size, media_type)


def add_input(name: str, data: bytes) -> None:
    """Record ``data`` as an input of the current request (no-op outside an audited request)."""
    if (rec := current.get()) is not None:
        rec.add("input", name, hashlib.sha256(data).hexdigest(), len(data))


def add_output(name: str, data: bytes, media_type: str | None = None) -> None:
    """Record ``data`` as an output of the current request (no-op outside an audited request)."""
    if (rec := current.get()) is not None:
        rec.add("output", name, hashlib.sha256(data).hexdigest(), len(data), media_type)


def file_sha256(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


# ---- the file ------------------------------------------------------------------------------------------------------
class AuditLog:
    """Appends JSON lines to ``path`` with size-based rotation, safe across threads and processes."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._tlock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, entry: dict[str, Any]) -> None:
        data = (json.dumps(entry, separators=(",", ":"), default=str) + "\n").encode()
        with self._tlock:
            lock_fd = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT, 0o640)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
                self._rotate_if_full(len(data))
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    view = memoryview(data)
                    while view:  # one write(2) for a line; the loop only matters on a short write
                        view = view[os.write(fd, view):]
                finally:
                    os.close(fd)
            finally:
                os.close(lock_fd)  # releases the flock

    def _rotate_if_full(self, incoming: int) -> None:
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            return
        if size == 0 or size + incoming <= self.max_bytes:
            return
        if self.backups <= 0:
            os.unlink(self.path)
            return
        for i in range(self.backups - 1, 0, -1):
            older = rotated(self.path, i)
            if older.exists():
                os.replace(older, rotated(self.path, i + 1))
        os.replace(self.path, rotated(self.path, 1))


def rotated(path: Path, i: int) -> Path:
    return path.with_name(f"{path.name}.{i}")


def log_files(path: Path) -> list[Path]:
    """The log and its rotated files, oldest first."""
    path = Path(path)
    olds = []
    i = 1
    while rotated(path, i).exists():
        olds.append(rotated(path, i))
        i += 1
    return [*reversed(olds), *([path] if path.exists() else [])]


def find(path: Path, sha256: str) -> Iterator[tuple[Path, dict[str, Any], str]]:
    """Every line of the log (rotated files included) naming ``sha256``, with ``"input"`` or ``"output"``: how it
    appears (output wins when a line has it as both)."""
    sha256 = sha256.strip().lower()
    for f in log_files(path):
        with open(f, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if sha256 not in line:
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if any(o.get("sha256") == sha256 for o in entry.get("outputs", [])):
                    yield f, entry, "output"
                elif any(i.get("sha256") == sha256 for i in entry.get("inputs", [])):
                    yield f, entry, "input"


# ---- wiring --------------------------------------------------------------------------------------------------------
_log: AuditLog | None = None


def configure(path: Path | None, max_bytes: int, backups: int) -> AuditLog | None:
    global _log
    _log = AuditLog(path, max_bytes, backups) if path is not None else None
    return _log


def audit_log() -> AuditLog | None:
    return _log


def job_entry(job_id: str, kind: str, state: str, owner: str | None, backend: str | None,
              inputs: list[dict[str, Any]], outputs: list[dict[str, Any]], error: str | None = None
              ) -> dict[str, Any]:
    entry: dict[str, Any] = {"time": now_iso(), "type": "job", "job_id": job_id, "key_id": owner,
                             "endpoint": f"/jobs/{kind}", "kind": kind, "state": state, "backend": backend,
                             "pid": os.getpid(), "inputs": inputs, "outputs": outputs}
    if error:
        entry["error"] = error
    return entry


class AuditMiddleware:
    """One line per ``POST``: sits inside the API-key check (it reads the key id) and the request id middleware.
    The response body of a successful answer (2xx but 202) is hashed as it is sent: that is the output."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        log = _log
        if log is None or scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        rec = Record()
        token = current.set(rec)
        t0 = time.perf_counter()
        status = 500
        headers: dict[bytes, bytes] = {}
        h = hashlib.sha256()
        size = 0

        async def send_hashing(msg: Message) -> None:
            nonlocal status, headers, size
            if msg["type"] == "http.response.start":
                status = msg["status"]
                headers = {k.lower(): v for k, v in msg.get("headers", [])}
            elif msg["type"] == "http.response.body" and 200 <= status < 300 and status != 202:
                body = msg.get("body", b"")
                if len(body) > _THREAD_HASH:
                    await anyio.to_thread.run_sync(h.update, body)
                else:
                    h.update(body)
                size += len(body)
            await send(msg)

        try:
            await self.app(scope, receive, send_hashing)
        finally:
            current.reset(token)
            state = scope.get("state") or {}
            if 200 <= status < 300 and status != 202 and size:
                media = headers.get(b"content-type", b"").decode("latin-1").split(";")[0] or None
                rec.add("output", "response", h.hexdigest(), size, media)
            entry: dict[str, Any] = {
                "time": now_iso(), "type": "request", "request_id": state.get("request_id"),
                "key_id": state.get("api_key_id"), "endpoint": scope.get("path"), "status": status,
                "backend": headers.get(b"x-face-backend", b"").decode("latin-1") or None, "pid": os.getpid(),
                "ms": round((time.perf_counter() - t0) * 1000, 1), "inputs": rec.inputs, "outputs": rec.outputs,
            }
            if status == 202 and (loc := headers.get(b"location", b"").decode("latin-1")).startswith("/jobs/"):
                entry["job_id"] = loc.removeprefix("/jobs/")
            with anyio.CancelScope(shield=True):
                try:
                    await anyio.to_thread.run_sync(log.write, entry)
                except OSError:  # a full disk must not turn a served answer into an error
                    logging.getLogger("app.audit").exception("audit log write failed")
