"""Where a job's files live under ``FACEAPI_DATA_DIR``: ``jobs/<id>/{inputs,work}`` and the result beside them;
uploads spool into ``staging/<pid>-<token>`` first and are moved into place in the transaction that records the job.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger("app.jobs")


class JobFiles:
    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir)
        self.jobs = self.root / "jobs"
        self.staging = self.root / "staging"
        self.jobs.mkdir(parents=True, exist_ok=True)
        self.staging.mkdir(parents=True, exist_ok=True)

    @property
    def db_path(self) -> Path:
        return self.root / "jobs.sqlite3"

    def job_dir(self, job_id: str) -> Path:
        return self.jobs / job_id

    def inputs_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "inputs"

    def workdir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "work"

    def new_staging(self, token: str) -> Path:
        path = self.staging / f"{os.getpid()}-{token}"
        path.mkdir(parents=True)
        return path

    def inputs(self, job_id: str) -> dict[str, list[Path]]:
        """Spooled files per field, in upload order (files are named ``<n><suffix>``)."""
        out: dict[str, list[Path]] = {}
        base = self.inputs_dir(job_id)
        if base.is_dir():
            for field_dir in sorted(base.iterdir()):
                files = [p for p in field_dir.iterdir() if p.is_file()]
                out[field_dir.name] = sorted(files, key=lambda p: int(p.stem) if p.stem.isdigit() else 0)
        return out

    def remove(self, path: Path) -> None:
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)

    def remove_job(self, job_id: str) -> None:
        self.remove(self.job_dir(job_id))

    def remove_scratch(self, job_id: str) -> None:
        """Inputs and work dir of a finished job (the result stays until the TTL)."""
        self.remove(self.inputs_dir(job_id))
        self.remove(self.workdir(job_id))

    def job_ids_on_disk(self) -> list[str]:
        return [p.name for p in self.jobs.iterdir() if p.is_dir()] if self.jobs.is_dir() else []

    def sweep_staging(self, alive: set[int] | None = None) -> int:
        """Remove staging dirs whose process is gone (an upload cut off by a dead worker)."""
        from app.jobs.procs import pid_alive

        removed = 0
        for p in self.staging.iterdir() if self.staging.is_dir() else []:
            pid_text = p.name.split("-", 1)[0]
            pid = int(pid_text) if pid_text.isdigit() else -1
            if pid == os.getpid() or (alive is not None and pid in alive) or (pid > 0 and pid_alive(pid)):
                continue
            shutil.rmtree(p, ignore_errors=True)
            removed += 1
        return removed
