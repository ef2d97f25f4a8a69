"""Bounded hand-off between the threads of a streaming job (decode → process → encode): puts and gets that give up
when the job is stopped, an end marker, and a wrapper that carries a thread's exception to the consumer."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from typing import Protocol

END = object()  # put once after the last item
POLL = 0.1  # seconds between checks of the stop flag while a queue is full or empty


class Abortable(Protocol):
    def abort(self) -> None: ...


class Failure:
    """An exception raised in a producer thread, handed to the consuming thread to re-raise."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put ``item``, waiting while the queue is full; False (nothing put) once ``stop`` is set."""
    while not stop.is_set():
        try:
            q.put(item, timeout=POLL)
            return True
        except queue.Full:
            continue
    return False


def get(q: queue.Queue, stop: threading.Event) -> object:
    """The next item, waiting while the queue is empty; :data:`END` once ``stop`` is set and nothing is left."""
    while True:
        try:
            return q.get(timeout=POLL)
        except queue.Empty:
            if stop.is_set():
                return END


def finish(q: queue.Queue, stop: threading.Event, encoder: threading.Thread, written: list[object]) -> object:
    """End the stream: :data:`END` into ``q`` (the encoder's input), wait for the encoder thread, and return what it
    appended to ``written``, re-raising its :class:`Failure`."""
    put(q, END, stop)
    encoder.join()
    if not written:
        raise RuntimeError("the encoder stopped without a result")
    if isinstance(written[0], Failure):
        raise written[0].exc
    return written[0]


def abandon(stop: threading.Event, threads: list[threading.Thread], writer: Abortable, dst: str | os.PathLike) -> None:
    """After a failure or a cancel: stop and join every thread, abort the writer and remove the partial ``dst``."""
    stop.set()
    for th in threads:
        th.join()
    writer.abort()
    with contextlib.suppress(OSError):
        os.unlink(dst)
