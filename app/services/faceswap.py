"""The face swap job: detect source and target faces, pair them by mode, swap, optionally refine, encode."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from app.config import Settings
from app.errors import NoFaceError
from app.media import DecodedImage, decode_image, encode_image
from app.schemas import SwapOptions
from app.services.common import Timings, resolve_backend
from app.services.enhance import apply_enhancement, plan_enhancement, resolve_models
from models.face import Face, best_face
from models.hub import ModelHub
from models.swap.pairing import Metric, match_by_iou, pair_faces


@dataclass
class SwapResult:
    content: bytes
    media_type: str
    backend: str
    faces_swapped: int
    timings: Timings
    enhancer: str | None = None  # restorer applied after the swap, when enhancement options were given

    def headers(self) -> dict[str, str]:
        """The response headers of a swap (also kept with a job's result)."""
        out = {"X-Face-Backend": self.backend, "X-Faces-Swapped": str(self.faces_swapped),
               "Server-Timing": self.timings.header()}
        if self.enhancer:
            out["X-Face-Enhancer"] = self.enhancer
        return out


@dataclass
class Sources:
    """Source faces with the image each came from (the classical swap needs the pixels)."""

    backend: str
    faces: list[Face]
    images: list[np.ndarray]


@dataclass
class SwapContext:
    hub: ModelHub
    options: SwapOptions = field(default_factory=SwapOptions)
    format: str = "png"
    quality: int = 95
    max_pixels: int = 40_000_000
    max_output_pixels: int = 160_000_000
    min_similarity: dict[str, float] = field(default_factory=lambda: {"neural": 0.2, "builtin": 0.4})
    source_field: str = "source_image"
    target_field: str = "target_image"

    @property
    def backend(self) -> str:
        return resolve_backend(self.hub, "faceswap", self.options.backend or "auto")


ENHANCER_FIELD = "use_codeformer"  # the swap option a missing restorer is reported against


def swap_context(hub: ModelHub, settings: Settings, options: SwapOptions, source_field: str = "source_image",
                 target_field: str = "target_image") -> SwapContext:
    """A swap's context with the server's defaults and limits filled in (every swap endpoint and job uses it)."""
    return SwapContext(
        hub=hub,
        options=options.model_copy(update={"backend": options.backend or settings.default_backend}),
        format=options.format or settings.output_format,
        quality=settings.jpeg_quality,
        max_pixels=settings.max_image_pixels,
        max_output_pixels=settings.max_output_pixels,
        min_similarity={"neural": settings.min_similarity_neural, "builtin": settings.min_similarity_builtin},
        source_field=source_field,
        target_field=target_field,
    )


def identity_metric(backend: str) -> Metric:
    """How a backend's identity vectors compare: ArcFace by cosine, dlib descriptors by Euclidean distance."""
    return "cosine" if backend == "neural" else "euclidean"


def load_sources(ctx: SwapContext, backend: str, datas: list[bytes], timings: Timings) -> Sources:
    """Decode and analyse the source image(s).

    One image: all its faces (``sorted`` and ``similarity`` use them all, the other modes its best face).
    Several images: the largest face of each, merged into one source face whose embedding is the mean of theirs
    in the backend's identity space (see ``identity_metric``); its pixels (for the built-in swap) are those of the
    first image's face.
    """
    analyser = ctx.hub.analyser(backend)
    need_embeddings = ctx.options.mode == "similarity" or ctx.hub.swapper(backend).needs_source_embedding
    if len(datas) == 1:
        with timings.stage("decode"):
            img = decode_image(datas[0], ctx.source_field, ctx.max_pixels).bgr
        with timings.stage("detect"):
            faces = analyser.get(img)
            if not faces:
                raise NoFaceError(ctx.source_field)
            if ctx.options.mode in ("one_to_one", "one_to_many"):
                faces = [best_face(faces)]  # type: ignore[list-item]
            if need_embeddings:
                for f in faces:
                    analyser.embed(img, f)
        return Sources(backend, faces, [img] * len(faces))
    # Several files: one at a time, keeping only each best face (and the first file's pixels).
    bests: list[Face] = []
    first: np.ndarray | None = None
    for i, data in enumerate(datas):
        with timings.stage("decode"):
            img = decode_image(data, ctx.source_field, ctx.max_pixels).bgr
        with timings.stage("detect"):
            best = best_face(analyser.get(img))
            if best is None:
                raise NoFaceError(ctx.source_field, f" (file {i + 1} of {len(datas)})")
            analyser.embed(img, best)
        bests.append(best)
        first = img if first is None else first
    assert first is not None
    if identity_metric(backend) == "cosine":  # the mean direction of the unit identities
        mean = np.mean([f.normed_embedding for f in bests], axis=0)
        merged_embedding = mean / max(float(np.linalg.norm(mean)), 1e-12)
    else:  # dlib descriptors are compared by Euclidean distance: average them as they are
        merged_embedding = np.mean([np.asarray(f.embedding, np.float32) for f in bests], axis=0)
    merged = replace(bests[0], embedding=np.asarray(merged_embedding, np.float32))
    return Sources(backend, [merged], [first])


def swap_faces(ctx: SwapContext, sources: Sources, target: DecodedImage,
               timings: Timings) -> tuple[np.ndarray, list[Face]]:
    """The target with source faces swapped in by the options' mode; returns (image, the swapped faces)."""
    opts = ctx.options
    analyser = ctx.hub.analyser(sources.backend)
    with timings.stage("detect"):
        targets = analyser.get(target.bgr, embeddings=opts.mode == "similarity")
        if not targets:
            raise NoFaceError(ctx.target_field)
        pairs = pair_faces(
            opts.mode, sources.faces, targets, opts.direction,
            min_similarity=ctx.min_similarity[sources.backend],
            metric=identity_metric(sources.backend),
        )
    return swap_pairs(ctx, sources, target.bgr, [(s, targets[t]) for s, t in pairs], timings)


def swap_pairs(ctx: SwapContext, sources: Sources, img: np.ndarray, pairs: list[tuple[int, Face]],
               timings: Timings) -> tuple[np.ndarray, list[Face]]:
    """``img`` with source face ``s`` swapped onto each target face of ``pairs``, then the refinement passes
    (re-detect, swap again onto the face found where each swap landed); returns (image, the swapped faces)."""
    analyser, swapper = ctx.hub.analyser(sources.backend), ctx.hub.swapper(sources.backend)
    out = img
    with timings.stage("swap"):
        for s, face in pairs:
            out = swapper.get(out, face, sources.faces[s], sources.images[s])
    placed = [face for _, face in pairs]
    for _ in range(ctx.options.face_refinement_steps - 1):
        with timings.stage("refine"):
            found = analyser.get(out)
            for i, (s, _) in enumerate(pairs):
                again = match_by_iou(placed[i], found)
                if again is not None:  # the swapped face is found again: swap onto its new landmarks
                    out = swapper.get(out, again, sources.faces[s], sources.images[s])
                    placed[i] = again
    return out, placed


def encode(ctx: SwapContext, img: np.ndarray, alpha: np.ndarray | None, timings: Timings) -> tuple[bytes, str]:
    with timings.stage("encode"):
        return encode_image(img, ctx.format, ctx.quality, alpha)


def check_enhancement(ctx: SwapContext) -> None:
    """Fail before any swap when the requested restoration cannot run (e.g. CodeFormer not downloaded)."""
    enhance = ctx.options.restoration()
    if enhance is not None:
        resolve_models(ctx.hub, enhance, ENHANCER_FIELD)


def swap(ctx: SwapContext, source_datas: list[bytes], target_data: bytes) -> SwapResult:
    """/faceswap and /swap_img: everything for one target, in one worker thread."""
    check_enhancement(ctx)
    backend = ctx.backend
    timings = Timings()
    sources = load_sources(ctx, backend, source_datas, timings)
    return swap_target(ctx, sources, target_data, timings)


def swap_target(ctx: SwapContext, sources: Sources, target_data: bytes, timings: Timings | None = None) -> SwapResult:
    """One target against already analysed sources (/swap_url analyses the source once for all targets)."""
    timings = timings if timings is not None else Timings()
    with timings.stage("decode"):
        target = decode_image(target_data, ctx.target_field, ctx.max_pixels)
    enhance = ctx.options.restoration()
    plan = None
    if enhance is not None:
        plan = plan_enhancement(ctx.hub, enhance, target.width, target.height, ctx.max_output_pixels, ENHANCER_FIELD)
    out, placed = swap_faces(ctx, sources, target, timings)
    alpha, enhancer = target.alpha, None
    if plan is not None:
        with timings.stage("enhance"):
            enhanced = apply_enhancement(out, alpha, placed, plan)
        out, alpha, enhancer = enhanced.image, enhanced.alpha, enhanced.restorer
    content, media_type = encode(ctx, out, alpha, timings)
    return SwapResult(content, media_type, sources.backend, len(placed), timings, enhancer)
