"""``python -m bench lipsync``: /lipsync's pipeline with the real Wav2Lip architecture (random weights, PyTorch, the
published checkpoint layout) on a 720p, 25 fps clip with one face (Tom Hanks scaled to about 300 px, drifting) and
tone-burst audio as long as the clip.

Every run is a fresh subprocess, so its peak RSS (/proc VmHWM) is its own. ``e2e_fps`` is output frames over the
wall time of the whole job (decode, detect, track, crop, model, paste, encode, audio mux); ``model_fps`` runs the
model alone, afterwards in the same process, on as many batches of the same size (crops and mel windows prepared
beforehand), once in the job's arrangement (each batch shared out among the model workers) and once one call at a time
on every core. ``transcode_cpu_ms`` is the floor of any video job (decode, colour conversion both ways, x264 with
the server's settings), and ``bound`` = model CPU / (model CPU + transcode CPU) per frame: the most of the model
alone's fps that any pipeline decoding and encoding the clip could reach on a machine the model alone fills, before
face detection, crops and paste. The RSS rows repeat the job on a ``--seconds`` clip and a ``--rss-seconds`` clip.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import run_child, status_mb, table, transcode_cpu_ms, write

COLUMNS = ["seconds", "frames", "batch", "model_workers", "model_threads", "e2e_fps", "model_fps", "vs_model",
           "model_fps_all_cores", "vs_all_cores", "cpu_ms", "model_cpu_ms", "transcode_cpu_ms", "bound",
           "load", "peak_rss_mb"]


def _clip(d: Path, seconds: float) -> tuple[Path, Path]:
    import av
    import cv2

    from testkit.standins import t1_path

    hanks = Path(t1_path()).parent / "Tom_Hanks_54745.png"
    face = cv2.resize(cv2.imread(str(hanks)), (300, 300),
                      interpolation=cv2.INTER_CUBIC)
    video = d / f"clip{seconds:g}.mp4"
    with av.open(str(video), "w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 1280, 720, "yuv420p"
        vs.options = {"crf": "20", "preset": "veryfast"}
        y, x = np.mgrid[0:720, 0:1280]
        base = np.stack([(x * 200 // 1280), (y * 200 // 720), np.full_like(x, 90)], -1).astype(np.uint8)
        for i in range(int(seconds * 25)):
            img = base.copy()
            ox = 480 + int(40 * np.sin(i / 25))
            img[200:500, ox: ox + 300] = face
            vf = av.VideoFrame.from_ndarray(img, format="bgr24")
            vf.pts = i
            for p in vs.encode(vf):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
    rate = 16000
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.3 * ((t % 0.7) < 0.3) * np.sin(2 * np.pi * 220 * t) * 32767).astype(np.int16)
    audio = d / f"audio{seconds:g}.wav"
    with av.open(str(audio), "w", format="wav") as out:
        st = out.add_stream("pcm_s16le", rate=rate, layout="mono")
        fr = av.AudioFrame.from_ndarray(wave[None], format="s16", layout="mono")
        fr.sample_rate = rate
        for p in [*st.encode(fr), *st.encode(None)]:
            out.mux(p)
    return video, audio


def _weights(d: Path) -> Path:
    import torch

    from Wav2Lip.model import Wav2Lip

    torch.manual_seed(0)
    state = {f"module.{k}": v for k, v in Wav2Lip().state_dict().items()}
    torch.save({"state_dict": state, "global_step": 0}, d / "wav2lip_gan.pth")
    return d


def child(seconds: float, batch: int, weights: str, model_alone: bool, threads: int = 0,
          workers: int = 0) -> dict[str, Any]:
    """One job in this process; prints its row as JSON."""
    from app.config import Settings
    from app.schemas import LipsyncOptions
    from app.services.lipsync import lipsync
    from models.hub import ModelHub

    d = Path(tempfile.mkdtemp(prefix="bench-lipsync-"))
    video, audio = _clip(d, seconds)
    hub = ModelHub(Path(weights), ["lipsync"])
    hub.load()
    settings = Settings(weights_dir=weights, lipsync_threads=threads, lipsync_workers=workers)
    t0, c0 = time.perf_counter(), time.process_time()
    result = lipsync(hub, LipsyncOptions(backend="neural", batch_size=batch), settings, audio,
                     d / "out.mp4", video_path=video)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss = int(status_mb("VmHWM"))
    row: dict[str, Any] = {"seconds": seconds, "frames": result.frames, "batch": batch,
                           "e2e_fps": round(result.frames / wall, 2), "synced": result.frames_synced,
                           "cpu_ms": round(1000 * cpu / max(result.frames, 1), 1),
                           "load": round(os.getloadavg()[0], 2), "peak_rss_mb": rss,
                           "timings": {k: round(v, 1) for k, v in dict(result.timings).items()}}
    if model_alone:
        # The model alone on as many batches, twice: arranged as the job arranges it (``workers`` calls at once,
        # each on the job's thread count), then one call at a time on torch's default (every core), which is what
        # the model gets from a plain loop on an otherwise idle machine.
        from app.services.lipsync import model_threads, model_workers

        model = hub.loaded["lipsync"]["neural"]
        rng = np.random.default_rng(0)
        crops = rng.integers(0, 255, (batch, 96, 96, 3), np.uint8)
        mel = rng.uniform(-4, 4, (batch, 1, 80, 16)).astype(np.float32)
        n = -(-result.frames // batch)
        workers, per = model_workers(model, settings, True)
        row["model_workers"], row["model_threads"] = workers, per
        for key, w, t in (("model_fps", workers, per), ("model_fps_all_cores", 1, None)):
            with model_threads(model, t), ThreadPoolExecutor(w) as pool:

                def one_batch(pool: ThreadPoolExecutor = pool, w: int = w) -> None:  # shared out as the job does
                    list(pool.map(lambda k: model.predict_crops(mel[k::w], crops[k::w]), range(w)))

                one_batch()  # warm-up at this arrangement
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(n):
                    one_batch()
                row[key] = round(n * batch / (time.perf_counter() - t0), 2)
                row[key.replace("fps", "cpu_ms")] = round(1000 * (time.process_time() - c0) / (n * batch), 1)
        row["transcode_cpu_ms"] = round(transcode_cpu_ms(video, settings), 1)
        row["bound"] = f"{100 * row['model_cpu_ms'] / (row['model_cpu_ms'] + row['transcode_cpu_ms']):.0f} %"
        row["vs_model"] = f"{100 * row['e2e_fps'] / row['model_fps']:.0f} %"
        row["vs_all_cores"] = f"{100 * row['e2e_fps'] / row['model_fps_all_cores']:.0f} %"
    print(json.dumps(row))
    return row


def _run(seconds: float, batch: int, weights: Path, model_alone: bool, threads: int = 0,
         workers: int = 0) -> dict[str, Any]:
    code = (f"from bench.lipsync import child; "
            f"child({seconds!r}, {batch!r}, {str(weights)!r}, {model_alone!r}, {threads!r}, {workers!r})")
    return run_child(["-c", code])


def main(args: Any) -> None:
    weights = _weights(Path(tempfile.mkdtemp(prefix="bench-w2l-")))
    threads, workers = getattr(args, "model_threads", 0), getattr(args, "workers", 0)
    rows = [_run(args.seconds, args.batch, weights, True, threads, workers),
            _run(args.rss_seconds, args.batch, weights, False, threads, workers)]
    print(table(rows, COLUMNS))
    write("lipsync", {"rows": rows, "fps": str(Fraction(25))})


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rss-seconds", type=float, default=60.0)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=0, help="FACEAPI_LIPSYNC_WORKERS for the job (0: one per core)")
    p.add_argument("--model-threads", type=int, default=0, help="FACEAPI_LIPSYNC_THREADS for the job (0: shared out)")
    main(p.parse_args())
