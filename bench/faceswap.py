"""Face swap benchmark: per-stage latency in-process and end-to-end HTTP latency through a real server.

Built-in backend: the real dlib models and classical swap. Neural backend: stand-in ONNX models with the real
files' interfaces (tests/standins.py), since the real weights are not on the build machines; its rows measure
our pre/post-processing and the serving path, not the cost of inswapper itself.
"""

from __future__ import annotations

import concurrent.futures as cf
import tempfile
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np

from app.media import decode_image, encode_image
from app.schemas import SwapOptions
from app.services.faceswap import SwapContext, swap
from bench.report import pct, table, time_ms, write
from models import align
from models.face import best_face
from models.hub import ModelHub
from testkit import standins
from testkit.server import Server

COLUMNS = ["backend", "image", "faces", "decode", "detect", "embed", "align", "swap", "paste", "encode",
           "total", "http_p50", "http_p95", "c4_p50", "c4_p95", "c4_rps"]


def bench_images() -> dict[str, tuple[np.ndarray, list[standins.FaceSpec]]]:
    """The 6-face group photo, and a 512² single-face crop of it (with its face in crop coordinates)."""
    t1 = cv2.imread(standins.t1_path())
    x0, y0, side, out = 364, 212, 300, 512
    crop = cv2.resize(t1[y0:y0 + side, x0:x0 + side], (out, out), interpolation=cv2.INTER_CUBIC)
    s = out / side
    bbox, kps = standins.T1_FACES[3]
    one = [([(bbox[0] - x0) * s, (bbox[1] - y0) * s, (bbox[2] - x0) * s, (bbox[3] - y0) * s],
            [[(x - x0) * s, (y - y0) * s] for x, y in kps])]
    return {"1-face 512²": (crop, one), "6-face 1280×886": (t1, list(standins.T1_FACES))}


def _png(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


def stage_times(hub: ModelHub, backend: str, target: bytes, source: bytes, repeat: int) -> dict[str, Any]:
    analyser, swapper = hub.analyser(backend), hub.swapper(backend)
    row: dict[str, Any] = {}
    dec, tgt = time_ms(lambda: decode_image(target, "target_image", 10**9), repeat)
    src = decode_image(source, "source_image", 10**9)
    det, faces = time_ms(lambda: analyser.get(tgt.bgr), repeat)
    src_face = best_face(analyser.get(src.bgr))
    tgt_face = best_face(faces)
    assert src_face is not None and tgt_face is not None, "bench images must have faces"
    row.update(faces=len(faces), decode=pct(dec, 50), detect=pct(det, 50))
    if swapper.needs_source_embedding:
        emb, _ = time_ms(lambda: analyser.embed(src.bgr, src_face), repeat)
        row["embed"] = pct(emb, 50)
        latent = swapper.latent(src_face)
        al, (_, m) = time_ms(lambda: align.norm_crop(tgt.bgr, tgt_face.kps, 128), repeat)
        sw, (crop, m) = time_ms(lambda: swapper.swap_crop(tgt.bgr, tgt_face, latent), repeat)
        pa, out = time_ms(lambda: align.paste_back(tgt.bgr, crop, m), repeat)
        row.update(align=pct(al, 50), swap=pct(sw, 50) - pct(al, 50), paste=pct(pa, 50))
    else:
        sw, out = time_ms(lambda: swapper.get(tgt.bgr, tgt_face, src_face, src.bgr), repeat)
        row["swap"] = pct(sw, 50)  # warp + colour transfer + blend are one pass in the classical swapper
    enc, _ = time_ms(lambda: encode_image(out, "png"), repeat)
    row["encode"] = pct(enc, 50)
    row["total"] = sum(v for k, v in row.items() if k not in ("faces",) and isinstance(v, float))
    return row


def http_times(server: Server, backend: str, target: bytes, source: bytes, requests: int) -> dict[str, Any]:
    files = {"source_image": ("source.png", source), "target_image": ("target.png", target)}
    data = {"backend": backend}

    def one(_: int = 0) -> float:
        with server.client() as c:
            samples, r = time_ms(lambda: c.post("/faceswap", files=files, data=data), 1)
            assert r.status_code == 200, r.text
            assert r.headers["x-face-backend"] == backend
            return samples[0]

    one(), one()  # warm both workers
    seq = [one() for _ in range(requests)]
    with cf.ThreadPoolExecutor(4) as ex:
        wall, conc = time_ms(lambda: list(ex.map(one, range(requests))), 1)
    return {"http_p50": pct(seq, 50), "http_p95": pct(seq, 95), "c4_p50": pct(conc, 50), "c4_p95": pct(conc, 95),
            "c4_rps": requests / (wall[0] / 1000)}


MODE_COLUMNS = ["backend", "mode", "faces_swapped", "p50_ms", "p95_ms"]
URL_COLUMNS = ["backend", "targets", "concurrency", "wall_ms", "per_target_ms"]
MODES = ("one_to_one", "one_to_many", "sorted", "similarity")


def mode_rows(hub: ModelHub, img: np.ndarray, repeat: int) -> list[dict[str, Any]]:
    """The whole swap service (decode → detect → pair → swap → encode) per mode, t1 as source and target."""
    data = _png(img)
    rows = []
    for backend in ("builtin", "neural"):
        for mode in MODES:
            ctx = SwapContext(hub=hub, options=SwapOptions(mode=mode, backend=backend))
            samples, result = time_ms(lambda ctx=ctx: swap(ctx, [data], data), repeat)
            rows.append({"backend": backend, "mode": mode, "faces_swapped": result.faces_swapped,
                         "p50_ms": pct(samples, 50), "p95_ms": pct(samples, 95)})
            print(table([rows[-1]], MODE_COLUMNS).splitlines()[-1], flush=True)
    return rows


def swap_url_rows(img: np.ndarray, faces: list[standins.FaceSpec], source: bytes, tmp: Path,
                  workers: int) -> list[dict[str, Any]]:
    """/swap_url with 8 targets, one target at a time vs FACEAPI_SWAP_URL_CONCURRENCY=4."""
    wdir = standins.make_weights_dir(tmp / "wurl", img.shape, faces)
    bucket = tmp / "bucket"
    bucket.mkdir()
    (bucket / "face.png").write_bytes(source)
    names = []
    for i in range(8):
        (bucket / f"t{i}.png").write_bytes(_png(img))
        names.append(f"t{i}.png")
    rows = []
    for concurrency in (1, 4):
        server = Server({"FACEAPI_WEIGHTS_DIR": str(wdir), "FACEAPI_EXECUTION_PROVIDER": "cpu",
                         "FACEAPI_STORAGE_URL": str(bucket), "FACEAPI_SWAP_URL_CONCURRENCY": str(concurrency)},
                        workers=workers).start()
        try:
            for backend in ("builtin", "neural"):
                body = {"face_filename": "face.png", "model_filenames": names, "options": {"backend": backend}}
                with server.client() as c:
                    assert c.post("/swap_url", json=body).status_code == 200  # warm-up
                    samples, r = time_ms(lambda c=c, body=body: c.post("/swap_url", json=body), 3)
                assert r.status_code == 200, r.text
                wall = pct(samples, 50)
                rows.append({"backend": backend, "targets": len(names), "concurrency": concurrency,
                             "wall_ms": wall, "per_target_ms": wall / len(names)})
                print(table([rows[-1]], URL_COLUMNS).splitlines()[-1], flush=True)
        finally:
            server.stop()
    return rows


def run(repeat: int = 5, requests: int = 20, workers: int = 2) -> list[dict[str, Any]]:
    source = Path(standins.t1_path()).parent / "Tom_Hanks_54745.png"
    source_bytes = source.read_bytes()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for image_name, (img, faces) in bench_images().items():
            target = _png(img)
            wdir = standins.make_weights_dir(Path(tmp) / f"w{len(rows)}", img.shape, faces)
            hub = ModelHub(wdir, ["analyze", "faceswap"], provider_pref="cpu")
            hub.load()
            server = Server({"FACEAPI_WEIGHTS_DIR": str(wdir), "FACEAPI_EXECUTION_PROVIDER": "cpu"},
                            workers=workers).start()
            try:
                for backend in ("builtin", "neural"):
                    row = {"backend": backend if backend == "builtin" else "neural (stand-in)", "image": image_name}
                    row.update(stage_times(hub, backend, target, source_bytes, repeat))
                    row.update(http_times(server, backend, target, source_bytes, requests))
                    rows.append(row)
                    print(table([row], COLUMNS).splitlines()[-1], flush=True)
            finally:
                server.stop()
    return rows


def main(args: Any) -> None:
    rows = run(repeat=args.repeat, requests=args.requests, workers=args.workers)
    images = bench_images()
    t1, t1_faces = images["6-face 1280×886"]
    one, one_faces = images["1-face 512²"]
    with tempfile.TemporaryDirectory() as tmp:
        hub = ModelHub(standins.make_weights_dir(Path(tmp) / "w", t1.shape, t1_faces), ["analyze", "faceswap"],
                       provider_pref="cpu")
        hub.load()
        modes = mode_rows(hub, t1, args.repeat)
        source = (Path(standins.t1_path()).parent / "Tom_Hanks_54745.png").read_bytes()
        urls = swap_url_rows(one, one_faces, source, Path(tmp), args.workers)
    print()
    print("faceswap: per-stage medians (ms, in-process) and HTTP latency (ms) through uvicorn with "
          f"{args.workers} workers; c4 = 4 concurrent clients")
    print(table(rows, COLUMNS))
    print("\nswap modes on the 6-face image (whole service in-process, t1 as source and target)")
    print(table(modes, MODE_COLUMNS))
    print("\n/swap_url with 8 targets (1-face 512² images) by FACEAPI_SWAP_URL_CONCURRENCY")
    print(table(urls, URL_COLUMNS))
    path = write("faceswap", {"columns": COLUMNS, "rows": rows, "modes": modes, "swap_url": urls,
                              "repeat": args.repeat, "requests": args.requests, "workers": args.workers,
                              "httpx": httpx.__version__})
    print(f"\nwrote {path}")
