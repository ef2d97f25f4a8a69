"""POST /analyze: faces as JSON."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Response, UploadFile

from app.deps import HubDep, PoolDep, SettingsDep
from app.errors import error_responses
from app.routers.forms import options_form
from app.schemas import AnalyzeOptions, AnalyzeResponse, FaceOut
from app.services.analyze import analyze
from app.services.nsfw import nsfw_responses
from app.uploads import read_upload
from models.face import Face

router = APIRouter(tags=["analysis"])


def face_out(face: Face, embeddings: bool) -> FaceOut:
    def pts(a):  # noqa: ANN001, ANN202
        return [[round(float(x), 2), round(float(y), 2)] for x, y in a]

    return FaceOut(
        bbox=[round(float(v), 2) for v in face.bbox],
        score=round(float(face.score), 4),
        kps=pts(face.kps),
        landmarks=pts(face.landmarks) if face.landmarks is not None else None,
        embedding=[float(v) for v in face.embedding] if embeddings and face.embedding is not None else None,
        gender=None if face.gender is None else ("male" if face.gender == 1 else "female"),
        age=face.age,
    )


@router.post(
    "/analyze",
    response_model=AnalyzeResponse,
    summary="Detect faces: boxes, 5 and 68 landmarks, optional identity embeddings",
    responses={**error_responses(400, 413, 415, 422, 503), **nsfw_responses("image")},
)
async def analyze_endpoint(
    response: Response,
    hub: HubDep,
    pool: PoolDep,
    settings: SettingsDep,
    image: Annotated[UploadFile, File(description="The image (JPEG, PNG, WebP, BMP, TIFF, GIF)")],
    options: Annotated[AnalyzeOptions, Depends(options_form(AnalyzeOptions, ("image",), query=False))],
) -> AnalyzeResponse:
    embeddings = options.embeddings
    data = await read_upload(image, "image", settings.max_upload_bytes)
    result = await pool.run(analyze, hub, data, "image", settings.max_image_pixels,
                             options.backend or settings.default_backend, embeddings)
    response.headers["X-Face-Backend"] = result.backend
    response.headers["Server-Timing"] = result.timings.header()
    return AnalyzeResponse(
        width=result.width, height=result.height, backend=result.backend,
        faces=[face_out(f, embeddings) for f in result.faces],
    )
