"""``python -m bench video``: the video face swap pipeline against its swap model alone, with peak memory.

The input is a 720p, 25 fps clip with one face (a slow pan over t1.jpg with its five other faces blurred away, AAC
tone), ``--seconds`` long (10 by default). Every configuration runs in a fresh subprocess, so its peak RSS
(/proc VmHWM) is its own:

- ``builtin``: dlib + the classical swap;
- ``neural``: the interface-exact stand-ins of testkit with near-free compute (this row measures our pre/post
  processing, paste-back and the pipeline, not a network);
- ``neural-heavy``: the same with ``make_inswapper_heavy`` (about 10 GFLOP of real convolutions per call, the order
  of inswapper_128 itself);
- ``neural-heavy+gfpgan``: the same plus face restoration (GFPGAN stand-in, ``face_upsample`` with upscale 1);
- ``neural-heavy-batched``: the heavy stand-in with a dynamic batch, so the pipeline calls it with
  ``FACEAPI_VIDEO_BATCH_SIZE`` faces from consecutive frames (and the model alone is timed on such batches).

Ceilings, measured in the same subprocess after the pipeline (after its RSS is read): ``swap_model_fps`` calls the
swap model alone as many times as there are frames (the ONNX session on one prepared crop; for builtin the
classical swap of one face, paste-back included); ``detect_swap_fps`` runs detect + swap (with paste-back) of the
best face on the decoded frames, decode not counted. ``cpu_ms`` is the process's CPU time per frame (all
threads) and ``swap_model_cpu_ms`` the swap model's alone per call: when the model alone already fills every core,
the pipeline can reach at most ``model_cpu_share`` (their ratio) of its fps, and unlike the fps columns that ratio
hardly moves when other jobs share the machine. ``transcode_cpu_ms`` is the floor of any video job (decode, colour
conversion both ways, x264 with the server's settings, audio copy: ``process_video`` with the identity) and
``bound`` = ``swap_model_cpu_ms`` / (``swap_model_cpu_ms`` + ``transcode_cpu_ms``): the most any pipeline that
decodes and encodes the clip could reach of the model alone's fps on a machine the model alone fills, before
detection, alignment and paste-back. The RSS rows run the near-free
neural pipeline on a ``--seconds`` clip and on a ``--rss-seconds`` clip (60 by default) in fresh subprocesses.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench.report import run_child, status_mb, table, transcode_cpu_ms, write
from testkit import standins

COLUMNS = ["config", "frames", "pipeline_fps", "swap_model_fps", "vs_swap_model", "detect_swap_fps", "detect_ms",
           "swap_ms", "enhance_ms", "other_ms", "cpu_ms", "swap_model_cpu_ms", "model_cpu_share", "transcode_cpu_ms",
           "bound", "peak_rss_mb", "audio"]
RSS_COLUMNS = ["clip_seconds", "frames", "pipeline_fps", "peak_rss_mb"]
SIZE = (1280, 720)
FPS = 25
SCALE = 1600 / 1280  # t1.jpg is shown 1600 px wide
FACE = 3  # the face of T1_FACES kept (the largest); the others are blurred away
SWING = 16  # px: the pan goes right and back over this many pixels (the stand-in SCRFD is static)
CONFIGS: dict[str, dict[str, Any]] = {
    "builtin": {"backend": "builtin", "weights": "light", "options": {}},
    "neural": {"backend": "neural", "weights": "light", "options": {}},
    "neural-heavy": {"backend": "neural", "weights": "heavy", "options": {}},
    "neural-heavy+gfpgan": {"backend": "neural", "weights": "heavy", "options": {"face_upsample": True}},
    "neural-heavy-batched": {"backend": "neural", "weights": "heavy-batched", "options": {}},
}


def _scene() -> np.ndarray:
    t1 = cv2.imread(standins.t1_path())
    for i, (box, _) in enumerate(standins.T1_FACES):
        if i == FACE:
            continue
        x1, y1, x2, y2 = (int(v) for v in box)
        m = (x2 - x1) // 3
        ys, xs = slice(max(y1 - m, 0), y2 + m), slice(max(x1 - m, 0), x2 + m)
        t1[ys, xs] = cv2.GaussianBlur(t1[ys, xs], (0, 0), 25)
    return cv2.resize(t1, (1600, int(1600 * t1.shape[0] / t1.shape[1])))


class Pan(Sequence):
    """The clip's frames, made on demand (a 60 s clip would be 4 GB as a list)."""

    def __init__(self, seconds: float) -> None:
        self.big = _scene()
        self.n = int(round(seconds * FPS))

    def __len__(self) -> int:
        return self.n

    def offset(self, i: int) -> int:
        k = i % (2 * SWING)
        return k if k <= SWING else 2 * SWING - k

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        if not 0 <= i < self.n:
            raise IndexError(i)
        x = self.offset(i)
        return np.ascontiguousarray(self.big[0:SIZE[1], x: x + SIZE[0]])

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(self.n))


def pan(seconds: float) -> Pan:
    return Pan(seconds)


def stand_in_face() -> standins.FaceSpec:
    """Where the kept face is, in frame pixels, half way through the swing."""
    box, kps = standins.T1_FACES[FACE]
    dx = SWING / 2
    return ([box[0] * SCALE - dx, box[1] * SCALE, box[2] * SCALE - dx, box[3] * SCALE],
            [[x * SCALE - dx, y * SCALE] for x, y in kps])


def make_weights(tmp: Path) -> dict[str, Path]:
    from testkit.standins_enhance import make_enhance_weights

    shape = (SIZE[1], SIZE[0], 3)
    light = standins.make_weights_dir(tmp / "light", shape, [stand_in_face()])
    heavy = standins.make_weights_dir(tmp / "heavy", shape, [stand_in_face()])
    standins.make_inswapper_heavy(heavy / "inswapper_128.onnx")
    make_enhance_weights(heavy)
    batched = standins.make_weights_dir(tmp / "heavy-batched", shape, [stand_in_face()])
    standins.make_inswapper_heavy(batched / "inswapper_128.onnx", batch="B")
    return {"light": light, "heavy": heavy, "heavy-batched": batched}


# ------------------------------------------------------------------------------------------- one subprocess
def child(args: Any) -> None:
    """One configuration in this (fresh) process: the pipeline, its peak RSS, then the ceilings. Prints one JSON."""
    from app.config import Settings
    from app.schemas import VideoSwapOptions
    from app.services.faceswap import swap_context
    from app.services.video_swap import swap_video
    from models.hub import ModelHub

    cfg = CONFIGS[args.child]
    hub = ModelHub(Path(args.weights), ["analyze", "faceswap"], provider_pref="cpu")
    hub.load()
    settings = Settings()
    opts = VideoSwapOptions(backend=cfg["backend"], **cfg["options"])
    source = Path(standins.t1_path()).parent / "Tom_Hanks_54745.png"
    out = Path(args.out)
    c0, t0 = time.process_time(), time.perf_counter()
    res = swap_video(swap_context(hub, settings, opts), opts, settings, [source], Path(args.clip), out)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    per = {k: v / res.frames for k, v in res.timings.items()}
    known = sum(per.get(k, 0.0) for k in ("detect", "swap", "enhance"))
    row: dict[str, Any] = {
        "config": args.child, "frames": res.frames, "frames_swapped": res.frames_swapped,
        "pipeline_fps": res.frames / seconds, "detect_ms": per.get("detect"), "swap_ms": per.get("swap"),
        "enhance_ms": per.get("enhance"), "other_ms": 1000 * seconds / res.frames - known,
        "cpu_ms": 1000 * cpu / res.frames, "peak_rss_mb": status_mb("VmHWM"), "audio": res.audio,
        "enhancer": res.enhancer,
    }
    if args.frame_png:
        from app.media.video import iter_frames

        for i, (frame, _) in enumerate(iter_frames(out)):
            if i == res.frames // 2:
                cv2.imwrite(args.frame_png, frame)
                break
    if not args.no_ceiling:
        row.update(ceilings(hub, cfg["backend"], Path(args.clip), source, res.frames))
        row["vs_swap_model"] = f"{row['pipeline_fps'] / row['swap_model_fps']:.0%}"
        row["model_cpu_share"] = f"{row['swap_model_cpu_ms'] / row['cpu_ms']:.0%}"
        row["transcode_cpu_ms"] = transcode_cpu_ms(Path(args.clip), settings)
        row["bound"] = f"{row['swap_model_cpu_ms'] / (row['swap_model_cpu_ms'] + row['transcode_cpu_ms']):.0%}"
    print(json.dumps(row), flush=True)


def ceilings(hub: Any, backend: str, clip: Path, source: Path, calls: int) -> dict[str, float]:
    from app.config import Settings
    from app.media.video import iter_frames
    from app.schemas import VideoSwapOptions
    from app.services.common import Timings
    from app.services.faceswap import load_sources, swap_context
    from models import align
    from models.face import best_face
    from models.onnx_model import call_batch

    opts = VideoSwapOptions(backend=backend)  # type: ignore[arg-type]
    sources = load_sources(swap_context(hub, Settings(), opts), backend, [source.read_bytes()], Timings())
    analyser, swapper = hub.analyser(backend), hub.swapper(backend)
    first = next(iter_frames(clip))[0]
    face = best_face(analyser.get(first))
    assert face is not None, "no face in the benchmark clip"
    # The swap model alone, ``calls`` times.
    if backend == "neural":
        # in the pipeline's batches: FACEAPI_VIDEO_BATCH_SIZE crops a call when the graph takes any batch
        batch = call_batch(Settings().video_batch_size, swapper.fixed_batch)
        crop, _ = align.norm_crop(first, face.kps, swapper.crop_size)
        blob = cv2.dnn.blobFromImages([crop] * batch, 1.0 / 255.0, crop.shape[:2][::-1], (0.0, 0.0, 0.0),
                                      swapRB=True)
        lat = np.repeat(swapper.latent(sources.faces[0]), batch, axis=0)
        feeds = {swapper.input_names[0]: blob, swapper.input_names[1]: lat}
        calls = -(-calls // batch)

        def once() -> None:
            swapper.session.run(None, feeds)
    else:
        batch = 1

        def once() -> None:
            swapper.get(first, face, sources.faces[0], sources.images[0])
    once()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(calls):
        once()
    swap_model_fps = calls * batch / (time.perf_counter() - t0)
    swap_model_cpu_ms = 1000 * (time.process_time() - c0) / (calls * batch)
    # Detect + swap (with paste-back) on decoded frames; decoding is not timed.
    spent = 0.0
    n = 0
    for frame, _ in iter_frames(clip):
        t0 = time.perf_counter()
        got = best_face(analyser.get(frame))
        if got is not None:
            swapper.get(frame, got, sources.faces[0], sources.images[0])
        spent += time.perf_counter() - t0
        n += 1
    return {"swap_model_fps": swap_model_fps, "swap_model_cpu_ms": swap_model_cpu_ms, "detect_swap_fps": n / spent}


def _run_child(config: str, clip: Path, weights: Path, out: Path, ceiling: bool = True,
               frame_png: Path | None = None) -> dict[str, Any]:
    cmd = ["-m", "bench", "video", "--child", config, "--clip", str(clip), "--weights", str(weights),
           "--out", str(out)]
    if not ceiling:
        cmd.append("--no-ceiling")
    if frame_png is not None:
        cmd += ["--frame-png", str(frame_png)]
    return run_child(cmd)


def main(args: Any) -> None:
    if args.child:
        child(args)
        return
    from testkit.clips import write_frames_clip

    wanted = [c.strip() for c in args.configs.split(",") if c.strip()] if args.configs else list(CONFIGS)
    rows: list[dict[str, Any]] = []
    rss_rows: list[dict[str, Any]] = []
    frames_dir = Path(args.frames_dir) if args.frames_dir else None
    if frames_dir is not None:
        frames_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        clip = write_frames_clip(tmp / "clip.mp4", pan(args.seconds), FPS, crf=18)
        weights = make_weights(tmp / "w")
        for name in wanted:
            png = frames_dir / f"video-{name}.png" if frames_dir is not None else None
            row = _run_child(name, clip, weights[CONFIGS[name]["weights"]], tmp / "out.mp4", frame_png=png)
            rows.append(row)
            print(table([row], COLUMNS).splitlines()[-1], flush=True)
        if args.rss_seconds > 0:
            long_clip = write_frames_clip(tmp / "long.mp4", pan(args.rss_seconds), FPS, crf=18)
            for seconds, path in ((args.seconds, clip), (args.rss_seconds, long_clip)):
                got = _run_child("neural", path, weights["light"], tmp / "out.mp4", ceiling=False)
                rss_rows.append({"clip_seconds": seconds, **got})
                print(table([rss_rows[-1]], RSS_COLUMNS).splitlines()[-1], flush=True)
    print(f"\nvideo face swap, {SIZE[0]}×{SIZE[1]} at {FPS} fps, {args.seconds:g} s, one face; each configuration in a "
          f"fresh process ({os.cpu_count()} CPUs). ms are per frame; other = decode, tracking, encode and queue waits "
          "not hidden by the threads; cpu = the process's CPU per frame, all threads")
    print(table(rows, COLUMNS))
    if rss_rows:
        print("\npeak RSS of the near-free neural pipeline by clip length (fresh process each, /proc VmHWM)")
        print(table(rss_rows, RSS_COLUMNS))
        growth = rss_rows[-1]["peak_rss_mb"] - rss_rows[0]["peak_rss_mb"]
        print(f"growth {args.seconds:g} s → {args.rss_seconds:g} s: {growth:+.1f} MB")
    print(f"\nwrote {write('video', {'columns': COLUMNS, 'rows': rows, 'rss': rss_rows, 'seconds': args.seconds})}")
