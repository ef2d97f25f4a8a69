"""Upload size limits: a whole-body cap enforced while the body streams in, and a per-file cap."""

from __future__ import annotations

import json

from fastapi import UploadFile
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import TooLargeError

_CHUNK = 1024 * 1024


class BodyLimitMiddleware:
    """Refuses a request body over ``max_body`` bytes with 413: at once when Content-Length says so,
    otherwise as soon as the streamed body passes the limit (nothing more is read)."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await self._reject(send, int(length))
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_body:
                    raise HTTPException(413, f"request body exceeds {self.max_body} bytes")
            return msg

        await self.app(scope, limited, send)

    async def _reject(self, send: Send, length: int) -> None:
        body = json.dumps(
            {"error": {"code": "too_large", "message": f"request body of {length} bytes exceeds {self.max_body} bytes",
                       "field": None}}
        ).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


async def read_upload(file: UploadFile, field: str, max_bytes: int) -> bytes:
    """The bytes of one uploaded file; 413 naming ``field`` when it is over ``max_bytes``."""
    if file.size is not None and file.size > max_bytes:
        raise TooLargeError(field, f"{field} is {file.size} bytes, over the limit of {max_bytes}")
    chunks: list[bytes] = []
    total = 0
    while chunk := await file.read(_CHUNK):
        total += len(chunk)
        if total > max_bytes:
            raise TooLargeError(field, f"{field} is over the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
