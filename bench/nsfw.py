"""Content gate benchmark: what FACEAPI_NSFW costs per image at 1 MP and 12 MP, its load time and memory.

The real NudeNet 320n detector from the nudenet wheel, in a fresh process: RSS before and after loading, then per
picture the gate's whole check (``NsfwGate.check``: preprocessing, the model, decoding the detections) split into
its parts, against decoding the same picture as a JPEG upload (``decode_image``, what every request pays anyway) and
against nudenet's own preprocessing (pad to a square, ``blobFromImage``) that ours replaces.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from typing import Any

import cv2
import numpy as np
from PIL import Image

from bench.report import pct, reset_peak, run_child, status_mb, table, write

COLUMNS = ["image", "pixels_mp", "gate_p50_ms", "gate_p95_ms", "gate_min_ms", "gate_cpu_ms", "preprocess_ms",
           "model_ms", "postprocess_ms", "nudenet_preprocess_ms", "jpeg_decode_ms", "gate_vs_decode", "peak_rss_mb"]
LOAD_COLUMNS = ["load_s", "rss_before_mb", "rss_loaded_mb", "load_rss_mb", "providers"]
SIZES = {"1 MP (1224×816)": (1224, 816), "12 MP (4000×3000)": (4000, 3000)}


def _picture(w: int, h: int) -> np.ndarray:
    """insightface's t1.jpg (a group photo) scaled to w×h."""
    from testkit.standins import t1_path

    return cv2.resize(cv2.imread(t1_path()), (w, h), interpolation=cv2.INTER_CUBIC)


def child(repeat: int) -> dict[str, Any]:
    import onnxruntime  # noqa: F401 - a server has it imported already: the load row is the detector's own cost

    from app.media import decode_image
    from app.services.nsfw import NsfwGate
    from models.safety.labels import EXPLICIT
    from models.safety.nudenet import decode, preprocess

    rss_before = status_mb("VmRSS")
    gate = NsfwGate("block", EXPLICIT, 0.5, provider_pref="cpu")
    t0 = time.perf_counter()
    gate.load()
    load_s = time.perf_counter() - t0
    if gate.detector is None:
        raise SystemExit(f"the detector did not load: {gate.error}")
    rss_loaded = status_mb("VmRSS")
    det = gate.detector
    load = {"load_s": round(load_s, 3), "rss_before_mb": rss_before, "rss_loaded_mb": rss_loaded,
            "load_rss_mb": rss_loaded - rss_before, "providers": ",".join(det.session.get_providers())}
    cases = []
    for name, (w, h) in SIZES.items():
        img = _picture(w, h)
        buf = io.BytesIO()
        Image.fromarray(img[..., ::-1]).save(buf, "JPEG", quality=90)
        gate.check(img, "image")  # warm-up
        cases.append((name, w, h, img, buf.getvalue(), *preprocess(img)))
    samples: dict[str, dict[str, list[float]]] = {c[0]: {} for c in cases}

    def timed(name: str, key: str, fn: Any) -> Any:
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        samples[name].setdefault(key, []).append((time.perf_counter() - t0) * 1000)
        samples[name].setdefault(key + "_cpu", []).append((time.process_time() - c0) * 1000)
        return out

    def nudenet_pre(img: np.ndarray) -> np.ndarray:
        side = max(img.shape[:2])
        sq = cv2.copyMakeBorder(img, 0, side - img.shape[0], 0, side - img.shape[1], cv2.BORDER_CONSTANT)
        return cv2.dnn.blobFromImage(sq, 1 / 255.0, (320, 320), (0, 0, 0), swapRB=False, crop=False)

    peaks: dict[str, float] = {}
    for i in range(repeat):  # the cases interleaved, so a busy moment of a shared machine hits both alike
        for name, w, h, img, data, blob, scale in cases:
            reset_peak()
            timed(name, "gate", lambda img=img: gate.check(img, "image"))
            peaks[name] = max(peaks.get(name, 0.0), status_mb("VmHWM"))
            timed(name, "pre", lambda img=img: preprocess(img))
            out = timed(name, "model", lambda blob=blob: det.run({det.input_name: blob}))
            timed(name, "post", lambda out=out, scale=scale, w=w, h=h: decode(out, scale, w, h))
            timed(name, "nudenet_pre", lambda img=img: nudenet_pre(img))
            if i % 4 == 0:
                timed(name, "jpeg", lambda data=data: decode_image(data, "image", 100_000_000))
    rows = []
    for name, w, h, *_ in cases:
        m = samples[name]
        rows.append({
            "image": name, "pixels_mp": round(w * h / 1e6, 1), "gate_p50_ms": pct(m["gate"], 50),
            "gate_p95_ms": pct(m["gate"], 95), "gate_min_ms": min(m["gate"]), "gate_cpu_ms": pct(m["gate_cpu"], 50),
            "preprocess_ms": pct(m["pre"], 50), "model_ms": pct(m["model"], 50), "postprocess_ms": pct(m["post"], 50),
            "nudenet_preprocess_ms": pct(m["nudenet_pre"], 50), "jpeg_decode_ms": pct(m["jpeg"], 50),
            "gate_vs_decode": f"{pct(m['gate'], 50) / pct(m['jpeg'], 50):.2f}×", "peak_rss_mb": peaks[name],
        })
    return {"load": load, "rows": rows}


def main(args: argparse.Namespace) -> None:
    if args.child:
        print(json.dumps(child(args.repeat)))
        return
    got = run_child(["-m", "bench", "nsfw", "--child", "1", "--repeat", str(args.repeat)])
    print("**nsfw gate**: NudeNet 320n (nudenet wheel), one check per picture, CPU, ms")
    print(table(got["rows"], COLUMNS))
    print()
    print("**load** (fresh process; RSS after importing ONNX Runtime and OpenCV, then after loading)")
    print(table([got["load"]], LOAD_COLUMNS))
    path = write("nsfw", {"repeat": args.repeat, **got})
    print(f"\n{path}")
