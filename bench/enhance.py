"""Enhance benchmark: latency per restorer and per upscale factor, and peak memory of a 4K background upscale.

GFPGAN, CodeFormer, Real-ESRGAN, XSeg and BiSeNet are stand-ins with the real files' interfaces
(tests/standins_enhance.py): their rows measure our pre/post-processing, tiling and paste-back, not the networks.
The built-in restorer and Lanczos are the real thing.
"""

from __future__ import annotations

import json
import sys
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from app.config import Settings
from app.schemas import EnhanceOptions
from app.services.enhance import apply_enhancement, plan_enhancement
from bench.report import pct, reset_peak, run_child, status_mb, table, time_ms, write
from models.face import Face
from models.hub import ModelHub
from testkit import standins
from testkit.standins_enhance import make_enhance_weights

COLUMNS = ["image", "restorer", "upscale", "background", "upscaler", "faces", "p50_ms", "p95_ms", "out_mpix"]
MEM_COLUMNS = ["input", "upscale", "upscaler", "faces", "seconds", "numpy_peak_mb", "rss_before_mb", "rss_peak_mb",
               "output_mb"]

MAX_OUTPUT_PIXELS = Settings().max_output_pixels


def _faces(specs: list[standins.FaceSpec], s: float = 1.0, dx: float = 0, dy: float = 0) -> list[Face]:
    out = []
    for bbox, kps in specs:
        b = np.array([(bbox[0] - dx) * s, (bbox[1] - dy) * s, (bbox[2] - dx) * s, (bbox[3] - dy) * s], np.float32)
        k = np.array([[(x - dx) * s, (y - dy) * s] for x, y in kps], np.float32)
        out.append(Face(bbox=b, score=0.9, kps=k))
    return out


def bench_images() -> dict[str, tuple[np.ndarray, list[Face]]]:
    t1 = cv2.imread(standins.t1_path())
    x0, y0, side = 364, 212, 300
    one = cv2.resize(t1[y0:y0 + side, x0:x0 + side], (1024, 1024), interpolation=cv2.INTER_CUBIC)
    return {
        "1-face 1024²": (one, _faces([standins.T1_FACES[3]], 1024 / side, x0, y0)),
        "6-face 1280×886": (t1, _faces(list(standins.T1_FACES))),
    }


def load_hub(tmp: Path) -> ModelHub:
    make_enhance_weights(tmp)
    hub = ModelHub(tmp, ["enhance"], provider_pref="cpu")
    hub.load()
    return hub


def latency_rows(hub: ModelHub, repeat: int) -> list[dict[str, Any]]:
    rows = []
    for name, (img, faces) in bench_images().items():
        cases = [(r, 1, False) for r in ("gfpgan", "codeformer", "builtin")]
        cases += [("gfpgan", s, False) for s in (2, 3, 4)] + [("gfpgan", s, True) for s in (1, 2, 4)]
        for restorer, scale, background in cases:
            opts = EnhanceOptions(enhancer=restorer, upscale=scale, background_enhance=background)
            plan = plan_enhancement(hub, opts, img.shape[1], img.shape[0], MAX_OUTPUT_PIXELS)
            samples, res = time_ms(lambda p=plan, i=img, f=faces: apply_enhancement(i, None, f, p), repeat)
            rows.append({"image": name, "restorer": restorer, "upscale": scale, "background": background,
                         "upscaler": res.upscaler, "faces": res.faces, "p50_ms": pct(samples, 50),
                         "p95_ms": pct(samples, 95), "out_mpix": res.image.shape[0] * res.image.shape[1] / 1e6})
            print(table([rows[-1]], COLUMNS).splitlines()[-1], flush=True)
    return rows


def memory_child(weights: str, scale: int) -> None:
    """Run in a fresh process: one 3840×2160 picture, 6 faces, background upscaled by the x2 model."""
    import time

    hub = ModelHub(Path(weights), ["enhance"], provider_pref="cpu")
    hub.load()
    t1 = cv2.imread(standins.t1_path())
    sx, sy = 3840 / t1.shape[1], 2160 / t1.shape[0]
    img = cv2.resize(t1, (3840, 2160), interpolation=cv2.INTER_CUBIC)
    faces = []
    for f in _faces(list(standins.T1_FACES)):
        f.bbox = f.bbox * np.array([sx, sy, sx, sy], np.float32)
        f.kps = f.kps * np.array([sx, sy], np.float32)
        faces.append(f)
    base = status_mb("VmRSS")  # models loaded, input decoded
    reset_peak()
    tracemalloc.start()
    t0 = time.perf_counter()
    plan = plan_enhancement(hub, EnhanceOptions(enhancer="gfpgan", upscale=scale, background_enhance=True),
                            img.shape[1], img.shape[0], MAX_OUTPUT_PIXELS)
    res = apply_enhancement(img, None, faces, plan)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    peak_rss = status_mb("VmHWM")
    print(json.dumps({"input": "3840×2160", "upscale": scale, "upscaler": res.upscaler, "faces": res.faces,
                      "seconds": seconds, "numpy_peak_mb": peak / 2**20, "rss_before_mb": base,
                      "rss_peak_mb": peak_rss,
                      "output_mb": res.image.nbytes / 2**20}))


def memory_rows(weights: Path) -> list[dict[str, Any]]:
    rows = []
    for scale in (1, 2):
        rows.append(run_child(["-m", "bench.enhance", "--memory-child", str(weights), str(scale)]))
        print(table([rows[-1]], MEM_COLUMNS).splitlines()[-1], flush=True)
    return rows


def main(args: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        hub = load_hub(Path(tmp))
        rows = latency_rows(hub, args.repeat)
        mem = memory_rows(Path(tmp))
    print("\nenhance: whole enhancement step in-process (faces given), ms")
    print(table(rows, COLUMNS))
    print("\npeak memory, 4K input with background upscaling (x2 model, tiled 400 px), fresh process")
    print(table(mem, MEM_COLUMNS))
    path = write("enhance", {"columns": COLUMNS, "rows": rows, "memory": mem, "repeat": args.repeat})
    print(f"\nwrote {path}")


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--memory-child":
    memory_child(sys.argv[2], int(sys.argv[3]))
