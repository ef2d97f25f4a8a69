"""The video face swap job: the sources are analysed once, then every frame of the target video flows
decode → detect → track → swap → (keep mouth) → (restore) → encode through bounded queues, with the target's audio.

Faces are tracked across frames (IoU plus identity), their key points smoothed in time, a face missed for a few
frames is filled from its neighbours, and a scene cut resets the tracker. The pairing of a mode is decided per
track, not per frame, so ``one_to_one`` and ``similarity`` keep swapping the same person when people cross.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from app.config import Settings
from app.errors import ApiError
from app.media.pipeline import process_video
from app.media.video import VideoInfo, VideoLimits, probe_video
from app.schemas import VideoSwapOptions
from app.services import nsfw
from app.services.common import Timings
from app.services.enhance import EnhancePlan, apply_enhancement, plan_enhancement
from app.services.faceswap import (
    ENHANCER_FIELD,
    Sources,
    SwapContext,
    check_enhancement,
    identity_metric,
    load_sources,
    swap_pairs,
)
from models import align
from models.face import Face, best_face
from models.masks.mouth import keep_mouths
from models.swap.pairing import pair_faces
from models.tracking import FaceTracker, GapBridge, SceneCutDetector, Track, WindowedDetector

Progress = Callable[[int, int | None], None]
AHEAD = 3  # frames the detection thread runs ahead of the swap
SOURCE_FIELD, TARGET_FIELD = "source_image", "target_video"


@dataclass
class VideoSwapResult:
    path: Path
    backend: str
    frames: int
    frames_swapped: int  # frames where at least one face was swapped
    audio: str  # copied | reencoded-aac | none-in-source | dropped
    fps: Fraction
    duration: float
    timings: Timings
    enhancer: str | None = None

    def headers(self) -> dict[str, str]:
        """The response headers of a video swap (also kept with a job's result)."""
        out = {"X-Face-Backend": self.backend, "X-Frames": str(self.frames),
               "X-Faces-Swapped-Frames": str(self.frames_swapped), "X-Audio": self.audio,
               "Server-Timing": self.timings.header()}
        if self.enhancer:
            out["X-Face-Enhancer"] = self.enhancer
        return out


class FrameSwapper:
    """The swap as a pipeline :class:`~app.media.pipeline.Stage`. One helper thread detects and tracks the frames in
    order (``batch_size`` frames a detector call when its graph takes a batch), ``AHEAD`` frames ahead of this
    thread, which swaps (model calls and OpenCV release the GIL, so the two overlap on two cores). Between them a
    :class:`~models.tracking.GapBridge` holds the frames of an open detection gap (a few at most) until the face is
    found again (its place filled by interpolation) or has left (nothing is painted there); then the released
    frames are paired by mode, per track, and swapped in order."""

    def __init__(self, ctx: SwapContext, sources: Sources, options: VideoSwapOptions, fps: float,
                 plan: EnhancePlan | None, timings: Timings, batch_size: int = 1, full_every: float = 0.0) -> None:
        self.ctx, self.sources, self.options, self.plan, self.timings = ctx, sources, options, plan, timings
        self.analyser = ctx.hub.analyser(sources.backend)
        self.fps = max(float(fps), 1.0)
        # Across frames, the swap model gets ``batch_size`` faces a call when its graph takes a batch, and so does
        # the restorer (at upscale 1, where its crops are the frame's own pixels): frames wait in ``_held`` until
        # enough faces are ready. Fixed-batch graphs, the built-in swap and refinement passes (which re-detect each
        # swapped frame) go one frame at a time.
        swapper = ctx.hub.swapper(sources.backend)
        restorer = plan.restorer if plan is not None else None
        restore_ok = (batch_size > 1 and plan is not None and plan.opts.upscale == 1
                      and hasattr(restorer, "restore_crops") and getattr(restorer, "fixed_batch", 1) is None)
        swap_ok = hasattr(swapper, "swap_crops") and ctx.options.face_refinement_steps <= 1
        dynamic_swap = getattr(swapper, "fixed_batch", 1) is None
        self.batch_size = batch_size if batch_size > 1 and swap_ok and (dynamic_swap or restore_ok) else 1
        self.restore_batch = restore_ok and self.batch_size > 1
        self._held: list[tuple[np.ndarray, list[tuple[int, Face]]]] = []
        self._latents: dict[int, np.ndarray] = {}
        # Detection takes ``batch_size`` frames a call too when the detector's graph takes a batch. One frame at a
        # time, an analyser with a quick pass (dlib) searches windows around the faces it knows and the whole frame
        # every ``full_every`` seconds.
        self.det_batch = batch_size if batch_size > 1 and getattr(self.analyser, "batch_detect", False) else 1
        self.detector = WindowedDetector(self.analyser, int(round(full_every * self.fps)))
        self._undetected: list[tuple[np.ndarray, Future[tuple[float, bool, list[Track]]]]] = []
        self.tracker = FaceTracker(smoothing=options.smoothing, fps=self.fps)
        self.bridge: GapBridge[np.ndarray] = GapBridge()
        self.cuts = SceneCutDetector()
        self.index = 0
        self.frames_swapped = 0
        self.gate = nsfw.gate().video_checker(TARGET_FIELD, self.fps)  # FACEAPI_NSFW: sampled target frames
        self.main_track: int | None = None  # one_to_one: the target person being replaced
        self.assigned: dict[int, int] = {}  # similarity: track id → source face index
        self._ahead: ThreadPoolExecutor | None = None
        self._pending: deque[tuple[np.ndarray, Future[tuple[float, bool, list[Track]]]]] = deque()

    def push(self, frame: np.ndarray) -> list[np.ndarray]:
        fut: Future[tuple[float, bool, list[Track]]] = Future()
        self._pending.append((frame, fut))
        self._undetected.append((frame, fut))
        if len(self._undetected) >= self.det_batch:
            self._submit()
        out: list[np.ndarray] = []
        while len(self._pending) - len(self._undetected) > AHEAD:  # the newest wait for their detector batch
            out += self._release(*self._pending.popleft())
        return out

    def _submit(self) -> None:
        if self._ahead is None:
            self._ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="video-detect")
        batch, self._undetected = self._undetected, []
        self._ahead.submit(self._analyse, batch)

    def flush(self) -> list[np.ndarray]:
        if self._undetected:
            self._submit()
        out: list[np.ndarray] = []
        while self._pending:
            out += self._release(*self._pending.popleft())
        for f, _, faces in self.bridge.flush():
            out += self._emit(f, faces)
        return out + self._run_held()

    def close(self) -> None:
        for _, fut in self._pending:
            fut.cancel()
        self._pending.clear()
        if self._ahead is not None:
            self._ahead.shutdown(wait=True, cancel_futures=True)
            self._ahead = None

    def _analyse(self, batch: list[tuple[np.ndarray, Future[tuple[float, bool, list[Track]]]]]) -> None:
        """In the helper thread, in frame order: detect the batch's frames (one detector call when it takes a
        batch), then per frame (time, whether a scene cut starts here, the tracks) into its future."""
        try:
            frames = [frame for frame, _ in batch]
            with self.timings.stage("detect"):
                found = self.analyser.get_batch(frames) if len(frames) > 1 else [self.detector.detect(frames[0])]
            for (frame, fut), faces in zip(batch, found, strict=True):
                fut.set_result(self._track(frame, faces))
        except BaseException as exc:  # noqa: BLE001 - raised again by the swap thread's .result()
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)

    def _track(self, frame: np.ndarray, faces: list[Face]) -> tuple[float, bool, list[Track]]:
        t = self.index / self.fps
        self.gate(self.index, frame)
        self.index += 1
        with self.timings.stage("detect"):
            cut = self.cuts.is_cut(_thumbnail(frame, self.cuts.size))
            if cut:
                self.tracker.reset()
                self.detector.reset()
            return t, cut, self.tracker.update(faces, t)

    def _release(self, frame: np.ndarray, analysed: Future[tuple[float, bool, list[Track]]]) -> list[np.ndarray]:
        t, cut, tracks = analysed.result()
        out: list[np.ndarray] = []
        if cut:  # a gap never spans a cut, and pairings start afresh in the new shot
            for f, _, faces in self.bridge.flush():
                out += self._emit(f, faces)
            self.main_track, self.assigned = None, {}
        for f, _, faces in self.bridge.push(frame, t, tracks):
            out += self._emit(f, faces)
        return out

    def _emit(self, frame: np.ndarray, faces: list[tuple[int, Face]]) -> list[np.ndarray]:
        """A released frame: swapped now, or held for the next batched model call (then every frame held so far
        comes out, in order, once it has enough faces)."""
        if self.batch_size == 1:
            return [self._swap(frame, faces)]
        with self.timings.stage("detect"):
            pairs = self.pairs(frame, faces)
        self._held.append((frame, pairs))
        if sum(len(p) for _, p in self._held) < self.batch_size and len(self._held) < self.batch_size:
            return []  # at most ``batch_size`` frames wait, faces or not
        return self._run_held()

    def _run_held(self) -> list[np.ndarray]:
        """The held frames' faces through the swap model in batches, each pasted back onto its frame."""
        held, self._held = self._held, []
        if not held:
            return []
        swapper = self.ctx.hub.swapper(self.sources.backend)
        crops: list[np.ndarray] = []
        mats: list[np.ndarray] = []
        latents: list[np.ndarray] = []
        with self.timings.stage("swap"):
            for frame, pairs in held:
                for s, face in pairs:
                    crop, m = align.norm_crop(frame, face.kps, swapper.crop_size)
                    crops.append(crop)
                    mats.append(m)
                    latents.append(self._latent(swapper, s))
            swapped = iter(zip(swapper.swap_crops(crops, latents, self.batch_size), mats, strict=True))
            out: list[tuple[np.ndarray, np.ndarray, list[Face]]] = []
            for frame, pairs in held:
                img = frame
                for _ in pairs:
                    crop, m = next(swapped)
                    img = align.paste_back(img, crop, m)
                out.append((frame, img, [face for _, face in pairs]))
        out = [(frame, self._mouths(frame, img, placed), placed) for frame, img, placed in out]
        restored: list[list[tuple[np.ndarray, np.ndarray]] | None] = [None] * len(out)
        if self.restore_batch and self.plan is not None:
            with self.timings.stage("enhance"):
                crops = iter(self.plan.restorer.restore_crops(
                    [(img, face) for _, img, placed in out for face in placed],
                    self.plan.opts.codeformer_fidelity, self.batch_size))
                restored = [[next(crops) for _ in placed] for _, _, placed in out]
        return [self._enhance(img, placed, got) if placed else frame
                for (frame, img, placed), got in zip(out, restored, strict=True)]

    def _latent(self, swapper: object, s: int) -> np.ndarray:
        if s not in self._latents:
            self._latents[s] = swapper.latent(self.sources.faces[s])  # type: ignore[attr-defined]
        return self._latents[s]

    def _swap(self, frame: np.ndarray, faces: list[tuple[int, Face]]) -> np.ndarray:
        """One released frame with its resolved faces (track id, face): paired by mode, swapped, finished."""
        with self.timings.stage("detect"):
            pairs = self.pairs(frame, faces)
        if not pairs:
            return frame
        out, placed = swap_pairs(self.ctx, self.sources, frame, pairs, self.timings)
        return self._finish(frame, out, placed)

    def _finish(self, frame: np.ndarray, out: np.ndarray, placed: list[Face]) -> np.ndarray:
        """After the swap: the target's mouths kept (``mouth_mask``), restoration, the swapped-frame count."""
        return self._enhance(self._mouths(frame, out, placed), placed)

    def _mouths(self, frame: np.ndarray, out: np.ndarray, placed: list[Face]) -> np.ndarray:
        if self.options.mouth_mask and placed:
            with self.timings.stage("mouth"):
                out = keep_mouths(out, frame, placed, self.ctx.hub.parser)
        return out

    def _enhance(self, out: np.ndarray, placed: list[Face],
                 restored: list[tuple[np.ndarray, np.ndarray]] | None = None) -> np.ndarray:
        if self.plan is not None:
            with self.timings.stage("enhance"):
                out = apply_enhancement(out, None, placed, self.plan, restored).image
        self.frames_swapped += 1
        return out

    def pairs(self, frame: np.ndarray, faces: list[tuple[int, Face]]) -> list[tuple[int, Face]]:
        """(source face index, target face) for this frame, by the options' mode, stable per track."""
        mode = self.options.mode
        if not faces:
            return []
        if mode == "one_to_many":
            return [(0, face) for _, face in faces]
        if mode == "one_to_one":
            live = dict(faces)
            if self.main_track not in live:
                best = best_face(list(live.values()))
                self.main_track = next(tid for tid, face in faces if face is best)
            return [(0, live[self.main_track])]
        if mode == "sorted":
            targets = [face for _, face in faces]
            got = pair_faces("sorted", self.sources.faces, targets, self.options.direction)
            return [(s, targets[t]) for s, t in got]
        return self._similarity(frame, faces)

    def _similarity(self, frame: np.ndarray, faces: list[tuple[int, Face]]) -> list[tuple[int, Face]]:
        """Each new track is compared once with the free source faces (optimal assignment); the pairing then
        follows the track. A track below the minimum similarity is left alone."""
        live = dict(faces)
        self.assigned = {k: v for k, v in self.assigned.items() if k in live}
        taken = set(self.assigned.values())
        free = [i for i in range(len(self.sources.faces)) if i not in taken]
        new = [(tid, face) for tid, face in faces if tid not in self.assigned]
        if free and new:
            for _, face in new:
                if face.embedding is None:
                    self.analyser.embed(frame, face)
            got = pair_faces("similarity", [self.sources.faces[i] for i in free], [face for _, face in new],
                             min_similarity=self.ctx.min_similarity[self.sources.backend],
                             metric=identity_metric(self.sources.backend))
            for s, t in got:
                self.assigned[new[t][0]] = free[s]
        return [(self.assigned[tid], face) for tid, face in faces if tid in self.assigned]


def _thumbnail(frame: np.ndarray, side: int) -> np.ndarray:
    """The frame shrunk by a whole factor (area average, OpenCV's fast integer path) to a little over ``side`` px
    on its short side, for the scene-cut detector, whose own area resize to side² from a full 720p frame takes a
    non-integer generic path (2.2 ms against 0.6 ms for both steps); the histograms it compares are the same to
    a fraction of a level."""
    h, w = frame.shape[:2]
    k = min(h, w) // (side + side // 8)
    if k < 2:
        return frame
    return cv2.resize(frame, (w // k, h // k), interpolation=cv2.INTER_AREA)


def check_trim(options: VideoSwapOptions, info: VideoInfo) -> None:
    if options.start is not None and options.start >= info.duration:
        raise ApiError(422, "invalid_field", f"start ({options.start} s) is at or past the end of the "
                       f"{info.duration:.3f} s video", "start")


def swap_video(ctx: SwapContext, options: VideoSwapOptions, settings: Settings, source_paths: list[Path],
               target_path: Path, out_path: Path, progress: Progress | None = None) -> VideoSwapResult:
    """Everything that can fail is checked before the first frame: restorer models, the video (415/413/422 naming
    ``target_video``), the trim, the sources' faces. Then the frames stream; ``progress(done, total)`` is called
    after each frame (a job's callback raises to cancel, which removes the partial file)."""
    check_enhancement(ctx)
    info = probe_video(target_path, TARGET_FIELD, VideoLimits.from_settings(settings))
    check_trim(options, info)
    timings = Timings()
    backend = ctx.backend
    sources = load_sources(ctx, backend, [p.read_bytes() for p in source_paths], timings)
    enhance = options.restoration()
    plan = None
    if enhance is not None:
        plan = plan_enhancement(ctx.hub, enhance, info.width, info.height, settings.max_video_pixels, ENHANCER_FIELD)
    swapper = FrameSwapper(ctx, sources, options, float(info.fps), plan, timings, settings.video_batch_size,
                           settings.video_full_detect_every)
    try:
        result = process_video(
            target_path, out_path, stage=swapper, field=TARGET_FIELD, info=info,
            start=options.start, end=options.end, preset=settings.video_preset, audio=options.audio,
            crf=settings.video_crf if options.quality is None else options.quality, progress=progress, queue_frames=8,
        )
    finally:
        swapper.close()
    return VideoSwapResult(
        path=result.path, backend=backend, frames=result.frames, frames_swapped=swapper.frames_swapped,
        audio=str(result.audio), fps=info.fps, duration=result.duration, timings=timings,
        enhancer=plan.restorer_name if plan is not None else None,
    )
