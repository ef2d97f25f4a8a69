"""Giving memory back to the operating system after large requests and jobs.

A 36 MP picture is decoded, converted, restored, resized and encoded through many arrays. The big ones (over glibc's
mmap threshold) are returned to the OS when freed, but everything under it — and the threshold grows up to 32 MB
as big blocks are freed — is carved from malloc's heaps and arenas (one per thread that allocated: the inference
pool, anyio's threads, the job runner…). Freed, those pages stay in the worker's RSS: after a few large images a
worker that started at 0.5 GB sat at 0.9–1.5 GB. ``bench/memory.py`` compares the remedies; kept here: glibc's
``malloc_trim(0)``, which hands every free page of every arena back, called off the event loop after a request or
job that left the worker's RSS more than ``FACEAPI_MALLOC_TRIM_MB`` above where it last settled, and optionally at
most ``FACEAPI_MALLOC_ARENA_MAX`` arenas (``mallopt(M_ARENA_MAX)``; off by default: two arenas shared by the lip-sync
pipeline's threads grew its peak from 1.44 to 1.75 GB over a 60 s clip). With the trim a worker kept +52 MB after
twelve 36 MP requests instead of +285 MB (README, Benchmarks).

Everything is a no-op where the C library is not glibc (musl, macOS): the calls are looked up once and guarded.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
import threading
import time
from dataclasses import dataclass

import anyio.to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("app.memory")
M_ARENA_MAX = -8  # mallopt parameter of glibc's malloc.h
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    if not (hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt")):
        return None
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim.restype = ctypes.c_int
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc


_LIBC = _glibc()


def available() -> bool:
    """Whether this process runs on glibc (malloc_trim and mallopt can be called)."""
    return _LIBC is not None


def rss_bytes() -> int:
    """The process's resident set size now (``/proc/self/statm``, a few microseconds); 0 where there is no /proc."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def set_arena_max(n: int) -> bool:
    """Cap malloc's arenas at ``n`` (0 = leave glibc's default of 8 × cores). Call before threads start."""
    if n <= 0 or _LIBC is None:
        return False
    return bool(_LIBC.mallopt(M_ARENA_MAX, n))


def malloc_trim() -> bool:
    """Return the free pages of every malloc arena to the OS; False where that is not possible."""
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(0))


@dataclass
class TrimStats:
    calls: int = 0
    freed_bytes: int = 0
    seconds: float = 0.0


class Trimmer:
    """Trims after work that grew the RSS: ``after_work()`` compares the RSS with the level it settled at after the
    last trim (or at start) and calls ``malloc_trim(0)`` when it is more than ``threshold_mb`` above. One trim at a
    time per process; a request ending while another trims does not wait for it."""

    def __init__(self, threshold_mb: int, keep_level: bool = False) -> None:
        self.threshold = threshold_mb * 1024 * 1024
        self.enabled = threshold_mb > 0 and available()
        self.settled = rss_bytes()
        # keep_level: the level stays where it was at the start (a job's working set), instead of dropping to what
        # a trim leaves; a job that frees and re-allocates the same working set every step is then trimmed only
        # when it grows past it, not after every step (each trim costs the page faults of re-allocating)
        self.keep_level = keep_level
        self.stats = TrimStats()
        self._busy = threading.Lock()

    def due(self) -> bool:
        return self.enabled and rss_bytes() - self.settled > self.threshold

    def after_work(self) -> bool:
        """Trim now when due (blocking: call it from a worker thread). True when a trim ran."""
        if not self.due() or not self._busy.acquire(blocking=False):
            return False
        try:
            before, t0 = rss_bytes(), time.perf_counter()
            malloc_trim()
            after = rss_bytes()
            self.settled = max(self.settled, after) if self.keep_level else after
            self.stats.calls += 1
            self.stats.freed_bytes += max(0, before - after)
            self.stats.seconds += time.perf_counter() - t0
            log.debug("malloc_trim", extra={"rss_before_mb": before >> 20, "rss_after_mb": after >> 20,
                                            "ms": round((time.perf_counter() - t0) * 1000, 1)})
            return True
        finally:
            self._busy.release()


_trimmer: Trimmer | None = None


def configure(trim_mb: int, arena_max: int) -> Trimmer:
    """Set up this worker process (from the app factory): the arena cap and the trimmer used by
    :class:`TrimMiddleware` and the job runner."""
    global _trimmer
    if set_arena_max(arena_max):
        log.debug("malloc arenas capped", extra={"arena_max": arena_max})
    _trimmer = Trimmer(trim_mb)
    return _trimmer


def trimmer() -> Trimmer | None:
    return _trimmer


def after_job() -> bool:
    """Called by the job runner's thread when a job ends."""
    return _trimmer.after_work() if _trimmer is not None else False


class TrimMiddleware:
    """After each HTTP request: when the RSS grew past the threshold, trim in a worker thread (the response has
    been sent by then; the event loop never waits for the trim)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
        t = _trimmer
        if scope["type"] == "http" and t is not None and t.due():
            await anyio.to_thread.run_sync(t.after_work)
