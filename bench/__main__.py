"""``python -m bench faceswap``: run a benchmark, print its table, write JSON under bench/results/."""

from __future__ import annotations

import argparse


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
    vi.add_argument("--seconds", type=float, default=4.0, help="length of the 720p clip")
    args = parser.parse_args()
    if args.name == "faceswap":
        from bench import faceswap

        faceswap.main(args)
    elif args.name == "enhance":
        from bench import enhance

        enhance.main(args)
    elif args.name == "media":
        from bench import media

        media.main(args)
    elif args.name == "video":
        from bench import video

        video.main(args)


if __name__ == "__main__":
    main()
