"""Upload spooling over real HTTP: a several-hundred-MB multipart upload to /faceswap/video on a one-worker server,
streamed by the client in 1 MiB chunks. Reports the throughput and how much the worker's peak RSS grew (it must not
grow with the upload), and checks that nothing is left in the temp dir afterwards."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.report import reset_peak, status_mb
from testkit.server import Server

CHUNK = 1024 * 1024
SPOOL_COLUMNS = ["case", "upload_mb", "seconds", "mb_per_s", "status", "worker_rss_before_mb", "worker_peak_mb",
                 "growth_mb", "temp_files_left"]


def _body(boundary: str, size: int) -> tuple[Iterator[bytes], int]:
    """A multipart body: a tiny source_image and a ``size``-byte target_video (not a real video: the server spools
    all of it before it sniffs the content, then answers 415)."""
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"source_image\"; filename=\"s.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + b"\x89PNG\r\n\x1a\n" + b"\0" * 64 + (
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"target_video\"; filename=\"v.mp4\"\r\n"
        f"Content-Type: video/mp4\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    block = secrets.token_bytes(CHUNK)

    def gen() -> Iterator[bytes]:
        yield head
        left = size
        while left > 0:
            n = min(CHUNK, left)
            yield block[:n]
            left -= n
        yield tail

    return gen(), len(head) + size + len(tail)


def spool_rows(tmp: Path, sizes_mb: tuple[int, ...] = (100, 400)) -> list[dict[str, Any]]:
    data = tmp / "spool-data"
    server = Server({"FACEAPI_WEIGHTS_DIR": str(tmp / "no-weights"), "FACEAPI_DATA_DIR": str(data),
                     "FACEAPI_TEMP_DIR": str(data / "tmp"), "FACEAPI_LOG_LEVEL": "WARNING"}, workers=1).start()
    rows = []
    try:
        with httpx.Client(base_url=server.url, timeout=600) as client:
            pid = client.get("/healthz").json()["pid"]
            for mb in sizes_mb:
                before = status_mb("VmRSS", pid)
                reset_peak(pid)
                boundary = secrets.token_hex(12)
                body, length = _body(boundary, mb * CHUNK)
                t0 = time.perf_counter()
                r = client.post("/faceswap/video", content=body, headers={
                    "content-type": f"multipart/form-data; boundary={boundary}", "content-length": str(length)})
                seconds = time.perf_counter() - t0
                peak = status_mb("VmHWM", pid)
                left = sum(1 for p in (data / "tmp").rglob("*") if p.is_file())
                rows.append({"case": "multipart upload → spool → 415", "upload_mb": mb, "seconds": seconds,
                             "mb_per_s": mb / seconds, "status": r.status_code, "worker_rss_before_mb": before,
                             "worker_peak_mb": peak, "growth_mb": peak - before, "temp_files_left": left})
    finally:
        server.stop()
    return rows
