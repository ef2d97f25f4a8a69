"""POST /enhance: restore faces (GFPGAN, CodeFormer or built-in) and upscale."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Request, Response, UploadFile

from app.deps import HubDep, PoolDep, SettingsDep
from app.errors import error_responses
from app.jobs import ASYNC_RESPONSE, submit, wants_async
from app.routers.forms import options_form
from app.schemas import EnhanceOptions
from app.services.enhance import enhance, enhance_request, parse_faces
from app.services.nsfw import nsfw_responses
from app.uploads import read_upload

router = APIRouter(tags=["enhance"])


@router.post(
    "/enhance",
    response_class=Response,
    summary="Restore the faces of an image and optionally upscale it",
    responses={
        200: {
            "description": "The enhanced image. Headers: `X-Face-Backend` (gfpgan|codeformer|builtin), "
            "`X-Faces-Enhanced`, `X-Upscaler` (real_esrgan_x2|real_esrgan_x4|lanczos|none), `X-Analysis-Backend`.",
            "content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}},
        },
        **ASYNC_RESPONSE,
        **error_responses(400, 413, 415, 422, 503),
        **nsfw_responses("image"),
    },
)
async def enhance_endpoint(
    request: Request,
    hub: HubDep,
    pool: PoolDep,
    settings: SettingsDep,
    image: Annotated[UploadFile, File(description="The image (JPEG, PNG, WebP, BMP, TIFF, GIF)")],
    options: Annotated[EnhanceOptions, Depends(options_form(EnhanceOptions, ("image",), query=False))],
) -> Response:
    faces = options.faces
    parsed, size = parse_faces(faces, settings.max_faces) if faces is not None else (None, None)
    if wants_async(request):
        return await submit(request, "enhance", options, {"image": [image]})
    data = await read_upload(image, "image", settings.max_upload_bytes)
    result = await pool.run(enhance, hub, enhance_request(settings, options, data, parsed, size))
    return Response(content=result.content, media_type=result.media_type, headers=result.headers())
