"""Runs blocking model work off the event loop, with a bounded number of running and waiting jobs."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

from app import metrics
from app.errors import ServiceUnavailableError

T = TypeVar("T")


class InferencePool:
    """``threads`` jobs run at once in worker threads; up to ``max_queue`` more wait; beyond that the caller
    gets 503 with Retry-After instead of piling up. /healthz never goes through here, so it answers while
    models run. Create it inside the running event loop (the app's lifespan)."""

    def __init__(self, threads: int, max_queue: int, retry_after: int = 2) -> None:
        self.threads = threads
        self.max_queue = max_queue
        self.retry_after = retry_after
        self.limiter = anyio.CapacityLimiter(threads)
        self.inflight = 0
        metrics.pool_configured(threads, max_queue)

    async def run(self, fn: Callable[..., T], *args: object, admit: bool = True) -> T:
        """Run ``fn(*args)`` in a worker thread. ``admit=False`` skips the queue bound: for follow-up work of a
        request that was already admitted (a /swap_url's targets), which waits for a slot instead."""
        if admit and self.inflight >= self.threads + self.max_queue:
            metrics.BUSY.inc()
            raise ServiceUnavailableError(
                "busy", f"all {self.threads} inference slots are busy and {self.max_queue} requests already wait",
                retry_after=self.retry_after,
            )
        self.inflight += 1
        try:
            with metrics.queued() as started:  # waiting for a slot until the thread starts, then running

                def call() -> T:
                    started()
                    return fn(*args)

                return await anyio.to_thread.run_sync(call, limiter=self.limiter)
        finally:
            self.inflight -= 1
