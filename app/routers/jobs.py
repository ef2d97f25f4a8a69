"""Jobs: submit long work, poll it, follow it (SSE), cancel it, download its result. Every worker answers for every
job (the state lives in SQLite under FACEAPI_DATA_DIR)."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile as StarletteUpload

from app.errors import ApiError, ErrorResponse, error_responses
from app.jobs.events import job_events
from app.jobs.kinds import KINDS
from app.jobs.models import Job, JobList, job_view
from app.jobs.registry import JobKind
from app.jobs.service import JobService
from app.jobs.store import STATES, JobRecord
from app.jobs.submit import IDEMPOTENCY_HEADER, WEBHOOK_HEADER, job_response, request_owner, service_of, submit

router = APIRouter(prefix="/jobs", tags=["jobs"])
CANCEL_WAIT_SECONDS = 2.0


def _error(status: int, code: str, message: str, description: str) -> dict[int | str, dict]:
    return {status: {"model": ErrorResponse, "description": description, "content": {"application/json": {
        "example": {"error": {"code": code, "message": message, "field": None}}}}}}


NOT_FOUND = _error(404, "not_found", "no job 3yJ2b0TqQm2H8kq4cXcZ9w (unknown or expired)", "Unknown or expired job")
NOT_READY = _error(409, "not_ready", "job 3yJ2b0TqQm2H8kq4cXcZ9w is running; its result is not ready",
                   "The job has not succeeded (yet)")
JOB_EXAMPLE = {
    "id": "3yJ2b0TqQm2H8kq4cXcZ9w", "kind": "faceswap", "state": "succeeded", "queue_position": None,
    "cancel_requested": False,
    "progress": {"done": 1, "total": 1, "fraction": 1.0, "unit": "steps", "eta_seconds": 0.0},
    "error": None, "created_at": "2026-12-03T07:40:01.250000Z", "started_at": "2026-12-03T07:40:01.371000Z",
    "finished_at": "2026-12-03T07:40:05.680000Z", "metrics": {"queue_seconds": 0.121, "run_seconds": 4.309},
    "urls": {"self": "/jobs/3yJ2b0TqQm2H8kq4cXcZ9w", "events": "/jobs/3yJ2b0TqQm2H8kq4cXcZ9w/events",
             "result": "/jobs/3yJ2b0TqQm2H8kq4cXcZ9w/result", "cancel": "/jobs/3yJ2b0TqQm2H8kq4cXcZ9w/cancel"},
    "options": {"mode": "one_to_one", "face_refinement_steps": 1, "upscale": 1},
    "result": {"media_type": "image/png", "size": 1834021,
               "headers": {"X-Face-Backend": "builtin", "X-Faces-Swapped": "1"}},
}


def _job_content(description: str, example: dict | None = None) -> dict:
    return {"model": Job, "description": description,
            "content": {"application/json": {"example": example or JOB_EXAMPLE}}}


async def _run(fn: Callable[..., Any], *args: Any) -> Any:
    return await anyio.to_thread.run_sync(partial(fn, *args))


async def _load(svc: JobService, request: Request, job_id: str) -> JobRecord:
    rec = await _run(svc.store.get, job_id, request_owner(request))
    if rec is None:
        raise ApiError(404, "not_found", f"no job {job_id} (unknown or expired)")
    return rec


async def _current(svc: JobService, request: Request, job_id: str) -> JSONResponse:
    rec = await _load(svc, request, job_id)
    return job_response(svc, rec, 200, await _run(svc.store.queue_position, rec))


# ---- submit: one route per registered kind (its files and options documented) --------------------------------------


def _form_schema(kind: JobKind) -> dict:
    props: dict[str, Any] = {}
    for name, spec in kind.inputs.items():
        binary = {"type": "string", "format": "binary"}
        props[name] = ({"type": "array", "items": binary} if spec.multiple else binary) | {
            "description": spec.description or f"{spec.kind} file"}
    schema = kind.options.model_json_schema()
    for name, prop in schema.get("properties", {}).items():
        props[name] = prop
    required = [n for n, s in kind.inputs.items() if s.required]
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "properties": props, "required": required, **({"$defs": schema["$defs"]}
                                                                        if "$defs" in schema else {})}}}}}


def _submit_route(kind: JobKind) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def endpoint(request: Request) -> JSONResponse:
        form = await request.form()
        files: dict[str, list[UploadFile]] = {}
        given: dict[str, Any] = {}
        fields = set(kind.options.model_fields)
        for key, value in form.multi_items():
            if key in kind.inputs:
                if not isinstance(value, StarletteUpload):
                    raise ApiError(422, "invalid_field", f"{key} must be a file", key)
                files.setdefault(key, []).append(value)  # type: ignore[arg-type]
            elif key in fields:
                if key in given:
                    raise ApiError(422, "invalid_field", f"{key} is given twice", key)
                given[key] = value
            else:
                known = ", ".join(sorted(fields | set(kind.inputs)))
                raise ApiError(422, "unknown_field", f"unknown field {key!r}; known: {known}", key)
        for key in request.query_params:
            raise ApiError(422, "unknown_field", f"query parameter {key!r}: send options as form fields", key)
        try:
            options = kind.options.model_validate(given)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or None
            raise ApiError(422, "invalid_field", f"{where}: {err['msg']}" if where else err["msg"], where) from None
        return await submit(request, kind.name, options, files)

    return endpoint


for _kind in KINDS.values():
    router.add_api_route(
        f"/{_kind.name}", _submit_route(_kind), methods=["POST"], status_code=202, response_model=Job,
        summary=f"Submit a {_kind.name} job ({_kind.summary or _kind.name})",
        description=f"Multipart: the files ({', '.join(_kind.inputs)}) and the options as form fields (an unknown "
        f"field is refused with 422 naming it). Answers 202 + `Location: /jobs/{{id}}` at once. Headers: "
        f"`{IDEMPOTENCY_HEADER}` (the same key within the TTL returns the same job, with 200), `{WEBHOOK_HEADER}` "
        "(POSTed the final job JSON on completion, retried with backoff).",
        responses={202: _job_content("Queued", {**JOB_EXAMPLE, "state": "queued", "queue_position": 0,
                                                "started_at": None, "finished_at": None, "result": None}),
                   200: _job_content("The job this Idempotency-Key already created"),
                   **error_responses(400, 413, 415, 422, 503)},
        openapi_extra=_form_schema(_kind), name=f"submit_{_kind.name}",
    )


@router.post("/{kind}", include_in_schema=False)
async def unknown_kind(request: Request, kind: str) -> JSONResponse:
    raise ApiError(404, "unknown_kind", f"no job kind {kind!r}; known: {', '.join(sorted(KINDS))}", "kind")


# ---- read ---------------------------------------------------------------------------------------------------------


@router.get("", response_model=JobList, summary="List jobs, newest first", responses=error_responses(422))
async def list_jobs(
    request: Request,
    state: Annotated[str | None, Query(description="Only jobs in this state", examples=["running"])] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many")] = 50,
) -> JSONResponse:
    if state is not None and state not in STATES:
        raise ApiError(422, "invalid_field", f"state must be one of {', '.join(STATES)}", "state")
    svc = service_of(request)
    recs = await _run(svc.store.list, state, request_owner(request), limit)
    body = JobList(jobs=[job_view(r) for r in recs]).model_dump(mode="json")
    return JSONResponse(body, headers={"X-Worker-Pid": str(os.getpid())})


@router.get("/{job_id}", response_model=Job, summary="A job's state, progress, timings and URLs",
            responses={200: _job_content("The job"), **NOT_FOUND})
async def get_job(request: Request, job_id: str) -> JSONResponse:
    return await _current(service_of(request), request, job_id)


@router.get(
    "/{job_id}/events",
    summary="Server-sent events: `progress` on every change, then `succeeded`, `failed` or `canceled`, then close",
    response_class=StreamingResponse,
    responses={200: {"description": "`text/event-stream`; each event's data is the job JSON",
                     "content": {"text/event-stream": {"example": "id: 1\nevent: progress\ndata: {\"id\": …}\n\n"}}},
               **NOT_FOUND},
)
async def job_events_endpoint(request: Request, job_id: str) -> StreamingResponse:
    svc = service_of(request)
    await _load(svc, request, job_id)
    owner = request_owner(request)

    async def load() -> Job | None:
        rec = await _run(svc.store.get, job_id, owner)
        return None if rec is None else job_view(rec, await _run(svc.store.queue_position, rec))

    return StreamingResponse(job_events(load, request.is_disconnected), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                                      "X-Worker-Pid": str(os.getpid())})


@router.get(
    "/{job_id}/result",
    summary="Download the result of a succeeded job (Range requests supported)",
    response_class=FileResponse,
    responses={200: {"description": "The result file, with the headers the synchronous endpoint sends "
                     "(e.g. `X-Face-Backend`)", "content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}},
               206: {"description": "Partial content (Range)"}, **NOT_FOUND, **NOT_READY},
)
async def job_result(request: Request, job_id: str) -> FileResponse:
    svc = service_of(request)
    rec = await _load(svc, request, job_id)
    if rec.state != "succeeded" or rec.result_path is None:
        why = f"is {rec.state}" + ("; its result is not ready" if not rec.terminal else "; it has no result")
        raise ApiError(409, "not_ready", f"job {job_id} {why}")
    path = svc.files.job_dir(job_id) / rec.result_path
    if not path.is_file():
        raise ApiError(404, "not_found", f"the result of job {job_id} has expired")
    headers = {**rec.result_headers, "X-Worker-Pid": str(os.getpid())}
    return FileResponse(path, media_type=rec.result_media_type, headers=headers,
                        filename=f"{rec.kind}-{job_id}{path.suffix}", content_disposition_type="inline")


# ---- cancel / delete ----------------------------------------------------------------------------------------------


async def _cancel(svc: JobService, request: Request, job_id: str) -> JobRecord:
    rec, canceled_now = await _run(svc.store.request_cancel, job_id, request_owner(request))
    if rec is None:
        raise ApiError(404, "not_found", f"no job {job_id} (unknown or expired)")
    if canceled_now:  # it was queued: canceled at once, its inputs go
        svc.files.remove_job(job_id)
        svc.notify(rec)
    deadline = anyio.current_time() + CANCEL_WAIT_SECONDS
    while not rec.terminal and anyio.current_time() < deadline:  # the running worker notices within ~0.25 s
        await anyio.sleep(0.1)
        rec = await _run(svc.store.get, job_id, request_owner(request)) or rec
    return rec


@router.post(
    "/{job_id}/cancel",
    response_model=Job,
    summary="Cancel a job (from any worker): a queued job at once, a running one stops at its next progress check",
    responses={200: _job_content("Canceled (or already finished: unchanged)",
                                 {**JOB_EXAMPLE, "state": "canceled", "result": None,
                                  "error": {"code": "canceled", "message": "the job was canceled", "field": None}}),
               202: _job_content("Cancel requested; the running worker has not stopped yet"), **NOT_FOUND},
)
async def cancel_job(request: Request, job_id: str) -> JSONResponse:
    svc = service_of(request)
    rec = await _cancel(svc, request, job_id)
    return job_response(svc, rec, 200 if rec.terminal else 202)


@router.delete("/{job_id}", status_code=204, summary="Delete a job, its inputs and its result (canceling it first)",
               responses={204: {"description": "Deleted"}, **NOT_FOUND})
async def delete_job(request: Request, job_id: str) -> Response:
    svc = service_of(request)
    await _cancel(svc, request, job_id)
    await _run(svc.store.delete, job_id, request_owner(request))
    svc.files.remove_job(job_id)
    return Response(status_code=204, headers={"X-Worker-Pid": str(os.getpid())})
