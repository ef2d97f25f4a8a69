"""Bounded hand-off between the threads of a streaming job (decode → process → encode): puts and gets that give up
when the job is stopped, an end marker, and a wrapper that carries a thread's exception to the consumer."""

from __future__ import annotations

import queue
import threading

END = object()  # put once after the last item
POLL = 0.1  # seconds between checks of the stop flag while a queue is full or empty


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
