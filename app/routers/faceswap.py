"""POST /faceswap: the seed contract (multipart source_image + target_image → image)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Response, UploadFile

from app.deps import HubDep, PoolDep, SettingsDep
from app.errors import error_responses
from app.schemas import IMAGE_RESPONSE, Backend, ImageFormat
from app.services.faceswap import SwapRequest, swap
from app.uploads import read_upload

router = APIRouter(tags=["face swap"])


@router.post(
    "/faceswap",
    response_class=Response,
    summary="Put the largest face of source_image onto the best face of target_image",
    responses={**IMAGE_RESPONSE, **error_responses(413, 415, 422, 503)},
)
async def faceswap_endpoint(
    hub: HubDep,
    pool: PoolDep,
    settings: SettingsDep,
    source_image: Annotated[UploadFile, File(description="Image with the face to use (its largest face)")],
    target_image: Annotated[UploadFile, File(description="Image whose best face is replaced")],
    backend: Annotated[
        Backend | None, Form(description="auto = neural when its weights are loaded; default FACEAPI_DEFAULT_BACKEND")
    ] = None,
    format: Annotated[ImageFormat | None, Form(description="Output format; default from FACEAPI_OUTPUT_FORMAT")] = None,
) -> Response:
    req = SwapRequest(
        source=await read_upload(source_image, "source_image", settings.max_upload_bytes),
        target=await read_upload(target_image, "target_image", settings.max_upload_bytes),
        backend=backend or settings.default_backend,
        format=format or settings.output_format,
        quality=settings.jpeg_quality,
        max_pixels=settings.max_image_pixels,
    )
    result = await pool.run(swap, hub, req)
    return Response(
        content=result.content,
        media_type=result.media_type,
        headers={
            "X-Face-Backend": result.backend,
            "X-Faces-Swapped": str(result.faces_swapped),
            "Server-Timing": result.timings.header(),
        },
    )
