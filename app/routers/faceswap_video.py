"""POST /faceswap/video: swap faces through a whole video, with its audio; synchronous (the MP4) or as a job."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Request, UploadFile
from fastapi.responses import FileResponse

from app.deps import HubDep, PoolDep, SettingsDep
from app.errors import error_responses
from app.jobs import ASYNC_RESPONSE, submit, wants_async
from app.routers.forms import options_form
from app.schemas import VideoSwapOptions
from app.services.faceswap import swap_context
from app.services.nsfw import nsfw_responses
from app.services.video_swap import SOURCE_FIELD, TARGET_FIELD, swap_video
from app.uploads import check_file_count, file_response, spool_upload, work_dir

router = APIRouter(tags=["face swap"])

VIDEO_RESPONSE = {
    200: {
        "description": "The video (H.264 MP4, the target's frame rate and timing) with the target's audio. Headers: "
        "`X-Face-Backend`, `X-Frames`, `X-Faces-Swapped-Frames`, `X-Audio` (copied | reencoded-aac | none-in-source | "
        "dropped), `X-Face-Enhancer` when enhancement options were given, `Server-Timing` (summed per stage).",
        "content": {"video/mp4": {}},
    }
}


@router.post(
    "/faceswap/video",
    response_class=FileResponse,
    summary="Swap the face of source_image through target_video (audio kept); `Prefer: respond-async` for a job",
    responses={**VIDEO_RESPONSE, **ASYNC_RESPONSE, **error_responses(400, 413, 415, 422, 503),
               **nsfw_responses(TARGET_FIELD)},
)
async def faceswap_video_endpoint(
    request: Request,
    hub: HubDep,
    pool: PoolDep,
    settings: SettingsDep,
    source_image: Annotated[
        list[UploadFile],
        File(description="Image(s) with the face to use. Send several to average the identity of their largest faces"),
    ],
    target_video: Annotated[UploadFile, File(description="Video whose faces are replaced (MP4/MOV, MKV/WebM, AVI)")],
    options: Annotated[VideoSwapOptions, Depends(options_form(VideoSwapOptions, (SOURCE_FIELD, TARGET_FIELD)))],
) -> FileResponse:
    check_file_count(len(source_image), SOURCE_FIELD, settings.max_source_images, "FACEAPI_MAX_SOURCE_IMAGES")
    if wants_async(request):
        return await submit(request, "faceswap_video", options,  # type: ignore[return-value]
                            {SOURCE_FIELD: source_image, TARGET_FIELD: [target_video]})
    async with work_dir(settings, "video") as work:
        sources = [await spool_upload(f, SOURCE_FIELD, settings.max_upload_bytes, work / f"source-{i}")
                   for i, f in enumerate(source_image)]
        target = await spool_upload(target_video, TARGET_FIELD, settings.max_video_bytes, work / "target")
        ctx = swap_context(hub, settings, options, SOURCE_FIELD, TARGET_FIELD)
        result = await pool.run(swap_video, ctx, options, settings, sources, target, work / "result.mp4")
    return file_response(result.path, "video/mp4", result.headers(), "faceswap.mp4", work)
