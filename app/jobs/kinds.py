"""The registered job kinds: the sync endpoints' work, run by the job runner with progress and cancel checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from app.jobs.registry import InputSpec, JobContext, JobKind, JobOutput
from app.schemas import EnhanceOptions, GenderSwapOptions, LipsyncOptions, SwapOptions, VideoSwapOptions

if TYPE_CHECKING:
    from app.config import Settings

_EXT = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}


class _Checked:
    """Delegates to ``inner``; model calls first check whether the job was canceled, so a multi-pass swap or
    enhancement stops between its detector/swapper/restorer calls rather than at the end."""

    _CALLS = ("get", "embed", "restore", "upscale", "enhance", "mask", "run")

    def __init__(self, inner: Any, check: Callable[[], None]) -> None:
        self._inner = inner
        self._check = check

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name in self._CALLS and callable(value):
            def checked(*args: Any, **kwargs: Any) -> Any:
                self._check()
                return value(*args, **kwargs)

            return checked
        return value


class CheckingHub(_Checked):
    def analyser(self, backend: str) -> Any:
        return _Checked(self._inner.analyser(backend), self._check)

    def swapper(self, backend: str) -> Any:
        return _Checked(self._inner.swapper(backend), self._check)


def _write(ctx: JobContext, content: bytes, media_type: str, headers: dict[str, str]) -> JobOutput:
    """The result file of an image job, in its work dir, with the response headers of the synchronous answer."""
    path = ctx.workdir / f"result{_EXT.get(media_type, '.bin')}"
    path.write_bytes(content)
    return JobOutput(path, media_type, headers)


def run_faceswap(ctx: JobContext) -> JobOutput:
    from app.services.faceswap import swap, swap_context

    ctx.progress(0, 1)
    options: SwapOptions = ctx.options  # type: ignore[assignment]
    sources = [p.read_bytes() for p in ctx.inputs["source_image"]]
    target = ctx.inputs["target_image"][0].read_bytes()
    sctx = swap_context(CheckingHub(ctx.hub, ctx.check), ctx.settings, options,  # type: ignore[arg-type]
                        "source_image", "target_image")
    result = swap(sctx, sources, target)
    ctx.check()
    out = _write(ctx, result.content, result.media_type, result.headers())
    ctx.progress(1, 1)
    return out


FACESWAP = JobKind(
    name="faceswap",
    options=SwapOptions,
    inputs={
        "source_image": InputSpec("image", multiple=True, max_count_setting="max_source_images",
                                  description="Image(s) with the face to use"),
        "target_image": InputSpec("image", description="Image whose faces are replaced"),
    },
    run=run_faceswap,
    unit="steps",
    summary="Face swap as a job (the work of POST /faceswap)",
)

def run_enhance(ctx: JobContext) -> JobOutput:
    from app.services.enhance import enhance, enhance_request, parse_faces

    ctx.progress(0, 1)
    options: EnhanceOptions = ctx.options  # type: ignore[assignment]
    faces, size = parse_faces(options.faces, ctx.settings.max_faces) if options.faces is not None else (None, None)
    req = enhance_request(ctx.settings, options, ctx.inputs["image"][0].read_bytes(), faces, size)
    result = enhance(CheckingHub(ctx.hub, ctx.check), req)  # type: ignore[arg-type]
    ctx.check()
    out = _write(ctx, result.content, result.media_type, result.headers())
    ctx.progress(1, 1)
    return out


def check_enhance(options: BaseModel, settings: Settings) -> None:
    """Refuse a malformed ``faces`` at submit (422 naming it) rather than fail the job later."""
    from app.services.enhance import parse_faces

    faces = getattr(options, "faces", None)
    if faces is not None:
        parse_faces(faces, settings.max_faces)


ENHANCE = JobKind(
    name="enhance",
    options=EnhanceOptions,
    inputs={"image": InputSpec("image", description="The image (JPEG, PNG, WebP, BMP, TIFF, GIF)")},
    run=run_enhance,
    unit="steps",
    summary="Face restoration and upscaling as a job (the work of POST /enhance)",
    validate=check_enhance,
)

def run_faceswap_video(ctx: JobContext) -> JobOutput:
    from app.services.faceswap import swap_context
    from app.services.video_swap import SOURCE_FIELD, TARGET_FIELD, swap_video

    options: VideoSwapOptions = ctx.options  # type: ignore[assignment]
    sctx = swap_context(ctx.hub, ctx.settings, options, SOURCE_FIELD, TARGET_FIELD)
    result = swap_video(sctx, options, ctx.settings, ctx.inputs[SOURCE_FIELD], ctx.inputs[TARGET_FIELD][0],
                        ctx.workdir / "result.mp4", progress=ctx.progress)
    ctx.progress(result.frames, result.frames)
    return JobOutput(result.path, "video/mp4", result.headers())


FACESWAP_VIDEO = JobKind(
    name="faceswap_video",
    options=VideoSwapOptions,
    inputs={
        "source_image": InputSpec("image", multiple=True, max_count_setting="max_source_images",
                                  description="Image(s) with the face to use"),
        "target_video": InputSpec("video", description="Video whose faces are replaced"),
    },
    run=run_faceswap_video,
    unit="frames",
    summary="Video face swap as a job (the work of POST /faceswap/video); progress counts frames",
)

def run_lipsync(ctx: JobContext) -> JobOutput:
    from app.services.lipsync import AUDIO_FIELD, IMAGE_FIELD, VIDEO_FIELD, lipsync

    options: LipsyncOptions = ctx.options  # type: ignore[assignment]
    video, image = ctx.inputs.get(VIDEO_FIELD) or [], ctx.inputs.get(IMAGE_FIELD) or []
    result = lipsync(ctx.hub, options, ctx.settings, ctx.inputs[AUDIO_FIELD][0], ctx.workdir / "result.mp4",
                     video_path=video[0] if video else None, image_path=image[0] if image else None,
                     progress=ctx.progress)
    ctx.progress(result.frames, result.frames)
    return JobOutput(result.path, "video/mp4", result.headers())


LIPSYNC = JobKind(
    name="lipsync",
    options=LipsyncOptions,
    inputs={
        "video": InputSpec("video", required=False, description="The video whose speaker is lip-synced (or image)"),
        "image": InputSpec("image", required=False, description="A still portrait to animate (or video)"),
        "audio": InputSpec("audio", description="The new audio (WAV, MP3, AAC/M4A, Ogg/Opus, FLAC, or a video's)"),
    },
    run=run_lipsync,
    unit="frames",
    summary="Lip sync as a job (the work of POST /lipsync); progress counts output frames",
)

def run_genderswap(ctx: JobContext) -> JobOutput:
    from app.services.genderswap import genderswap, genderswap_request

    options: GenderSwapOptions = ctx.options  # type: ignore[assignment]
    ctx.progress(0, None)
    req = genderswap_request(ctx.settings, options, ctx.inputs["image"][0].read_bytes())
    result = genderswap(ctx.hub, req, progress=ctx.progress)  # one progress step per denoising step
    ctx.check()
    return _write(ctx, result.content, result.media_type, result.headers(options.method, options.sampler))


GENDERSWAP = JobKind(
    name="genderswap",
    options=GenderSwapOptions,
    inputs={"image": InputSpec("image", description="The portrait (JPEG, PNG, WebP, BMP, TIFF, GIF)")},
    run=run_genderswap,
    unit="steps",
    summary="Gender swap as a job (the work of POST /genderswap); progress counts denoising steps",
)

KINDS: dict[str, JobKind] = {k.name: k for k in (GENDERSWAP, FACESWAP, ENHANCE, FACESWAP_VIDEO, LIPSYNC)}
