"""Job records: the JobStore interface and its SQLite (WAL) implementation, shared by every worker process.

Every write is one short ``BEGIN IMMEDIATE`` transaction (a busy timeout makes concurrent writers wait instead of
failing); a claim is one conditional UPDATE, so two workers never run the same job.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED = "queued", "running", "succeeded", "failed", "canceled"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED)
TERMINAL = (SUCCEEDED, FAILED, CANCELED)


class QueueFull(Exception):  # noqa: N818
    def __init__(self, queued: int) -> None:
        super().__init__(f"{queued} jobs are queued")
        self.queued = queued


@dataclass
class JobRecord:
    id: str
    kind: str
    state: str = QUEUED
    owner: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    unit: str = "steps"
    idempotency_key: str | None = None
    webhook: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    heartbeat_at: float | None = None
    worker: str | None = None  # "<host>:<pid>:<token>" of the runner that claimed it
    worker_host: str | None = None
    worker_pid: int | None = None
    progress_done: int = 0
    progress_total: int | None = None
    cancel_requested: bool = False
    error_code: str | None = None
    error_message: str | None = None
    error_field: str | None = None
    result_path: str | None = None  # relative to the job's dir
    result_media_type: str | None = None
    result_size: int | None = None
    result_headers: dict[str, str] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


_JSON_COLUMNS = {"options", "result_headers"}
_COLUMNS = [f.name for f in fields(JobRecord)]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT NULL, owner TEXT, options TEXT NOT NULL,
    unit TEXT NOT NULL, idempotency_key TEXT, webhook TEXT, created_at REAL NOT NULL, started_at REAL,
    finished_at REAL, heartbeat_at REAL, worker TEXT, worker_host TEXT, worker_pid INTEGER,
    progress_done INTEGER NOT NULL DEFAULT 0, progress_total INTEGER, cancel_requested INTEGER NOT NULL DEFAULT 0,
    error_code TEXT, error_message TEXT, error_field TEXT, result_path TEXT, result_media_type TEXT,
    result_size INTEGER, result_headers TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS jobs_state_created ON jobs (state, created_at);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs (coalesce(owner, ''), idempotency_key)
    WHERE idempotency_key IS NOT NULL;
"""


class JobStore(Protocol):
    """What the API, the runner and the sweeper need from a job store (SQLite here; a cluster may plug another)."""

    def create(self, rec: JobRecord, max_queued: int, attach: Callable[[JobRecord], None] | None = None
               ) -> tuple[JobRecord, bool]: ...
    def get(self, job_id: str, owner: str | None = None) -> JobRecord | None: ...
    def find_by_key(self, key: str, owner: str | None = None) -> JobRecord | None: ...
    def list(self, state: str | None = None, owner: str | None = None, limit: int = 50) -> list[JobRecord]: ...
    def count_queued(self) -> int: ...
    def queue_position(self, rec: JobRecord) -> int | None: ...
    def claim(self, worker: str, host: str, pid: int, kinds: list[str]) -> JobRecord | None: ...
    def beat(self, worker: str, progress: dict[str, tuple[int, int | None]]) -> set[str]: ...
    def finish(self, job_id: str, worker: str | None, state: str, **values: Any) -> JobRecord | None: ...
    def request_cancel(self, job_id: str, owner: str | None = None) -> tuple[JobRecord | None, bool]: ...
    def delete(self, job_id: str, owner: str | None = None) -> bool: ...
    def running(self) -> list[JobRecord]: ...
    def expired(self, before: float) -> list[JobRecord]: ...
    def exclusive(self) -> Any: ...
    def all_ids(self) -> set[str]: ...
    def close(self) -> None: ...


def _row_to_record(row: sqlite3.Row) -> JobRecord:
    values = dict(row)
    for key in _JSON_COLUMNS:
        values[key] = json.loads(values[key]) if values[key] else {}
    values["cancel_requested"] = bool(values["cancel_requested"])
    return JobRecord(**values)


def _to_db(key: str, value: Any) -> Any:
    if key in _JSON_COLUMNS:
        return json.dumps(value or {})
    if isinstance(value, bool):
        return int(value)
    return value


class SQLiteJobStore:
    """One connection per thread; WAL so readers never block the writer; ``busy_timeout`` for writers."""

    def __init__(self, path: Path, busy_timeout_ms: int = 10_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        with self._tx() as conn:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)

    # ---- plumbing -------------------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the write lock: nothing is created, claimed or finished meanwhile (the orphan-file sweep)."""
        with self._tx():
            yield

    def _one(self, conn: sqlite3.Connection, sql: str, args: tuple = ()) -> JobRecord | None:
        row = conn.execute(sql, args).fetchone()
        return _row_to_record(row) if row is not None else None

    def close(self) -> None:
        with self._lock:
            for conn in self._conns:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._conns.clear()
        self._local = threading.local()

    # ---- API side -------------------------------------------------------------------------------------------
    def create(self, rec: JobRecord, max_queued: int, attach: Callable[[JobRecord], None] | None = None
               ) -> tuple[JobRecord, bool]:
        """Insert ``rec`` unless its idempotency key already names a job (then that job and False). QueueFull when
        ``max_queued`` jobs already wait. ``attach`` runs inside the transaction (moving the spooled inputs into
        place), so the files and the record appear together."""
        with self._tx() as conn:
            if rec.idempotency_key is not None:
                existing = self._one(conn, "SELECT * FROM jobs WHERE owner IS ? AND idempotency_key = ?",
                                     (rec.owner, rec.idempotency_key))
                if existing is not None:
                    return existing, False
            queued = conn.execute("SELECT count(*) FROM jobs WHERE state = ?", (QUEUED,)).fetchone()[0]
            if queued >= max_queued:
                raise QueueFull(queued)
            rec.created_at = rec.created_at or time.time()
            conn.execute(f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                         tuple(_to_db(c, getattr(rec, c)) for c in _COLUMNS))
            if attach is not None:
                attach(rec)
        return rec, True

    def get(self, job_id: str, owner: str | None = None) -> JobRecord | None:
        return self._one(self._conn(), "SELECT * FROM jobs WHERE id = ? AND owner IS ?", (job_id, owner))

    def find_by_key(self, key: str, owner: str | None = None) -> JobRecord | None:
        return self._one(self._conn(), "SELECT * FROM jobs WHERE owner IS ? AND idempotency_key = ?", (owner, key))

    def list(self, state: str | None = None, owner: str | None = None, limit: int = 50) -> list[JobRecord]:
        sql, args = "SELECT * FROM jobs WHERE owner IS ?", [owner]
        if state is not None:
            sql += " AND state = ?"
            args.append(state)
        sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?"
        args.append(limit)
        return [_row_to_record(r) for r in self._conn().execute(sql, args).fetchall()]

    def count_queued(self) -> int:
        return int(self._conn().execute("SELECT count(*) FROM jobs WHERE state = ?", (QUEUED,)).fetchone()[0])

    def queue_position(self, rec: JobRecord) -> int | None:
        """0 = next to run; None unless queued."""
        if rec.state != QUEUED:
            return None
        row = self._conn().execute("SELECT count(*) FROM jobs WHERE state = ? AND created_at < ?",
                                   (QUEUED, rec.created_at)).fetchone()
        return int(row[0])

    def request_cancel(self, job_id: str, owner: str | None = None) -> tuple[JobRecord | None, bool]:
        """A queued job is canceled at once (then True: this call canceled it); a running one gets the cancel flag
        its runner polls. (None, False): unknown job."""
        now = time.time()
        with self._tx() as conn:
            rec = self._one(conn, "SELECT * FROM jobs WHERE id = ? AND owner IS ?", (job_id, owner))
            if rec is None or rec.terminal:
                return rec, False
            if rec.state == QUEUED:
                conn.execute("UPDATE jobs SET state = ?, finished_at = ?, cancel_requested = 1, error_code = ?, "
                             "error_message = ? WHERE id = ?", (CANCELED, now, "canceled", "the job was canceled",
                                                                 job_id))
            else:
                conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            return self._one(conn, "SELECT * FROM jobs WHERE id = ?", (job_id,)), rec.state == QUEUED

    def delete(self, job_id: str, owner: str | None = None) -> bool:
        with self._tx() as conn:
            return conn.execute("DELETE FROM jobs WHERE id = ? AND owner IS ?", (job_id, owner)).rowcount > 0

    # ---- runner side ----------------------------------------------------------------------------------------
    def claim(self, worker: str, host: str, pid: int, kinds: list[str]) -> JobRecord | None:
        """Atomically take the oldest queued job of one of ``kinds`` (one UPDATE … RETURNING)."""
        if not kinds:
            return None
        now = time.time()
        marks = ", ".join("?" * len(kinds))
        with self._tx() as conn:
            return self._one(
                conn,
                f"UPDATE jobs SET state = ?, worker = ?, worker_host = ?, worker_pid = ?, started_at = ?, "
                f"heartbeat_at = ? WHERE id = (SELECT id FROM jobs WHERE state = ? AND kind IN ({marks}) "
                f"ORDER BY created_at, rowid LIMIT 1) AND state = ? RETURNING *",
                (RUNNING, worker, host, pid, now, now, QUEUED, *kinds, QUEUED),
            )

    def beat(self, worker: str, progress: dict[str, tuple[int, int | None]]) -> set[str]:
        """Heartbeat of every job ``worker`` runs, plus their new progress; returns the ids asked to cancel."""
        now = time.time()
        with self._tx() as conn:
            for job_id, (done, total) in progress.items():
                conn.execute("UPDATE jobs SET progress_done = ?, progress_total = ? WHERE id = ? AND worker = ? "
                             "AND state = ?", (done, total, job_id, worker, RUNNING))
            conn.execute("UPDATE jobs SET heartbeat_at = ? WHERE worker = ? AND state = ?", (now, worker, RUNNING))
            rows = conn.execute("SELECT id FROM jobs WHERE worker = ? AND state = ? AND cancel_requested = 1",
                                (worker, RUNNING)).fetchall()
        return {r[0] for r in rows}

    def finish(self, job_id: str, worker: str | None, state: str, **values: Any) -> JobRecord | None:
        """Move a running job (of ``worker``, when given) to a terminal state; None when it is no longer ours
        (deleted, or already marked by another worker's sweeper)."""
        assert state in TERMINAL
        values = {"finished_at": time.time(), **values, "state": state}
        sets = ", ".join(f"{k} = ?" for k in values)
        args: list[Any] = [_to_db(k, v) for k, v in values.items()]
        sql = f"UPDATE jobs SET {sets} WHERE id = ? AND state = ?"
        args += [job_id, RUNNING]
        if worker is not None:
            sql += " AND worker = ?"
            args.append(worker)
        with self._tx() as conn:
            return self._one(conn, sql + " RETURNING *", tuple(args))

    # ---- sweeper side ---------------------------------------------------------------------------------------
    def running(self) -> list[JobRecord]:
        rows = self._conn().execute("SELECT * FROM jobs WHERE state = ?", (RUNNING,)).fetchall()
        return [_row_to_record(r) for r in rows]

    def expired(self, before: float) -> list[JobRecord]:
        """Finished jobs that finished before ``before``, and queued ones created before it."""
        rows = self._conn().execute(
            "SELECT * FROM jobs WHERE (state IN (?, ?, ?) AND finished_at < ?) OR (state = ? AND created_at < ?)",
            (*TERMINAL, before, QUEUED, before),
        ).fetchall()
        return [_row_to_record(r) for r in rows]

    def all_ids(self) -> set[str]:
        return {r[0] for r in self._conn().execute("SELECT id FROM jobs").fetchall()}
