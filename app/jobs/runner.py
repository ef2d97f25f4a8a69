"""Per-worker runner: ``concurrency`` threads claim queued jobs from the shared store and run them; a monitor thread
heartbeats the running jobs, flushes their progress and picks up cancel requests made on any worker."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app import audit, memory
from app.errors import ApiError
from app.jobs.procs import HOST
from app.jobs.registry import JobCanceled, JobContext, JobKind, JobOutput
from app.jobs.store import CANCELED, FAILED, SUCCEEDED, JobRecord
from app.services import nsfw

if TYPE_CHECKING:
    from app.jobs.service import JobService

log = logging.getLogger("app.jobs")
BEAT_INTERVAL = 0.25  # seconds between progress flushes / cancel checks of running jobs


@dataclass
class Active:
    id: str
    cancel: threading.Event = field(default_factory=threading.Event)
    interrupted: bool = False
    progress: tuple[int, int | None] = (0, None)
    flushed: tuple[int, int | None] | None = None


class Runner:
    def __init__(self, service: JobService, ready: Callable[[], bool]) -> None:
        self.service = service
        self.ready = ready
        self.worker = f"{HOST}:{os.getpid()}:{secrets.token_hex(4)}"
        self.active: dict[str, Active] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> None:
        n = self.service.settings.job_concurrency
        self._threads = [threading.Thread(target=self._loop, name=f"job-runner-{i}", daemon=True) for i in range(n)]
        self._threads.append(threading.Thread(target=self._monitor, name="job-monitor", daemon=True))
        for t in self._threads:
            t.start()
        log.info("job runner started", extra={"worker": self.worker, "concurrency": n})

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Interrupt running jobs (they end ``failed``/``interrupted`` and their files are removed)."""
        self._stop.set()
        self._wake.set()
        with self._lock:
            for a in self.active.values():
                a.interrupted = True
                a.cancel.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            left = list(self.active)
        for job_id in left:  # stuck in a model call: give the job up now rather than leave it running
            self._end(job_id, FAILED, error=("interrupted", "the server shut down while the job ran", None))

    # ---- threads --------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        kinds = list(self.service.kinds)
        while not self._stop.is_set():
            try:
                rec = self.service.store.claim(self.worker, HOST, os.getpid(), kinds) if self.ready() else None
            except Exception:  # noqa: BLE001 - a locked or broken database must not kill the runner
                log.exception("job claim failed")
                rec = None
            if rec is None:
                self._wake.wait(0.25)
                self._wake.clear()
                continue
            self._execute(rec)

    def _monitor(self) -> None:
        while not self._stop.wait(BEAT_INTERVAL):
            with self._lock:
                if not self.active:
                    continue
                changed = {a.id: a.progress for a in self.active.values() if a.progress != a.flushed}
            try:
                cancel = self.service.store.beat(self.worker, changed)
            except Exception:  # noqa: BLE001
                log.exception("job heartbeat failed")
                continue
            with self._lock:
                for job_id, progress in changed.items():
                    if job_id in self.active:
                        self.active[job_id].flushed = progress
                for job_id in cancel:
                    if job_id in self.active:
                        self.active[job_id].cancel.set()

    # ---- one job --------------------------------------------------------------------------------------------
    def _execute(self, rec: JobRecord) -> None:
        svc = self.service
        kind: JobKind = svc.kinds[rec.kind]
        active = Active(rec.id)
        with self._lock:
            self.active[rec.id] = active
        extra: dict[str, Any] = {"job_id": rec.id, "kind": rec.kind}
        log.info("job started", extra={**extra, "queue_seconds": round((rec.started_at or 0) - rec.created_at, 3)})

        def check() -> None:
            if active.cancel.is_set():
                raise JobCanceled(interrupted=active.interrupted)

        def progress(done: int, total: int | None) -> None:
            active.progress = (int(done), None if total is None else int(total))
            check()

        workdir = svc.files.workdir(rec.id)
        inputs = self._hash_inputs(rec.id)
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            ctx = JobContext(hub=svc.hub, settings=svc.settings, options=kind.options.model_validate(rec.options),
                             inputs=svc.files.inputs(rec.id), workdir=workdir, progress=progress, check=check,
                             job_id=rec.id)
            with nsfw.collecting() as flagged:  # FACEAPI_NSFW=flag: what its inputs and result showed
                out = kind.run(ctx)
            if flagged:
                out.headers[nsfw.HEADER] = nsfw.header_value(flagged)
            check()
            self._succeed(rec, out, active)
        except JobCanceled as exc:
            if exc.interrupted:
                self._end(rec.id, FAILED, error=("interrupted", "the server shut down while the job ran", None))
            else:
                self._end(rec.id, CANCELED, error=("canceled", "the job was canceled", None))
        except ApiError as exc:
            log.info("job failed", extra={**extra, "code": exc.code, "error": exc.message})
            self._end(rec.id, FAILED, error=(exc.code, exc.message, exc.field))
        except Exception:  # noqa: BLE001 - reported on the job, never kills the runner
            log.exception("job crashed", extra=extra)
            # the exception's text may hold paths or internals: it goes to the log, the job says where to look
            self._end(rec.id, FAILED, error=("internal_error", f"internal error (job id {rec.id}; the server log "
                                             f"has the details)", None))
        self._audit(rec, inputs)
        memory.after_job()  # a large job's freed heap back to the OS (app/memory.py)

    def _hash_inputs(self, job_id: str) -> list[dict[str, Any]]:
        """The audit log's digests of a job's spooled inputs, taken before the job runs."""
        if audit.audit_log() is None:
            return []
        out = []
        for name, paths in self.service.files.inputs(job_id).items():
            for p in paths:
                try:
                    out.append(audit.digest_entry(name, *audit.file_sha256(p)))
                except OSError:
                    continue
        return out

    def _audit(self, rec: JobRecord, inputs: list[dict[str, Any]]) -> None:
        """One audit line for the job that just ended, with the sha256 of its result."""
        log_ = audit.audit_log()
        if log_ is None:
            return
        try:
            final = self.service.store.get(rec.id, rec.owner)
            outputs = []
            if final is not None and final.state == SUCCEEDED and final.result_path:
                digest, size = audit.file_sha256(self.service.files.job_dir(rec.id) / final.result_path)
                outputs.append(audit.digest_entry("result", digest, size, final.result_media_type))
            state = final.state if final is not None else "deleted"
            backend = final.result_headers.get("X-Face-Backend") if final is not None else None
            log_.write(audit.job_entry(rec.id, rec.kind, state, rec.owner, backend, inputs, outputs,
                                       final.error_code if final is not None else None))
        except Exception:  # noqa: BLE001 - the audit line must not kill the runner
            log.exception("job audit line failed", extra={"job_id": rec.id})

    def _succeed(self, rec: JobRecord, out: JobOutput, active: Active) -> None:
        svc = self.service
        job_dir = svc.files.job_dir(rec.id)
        name = "result" + out.path.suffix
        shutil.move(str(out.path), job_dir / name)
        size = (job_dir / name).stat().st_size
        done, total = active.progress
        total = total if total is not None else max(done, 1)
        final = self._end(rec.id, SUCCEEDED, result_path=name, result_media_type=out.media_type, result_size=size,
                          result_headers=out.headers, progress_done=total, progress_total=total)
        if final is not None:
            log.info("job succeeded", extra={"job_id": rec.id, "kind": rec.kind, "bytes": size})

    def _end(self, job_id: str, state: str, error: tuple[str, str, str | None] | None = None,
             **values: Any) -> JobRecord | None:
        svc = self.service
        with self._lock:
            active = self.active.pop(job_id, None)
        if active is not None and "progress_done" not in values:
            values["progress_done"], values["progress_total"] = active.progress
        if error is not None:
            values.update(error_code=error[0], error_message=error[1], error_field=error[2])
        # Files first, so a client that sees the final state never finds the job's temp files still there.
        if state == SUCCEEDED:
            svc.files.remove_scratch(job_id)  # the result stays until the TTL
        else:
            svc.files.remove_job(job_id)
        try:
            final = svc.store.finish(job_id, self.worker, state, **values)
        except Exception:  # noqa: BLE001
            log.exception("job finish failed", extra={"job_id": job_id})
            final = None
        if final is None:  # deleted meanwhile, or marked interrupted by another worker: nothing of it stays
            svc.files.remove_job(job_id)
        if final is not None:
            if state != SUCCEEDED:
                log.info(f"job {state}", extra={"job_id": job_id, "code": final.error_code})
            svc.notify(final)
        return final
