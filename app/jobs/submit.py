"""Submitting a job: what /faceswap, /enhance (with ``Prefer: respond-async``) and ``POST /jobs/{kind}`` call."""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import anyio.to_thread
from fastapi import Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.errors import ApiError, ServiceUnavailableError
from app.jobs.models import job_view
from app.jobs.registry import max_bytes_for
from app.jobs.store import JobRecord, QueueFull

if TYPE_CHECKING:
    from app.jobs.service import JobService

log = logging.getLogger("app.jobs")
IDEMPOTENCY_HEADER = "Idempotency-Key"
WEBHOOK_HEADER = "X-Webhook-Url"
_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")
_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")


def wants_async(request: Request) -> bool:
    """The client asked for a job: ``Prefer: respond-async`` (RFC 7240)."""
    prefer = ",".join(request.headers.getlist("prefer")).lower()
    return any(p.strip().split(";")[0].strip() == "respond-async" for p in prefer.split(","))


def service_of(request: Request) -> JobService:
    svc = getattr(request.app.state, "jobs", None)
    if svc is None:
        raise ServiceUnavailableError("jobs_unavailable", "the job runner is not started", retry_after=5)
    return svc


def request_owner(request: Request) -> str | None:
    """Who owns the jobs of this request: the API key's id (app/security.py; every read, list, cancel and delete of
    /jobs is scoped to it, another key's job answers 404), or None without keys (the single-tenant default)."""
    return getattr(request.state, "owner", None)


def job_response(svc: JobService, rec: JobRecord, status: int, queue_position: int | None = None) -> JSONResponse:
    """The job JSON with ``Location``, the answering worker's pid and, until it ends, ``Retry-After``."""
    body = job_view(rec, queue_position).model_dump(mode="json")
    headers = {"Location": f"/jobs/{rec.id}", "X-Worker-Pid": str(os.getpid())}
    if not rec.terminal:
        headers["Retry-After"] = "1"
    return JSONResponse(body, status_code=status, headers=headers)


def _queue_full(svc: JobService, queued: int) -> ServiceUnavailableError:
    return ServiceUnavailableError(
        "queue_full", f"{queued} jobs already wait (FACEAPI_JOB_QUEUE={svc.settings.job_queue}); retry later",
        retry_after=5)


def _headers(request: Request) -> tuple[str | None, str | None]:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is not None and not _KEY.match(key):
        raise ApiError(422, "invalid_field", f"{IDEMPOTENCY_HEADER} must be 1-200 visible ASCII characters",
                       IDEMPOTENCY_HEADER)
    hook = request.headers.get(WEBHOOK_HEADER)
    if hook is not None and not re.match(r"^https?://[^\s]+$", hook):
        raise ApiError(422, "invalid_field", f"{WEBHOOK_HEADER} must be an http(s) URL", WEBHOOK_HEADER)
    return key, hook


def _submitted(resp: JSONResponse) -> JSONResponse:
    resp.headers["Preference-Applied"] = "respond-async"  # RFC 7240
    return resp


async def submit(request: Request, kind: str, options: BaseModel,
                 files: dict[str, list[UploadFile]]) -> JSONResponse:
    """Spool ``files`` to disk, record a queued ``kind`` job and answer 202 + ``Location: /jobs/{id}`` with the job
    JSON. ``Idempotency-Key``: a key already used (within the TTL) answers 200 with that job instead. 503 +
    Retry-After when ``FACEAPI_JOB_QUEUE`` jobs already wait; 413/422 naming the field for a bad file."""
    from app.uploads import check_file_count, spool_upload

    svc = service_of(request)
    spec = svc.kinds.get(kind)
    if spec is None:
        raise ApiError(404, "unknown_kind", f"no job kind {kind!r}; known: {', '.join(sorted(svc.kinds))}", "kind")
    owner = request_owner(request)
    key, hook = _headers(request)
    run = anyio.to_thread.run_sync
    if key is not None and (existing := await run(partial(svc.store.find_by_key, key, owner))) is not None:
        return _submitted(job_response(svc, existing, 200))
    if (queued := await run(svc.store.count_queued)) >= svc.settings.job_queue:
        raise _queue_full(svc, queued)
    if spec.validate is not None:
        spec.validate(options, svc.settings)
    for name, spec_in in spec.inputs.items():
        got = [f for f in files.get(name) or [] if f is not None]
        if spec_in.required and not got:
            raise ApiError(422, "missing_field", f"{name} is required", name)
        setting = spec_in.max_count_setting if spec_in.multiple else None
        limit = int(getattr(svc.settings, setting)) if setting else 1
        check_file_count(len(got), name, limit, f"FACEAPI_{setting.upper()}" if setting else None)
    for name in files:
        if name not in spec.inputs:
            raise ApiError(422, "unknown_field", f"unknown file field {name!r}", name)

    job_id = secrets.token_urlsafe(16)
    staging = svc.files.new_staging(job_id)
    try:
        for name, spec_in in spec.inputs.items():
            for i, f in enumerate(files.get(name) or []):
                suffix = Path(f.filename or "").suffix
                dest = staging / "inputs" / name / f"{i}{suffix if _SUFFIX.match(suffix) else ''}"
                await spool_upload(f, name, max_bytes_for(spec_in, svc.settings), dest)
        (staging / "work").mkdir()
        rec = JobRecord(id=job_id, kind=kind, owner=owner, options=options.model_dump(mode="json"), unit=spec.unit,
                        idempotency_key=key, webhook=hook, created_at=time.time(), progress_total=None)

        def attach(_: JobRecord) -> None:
            staging.rename(svc.files.job_dir(job_id))

        try:
            saved, created = await run(partial(svc.store.create, rec, svc.settings.job_queue, attach))
        except QueueFull as exc:
            raise _queue_full(svc, exc.queued) from None
    finally:
        svc.files.remove(staging)  # gone already when the job was recorded
    if not created:
        return _submitted(job_response(svc, saved, 200))
    svc.runner.wake()
    log.info("job queued", extra={"job_id": job_id, "kind": kind})
    position = await run(partial(svc.store.queue_position, saved))
    return _submitted(job_response(svc, saved, 202, position))
