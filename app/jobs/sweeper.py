"""The sweeper, one per worker: expires jobs after the TTL (record, inputs, result), marks jobs whose worker died
(stale heartbeat, or a dead pid on this host) ``failed``/``interrupted`` and removes their files, and removes files
that no record owns (left by a whole-server crash)."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from app.jobs.procs import HOST, pid_alive
from app.jobs.store import FAILED

if TYPE_CHECKING:
    from app.jobs.service import JobService

log = logging.getLogger("app.jobs")
INTERVAL = 1.0
ORPHAN_EVERY = 10  # passes between orphan-file sweeps (also run at start-up)


class Sweeper:
    def __init__(self, service: JobService, own_worker: str) -> None:
        self.service = service
        self.own_worker = own_worker
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="job-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        passes = 0
        while not self._stop.is_set():
            try:
                self.sweep(orphans=passes % ORPHAN_EVERY == 0)
            except Exception:  # noqa: BLE001 - a busy database waits for the next pass
                log.exception("job sweep failed")
            passes += 1
            self._stop.wait(INTERVAL)

    def sweep(self, orphans: bool = False, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.mark_dead(now)
        self.expire(now)
        if orphans:
            self.remove_orphans()

    def mark_dead(self, now: float) -> list[str]:
        svc = self.service
        timeout = svc.settings.job_heartbeat_timeout
        marked = []
        for rec in svc.store.running():
            if rec.worker == self.own_worker:
                continue
            stale = rec.heartbeat_at is None or now - rec.heartbeat_at > timeout
            dead = rec.worker_host == HOST and rec.worker_pid is not None and not pid_alive(rec.worker_pid)
            if not (stale or dead):
                continue
            why = "its worker process died" if dead else f"its worker sent no heartbeat for over {timeout:g} s"
            svc.files.remove_job(rec.id)  # before the state says so: a client seeing `failed` finds no files
            final = svc.store.finish(rec.id, rec.worker, FAILED, error_code="interrupted",
                                     error_message=f"the job was interrupted: {why}", error_field=None)
            if final is not None:
                log.warning("job interrupted", extra={"job_id": rec.id, "kind": rec.kind, "worker": rec.worker,
                                                      "reason": why})
                svc.notify(final)
                marked.append(rec.id)
        return marked

    def expire(self, now: float) -> list[str]:
        svc = self.service
        gone = []
        for rec in svc.store.expired(now - svc.settings.job_ttl):
            if svc.store.delete(rec.id, rec.owner):
                svc.files.remove_job(rec.id)
                log.info("job expired", extra={"job_id": rec.id, "kind": rec.kind, "state": rec.state})
                gone.append(rec.id)
        return gone

    def remove_orphans(self) -> int:
        """Job dirs without a record, and staging dirs of dead processes. Runs under the store's write lock, so a
        submit (which moves its files into place inside its own transaction) is never caught half-way."""
        svc = self.service
        removed = svc.files.sweep_staging()
        with svc.store.exclusive():
            known = svc.store.all_ids()
            for job_id in svc.files.job_ids_on_disk():
                if job_id not in known:
                    svc.files.remove_job(job_id)
                    removed += 1
        if removed:
            log.info("orphan job files removed", extra={"count": removed})
        return removed
