"""POST /genderswap (multipart) and the reference's POST /api/swap/ (base64 in a form, JSON out)."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import APIRouter, Depends, File, Request, Response, UploadFile
from pydantic import ValidationError

from app import audit
from app.deps import HubDep, PoolDep, SettingsDep
from app.errors import ApiError, TooLargeError, error_responses, validation_error
from app.jobs import ASYNC_RESPONSE, submit, wants_async
from app.routers.forms import options_form
from app.schemas import ApiSwapForm, ApiSwapResponse, GenderSwapOptions
from app.services.genderswap import genderswap, genderswap_request, model_unavailable
from app.services.nsfw import nsfw_responses
from app.uploads import read_upload

router = APIRouter(tags=["genderswap"])

_GENDERS = {"female": "female", "woman": "female", "f": "female", "girl": "female",
            "male": "male", "man": "male", "m": "male", "boy": "male"}
_HEADERS = ("`X-Face-Backend` (neural), `X-Seed` (the seed used: send it back to reproduce the image), "
            "`X-Target-Gender` (per face), `X-Faces-Swapped`, `X-Analysis-Backend`, `X-Genderswap-Method`, "
            "`X-Genderswap-Mask` (bisenet|landmarks|none), `X-Sampler`, `X-Strength` and `X-Black-Retry` (1 when an "
            "all-black output was retried with strength + 0.1), `Server-Timing`.")


@router.post(
    "/genderswap",
    response_class=Response,
    summary="Render the person as the other gender (Stable Diffusion inpainting of face and hair)",
    responses={
        200: {"description": "The image, at the input's size, with its alpha. Headers: " + _HEADERS,
              "content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}},
        **ASYNC_RESPONSE,
        **error_responses(400, 413, 415, 422, 500, 503),
        **nsfw_responses("image", outputs=True),
    },
)
async def genderswap_endpoint(
    request: Request,
    hub: HubDep,
    pool: PoolDep,
    settings: SettingsDep,
    image: Annotated[UploadFile, File(description="The portrait (JPEG, PNG, WebP, BMP, TIFF, GIF)")],
    options: Annotated[GenderSwapOptions, Depends(options_form(GenderSwapOptions, ("image",), query=False))],
) -> Response:
    error = model_unavailable(hub, settings)  # before a byte of the image is read
    if error is not None:
        raise error
    if wants_async(request):
        return await submit(request, "genderswap", options, {"image": [image]})
    data = await read_upload(image, "image", settings.max_upload_bytes)
    result = await pool.run(genderswap, hub, genderswap_request(settings, options, data))
    return Response(content=result.content, media_type=result.media_type,
                    headers=result.headers(options.method, options.sampler))


async def api_swap_form(request: Request, settings: SettingsDep) -> ApiSwapForm:
    """The reference's form, urlencoded or multipart; the base64 image may be as large as an upload."""
    limit = settings.max_upload_bytes * 4 // 3 + 1024
    form = await request.form(max_part_size=limit)
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    try:
        return ApiSwapForm.model_validate(values)
    except ValidationError as exc:
        raise validation_error(exc) from None


def _decode_base64(text: str, max_bytes: int) -> bytes:
    if text.startswith("data:"):
        text = text.partition(",")[2]
    text = "".join(text.split())
    if len(text) * 3 // 4 > max_bytes + 3:
        raise TooLargeError("encoded_base_img", f"encoded_base_img decodes to over the limit of {max_bytes} bytes")
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), validate=False)
    except (binascii.Error, ValueError):
        raise ApiError(422, "invalid_field", "encoded_base_img is not base64", "encoded_base_img") from None
    if not data:
        raise ApiError(422, "invalid_field", "encoded_base_img is empty", "encoded_base_img")
    return data


@router.post(
    "/api/swap/",
    response_model=ApiSwapResponse,
    summary="The reference project's gender swap: base64 image in a form, base64 image in JSON",
    description="Form fields `encoded_base_img` (base64), `current_gender`, `img_width` (512), `seed` (−1), "
    "`num_inference_steps` (30), `guidance_scale` (12), `strength` (0.6), urlencoded or multipart. Answers "
    '`{"mime", "image"}` with the PNG in base64; the seed used is in `X-Seed`. Runs the improved pipeline of '
    "/genderswap (face-and-hair inpainting, DPM++ SDE Karras) on the largest face; the target is the opposite of "
    "`current_gender`.",
    responses={**error_responses(400, 413, 415, 422, 500, 503),
               **nsfw_responses("encoded_base_img", outputs=True)},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/x-www-form-urlencoded": {"schema": ApiSwapForm.model_json_schema()},
        "multipart/form-data": {"schema": ApiSwapForm.model_json_schema()}}}},
)
async def api_swap(hub: HubDep, pool: PoolDep, settings: SettingsDep,
                   form: Annotated[ApiSwapForm, Depends(api_swap_form)]) -> Response:
    error = model_unavailable(hub, settings)
    if error is not None:
        raise error
    current = form.current_gender.strip().lower()
    if current and current not in _GENDERS:
        raise ApiError(422, "invalid_field", f"current_gender {form.current_gender!r}: expected female or male",
                       "current_gender")
    data = _decode_base64(form.encoded_base_img, settings.max_upload_bytes)
    audit.add_input("encoded_base_img", data)  # the decoded picture, as a client would hash its file
    options = GenderSwapOptions(width=form.img_width, seed=form.seed, steps=form.num_inference_steps,
                                guidance=form.guidance_scale, strength=form.strength, format="png")
    req = genderswap_request(settings, options, data, current_gender=_GENDERS.get(current), field="encoded_base_img")
    result = await pool.run(genderswap, hub, req)
    audit.add_output("image", result.content, result.media_type)  # the picture inside the JSON
    body = ApiSwapResponse(mime=result.media_type, image=base64.b64encode(result.content).decode("ascii"))
    return Response(body.model_dump_json(), media_type="application/json",
                    headers=result.headers(options.method, options.sampler))
