"""The job JSON (response models with examples for the OpenAPI schema) and its rendering from a record."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.errors import ErrorDetail
from app.jobs.store import JobRecord

State = Literal["queued", "running", "succeeded", "failed", "canceled"]


class JobProgress(BaseModel):
    done: int = Field(..., examples=[1])
    total: int | None = Field(None, description="None while unknown", examples=[1])
    fraction: float | None = Field(None, ge=0.0, le=1.0, examples=[1.0])
    unit: str = Field(..., description="What `done` and `total` count: steps, frames, faces", examples=["steps"])
    eta_seconds: float | None = Field(None, description="Estimated seconds left, from the rate so far",
                                      examples=[0.0])


class JobMetrics(BaseModel):
    queue_seconds: float | None = Field(None, description="Submitted → started (so far, while queued)",
                                        examples=[0.12])
    run_seconds: float | None = Field(None, description="Started → finished (so far, while running)",
                                      examples=[4.31])


class JobUrls(BaseModel):
    self: str = Field(..., examples=["/jobs/3yJ2b0TqQm2H8kq4cXcZ9w"])
    events: str = Field(..., examples=["/jobs/3yJ2b0TqQm2H8kq4cXcZ9w/events"])
    result: str = Field(..., examples=["/jobs/3yJ2b0TqQm2H8kq4cXcZ9w/result"])
    cancel: str = Field(..., examples=["/jobs/3yJ2b0TqQm2H8kq4cXcZ9w/cancel"])


class JobResultInfo(BaseModel):
    media_type: str = Field(..., examples=["image/png"])
    size: int = Field(..., description="Bytes", examples=[1834021])
    headers: dict[str, str] = Field(default_factory=dict, description="Headers the synchronous endpoint would send",
                                    examples=[{"X-Face-Backend": "builtin", "X-Faces-Swapped": "1"}])


class Job(BaseModel):
    id: str = Field(..., description="Unguessable job id", examples=["3yJ2b0TqQm2H8kq4cXcZ9w"])
    kind: str = Field(..., examples=["faceswap"])
    state: State = Field(..., description="queued → running → succeeded | failed | canceled", examples=["succeeded"])
    queue_position: int | None = Field(None, description="Jobs ahead of this one (queued jobs only)", examples=[None])
    cancel_requested: bool = Field(False, description="A cancel was asked and the running worker is stopping")
    progress: JobProgress
    error: ErrorDetail | None = Field(None, description="Set when failed (code `interrupted`: its worker died) or "
                                     "canceled", examples=[None])
    created_at: datetime = Field(..., examples=["2026-12-03T07:40:01.250Z"])
    started_at: datetime | None = Field(None, examples=["2026-12-03T07:40:01.371Z"])
    finished_at: datetime | None = Field(None, examples=["2026-12-03T07:40:05.680Z"])
    metrics: JobMetrics
    urls: JobUrls
    options: dict[str, Any] = Field(..., description="The job's options, defaults filled in",
                                    examples=[{"mode": "one_to_one", "face_refinement_steps": 1, "upscale": 1}])
    result: JobResultInfo | None = Field(None, description="Set when succeeded; download it from `urls.result`")


class JobList(BaseModel):
    jobs: list[Job] = Field(..., description="Newest first")


def _dt(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


def job_view(rec: JobRecord, queue_position: int | None = None, now: float | None = None) -> Job:
    now = time.time() if now is None else now
    done, total = rec.progress_done, rec.progress_total
    fraction = min(1.0, done / total) if total else None
    eta = None
    if rec.state == "running" and rec.started_at is not None and total and done > 0:
        elapsed = now - rec.started_at
        eta = round(max(0.0, elapsed / done * (total - done)), 2)
    elif rec.state == "succeeded":
        eta = 0.0
    queue_s = ((rec.started_at or rec.finished_at or now) - rec.created_at) if rec.created_at else None
    run_s = ((rec.finished_at or now) - rec.started_at) if rec.started_at is not None else None
    error = None
    if rec.error_code is not None:
        error = ErrorDetail(code=rec.error_code, message=rec.error_message or rec.error_code, field=rec.error_field)
    result = None
    if rec.state == "succeeded" and rec.result_media_type is not None:
        result = JobResultInfo(media_type=rec.result_media_type, size=rec.result_size or 0,
                               headers=rec.result_headers)
    base = f"/jobs/{rec.id}"
    return Job(
        id=rec.id, kind=rec.kind, state=rec.state,  # type: ignore[arg-type]
        queue_position=queue_position, cancel_requested=rec.cancel_requested and not rec.terminal,
        progress=JobProgress(done=done, total=total, fraction=fraction, unit=rec.unit, eta_seconds=eta),
        error=error, created_at=_dt(rec.created_at), started_at=_dt(rec.started_at),  # type: ignore[arg-type]
        finished_at=_dt(rec.finished_at),
        metrics=JobMetrics(queue_seconds=round(queue_s, 3) if queue_s is not None else None,
                           run_seconds=round(run_s, 3) if run_s is not None else None),
        urls=JobUrls(self=base, events=f"{base}/events", result=f"{base}/result", cancel=f"{base}/cancel"),
        options=rec.options, result=result,
    )


# The OpenAPI entry of a long-work endpoint's 202 (``Prefer: respond-async``).
ASYNC_RESPONSE: dict[int | str, dict[str, Any]] = {
    202: {
        "model": Job,
        "description": "Sent `Prefer: respond-async`: the job was queued. `Location: /jobs/{id}`; poll it, follow "
        "`/jobs/{id}/events` (SSE) and download `/jobs/{id}/result` when it has succeeded.",
    }
}
