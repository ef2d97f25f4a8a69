"""POST /enhance: restore faces (GFPGAN, CodeFormer or built-in) and upscale."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Response, UploadFile
from pydantic import TypeAdapter, ValidationError

from app.deps import HubDep, PoolDep, SettingsDep
from app.errors import ApiError, error_responses
from app.routers.forms import options_form, validation_error
from app.schemas import EnhanceOptions, FaceOut
from app.services.enhance import enhance, enhance_request
from app.uploads import read_upload

router = APIRouter(tags=["enhance"])
_FACES = TypeAdapter(list[FaceOut])


def parse_faces(raw: str, max_faces: int) -> tuple[list[FaceOut], tuple[int, int] | None]:
    """``faces`` is the JSON /analyze returns (``{"width", "height", "faces": [...]}``) or just its list."""
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ApiError(422, "invalid_field", f"faces is not JSON: {exc.msg} at position {exc.pos}", "faces") from None
    size = None
    if isinstance(doc, dict):
        if "faces" not in doc:
            raise ApiError(422, "invalid_field", "faces must be the /analyze JSON or its `faces` list", "faces")
        if "width" in doc and "height" in doc:
            try:
                size = (int(doc["width"]), int(doc["height"]))
            except (TypeError, ValueError):
                raise ApiError(422, "invalid_field", "faces: width and height must be integers", "faces") from None
        doc = doc["faces"]
    if isinstance(doc, list) and len(doc) > max_faces:
        raise ApiError(422, "invalid_field", f"faces lists {len(doc)} faces; at most {max_faces} "
                       "(FACEAPI_MAX_FACES)", "faces")
    try:
        return _FACES.validate_python(doc), size
    except ValidationError as exc:
        raise validation_error(exc, "faces") from None


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
        **error_responses(413, 415, 422, 503),
    },
)
async def enhance_endpoint(
    hub: HubDep,
    pool: PoolDep,
    settings: SettingsDep,
    image: Annotated[UploadFile, File(description="The image (JPEG, PNG, WebP, BMP, TIFF, GIF)")],
    options: Annotated[EnhanceOptions, Depends(options_form(EnhanceOptions, ("image",), query=False,
                                                            extra_fields=("faces",)))],
    faces: Annotated[
        str | None,
        Form(description="Optional: the JSON /analyze returned for this image (or its `faces` list) to skip "
             "detection; `[]` upscales without restoring any face",
             examples=['{"width": 512, "height": 512, "faces": [{"bbox": [180, 150, 330, 330], "score": 0.99, '
                       '"kps": [[220, 220], [290, 220], [255, 260], [225, 295], [285, 295]]}]}']),
    ] = None,
) -> Response:
    parsed, size = parse_faces(faces, settings.max_faces) if faces is not None else (None, None)
    data = await read_upload(image, "image", settings.max_upload_bytes)
    result = await pool.run(enhance, hub, enhance_request(settings, options, data, parsed, size))
    return Response(
        content=result.content,
        media_type=result.media_type,
        headers={
            "X-Face-Backend": result.enhanced.restorer,
            "X-Faces-Enhanced": str(result.enhanced.faces),
            "X-Upscaler": result.enhanced.upscaler,
            "X-Analysis-Backend": result.analysis,
            "Server-Timing": result.timings.header(),
        },
    )
