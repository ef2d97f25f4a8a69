"""Memory benchmark: does a worker give memory back after large images, and what does one large request cost?

A real server (``python -m app serve``, one worker, built-in backend) answers several ~36 MP pictures on
``/analyze``, ``/faceswap``, ``/enhance`` and ``/enhance`` with ``upscale=2`` (144 MP out, within
``FACEAPI_MAX_OUTPUT_PIXELS``). For each request the worker's peak RSS (``VmHWM``, reset before it) is read; after the
last one, the settled RSS. Each allocator configuration runs in a fresh server:

- ``baseline``: glibc malloc as it comes (no trim, default arenas);
- ``arena2``: ``MALLOC_ARENA_MAX=2``;
- ``mmap1m``: ``MALLOC_MMAP_THRESHOLD_=1048576`` (blocks over 1 MiB always mmapped, so returned on free);
- ``trim``: the app's ``malloc_trim(0)`` after work that grew the RSS (``FACEAPI_MALLOC_TRIM_MB``, app/memory.py);
- ``trim+arena2``, ``trim+mmap1m``: both;
- ``jemalloc``: ``LD_PRELOAD`` of a libjemalloc found on the machine (``--jemalloc PATH`` or the usual library dirs);
  skipped when there is none.
"""

from __future__ import annotations

import argparse
import glob
import io
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np

from bench.report import reset_peak, status_mb, table, write
from testkit import standins
from testkit.server import Server

COLUMNS = ["config", "rss_ready_mb", "rss_start_mb", "analyze_peak_mb", "faceswap_peak_mb", "enhance_peak_mb",
           "upscale2_peak_mb", "upscale2_growth_mb", "rss_settled_mb", "settled_growth_mb", "seconds"]
JEMALLOC_GLOBS = ["/usr/lib/x86_64-linux-gnu/libjemalloc.so*", "/usr/lib/libjemalloc.so*",
                  "/usr/local/lib/libjemalloc.so*", "/usr/lib64/libjemalloc.so*"]


def find_jemalloc(given: str) -> str | None:
    if given:
        return given if Path(given).is_file() else None
    for pattern in JEMALLOC_GLOBS:
        hits = sorted(glob.glob(pattern))
        if hits:
            return hits[0]
    return None


def configs(jemalloc: str | None) -> dict[str, dict[str, str]]:
    off = {"FACEAPI_MALLOC_TRIM_MB": "0", "FACEAPI_MALLOC_ARENA_MAX": "0"}
    out = {
        "baseline": off,
        "arena2": {**off, "MALLOC_ARENA_MAX": "2"},
        "mmap1m": {**off, "MALLOC_MMAP_THRESHOLD_": "1048576"},
        "trim": {**off, "FACEAPI_MALLOC_TRIM_MB": "64"},
        "trim+arena2": {"FACEAPI_MALLOC_TRIM_MB": "64", "FACEAPI_MALLOC_ARENA_MAX": "2"},
        "trim+mmap1m": {"FACEAPI_MALLOC_TRIM_MB": "64", "FACEAPI_MALLOC_ARENA_MAX": "0",
                        "MALLOC_MMAP_THRESHOLD_": "1048576"},
    }
    if jemalloc:
        out["jemalloc"] = {**off, "LD_PRELOAD": jemalloc}
    return out


def large_image(pixels: int) -> bytes:
    """The 6-face group photo enlarged to about ``pixels`` (JPEG q90): faces of ~600 px."""
    t1 = cv2.imread(standins.t1_path())
    h, w = t1.shape[:2]
    s = (pixels / (w * h)) ** 0.5
    big = cv2.resize(t1, (int(w * s), int(h * s)), interpolation=cv2.INTER_CUBIC)
    ok, buf = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def small_image() -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.imread(standins.t1_path()), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def source_face() -> bytes:
    t1 = cv2.imread(standins.t1_path())
    x0, y0, x1, y1 = 400, 240, 640, 480  # around the 4th face
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(t1[y0:y1, x0:x1]))
    assert ok
    return buf.tobytes()


def cases(big: bytes, face: bytes) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    f = lambda name, data: (name, io.BytesIO(data), "image/jpeg")  # noqa: E731
    return [
        ("analyze", "/analyze", {"image": f("image.jpg", big)}, {}),
        ("faceswap", "/faceswap", {"source_image": f("s.png", face), "target_image": f("t.jpg", big)},
         {"format": "jpeg"}),
        ("enhance", "/enhance", {"image": f("image.jpg", big)}, {"format": "jpeg"}),
        ("upscale2", "/enhance", {"image": f("image.jpg", big)}, {"upscale": "2", "faces": "[]"}),
    ]


def worker_pid(client: httpx.Client) -> int:
    return int(client.get("/readyz").json()["pid"])


def run_config(name: str, env: dict[str, str], big: bytes, rounds: int, tmp: Path) -> dict[str, Any]:
    d = tmp / name
    d.mkdir()
    server = Server({"FACEAPI_WEIGHTS_DIR": str(d / "weights"), "FACEAPI_DATA_DIR": str(d / "data"),
                     "FACEAPI_TEMP_DIR": str(d / "data" / "tmp"), "FACEAPI_STORAGE_URL": str(d / "bucket"),
                     "FACEAPI_ENABLED_JOBS": "analyze,faceswap,enhance", "FACEAPI_DEFAULT_BACKEND": "builtin",
                     "FACEAPI_AUDIT_LOG": "", **env}, workers=1, log_path=d / "server.log").start()
    try:
        with httpx.Client(base_url=server.url, timeout=600) as c:
            pid = worker_pid(c)
            row: dict[str, Any] = {"config": name, "rss_ready_mb": status_mb("VmRSS", pid)}
            small, face = small_image(), source_face()
            for _case, path, files, data in cases(small, face):  # warm-up: lazy imports, first-call caches
                assert c.post(path, files=files, data=data).status_code == 200, path
            time.sleep(0.5)
            row["rss_start_mb"] = start = status_mb("VmRSS", pid)
            t0 = time.perf_counter()
            peaks: dict[str, float] = {}
            for _ in range(rounds):
                for case, path, files, data in cases(big, face):
                    before = status_mb("VmRSS", pid)
                    reset_peak(pid)
                    r = c.post(path, files=files, data=data)
                    assert r.status_code == 200, (case, r.status_code, r.text[:300])
                    peak = status_mb("VmHWM", pid)
                    peaks[case] = max(peaks.get(case, 0.0), peak)
                    if case == "upscale2":
                        row["upscale2_growth_mb"] = max(row.get("upscale2_growth_mb", 0.0), peak - before)
            row["seconds"] = time.perf_counter() - t0
            time.sleep(2.0)
            row.update({f"{k}_peak_mb": v for k, v in peaks.items()})
            row["rss_settled_mb"] = settled = status_mb("VmRSS", pid)
            row["settled_growth_mb"] = settled - start
            return row
    finally:
        server.stop()


def main(args: argparse.Namespace) -> None:
    jemalloc = find_jemalloc(args.jemalloc)
    wanted = [c.strip() for c in args.configs.split(",") if c.strip()]
    chosen = {k: v for k, v in configs(jemalloc).items() if not wanted or k in wanted}
    big = large_image(int(args.mpix * 1e6))
    print(f"{len(big) / 1e6:.1f} MB JPEG of {args.mpix} MP, {args.rounds} rounds of analyze, faceswap, enhance, "
          f"enhance upscale=2; jemalloc: {jemalloc or 'none found'}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        for name, env in chosen.items():
            rows.append(run_config(name, env, big, args.rounds, Path(tmp)))
            print(table([rows[-1]], COLUMNS).splitlines()[-1], flush=True)
    print()
    print(table(rows, COLUMNS))
    path = write("memory", {"mpix": args.mpix, "rounds": args.rounds, "jemalloc": jemalloc, "pid": os.getpid(),
                            "rows": rows})
    print(f"\nwritten {path}")
