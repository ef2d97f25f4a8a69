"""POST /lipsync: a video (or a still portrait) and an audio track → the video lip-synced to the audio, with the
audio muxed in; synchronous (the MP4) or as a job."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, File, Request, UploadFile
from fastapi.responses import FileResponse

from app.deps import HubDep, PoolDep, SettingsDep
from app.errors import ApiError, error_responses
from app.jobs import ASYNC_RESPONSE, submit, wants_async
from app.routers.forms import options_form
from app.schemas import LipsyncOptions
from app.services.lipsync import AUDIO_FIELD, IMAGE_FIELD, VIDEO_FIELD, lipsync
from app.services.nsfw import nsfw_responses
from app.uploads import file_response, spool_upload, work_dir

router = APIRouter(tags=["lip sync"])

LIPSYNC_RESPONSE = {
    200: {
        "description": "The video (H.264 MP4) with the new audio muxed in (copied or AAC, never silent). Headers: "
        "`X-Face-Backend` (builtin = the loudness-driven preview | neural = Wav2Lip), `X-Frames`, `X-Lipsync-Frames` "
        "(frames where a face was lip-synced; 0 when no frame has a face), `X-Audio` (copied | reencoded-aac), "
        "`X-Face-Enhancer` with enhance=true, `Server-Timing` (summed per stage).",
        "content": {"video/mp4": {}},
    }
}


@router.post(
    "/lipsync",
    response_class=FileResponse,
    summary="Lip-sync a video (or a still image) to an audio track; `Prefer: respond-async` for a job",
    responses={**LIPSYNC_RESPONSE, **ASYNC_RESPONSE, **error_responses(400, 413, 415, 422, 503),
               **nsfw_responses(VIDEO_FIELD, outputs=True)},
)
async def lipsync_endpoint(
    request: Request,
    hub: HubDep,
    pool: PoolDep,
    settings: SettingsDep,
    audio: Annotated[UploadFile, File(description="The new audio: WAV, MP3, AAC/M4A, Ogg/Opus, FLAC or a video's "
                                                   "audio track")],
    options: Annotated[LipsyncOptions, Depends(options_form(LipsyncOptions, (VIDEO_FIELD, IMAGE_FIELD, AUDIO_FIELD)))],
    video: Annotated[UploadFile | None, File(description="The video whose speaker is lip-synced (or send image)")]
    = None,
    image: Annotated[UploadFile | None, File(description="A still portrait to animate (or send video); see fps")]
    = None,
) -> FileResponse:
    if (video is None) == (image is None):
        raise ApiError(422, "invalid_field", "send exactly one of video and image",
                       IMAGE_FIELD if video is not None else VIDEO_FIELD)
    if wants_async(request):
        files = {AUDIO_FIELD: [audio], VIDEO_FIELD: [video] if video else [], IMAGE_FIELD: [image] if image else []}
        return await submit(request, "lipsync", options, files)  # type: ignore[return-value]
    async with work_dir(settings, "lipsync") as work:
        video_path = image_path = None
        if video is not None:
            video_path = await spool_upload(video, VIDEO_FIELD, settings.max_video_bytes, work / "video")
        if image is not None:
            image_path = await spool_upload(image, IMAGE_FIELD, settings.max_upload_bytes, work / "image")
        audio_path = await spool_upload(audio, AUDIO_FIELD, settings.max_audio_bytes, work / "audio")
        job = partial(lipsync, video_path=video_path, image_path=image_path)
        result = await pool.run(job, hub, options, settings, audio_path, work / "result.mp4")
    return file_response(result.path, "video/mp4", result.headers(), "lipsync.mp4", work)
