"""``python -m bench faceswap``: run a benchmark, print its table, write JSON under bench/results/."""

from __future__ import annotations

import argparse
import importlib


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    sub = parser.add_subparsers(dest="name", required=True)
    fs = sub.add_parser("faceswap", help="per-stage and HTTP latency of /faceswap, built-in and neural")
    fs.add_argument("--repeat", type=int, default=5, help="in-process repetitions per stage (median reported)")
    fs.add_argument("--requests", type=int, default=20, help="HTTP requests per case (sequential, then 4 at once)")
    fs.add_argument("--workers", type=int, default=2, help="uvicorn workers of the benchmarked server")
    en = sub.add_parser("enhance", help="latency per restorer and upscale factor, peak memory of a 4K upscale")
    en.add_argument("--repeat", type=int, default=3, help="repetitions per case (median reported)")
    sub.add_parser("media", help="720p decode/encode fps vs raw PyAV, pipeline throughput, peak RSS of 10 s/60 s")
    vi = sub.add_parser("video", help="video face swap: whole pipeline vs its detector + swapper alone, per stage")
    vi.add_argument("--seconds", type=float, default=10.0, help="length of the 720p clip")
    vi.add_argument("--configs", default="", help="comma-separated subset of builtin, neural, neural-heavy, "
                    "neural-heavy+gfpgan (default: all)")
    vi.add_argument("--rss-seconds", type=float, default=60.0,
                    help="length of the long clip for peak RSS, against --seconds (0 skips)")
    vi.add_argument("--frames-dir", default="", help="write the middle output frame of each configuration here (PNG)")
    vi.add_argument("--child", default="", help=argparse.SUPPRESS)  # internal: one configuration in a fresh process
    vi.add_argument("--clip", default="", help=argparse.SUPPRESS)
    vi.add_argument("--weights", default="", help=argparse.SUPPRESS)
    vi.add_argument("--out", default="", help=argparse.SUPPRESS)
    vi.add_argument("--frame-png", default="", help=argparse.SUPPRESS)
    vi.add_argument("--no-ceiling", action="store_true", help=argparse.SUPPRESS)
    ls = sub.add_parser("lipsync", help="lip sync with the real Wav2Lip architecture: end-to-end vs model alone, RSS")
    ls.add_argument("--seconds", type=float, default=10.0, help="length of the 720p clip for the fps row")
    ls.add_argument("--rss-seconds", type=float, default=60.0, help="length of the clip for the second RSS row")
    ls.add_argument("--batch", type=int, default=16, help="frames per model call")
    ls.add_argument("--workers", type=int, default=0, help="FACEAPI_LIPSYNC_WORKERS for the job (0: one per core)")
    ls.add_argument("--model-threads", type=int, default=0, help="FACEAPI_LIPSYNC_THREADS for the job (0: shared out)")
    gs = sub.add_parser("genderswap", help="SD 1.5 gender swap at 512², real-size networks: s/step, s/image, RSS")
    gs.add_argument("--steps", type=int, default=2, help="denoising steps run per image (projected to 30 × 0.6)")
    gs.add_argument("--size", type=int, default=512, help="working size (square)")
    gs.add_argument("--configs", default="", help="comma-separated subset of ours-inpaint, ours-img2img, reference")
    gs.add_argument("--child", default="", help=argparse.SUPPRESS)  # internal: one configuration in a fresh process
    pv = sub.add_parser("provenance", help="cost per output of the AI provenance marks (XMP, MP4 tags) and C2PA")
    pv.add_argument("--repeat", type=int, default=5, help="alternating off/on encodes per case (median reported)")
    pv.add_argument("--seconds", type=float, default=5.0, help="length of the 720p MP4")
    ns = sub.add_parser("nsfw", help="content gate (NudeNet 320n): ms per check at 1 MP and 12 MP, load time, RSS")
    ns.add_argument("--repeat", type=int, default=20, help="checks per picture (median and p95 reported)")
    ns.add_argument("--child", default="", help=argparse.SUPPRESS)  # internal: the measurements in a fresh process
    me = sub.add_parser("memory", help="worker RSS after ~36 MP requests (peak and settled) per malloc configuration")
    me.add_argument("--mpix", type=float, default=36.0, help="megapixels of the large picture")
    me.add_argument("--rounds", type=int, default=3, help="times the four large requests are sent")
    me.add_argument("--configs", default="", help="comma-separated subset of baseline, arena2, mmap1m, trim, "
                    "trim+arena2, trim+mmap1m, jemalloc (default: all)")
    me.add_argument("--jemalloc", default="", help="path of a libjemalloc.so for the jemalloc row (default: search)")
    ld = sub.add_parser("load", help="locustfile.py headless at 1-8 users per worker count: requests/s, latency, 503s")
    ld.add_argument("--seconds", type=int, default=15, help="run time of each step")
    ld.add_argument("--users", default="1,2,4,8", help="comma-separated user counts, one step each")
    ld.add_argument("--workers", default="1,2", help="comma-separated uvicorn worker counts (above the cores skipped)")
    ld.add_argument("--overload-users", type=int, default=8, help="users of the overload run (0 skips it)")
    ld.add_argument("--overload-queue", type=int, default=1, help="FACEAPI_MAX_QUEUE of the overload run's server")
    args = parser.parse_args()
    # each subcommand is the bench module of its name, imported only when run
    importlib.import_module(f"bench.{args.name}").main(args)


if __name__ == "__main__":
    main()
