"""Shared bench plumbing: timing, percentiles, fresh child processes, the printed table and the JSON file."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parent.parent


def status_mb(key: str, pid: int | str = "self") -> float:
    """``VmRSS``, ``VmHWM`` (peak) … of a process from /proc, in MB (ru_maxrss would include a parent's size from
    before exec); NaN when absent."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak(pid: int | str = "self") -> None:
    """Reset a process's peak RSS (VmHWM) to its current RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def run_child(args: list[str]) -> dict[str, Any]:
    """``python *args`` in a fresh process from the repo root (so its peak RSS is its own), returning the JSON object
    printed on the last line of its output; its stderr tail when it fails."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"python {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def time_ms(fn: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    """Run ``fn`` ``repeat`` times; per-run milliseconds and the last result."""
    out = None
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples, out


def pct(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q)) if samples else float("nan")


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.1f}"
        return "-" if v is None else str(v)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |" for row in cells]
    return "\n".join([line, sep, *body])


def write(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        **payload,
    }
    path = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(payload, indent=2))
    (RESULTS / f"{name}-latest.json").write_text(json.dumps(payload, indent=2))
    return path


def transcode_cpu_ms(clip: Path, settings: Any) -> float:
    """The floor of any video job here: the process's CPU per frame to decode ``clip``, convert to BGR and back and
    encode it with the server's x264 settings (``process_video`` with the identity function, audio copied). When a
    model alone already fills every core, a pipeline reaches at most ``model_cpu / (model_cpu + this)`` of the
    model's fps, whatever it overlaps."""
    import tempfile

    from app.media.pipeline import process_video

    with tempfile.TemporaryDirectory() as d:
        c0 = time.process_time()
        res = process_video(clip, Path(d) / "t.mp4", per_frame=lambda f: f, crf=settings.video_crf,
                            preset=settings.video_preset)
        return 1000 * (time.process_time() - c0) / max(res.frames, 1)
