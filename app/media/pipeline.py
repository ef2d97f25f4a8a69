"""Streaming video processing: decoder thread → bounded queue → the caller's function → bounded queue → encoder
thread. Memory holds at most a few queues' worth of frames whatever the clip's length."""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from app.media.mux import AudioMode, AudioOutcome
from app.media.queues import END, Failure, abandon, finish, get, put
from app.media.video import VideoInfo, VideoLimits, iter_frames, probe_video
from app.media.writer import VideoWriter

FrameFn = Callable[[np.ndarray], np.ndarray]
BatchFn = Callable[[list[np.ndarray]], Sequence[np.ndarray]]


class Stage(Protocol):
    """A processing step that may hold frames back for a while (a look-ahead): ``push`` takes the next frame and
    returns the frames now ready, oldest first (possibly none); ``flush`` returns the rest at the end. Over the
    whole clip it returns exactly one frame per frame pushed, in order."""

    def push(self, frame: np.ndarray) -> list[np.ndarray]: ...

    def flush(self) -> list[np.ndarray]: ...
Progress = Callable[[int, int], None]



class Canceled(Exception):
    """Raised by a progress callback (or anything else) to stop :func:`process_video`; nothing is left behind."""


@dataclass(frozen=True)
class PipelineResult:
    """What :func:`process_video` produced."""

    path: Path
    frames: int
    duration: float  # seconds of output video
    width: int
    height: int
    audio: AudioOutcome
    source: VideoInfo


def process_video(
    src: str | Path, dst: str | Path, *, per_frame: FrameFn | None = None, per_batch: BatchFn | None = None,
    stage: Stage | None = None,
    batch_size: int = 8, field: str = "video", limits: VideoLimits | None = None, start: float | None = None,
    end: float | None = None, crf: int = 18, preset: str = "veryfast", audio_source: str | Path | None = None,
    audio: AudioMode = "keep", progress: Progress | None = None, queue_frames: int = 16,
    info: VideoInfo | None = None,
) -> PipelineResult:
    """Decode ``src``, run every frame through ``per_frame`` (one frame), ``per_batch`` (up to ``batch_size``
    frames, same count back) or a :class:`Stage` (which may hold frames back for a look-ahead; each output frame
    keeps the timestamp of the frame at its place in the sequence), encode to the MP4 ``dst`` with the source's
    timing and its audio.

    The processing function and ``progress(done, total)`` run in the calling thread; decoding and encoding run in
    two threads with bounded queues between them (each holds about ``queue_frames`` frames, at least one batch), so
    memory does not grow with the clip.
    ``total`` is the frame estimate from the header (``done`` may pass it). Any exception from the function or
    the callback (e.g. :class:`Canceled`) stops both threads, removes the partial ``dst`` and propagates.
    Frames keep the source timeline shifted so the output starts at ``start`` (default 0). Audio comes from
    ``audio_source`` (default: ``src`` itself) trimmed the same way; see :class:`app.media.mux.AudioCarry` for
    when it is copied, re-encoded, or refused (422 naming ``audio``). ``info`` skips probing when given.
    Raises the probe's 413/415/422 for a bad ``src``.
    """
    if sum(f is not None for f in (per_frame, per_batch, stage)) != 1:
        raise ValueError("pass exactly one of per_frame, per_batch and stage")
    info = info or probe_video(src, field, limits)
    origin = float(start or 0.0)
    total = info.frames
    if start or end:
        span = (end if end is not None else info.duration) - origin
        total = max(0, int(round(span * float(info.fps))))
    group = max(1, batch_size) if per_batch is not None else 1
    stop = threading.Event()
    slots = max(1, queue_frames // group)
    decoded: queue.Queue = queue.Queue(maxsize=slots)
    processed: queue.Queue = queue.Queue(maxsize=slots)
    writer = VideoWriter(dst, info.fps, time_base=info.time_base if info.vfr else None, crf=crf, preset=preset,
                         audio_source=src if audio_source is None else audio_source, audio=audio,
                         audio_start=origin, audio_end=end)
    written: list[object] = []

    def decode() -> None:
        try:
            batch: list[tuple[np.ndarray, float]] = []
            for frame, t in iter_frames(src, field, start, end):
                batch.append((frame, t))
                if len(batch) >= group:
                    if not put(decoded, batch, stop):
                        return
                    batch = []
            if batch and not put(decoded, batch, stop):
                return
            put(decoded, END, stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            put(decoded, Failure(exc), stop)

    def encode() -> None:
        try:
            while True:
                item = get(processed, stop)
                if item is END or stop.is_set():
                    break
                for frame, t in item:  # type: ignore[attr-defined]
                    writer.write(frame, t - origin)
            if not stop.is_set():
                written.append(writer.close())
        except BaseException as exc:  # noqa: BLE001
            written.append(Failure(exc))
            stop.set()

    threads = [threading.Thread(target=decode, name="media-decode", daemon=True),
               threading.Thread(target=encode, name="media-encode", daemon=True)]
    for th in threads:
        th.start()
    done = 0
    pending: deque[float] = deque()  # times of frames a stage holds back, oldest first

    def emit(out: list[np.ndarray]) -> bool:
        nonlocal done
        if len(out) > len(pending):
            raise ValueError(f"the processing returned {len(out)} frames for {len(pending)} waiting")
        if out and not put(processed, [(f, pending.popleft()) for f in out], stop):
            return False
        done += len(out)
        if out and progress is not None:
            progress(done, total)
        return True

    try:
        while True:
            item = get(decoded, stop)
            if isinstance(item, Failure):
                raise item.exc
            if item is END:
                if stop.is_set() and written and isinstance(written[0], Failure):
                    raise written[0].exc
                break
            frames = [f for f, _ in item]  # type: ignore[attr-defined]
            pending.extend(t for _, t in item)  # type: ignore[attr-defined]
            if stage is not None:
                out = stage.push(frames[0])
            elif per_frame is not None:
                out = [per_frame(frames[0])]
            else:
                out = list(per_batch(frames))  # type: ignore[misc]
                if len(out) != len(frames):
                    raise ValueError(f"the batch function returned {len(out)} frames for {len(frames)}")
            if not emit(out):
                break
        if stage is not None and not stop.is_set():
            emit(stage.flush())
        if pending and not stop.is_set():
            raise ValueError(f"the processing kept {len(pending)} frames")
        result = finish(processed, stop, threads[1], written)
    except BaseException:
        abandon(stop, threads, writer, dst)
        raise
    threads[0].join()
    return PipelineResult(Path(dst), result.frames, result.duration, result.width, result.height,  # type: ignore[attr-defined]
                          result.audio, info)  # type: ignore[attr-defined]
