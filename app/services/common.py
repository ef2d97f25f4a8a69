"""Pieces every job shares: backend resolution with clear errors, and stage timing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from app.errors import ApiError
from models.hub import BackendUnavailable, ModelHub


def resolve_backend(hub: ModelHub, job: str, requested: str) -> str:
    try:
        return hub.resolve(job, requested)
    except BackendUnavailable as exc:
        raise ApiError(503, "backend_unavailable", str(exc), "backend") from None


class Timings(dict[str, float]):
    """Milliseconds per named stage, in order; rendered as a ``Server-Timing`` header."""

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self[name] = self.get(name, 0.0) + (time.perf_counter() - t0) * 1000

    def header(self) -> str:
        return ", ".join(f"{k};dur={v:.1f}" for k, v in self.items())
