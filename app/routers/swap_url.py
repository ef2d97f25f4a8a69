"""POST /swap_url: swap on files already in the storage bucket."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.deps import HubDep, PoolDep, SettingsDep
from app.errors import ApiError, ErrorResponse
from app.schemas import SwapUrlError, SwapUrlRequest, SwapUrlResponse
from app.services.faceswap import swap_context
from app.services.swap_url import swap_url

router = APIRouter(tags=["face swap"])


@router.post(
    "/swap_url",
    response_model=SwapUrlResponse,
    response_model_exclude_none=True,
    summary="Swap the face of a bucket file into one or more bucket files; results are written beside them",
    description="The answer names its swap backend in the `X-Face-Backend` header.",
    responses={
        206: {"model": SwapUrlResponse, "description": "Some targets failed: `failed` lists them with the reason"},
        400: {"model": SwapUrlError, "description": "All targets failed, the source has no face, or a filename "
              "would escape the bucket (`..`, absolute, URL scheme, backslash, NUL); `invalid_body` when the body is "
              "not JSON (malformed, invalid UTF-8, nested too deep)"},
        404: {"model": ErrorResponse, "description": "face_filename is not in the bucket"},
        413: {"model": ErrorResponse, "description": "face_filename is over the upload byte limit"},
        422: {"model": ErrorResponse, "description": "Invalid JSON field or option (named in `field`)"},
        503: {"model": ErrorResponse, "description": "Busy, loading, or the storage backend is unavailable"},
    },
)
async def swap_url_endpoint(body: SwapUrlRequest, request: Request, hub: HubDep, pool: PoolDep,
                            settings: SettingsDep) -> JSONResponse:
    bucket = request.app.state.bucket
    if bucket is None:
        raise ApiError(503, "storage_unavailable", request.app.state.bucket_error or "no storage is configured")
    ctx = swap_context(hub, settings, body.options, "face_filename", "model_filenames")
    outcome = await swap_url(pool, bucket, ctx, body.face_filename, body.model_filenames, settings.max_upload_bytes,
                             settings.swap_url_concurrency)
    headers = {"X-Face-Backend": outcome.backend}
    if not outcome.urls:
        return JSONResponse(
            {"error": {"code": "all_failed", "message": f"all {len(body.model_filenames)} targets failed",
                       "field": "model_filenames"}, "failed": outcome.failed},
            status_code=400, headers=headers,
        )
    if outcome.failed:
        return JSONResponse({"urls": outcome.urls, "failed": outcome.failed}, status_code=206, headers=headers)
    return JSONResponse({"urls": outcome.urls}, status_code=200, headers=headers)
