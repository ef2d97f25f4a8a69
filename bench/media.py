"""``python -m bench media``: decode/encode fps of a 720p H.264 clip through app.media against PyAV's own loops (the
ceiling), streaming-pipeline throughput with an identity function, and peak RSS of a 10 s and a 60 s clip (must be
flat: memory may not grow with the clip's length). Decode rows are the fastest of 3 runs, encode rows of 2; the
machine is shared, so compare rows of one run only."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from app.media.pipeline import process_video
from app.media.video import VideoLimits, iter_frames
from app.media.writer import VideoWriter
from bench.report import reset_peak, run_child, status_mb, table, write
from bench.spool import SPOOL_COLUMNS, spool_rows
from testkit import standins
from testkit.clips import audio_frames, encode_all, tone, video_frames

W, H, FPS = 1280, 720, Fraction(30)
CRF, PRESET = 18, "veryfast"
COLUMNS = ["case", "frames", "seconds", "fps", "vs_ceiling"]
MEM_COLUMNS = ["clip", "frames", "seconds", "fps", "rss_before_mb", "peak_rss_mb", "growth_mb"]


def make_clip(path: Path, seconds: float) -> Path:
    """A photo-like 720p clip at 30 fps (a slow pan over the 6-face group photo) with an AAC tone."""
    t1 = cv2.imread(standins.t1_path())
    big = cv2.resize(t1, (W + 400, int((W + 400) * t1.shape[0] / t1.shape[1])), interpolation=cv2.INTER_CUBIC)
    n = int(seconds * FPS)
    out = av.open(str(path), "w", format="mp4")
    vs = out.add_stream("libx264", rate=FPS)
    vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
    vs.options = {"crf": "23", "preset": "ultrafast"}
    aus = out.add_stream("aac", rate=48000, layout="mono")

    def pan() -> Iterator[np.ndarray]:  # one frame at a time: a 60 s clip never sits in memory
        for i in range(n):
            x, y = (i * 2) % 400, (i // 3) % max(big.shape[0] - H, 1)
            yield np.ascontiguousarray(big[y:y + H, x:x + W])

    encode_all(out, vs, video_frames(pan()))
    encode_all(out, aus, audio_frames(tone(seconds, 48000), 48000))
    out.close()
    return path


def _timed(fn: Any, repeat: int = 1) -> tuple[int, float]:
    """(frames, seconds) of ``fn``; the fastest of ``repeat`` runs."""
    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = fn()
        s = time.perf_counter() - t0
        best = (n, s) if best is None or s < best[1] else best
    assert best is not None
    return best


def raw_decode(path: Path, convert: bool) -> int:
    """PyAV's own loop: threaded decode, optionally to BGR arrays (the ceiling for our reader)."""
    n = 0
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        for frame in c.decode(vs):
            if convert:
                frame.to_ndarray(format="bgr24")
            n += 1
    return n


def our_decode(path: Path) -> int:
    return sum(1 for _ in iter_frames(path))


def _frames(path: Path, count: int) -> list[np.ndarray]:
    out = []
    for frame, _ in iter_frames(path):
        out.append(frame)
        if len(out) >= count:
            break
    return out


def raw_encode(frames: list[np.ndarray], dst: Path, n: int) -> int:
    """PyAV's own loop with the same encoder settings: BGR array → libx264 → mp4 (the ceiling for our writer)."""
    with av.open(str(dst), "w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        vs.options = {"crf": str(CRF), "preset": PRESET}
        for i in range(n):
            f = av.VideoFrame.from_ndarray(frames[i % len(frames)], format="bgr24")
            f.pts = i
            for p in vs.encode(f):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
    return n


def our_encode(frames: list[np.ndarray], dst: Path, n: int) -> int:
    w = VideoWriter(dst, FPS, crf=CRF, preset=PRESET)
    for i in range(n):
        w.write(frames[i % len(frames)], i / float(FPS))
    return w.close().frames


def raw_transcode(src: Path, dst: Path) -> int:
    """PyAV's own single-threaded loop: decode → BGR array → back to a frame → libx264 (ceiling for the pipeline)."""
    n = 0
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mp4") as out:
        ivs = inp.streams.video[0]
        ivs.thread_type = "AUTO"
        vs = out.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        vs.options = {"crf": str(CRF), "preset": PRESET}
        for frame in inp.decode(ivs):
            f = av.VideoFrame.from_ndarray(frame.to_ndarray(format="bgr24"), format="bgr24")
            f.pts = n
            n += 1
            for p in vs.encode(f):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
    return n


def our_pipeline(src: Path, dst: Path) -> int:
    return process_video(src, dst, per_frame=lambda f: f, crf=CRF, preset=PRESET,
                         limits=VideoLimits(max_seconds=3600)).frames


def speed_rows(tmp: Path) -> list[dict[str, Any]]:
    clip = make_clip(tmp / "720p-10s.mp4", 10.0)
    rows: list[dict[str, Any]] = []

    def row(case: str, n: int, s: float, ceiling: float | None = None) -> dict[str, Any]:
        r = {"case": case, "frames": n, "seconds": s, "fps": n / s,
             "vs_ceiling": None if ceiling is None else f"{n / s / ceiling:.0%}"}
        rows.append(r)
        print(table([r], COLUMNS).splitlines()[-1], flush=True)
        return r

    raw_decode(clip, True)  # warm the page cache and the libraries
    row("decode: PyAV raw (frames only)", *_timed(lambda: raw_decode(clip, False), 3))
    ceiling = row("decode: PyAV raw → BGR arrays (ceiling)", *_timed(lambda: raw_decode(clip, True), 3))["fps"]
    row("decode: app.media iter_frames", *_timed(lambda: our_decode(clip), 3), ceiling)
    frames = _frames(clip, 150)  # the clip's first 5 s in memory (~400 MB), encoded as they come
    n = len(frames)
    ceiling = row(f"encode: PyAV raw libx264 {PRESET} crf{CRF} (ceiling)",
                  *_timed(lambda: raw_encode(frames, tmp / "raw.mp4", n), 2))["fps"]
    row("encode: app.media VideoWriter", *_timed(lambda: our_encode(frames, tmp / "ours.mp4", n), 2), ceiling)
    frames.clear()
    ceiling = row("transcode: PyAV raw decode → BGR → encode loop (ceiling)",
                  *_timed(lambda: raw_transcode(clip, tmp / "raw-t.mp4")))["fps"]
    row("pipeline: decode → identity → encode (+ audio copy)", *_timed(lambda: our_pipeline(clip, tmp / "p.mp4")),
        ceiling)
    return rows


def memory_child(src: str, dst: str) -> None:
    """Run in a fresh process: the identity pipeline over ``src``, peak RSS reported as one JSON line."""
    import app.media.pipeline  # noqa: F401 - everything imported before the baseline

    base = status_mb("VmRSS")
    reset_peak()
    n, s = _timed(lambda: our_pipeline(Path(src), Path(dst)))
    peak = status_mb("VmHWM")
    print(json.dumps({"clip": Path(src).stem, "frames": n, "seconds": s, "fps": n / s, "rss_before_mb": base,
                      "peak_rss_mb": peak, "growth_mb": peak - base}))


def memory_rows(tmp: Path) -> list[dict[str, Any]]:
    rows = []
    for seconds in (10.0, 60.0):
        src = tmp / f"720p-{int(seconds)}s.mp4"
        if not src.exists():
            make_clip(src, seconds)
        rows.append(run_child(["-m", "bench.media", "--memory-child", str(src), str(tmp / "m.mp4")]))
        print(table([rows[-1]], MEM_COLUMNS).splitlines()[-1], flush=True)
    return rows


def main(args: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        rows = speed_rows(tmp)
        spool = spool_rows(tmp)
        mem = memory_rows(tmp)
    print(f"\nmedia: 720p H.264 at 30 fps (photo-like pan), libx264 {PRESET} crf {CRF}, frames per second")
    print(table(rows, COLUMNS))
    print("\npeak RSS of the identity pipeline (fresh process each), 720p with AAC audio")
    print(table(mem, MEM_COLUMNS))
    print("\nupload spool: a multipart upload over HTTP to a one-worker server, streamed by the client")
    print(table(spool, SPOOL_COLUMNS))
    path = write("media", {"columns": COLUMNS, "rows": rows, "memory": mem, "memory_columns": MEM_COLUMNS,
                           "spool": spool, "spool_columns": SPOOL_COLUMNS})
    print(f"\nwrote {path}")


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--memory-child":
    memory_child(sys.argv[2], sys.argv[3])
