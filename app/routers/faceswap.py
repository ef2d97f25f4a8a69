"""Face swap over multipart uploads: POST /faceswap (the seed contract) and POST /swap_img (the Ray Serve one)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Request, Response, UploadFile

from app.config import Settings
from app.deps import HubDep, PoolDep, SettingsDep
from app.errors import error_responses
from app.inference import InferencePool
from app.jobs import ASYNC_RESPONSE, submit, wants_async
from app.routers.forms import options_form
from app.schemas import IMAGE_RESPONSE, SwapOptions
from app.services.faceswap import SwapContext, SwapResult, swap, swap_context
from app.services.nsfw import nsfw_responses
from app.uploads import check_file_count, read_upload

router = APIRouter(tags=["face swap"])
RESPONSES = {**IMAGE_RESPONSE, **ASYNC_RESPONSE, **error_responses(400, 413, 415, 422, 503),
             **nsfw_responses("target_image")}


async def run_swap(pool: InferencePool, ctx: SwapContext, sources: list[UploadFile], target: UploadFile,
                   settings: Settings) -> Response:
    check_file_count(len(sources), ctx.source_field, settings.max_source_images, "FACEAPI_MAX_SOURCE_IMAGES")
    max_bytes = settings.max_upload_bytes
    source_datas = [await read_upload(f, ctx.source_field, max_bytes) for f in sources]
    target_data = await read_upload(target, ctx.target_field, max_bytes)
    result: SwapResult = await pool.run(swap, ctx, source_datas, target_data)
    return Response(content=result.content, media_type=result.media_type, headers=result.headers())


@router.post(
    "/faceswap",
    response_class=Response,
    summary="Swap faces of source_image into target_image (default: largest source face → best target face)",
    responses=RESPONSES,
)
async def faceswap_endpoint(
    request: Request,
    hub: HubDep,
    pool: PoolDep,
    settings: SettingsDep,
    source_image: Annotated[
        list[UploadFile],
        File(description="Image(s) with the face to use. Send several to average the identity of their largest faces"),
    ],
    target_image: Annotated[UploadFile, File(description="Image whose faces are replaced")],
    options: Annotated[SwapOptions, Depends(options_form(SwapOptions, ("source_image", "target_image")))],
) -> Response:
    if wants_async(request):
        return await submit(request, "faceswap", options, {"source_image": source_image,
                                                            "target_image": [target_image]})
    ctx = swap_context(hub, settings, options, "source_image", "target_image")
    return await run_swap(pool, ctx, source_image, target_image, settings)


@router.post(
    "/swap_img",
    response_class=Response,
    summary="Swap the face(s) of `face` into `model` (options as form fields or query parameters)",
    responses=RESPONSES,
)
async def swap_img_endpoint(
    request: Request,
    hub: HubDep,
    pool: PoolDep,
    settings: SettingsDep,
    face: Annotated[list[UploadFile], File(description="Source image(s): the face(s) to use")],
    model: Annotated[UploadFile, File(description="Target image whose faces are replaced")],
    options: Annotated[SwapOptions, Depends(options_form(SwapOptions, ("face", "model")))],
) -> Response:
    if wants_async(request):  # the same job as /faceswap: its inputs are named source_image and target_image
        return await submit(request, "faceswap", options, {"source_image": face, "target_image": [model]})
    ctx = swap_context(hub, settings, options, "face", "model")
    return await run_swap(pool, ctx, face, model, settings)
