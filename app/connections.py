"""The HTTP protocol `python -m app serve` runs: uvicorn's h11 protocol with the guards it lacks.

- **Header timeout** (``FACEAPI_HEADER_TIMEOUT``): a connection must deliver a request's headers within this many
  seconds of opening, or of the first byte of its next request on a kept-alive connection; otherwise it gets
  408 and is closed (uvicorn and h11 have no such timeout: a client sending a byte a second was held forever).
- **Body timeout** (``FACEAPI_BODY_TIMEOUT``, ``FACEAPI_MIN_UPLOAD_RATE``): a request body that goes this many
  seconds without data, or that arrives slower than the minimum rate once the first ``FACEAPI_BODY_TIMEOUT``
  seconds are over, gets 408 (when no response has started) and the connection is closed; the application sees
  a client disconnect. Time while the server itself has paused reading (back-pressure) does not count.
- **Connection cap** (``FACEAPI_MAX_CONNECTIONS`` per worker): a connection over the cap is answered at once with
  503 ``busy`` + ``Retry-After`` JSON and closed. It also bounds the requests in flight, one per connection.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.config import get_settings

_TICK = 0.25  # seconds between body-rate checks


def _raw_response(status: int, reason: str, code: str, message: str, extra: str = "") -> bytes:
    body = json.dumps({"error": {"code": code, "message": message, "field": None}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: close\r\n{extra}\r\n")
    return head.encode("ascii") + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus header/body timeouts and a per-worker connection cap (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        s = get_settings()
        self.header_timeout = float(s.header_timeout)
        self.body_timeout = float(s.body_timeout)
        self.min_rate = float(s.min_upload_rate)
        self.max_connections = int(s.max_connections)
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_state: tuple[float, float, int] | None = None  # (window start, last data, bytes in window)
        self._refused = False

    # ---- connection cap ------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._refused = len(self.connections) > self.max_connections
        if self._refused:
            self.transport.write(_raw_response(
                503, "Service Unavailable", "busy",
                f"this worker already serves {self.max_connections} connections; retry shortly", "retry-after: 1\r\n"))
            # Lingering close: stop sending, drop what the client still sends for a moment, then close. Closing at
            # once would reset the connection when the request arrives, and the client would lose the 503.
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(1.0, self.transport.close)
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    # ---- header timeout ------------------------------------------------------------------------------------------

    def _arm_header_timer(self) -> None:
        if self._header_timer is None and self.header_timeout > 0:
            self._header_timer = self.loop.call_later(self.header_timeout, self._header_timed_out)

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a response is still being written: not waiting for headers
        self._cut(f"the request headers did not arrive within {self.header_timeout:g} s")

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        waiting_for_headers = self.conn.their_state is h11.IDLE
        if waiting_for_headers:
            self._arm_header_timer()  # the first byte of a request on a kept-alive connection
        elif self._body_state is not None:
            start, _last, seen = self._body_state
            self._body_state = (start, time.monotonic(), seen + len(data))
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self.conn.their_state is not h11.IDLE and self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if self.conn.their_state is h11.SEND_BODY and self._body_state is None:
            now = time.monotonic()
            self._body_state = (now, now, 0)
            self._body_timer = self.loop.call_later(_TICK, self._check_body)

    # ---- body timeout --------------------------------------------------------------------------------------------

    def _check_body(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY or self._body_state is None:
            self._body_state = None
            return
        now = time.monotonic()
        start, last, seen = self._body_state
        if self.flow.read_paused:  # the server is not reading: the client is not to blame
            self._body_state = (now, now, 0)
        elif self.body_timeout > 0 and now - last > self.body_timeout:
            self._cut(f"the request body sent no data for {self.body_timeout:g} s")
            return
        elif self.min_rate > 0 and now - start > max(self.body_timeout, 1.0) and seen / (now - start) < self.min_rate:
            self._cut(f"the request body arrived at {seen / (now - start):.0f} bytes/s, under the minimum of "
                      f"{self.min_rate:g} bytes/s")
            return
        self._body_timer = self.loop.call_later(_TICK, self._check_body)

    # ---- cutting a connection off --------------------------------------------------------------------------------

    def _cut(self, why: str) -> None:
        self.logger.warning("closing a slow connection: %s", why)
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(_raw_response(408, "Request Timeout", "request_timeout", why))
        if self.cycle is not None:
            self.cycle.disconnected = True
            self.cycle.message_event.set()  # the application's receive() now answers http.disconnect
        self._cancel_timers()
        self.transport.close()

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None
        self._body_state = None
