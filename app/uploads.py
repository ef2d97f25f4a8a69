"""Uploads: a whole-body cap per route enforced while the body streams in, per-file caps, and spooling to disk.

Starlette parses multipart files into temporary files that roll over to disk past 1 MiB; the app points Python's
temp directory at ``FACEAPI_TEMP_DIR`` (see ``use_temp_dir``), so an upload is never held whole in memory. Long
work copies each file into its own job directory with ``spool_upload``; images, which are decoded in memory anyway,
are read with ``read_upload`` under their much smaller cap.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
from fastapi import UploadFile
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import audit
from app.config import Settings
from app.errors import ApiError, InvalidMediaError, TooLargeError

_CHUNK = 1024 * 1024


class BodyLimitMiddleware:
    """Refuses a request body over the route's cap with 413: at once when Content-Length says so, otherwise as
    soon as the streamed body passes the cap (nothing more is read). ``max_body`` is one cap for every route or a
    function of the request path (video routes accept far larger bodies than image routes)."""

    def __init__(self, app: ASGIApp, max_body: int | Callable[[str], int]) -> None:
        self.app = app
        self.max_body = max_body if callable(max_body) else (lambda _path, cap=max_body: cap)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.max_body(scope.get("path", ""))
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > cap:
            await self._reject(send, int(length), cap)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > cap:
                    raise HTTPException(413, f"request body exceeds {cap} bytes")
            return msg

        await self.app(scope, limited, send)

    @staticmethod
    async def _reject(send: Send, length: int, cap: int) -> None:
        body = json.dumps(
            {"error": {"code": "too_large", "message": f"request body of {length} bytes exceeds {cap} bytes",
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
    digest = audit.Hasher(field)  # the audit log's sha256 of every input
    while chunk := await file.read(_CHUNK):
        total += len(chunk)
        if total > max_bytes:
            raise TooLargeError(field, f"{field} is over the limit of {max_bytes} bytes")
        chunks.append(chunk)
        digest.update(chunk)
    digest.done()
    return b"".join(chunks)


FORM_SLACK = 2 * 1024 * 1024  # multipart boundaries and the option fields (a `faces` JSON is at most 1 MiB)
# Routes that take video or audio: their body may carry a video, an audio file and the source images.
MEDIA_ROUTES = ("/faceswap/video", "/lipsync", "/jobs/")


def body_caps(settings: Settings) -> Callable[[str], int]:
    """The whole-body cap of each route, consistent with the per-file caps: a swap may send
    ``max_source_images`` sources and a target at ``max_upload_bytes`` each; media routes add a video and an
    audio file at their own caps; the seed's gender swap (``/api/swap/``) sends its image base64-encoded (4/3 of
    its size); every other route takes one image."""
    image = settings.max_upload_bytes
    swap = (settings.max_source_images + 1) * image
    media = settings.max_source_images * image + settings.max_video_bytes + settings.max_audio_bytes
    base64_image = (image + 2) // 3 * 4
    other = image

    def cap(path: str) -> int:
        if path.startswith(MEDIA_ROUTES):
            return media + FORM_SLACK
        if path in ("/faceswap", "/swap_img"):
            return swap + FORM_SLACK
        if path == "/api/swap/":
            return base64_image + FORM_SLACK
        return other + FORM_SLACK

    return cap


def use_temp_dir(path: Path) -> Path:
    """Make ``path`` (FACEAPI_TEMP_DIR) the process's temp directory, where Starlette spools multipart files."""
    path = Path(path).resolve()
    path.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(path)
    return path


async def spool_upload(file: UploadFile, field: str, max_bytes: int, dest: Path) -> Path:
    """Copy one uploaded file to ``dest`` in 1 MiB chunks (never whole in memory) and return ``dest``; 413 naming
    ``field`` over ``max_bytes`` and 422 for an empty file, in both cases with nothing left behind."""
    if file.size is not None and file.size > max_bytes:
        raise TooLargeError(field, f"{field} is {file.size} bytes, over the limit of {max_bytes}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    total = 0
    digest = audit.Hasher(field)  # the audit log's sha256 of every input
    try:
        async with await anyio.open_file(dest, "wb") as out:
            while chunk := await file.read(_CHUNK):
                total += len(chunk)
                if total > max_bytes:
                    raise TooLargeError(field, f"{field} is over the limit of {max_bytes} bytes")
                await out.write(chunk)
                digest.update(chunk)
        if total == 0:
            raise InvalidMediaError(field, f"{field} is empty")
        digest.done()
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(dest)
        raise
    return dest


def check_file_count(count: int, field: str, limit: int, setting: str | None = None) -> None:
    """422 ``too_many_files`` naming ``field`` when more than ``limit`` files were sent (``setting``: the
    setting that sets the limit, named in the message)."""
    if count > limit:
        where = f" ({setting})" if setting else ""
        raise ApiError(422, "too_many_files", f"{count} {field} files sent; at most {limit}{where}", field)


@contextlib.asynccontextmanager
async def work_dir(settings: Settings, prefix: str) -> AsyncIterator[Path]:
    """A private folder under ``FACEAPI_TEMP_DIR`` for one synchronous request's spooled inputs and result. It is
    removed when the request fails; a successful answer removes it once sent (see :func:`file_response`)."""
    work = Path(settings.temp_dir) / f"{prefix}-{secrets.token_hex(8)}"
    try:
        yield work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def file_response(path: Path, media_type: str, headers: dict[str, str], filename: str, work: Path) -> FileResponse:
    """The result file (Range requests work), with ``work`` removed after the answer was sent."""
    return FileResponse(path, media_type=media_type, headers=headers, filename=filename,
                        background=BackgroundTask(shutil.rmtree, work, ignore_errors=True))
