"""The lip-sync job: a video (or a still portrait) and an audio track in, the video with its mouth moving to the
audio and the audio muxed in, out.

Everything streams, so memory does not grow with the length:

    source thread   decode (or loop: re-decode, the disk frame cache, the held last frame) → (out index, frame)
    detect thread   detect around the last face (the whole frame at ≤640 px first, on a miss and every 2 s)
                    → track + One-Euro smoothing → gap bridge → box smoothing (5 frames)
    calling thread  batches of frames + their audio windows → the model (Wav2Lip, or the built-in preview warp)
    encode thread   paste with a feathered lower-face mask → (mouth restoration) → H.264 + the new audio

with bounded queues between them. A frame without a face passes through unchanged; a face missed for a few frames is
filled from its neighbours (look-ahead gap bridge); nothing aborts because a frame has no face. Output frame ``i``
takes the audio window of its own time (``i / fps`` seconds), for any frame rate.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from app.config import Settings
from app.errors import ApiError
from app.media.audio import AudioInfo, iter_audio, probe_audio
from app.media.image import decode_image
from app.media.queues import END, Failure, abandon, finish, get, put
from app.media.video import VideoInfo, VideoLimits, iter_frames, probe_video
from app.media.writer import VideoWriter
from app.memory import Trimmer
from app.schemas import LipsyncOptions
from app.services import nsfw
from app.services.common import Timings, resolve_backend
from models.face import Face
from models.hub import ModelHub
from models.lipsync.geometry import crop, crop_box, int_box, lower_face_mask, paste, smooth_boxes
from models.tracking import FaceTracker, GapBridge
from models.tracking.windowed import detect_near, has_quick_pass, scaled

Progress = Callable[[int, int | None], None]
VIDEO_FIELD, IMAGE_FIELD, AUDIO_FIELD = "video", "image", "audio"
SAMPLE_RATE = 16000
DETECT_SIDE = 640  # faces are detected on a copy at most this long (landmarks scaled back to the frame)
ROI_FACE = 100  # a known face is looked for in a window around its last box, shrunk so it is about this many px
FULL_EVERY = 2.0  # seconds between whole-frame detections while a face is being followed
BOX_RADIUS = 2  # crop boxes are averaged over 2·2+1 = 5 frames, as Wav2Lip's inference does
DEFAULT_IMAGE_FPS = 25.0


@dataclass
class LipsyncResult:
    path: Path
    backend: str
    frames: int
    frames_synced: int  # frames where a face was lip-synced
    audio: str  # copied | reencoded-aac
    fps: Fraction
    duration: float
    timings: Timings
    enhancer: str | None = None

    def headers(self) -> dict[str, str]:
        """The response headers of a lip sync (also kept with a job's result)."""
        out = {"X-Face-Backend": self.backend, "X-Frames": str(self.frames),
               "X-Lipsync-Frames": str(self.frames_synced), "X-Audio": self.audio,
               "Server-Timing": self.timings.header()}
        if self.enhancer:
            out["X-Face-Enhancer"] = self.enhancer
        return out


@dataclass
class _Item:
    """One output frame on its way through the stages."""

    index: int  # output frame number
    source: int  # source frame number (0 for a still image)
    frame: np.ndarray
    face: Face | None = None
    track: int | None = None
    raw_box: np.ndarray | None = None
    box: tuple[int, int, int, int] | None = None
    audio: Any = None  # this frame's audio: the mel window (neural) or the mouth opening (built-in)
    pred: np.ndarray | None = None  # the model's 96² BGR crop (neural) to paste
    out: np.ndarray | None = None  # the finished frame (built-in: warped in place of a paste)


# ---- frame source: the video, then its loop ------------------------------------------------------------------


class FrameCache:
    """Frames on disk (JPEG, quality 97, one file, an offset index in memory) for the backward half of a pingpong
    loop: reverse order needs random access, and RAM must not hold the clip."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f = open(path, "w+b")  # noqa: SIM115 - closed by close()
        self.index: list[tuple[int, int]] = []

    def add(self, frame: np.ndarray) -> None:
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 97])
        if not ok:
            raise RuntimeError("could not encode a frame for the loop cache")
        self._f.seek(0, os.SEEK_END)
        self.index.append((self._f.tell(), len(buf)))
        self._f.write(buf.tobytes())

    def get(self, i: int) -> np.ndarray:
        off, n = self.index[i]
        self._f.seek(off)
        data = np.frombuffer(self._f.read(n), np.uint8)
        frame = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if frame is None:
            raise RuntimeError("the loop cache is corrupt")
        return frame

    def close(self) -> None:
        self._f.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def loop_index(j: int, m: int, mode: str) -> int:
    """Source frame of output frame ``j`` of a clip of ``m`` frames looped by ``mode``."""
    if j < m or m <= 1:
        return min(j, m - 1)
    if mode == "freeze":
        return m - 1
    if mode == "repeat":
        return j % m
    period = 2 * (m - 1)
    k = j % period
    return k if k < m else period - k


def _video_source(path: Path, total: int | None, loop: str, cache: FrameCache | None,
                  ) -> Iterator[tuple[int, int, np.ndarray, bool]]:
    """(output index, source index, frame, first time this source frame is seen) in output order. ``total`` None:
    one pass of the video."""
    j = 0
    last: np.ndarray | None = None
    for frame, _t in iter_frames(path, VIDEO_FIELD):
        if total is not None and j >= total:
            return
        if cache is not None:
            cache.add(frame)
        yield j, j, frame, True
        last = frame
        j += 1
    m = j
    if total is None or j >= total or last is None:
        return
    if loop == "freeze":
        for k in range(j, total):
            yield k, m - 1, last, False
        return
    if loop == "repeat":
        while j < total:
            count = 0
            for s, (frame, _t) in enumerate(iter_frames(path, VIDEO_FIELD)):
                if j >= total:
                    return
                yield j, s, frame, False
                j, count = j + 1, count + 1
            if count < m:  # the video decoded shorter the second time: pad with its last frame
                break
        for k in range(j, total):
            yield k, m - 1, last, False
        return
    if cache is None or len(cache.index) != m:
        raise RuntimeError("the pingpong loop has no frame cache")
    while j < total:
        s = loop_index(j, m, "pingpong")
        yield j, s, cache.get(s), False
        j += 1


def _image_source(img: np.ndarray, total: int) -> Iterator[tuple[int, int, np.ndarray, bool]]:
    for j in range(total):
        yield j, 0, img, j == 0


# ---- audio per output frame ----------------------------------------------------------------------------------


class SampleWindows:
    """The 16 kHz mono samples of frame ``j``'s window ``[j/fps, (j+1)/fps)``, read forward from a stream of
    decoded chunks (only the chunks not yet used are held)."""

    def __init__(self, chunks: Iterator[np.ndarray], fps: Fraction, rate: int = SAMPLE_RATE) -> None:
        self.chunks, self.fps, self.rate = chunks, fps, rate
        self.buf = np.zeros(0, np.float32)
        self.offset = 0  # sample number of buf[0]
        self.done = False

    def bounds(self, j: int) -> tuple[int, int]:
        a = int(Fraction(j * self.rate) / self.fps)
        b = int(Fraction((j + 1) * self.rate) / self.fps)
        return a, max(b, a + 1)

    def window(self, j: int) -> np.ndarray:
        a, b = self.bounds(j)
        while not self.done and self.offset + self.buf.size < b:
            chunk = next(self.chunks, None)
            if chunk is None:
                self.done = True
            else:
                self.buf = np.concatenate([self.buf, chunk])
        if a > self.offset:
            drop = min(a - self.offset, self.buf.size)
            self.buf, self.offset = self.buf[drop:], self.offset + drop
        return self.buf[max(0, a - self.offset): max(0, b - self.offset)]


class MelWindows:
    """Wav2Lip's mel window of frame ``j``: columns ``[⌊80·j/fps⌋, +16)``, computed as the audio streams in
    (``Wav2Lip.audio.stream_mel_chunks``: only the columns between the current window and the newest are held);
    frames past the end of the audio get silence (−4)."""

    def __init__(self, chunks: Iterator[np.ndarray], fps: Fraction) -> None:
        from Wav2Lip.audio import stream_mel_chunks

        self.windows = stream_mel_chunks(chunks, fps)
        self.next = 0
        self.last: np.ndarray | None = None
        self.done = False

    def window(self, j: int) -> np.ndarray:
        while not self.done and self.next <= j:
            got = next(self.windows, None)
            if got is None:
                self.done = True
                break
            self.last, self.next = got, self.next + 1
        if j == self.next - 1 and self.last is not None:
            return self.last
        return np.full((80, 16), -4.0, np.float32)


# ---- faces: detect, track, bridge gaps, smooth boxes ------------------------------------------------------------


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = float(w * h)
    return inter / (float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter + 1e-6)


class FaceStage:
    """Finds the speaker's face in each new source frame (the largest tracked face, kept while its track lives),
    fills short gaps from the neighbours and averages crop boxes over 5 frames. Frames seen again (loops, a still
    image) reuse what was found the first time.

    Detection runs on every new frame, but cheaply: once a face is known, only a window around where it was in the
    previous frame is searched (``models.tracking.windowed.detect_near``, shrunk so the face is about
    ``ROI_FACE`` px), and the whole frame (at most ``DETECT_SIDE`` px) only on the first frame, when the window
    finds nothing, and once every ``FULL_EVERY`` seconds (so a new, larger speaker is still picked up)."""

    def __init__(self, analyser: Any, fps: float, smoothing: float, pads: tuple[int, int, int, int]) -> None:
        self.analyser, self.pads = analyser, pads
        self.fps = max(fps, 1.0)
        self.tracker = FaceTracker(smoothing=smoothing, fps=self.fps)
        self.bridge: GapBridge[_Item] = GapBridge()
        self.known: dict[int, tuple[Face | None, int | None]] = {}  # source index → (face, track id)
        self.main: int | None = None
        self.window: deque[_Item] = deque()
        self.next = 0  # position in ``window`` of the next item to release
        self.hint: np.ndarray | None = None  # the speaker's box in the previous detected frame
        self.since_full = 0  # frames detected in a window since the last whole-frame detection
        self._quick = has_quick_pass(analyser)  # looked up once, not per frame
        self.full_every = max(1, int(round(FULL_EVERY * self.fps)))

    def detect(self, frame: np.ndarray) -> list[Face]:
        faces: list[Face] = []
        if self.hint is not None and self.since_full < self.full_every:
            faces = self._detect_near(frame, self.hint)
            self.since_full += 1
        if not faces:
            faces = self._detect_full(frame)
            self.since_full = 0
        self.hint = self._follow(faces)
        return faces

    def _follow(self, faces: list[Face]) -> np.ndarray | None:
        if not faces:
            return None
        boxes = [np.asarray(f.bbox, np.float32) for f in faces]
        if self.hint is not None:
            best = max(boxes, key=lambda b: _overlap(b, self.hint))  # type: ignore[arg-type]
            if _overlap(best, self.hint) > 0.0:
                return best
        return max(boxes, key=lambda b: float((b[2] - b[0]) * (b[3] - b[1])))

    def _detect_full(self, frame: np.ndarray) -> list[Face]:
        h, w = frame.shape[:2]
        k = max(h, w) / DETECT_SIDE
        if k <= 1.0:
            return self.analyser.get(frame)
        small = cv2.resize(frame, (int(round(w / k)), int(round(h / k))), interpolation=cv2.INTER_AREA)
        return [scaled(f, k) for f in self.analyser.get(small)]

    def _detect_near(self, frame: np.ndarray, box: np.ndarray) -> list[Face]:
        return detect_near(self.analyser, frame, box, ROI_FACE, self._quick)

    def _choose(self, faces: list[tuple[int, Face]]) -> tuple[int | None, Face | None]:
        live = dict(faces)
        if self.main not in live:
            if not faces:
                return None, None
            self.main = max(faces, key=lambda p: (round(p[1].area, 3), p[1].score))[0]
        return self.main, live[self.main]

    def push(self, item: _Item, first: bool) -> list[_Item]:
        """Feed one frame in output order; the frames now resolved, in order."""
        if not first:
            item.face, item.track = self.known.get(item.source, (None, None))
            return self._smooth(item)
        tracks = self.tracker.update(self.detect(item.frame), item.index / self.fps)
        out: list[_Item] = []
        for held, _t, faces in self.bridge.push(item, item.index / self.fps, tracks):
            out += self._resolved(held, faces)
        return out

    def flush(self) -> list[_Item]:
        out: list[_Item] = []
        for held, _t, faces in self.bridge.flush():
            out += self._resolved(held, faces)
        while self.next < len(self.window):
            out.append(self._release())
        return out

    def end_of_pass(self) -> list[_Item]:
        """The first pass is over: release what the gap bridge holds (loops reuse the faces found)."""
        out: list[_Item] = []
        for held, _t, faces in self.bridge.flush():
            out += self._resolved(held, faces)
        return out

    def _resolved(self, item: _Item, faces: list[tuple[int, Face]]) -> list[_Item]:
        item.track, item.face = self._choose(faces)
        self.known[item.source] = (item.face, item.track)
        return self._smooth(item)

    def _smooth(self, item: _Item) -> list[_Item]:
        if item.face is not None:
            h, w = item.frame.shape[:2]
            item.raw_box = crop_box(item.face.bbox, item.face.landmarks, self.pads, w, h)
        self.window.append(item)
        out = []
        while len(self.window) - 1 - self.next >= BOX_RADIUS:
            out.append(self._release())
        return out

    def _release(self) -> _Item:
        c = self.next
        item = self.window[c]
        if item.raw_box is not None:
            lo, hi = max(0, c - BOX_RADIUS), min(len(self.window), c + BOX_RADIUS + 1)
            boxes = [self.window[i].raw_box for i in range(lo, hi)
                     if self.window[i].raw_box is not None and self.window[i].track == item.track]
            h, w = item.frame.shape[:2]
            item.box = int_box(smooth_boxes(boxes), w, h)  # type: ignore[arg-type]
        self.next += 1
        while self.next > BOX_RADIUS:
            self.window.popleft()
            self.next -= 1
        return item


# ---- the job -----------------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    backend: str
    model: Any
    analyser: Any
    restorer: tuple[str, Any] | None
    fps: Fraction
    total: int | None  # output frames; None: one pass of the video (duration=video)
    estimate: int  # for progress
    audio: AudioInfo
    video: VideoInfo | None = None
    image: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


def _restorer(hub: ModelHub) -> tuple[str, Any]:
    for name in ("gfpgan", "codeformer"):
        if name in hub.restorers:
            return name, hub.restorers[name]
    command = hub.file_command("gfpgan_1.4.onnx")
    hint = f"; fetch it with `{command}` and restart" if command else ""
    raise ApiError(503, "backend_unavailable", f"enhance needs GFPGAN or CodeFormer, and neither is loaded{hint}",
                   "enhance")


def plan_lipsync(hub: ModelHub, options: LipsyncOptions, settings: Settings, audio_path: Path,
                 video_path: Path | None = None, image_path: Path | None = None) -> _Plan:
    """Everything that can be refused is checked here, before the first frame: the backend, the restorer, the
    audio (415/413/422 naming ``audio``), the video (naming ``video``) or the image (naming ``image``)."""
    if (video_path is None) == (image_path is None):
        raise ApiError(422, "invalid_field", "send exactly one of video and image", VIDEO_FIELD)
    backend = resolve_backend(hub, "lipsync", options.backend or settings.default_backend)
    model = hub.loaded.get("lipsync", {})[backend]
    restorer = _restorer(hub) if options.enhance else None
    audio = probe_audio(audio_path, AUDIO_FIELD, max_seconds=float(settings.max_video_seconds))
    analyser = hub.analysers.get("neural") or hub.analysers.get("builtin")
    if analyser is None:
        raise ApiError(503, "backend_unavailable", "no face analyser is loaded", "backend")
    if video_path is not None:
        info = probe_video(video_path, VIDEO_FIELD, VideoLimits.from_settings(settings))
        fps = info.fps
        total = None if options.duration == "video" else max(1, int(round(audio.duration * float(fps))))
        return _Plan(backend, model, analyser, restorer, fps, total, total or info.frames, audio, video=info)
    assert image_path is not None
    img = decode_image(image_path.read_bytes(), IMAGE_FIELD, settings.max_image_pixels).bgr
    fps = Fraction(options.fps or DEFAULT_IMAGE_FPS).limit_denominator(1001)
    total = max(1, int(round(audio.duration * float(fps))))
    return _Plan(backend, model, analyser, restorer, fps, total, total, audio, image=img)


def lipsync(hub: ModelHub, options: LipsyncOptions, settings: Settings, audio_path: Path, out_path: Path, *,
            video_path: Path | None = None, image_path: Path | None = None,
            progress: Progress | None = None) -> LipsyncResult:
    """Lip-sync ``video_path`` (or the still ``image_path``) to ``audio_path`` into the MP4 ``out_path``.
    ``progress(done, total)`` is called after each batch (a job's callback raises to cancel, which removes the
    partial file)."""
    plan = plan_lipsync(hub, options, settings, audio_path, video_path, image_path)
    return run_plan(plan, options, settings, audio_path, out_path, video_path, progress)


def run_plan(plan: _Plan, options: LipsyncOptions, settings: Settings, audio_path: Path, out_path: Path,
             video_path: Path | None, progress: Progress | None = None) -> LipsyncResult:
    timings = Timings()
    stop = threading.Event()
    depth = max(2, 24 // options.batch_size)  # batches between the model and the encoder
    sourced: queue.Queue = queue.Queue(maxsize=8)
    faced: queue.Queue = queue.Queue(maxsize=max(8, options.batch_size))
    modelled: queue.Queue = queue.Queue(maxsize=depth)
    neural = plan.backend != "builtin"
    workers, threads_per_worker = model_workers(plan.model, settings, neural)
    faces = FaceStage(plan.analyser, float(plan.fps), options.smoothing, options.pad_values)
    cache: FrameCache | None = None
    if plan.video is not None and plan.total is not None and options.loop == "pingpong" \
            and plan.total > plan.video.frames * 0.8:
        cache = FrameCache(out_path.with_suffix(".frames"))
    audio_end = plan.video.duration if plan.video is not None and plan.total is None else None
    writer = VideoWriter(out_path, plan.fps, crf=settings.video_crf if options.quality is None else options.quality,
                         preset=settings.video_preset, audio_source=audio_path, audio="keep", audio_end=audio_end,
                         audio_field=AUDIO_FIELD)
    result: list[object] = []
    synced = [0]
    gate_input = nsfw.gate().video_checker(VIDEO_FIELD, float(plan.fps))  # FACEAPI_NSFW: sampled frames, both ends
    gate_output = nsfw.gate().video_checker(nsfw.OUTPUT_FIELD, float(plan.fps))

    def source() -> None:
        try:
            if plan.image is not None:
                frames = _image_source(plan.image, plan.total or 1)
            else:
                frames = _video_source(video_path, plan.total, options.loop, cache)  # type: ignore[arg-type]
            passed = False
            for j, s, frame, first in frames:
                if first and plan.image is None:
                    gate_input(s, frame)
                if not first and not passed:
                    passed = True
                    if not put(sourced, "pass", stop):
                        return
                if not put(sourced, (_Item(j, s, frame), first), stop):
                    return
            put(sourced, END, stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            put(sourced, Failure(exc), stop)

    def detect() -> None:
        try:
            while True:
                got = get(sourced, stop)
                if got is END or isinstance(got, Failure):
                    if got is END and not stop.is_set():
                        for it in faces.flush():
                            put(faced, it, stop)
                    put(faced, got, stop)
                    return
                if got == "pass":
                    ready = faces.end_of_pass()
                else:
                    item, first = got  # type: ignore[misc]
                    with timings.stage("detect"):
                        ready = faces.push(item, first)
                for it in ready:
                    if not put(faced, it, stop):
                        return
        except BaseException as exc:  # noqa: BLE001
            put(faced, Failure(exc), stop)

    def encode() -> None:
        try:
            while True:
                got = get(modelled, stop)
                if got is END or stop.is_set():
                    break
                for item in got:  # type: ignore[attr-defined]
                    frame = item.out if item.out is not None else item.frame
                    if item.pred is not None and item.box is not None and item.face is not None:
                        with timings.stage("paste"):
                            frame = paste(item.frame, item.pred, item.box,
                                          lower_face_mask(item.face.landmarks, item.box))
                    if plan.restorer is not None and item.face is not None and item.box is not None \
                            and (item.pred is not None or item.out is not None):
                        with timings.stage("enhance"):
                            frame = _restore_mouth(frame, item, plan.restorer[1])
                    gate_output(item.index, frame)
                    with timings.stage("encode"):
                        writer.write(frame)
            if not stop.is_set():
                with timings.stage("encode"):
                    result.append(writer.close())
        except BaseException as exc:  # noqa: BLE001
            result.append(Failure(exc))
            stop.set()

    chunks = iter_audio(audio_path, SAMPLE_RATE, AUDIO_FIELD)
    windows: Any = MelWindows(chunks, plan.fps) if neural else SampleWindows(chunks, plan.fps)
    threads = [threading.Thread(target=source, name="lipsync-source", daemon=True),
               threading.Thread(target=detect, name="lipsync-detect", daemon=True),
               threading.Thread(target=encode, name="lipsync-encode", daemon=True)]
    for th in threads:
        th.start()
    done = 0
    # Each batch is shared out among ``workers`` model calls at once (each on ``threads_per_worker`` threads), so
    # no more frames are in flight than with one call.
    pool = ThreadPoolExecutor(workers, thread_name_prefix="lipsync-model") if workers > 1 else None
    trim: Trimmer | None = None
    try:
        with model_threads(plan.model, threads_per_worker):
            batch: list[_Item] = []
            finished = False
            while not finished:
                got = get(faced, stop)
                if isinstance(got, Failure):
                    raise got.exc
                if got is END:
                    finished = True
                else:
                    batch.append(got)  # type: ignore[arg-type]
                if batch and (finished or len(batch) >= options.batch_size):
                    with timings.stage("model"):
                        _attach_audio(batch, windows, neural)  # in frame order: the audio streams forward
                        synced[0] += _run_model(plan, batch, neural, pool, workers)
                    if not put(modelled, batch, stop):
                        break
                    # the model's threads free and re-allocate the same activations every batch, each in its own
                    # malloc arena: hand back what they left free once the RSS climbs past the working set of the
                    # first batch (not after every batch: re-faulting the pages costs ≈ 5 ms of CPU a frame)
                    trim = trim or Trimmer(settings.malloc_trim_mb, keep_level=True)
                    trim.after_work()
                    done += len(batch)
                    batch = []
                    if progress is not None:
                        progress(done, plan.total or max(plan.estimate, done))
        written = finish(modelled, stop, threads[2], result)
    except BaseException:
        abandon(stop, threads, writer, out_path)
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if cache is not None:
            cache.close()
    for th in threads[:2]:
        th.join()
    return LipsyncResult(path=out_path, backend=plan.backend, frames=written.frames,  # type: ignore[attr-defined]
                         frames_synced=synced[0], audio=str(written.audio), fps=plan.fps,  # type: ignore[attr-defined]
                         duration=written.duration, timings=timings,  # type: ignore[attr-defined]
                         enhancer=plan.restorer[0] if plan.restorer is not None else None)


def model_workers(model: Any, settings: Settings, neural: bool) -> tuple[int, int | None]:
    """How many batches run at once and on how many threads each. A CPU PyTorch model (it has ``runner.threads``)
    gets ``FACEAPI_LIPSYNC_WORKERS`` calls at once (0: one per core), each on ``FACEAPI_LIPSYNC_THREADS`` threads
    (0: the cores shared out; one worker keeps every core). On 2 cores two one-thread calls are ≈ 15–50 % faster
    than one two-thread call: a one-thread call never waits at a layer's end for a thread that decoding, detection
    or encoding preempted, and spends ≈ 5–10 % less CPU a frame. The built-in preview warps frames in as many
    workers. ONNX Runtime and GPU models take one call at a time."""
    cores = os.cpu_count() or 1
    workers = min(settings.lipsync_workers or cores, 16)
    if not neural:
        return workers, None
    runner = getattr(model, "runner", None)
    if not hasattr(runner, "threads") or getattr(runner, "device", "") != "cpu":
        return 1, None
    if settings.lipsync_threads:
        return workers, settings.lipsync_threads
    return workers, (max(1, cores // workers) if workers > 1 else None)


@contextlib.contextmanager
def model_threads(model: Any, threads: int | None) -> Iterator[None]:
    """For the job, give a CPU PyTorch model ``threads`` threads (None: the framework's default, every core).
    PyTorch's thread count is per process, so it is set once here (not per call, which would race between
    concurrent calls) and restored after."""
    runner = getattr(model, "runner", None)
    if runner is None or not hasattr(runner, "threads") or threads is None:
        yield
        return
    import torch

    before, runner.threads = torch.get_num_threads(), threads
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        runner.threads = None
        torch.set_num_threads(before)


def _attach_audio(batch: list[_Item], windows: Any, neural: bool) -> None:
    """Each frame's audio, read in frame order: its mel window (neural) or its mouth opening (built-in)."""
    if neural:
        for item in batch:
            item.audio = windows.window(item.index)
        return
    from models.lipsync.preview import openness

    for item in batch:
        item.audio = openness(windows.window(item.index))


def _run_model(plan: _Plan, batch: list[_Item], neural: bool, pool: ThreadPoolExecutor | None = None,
               workers: int = 1) -> int:
    """Run the backend on the frames of ``batch`` that have a face, in ``workers`` parts at once on ``pool``;
    returns how many were lip-synced."""
    todo = [item for item in batch if item.face is not None and item.face.landmarks is not None
            and item.box is not None]
    if not todo:
        return 0
    parts = [todo[k::workers] for k in range(workers)] if pool is not None else [todo]
    run = _animate if not neural else _predict
    if pool is None or len(todo) < 2:
        run(plan, todo)
    else:
        for f in [pool.submit(run, plan, part) for part in parts if part]:
            f.result()
    return len(todo)


def _animate(plan: _Plan, items: list[_Item]) -> None:
    for item in items:
        item.out = plan.model.animate(item.frame, item.face.landmarks, item.audio)  # type: ignore[union-attr]


def _predict(plan: _Plan, items: list[_Item]) -> None:
    crops = np.stack([crop(item.frame, item.box) for item in items])  # type: ignore[arg-type]
    mel = np.stack([item.audio for item in items])[:, None].astype(np.float32)
    for item, pred in zip(items, plan.model.predict_crops(mel, crops), strict=True):
        item.pred = pred


def _restore_mouth(frame: np.ndarray, item: _Item, restorer: Any) -> np.ndarray:
    """The restorer run on the face, kept only inside the feathered lower-face mask (the eyes stay the source's)."""
    restored = restorer.restore(frame, item.face, 0.5, 1.0)
    x1, y1, x2, y2 = item.box  # type: ignore[misc]
    return paste(frame, restored[y1:y2, x1:x2], item.box,  # type: ignore[arg-type]
                 lower_face_mask(item.face.landmarks, item.box))  # type: ignore[union-attr, arg-type]
