"""Server-sent events of one job: ``progress`` whenever state or progress changes, then one final ``succeeded``,
``failed`` or ``canceled`` event and the stream closes. Any worker can serve it: it polls the shared store."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio

from app.jobs.models import Job

POLL_SECONDS = 0.25
KEEPALIVE_SECONDS = 15.0


def sse(event: str, data: str, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    body = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"{head}event: {event}\n{body}\n"


async def job_events(load: Callable[[], Awaitable[Job | None]], disconnected: Callable[[], Awaitable[bool]],
                     poll: float = POLL_SECONDS) -> AsyncIterator[str]:
    last: tuple | None = None
    n = 0
    quiet_since = time.monotonic()
    while True:
        job = await load()
        if job is None:  # deleted or expired meanwhile
            yield sse("gone", '{"error": {"code": "not_found", "message": "the job no longer exists", '
                      '"field": null}}', n)
            return
        key = (job.state, job.progress.done, job.progress.total, job.cancel_requested)
        if job.state in ("succeeded", "failed", "canceled"):
            yield sse(job.state, job.model_dump_json(), n + 1)
            return
        if key != last:
            last = key
            n += 1
            quiet_since = time.monotonic()
            yield sse("progress", job.model_dump_json(), n)
        elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
        if await disconnected():
            return
        await anyio.sleep(poll)
