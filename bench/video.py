"""``python -m bench video``: the video face swap pipeline against its own model calls alone.

A 720p clip (a pan over t1.jpg, AAC tone) is swapped by the whole pipeline (decode → detect → track → swap → encode,
audio copied) and, as the ceiling, by a loop that only calls the detector and the swapper on the same frames held in
memory. The neural rows use the interface-exact stand-in models of testkit (they measure our pre/post-processing,
paste-back and the pipeline, not inswapper's real cost)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from app.config import Settings
from app.schemas import VideoSwapOptions
from app.services.faceswap import load_sources, swap_context
from app.services.video_swap import swap_video
from bench.report import table, write
from models.face import best_face
from models.hub import ModelHub
from testkit import standins
from testkit.clips import write_frames_clip

COLUMNS = ["backend", "frames", "pipeline_fps", "model_only_fps", "vs_model_only", "detect_ms", "swap_ms",
           "other_ms", "audio"]
SIZE = (1280, 720)
FPS = 25


def pan(seconds: float) -> list[np.ndarray]:
    t1 = cv2.imread(standins.t1_path())
    big = cv2.resize(t1, (1600, int(1600 * t1.shape[0] / t1.shape[1])))
    n = int(seconds * FPS)
    return [np.ascontiguousarray(big[0:SIZE[1], 2 * i: 2 * i + SIZE[0]]) for i in range(n)]


def model_only(hub: ModelHub, backend: str, frames: list[np.ndarray], source: Path) -> float:
    """Frames per second of detect + swap of the best face alone, frames already decoded, nothing encoded."""
    opts = VideoSwapOptions(backend=backend)  # type: ignore[arg-type]
    ctx = swap_context(hub, Settings(), opts)
    from app.services.common import Timings

    sources = load_sources(ctx, backend, [source.read_bytes()], Timings())
    analyser, swapper = hub.analyser(backend), hub.swapper(backend)
    t0 = time.perf_counter()
    for f in frames:
        face = best_face(analyser.get(f))
        if face is not None:
            swapper.get(f, face, sources.faces[0], sources.images[0])
    return len(frames) / (time.perf_counter() - t0)


def main(args: Any) -> None:
    frames = pan(args.seconds)
    source = Path(standins.t1_path()).parent / "Tom_Hanks_54745.png"
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        clip = write_frames_clip(tmp / "clip.mp4", frames, FPS, crf=18)
        faces = list(standins.T1_FACES)
        scale = 1600 / 1280  # where t1's faces land in the first frame of the pan (the stand-in SCRFD is static)
        moved = [([v * scale for v in b], [[x * scale, y * scale] for x, y in k]) for b, k in faces]
        hub = ModelHub(standins.make_weights_dir(tmp / "w", frames[0].shape, moved), ["analyze", "faceswap"],
                       provider_pref="cpu")
        hub.load()
        settings = Settings()
        for backend in ("builtin", "neural"):
            opts = VideoSwapOptions(backend=backend)  # type: ignore[arg-type]
            t0 = time.perf_counter()
            res = swap_video(swap_context(hub, settings, opts), opts, settings, [source], clip, tmp / "out.mp4")
            seconds = time.perf_counter() - t0
            ceiling = model_only(hub, backend, frames, source)
            per = {k: v / res.frames for k, v in res.timings.items()}
            row = {"backend": backend if backend == "builtin" else "neural (stand-in)", "frames": res.frames,
                   "pipeline_fps": res.frames / seconds, "model_only_fps": ceiling,
                   "vs_model_only": f"{res.frames / seconds / ceiling:.0%}", "detect_ms": per.get("detect"),
                   "swap_ms": per.get("swap"),
                   "other_ms": 1000 * seconds / res.frames - per.get("detect", 0) - per.get("swap", 0),
                   "audio": res.audio}
            rows.append(row)
            print(table([row], COLUMNS).splitlines()[-1], flush=True)
    print(f"\nvideo face swap, {SIZE[0]}×{SIZE[1]} at {FPS} fps, {len(frames)} frames, one face swapped per frame "
          "(ms are per frame; other = decode, tracking, encode and queue waits not hidden by the threads)")
    print(table(rows, COLUMNS))
    print(f"\nwrote {write('video', {'columns': COLUMNS, 'rows': rows, 'seconds': args.seconds})}")
