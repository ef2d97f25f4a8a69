"""Everything the jobs feature keeps per worker process (``app.state.jobs``): store, files, runner, sweeper."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from app.config import Settings
from app.jobs.files import JobFiles
from app.jobs.models import job_view
from app.jobs.registry import JobKind
from app.jobs.runner import Runner
from app.jobs.store import JobRecord, JobStore, SQLiteJobStore
from app.jobs.sweeper import Sweeper
from app.jobs.webhook import send_in_background

log = logging.getLogger("app.jobs")


class JobService:
    def __init__(self, settings: Settings, hub: Any, kinds: dict[str, JobKind], store: JobStore | None = None,
                 ready: Callable[[], bool] | None = None) -> None:
        self.settings = settings
        self.hub = hub
        self.kinds = kinds
        self.files = JobFiles(settings.data_dir)
        self.store: JobStore = store or SQLiteJobStore(self.files.db_path)
        self.runner = Runner(self, ready or (lambda: bool(getattr(hub, "ready", True))))
        self.sweeper = Sweeper(self, self.runner.worker)

    def start(self) -> None:
        try:
            self.sweeper.remove_orphans()  # a whole-server restart leaves no files without a record
        except Exception:  # noqa: BLE001
            log.exception("start-up orphan sweep failed")
        self.runner.start()
        self.sweeper.start()

    def stop(self) -> None:
        self.sweeper.stop()
        self.runner.stop()
        self.store.close()

    def notify(self, rec: JobRecord) -> None:
        """The webhook of a job that reached a terminal state, if it has one."""
        if rec.webhook and rec.terminal:
            payload = job_view(rec).model_dump_json()
            send_in_background(rec.webhook, payload, rec.id, self.settings.job_webhook_retries,
                               self.settings.job_webhook_timeout)
