"""Operator endpoints: liveness, readiness, loaded models."""

from __future__ import annotations

import os

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from app import __version__
from app.deps import SettingsDep
from app.media import provenance
from app.schemas import HealthResponse, ModelsResponse, ReadyResponse
from app.services import nsfw

router = APIRouter(tags=["operations"])


class ProvenanceStatus(BaseModel):
    """The AI provenance marks every output carries (app/media/provenance.py)."""

    enabled: bool = Field(..., description="XMP / MP4 metadata marks on (FACEAPI_PROVENANCE)", examples=[True])
    c2pa: bool = Field(..., description="a signed C2PA manifest too (FACEAPI_C2PA_CERT / _KEY)", examples=[False])
    software_agent: str = Field(..., examples=[f"Face studio {__version__}"])
    source_types: dict[str, str] = Field(
        ..., description="IPTC digital source type written for a picture the model created / edited (empty when off)",
        examples=[provenance.SOURCE_TYPES],
    )


class ModelsWithProvenance(ModelsResponse):
    provenance: ProvenanceStatus


@router.get("/healthz", response_model=HealthResponse, summary="Liveness: the process answers")
async def healthz() -> HealthResponse:
    return HealthResponse(version=__version__, pid=os.getpid())


@router.get(
    "/readyz",
    response_model=ReadyResponse,
    summary="Readiness: every enabled job has a loaded backend",
    responses={503: {"model": ReadyResponse, "description": "Still loading, or an enabled job cannot run"}},
)
async def readyz(request: Request) -> JSONResponse:
    hub = request.app.state.hub
    jobs = hub.job_status()
    ready = hub.ready and all(j["ready"] for j in jobs.values())
    body = ReadyResponse(ready=ready, loading=hub.loading, pid=os.getpid(), jobs=jobs)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503,
                        headers=None if ready else {"Retry-After": "5"})


@router.get("/models", response_model=ModelsWithProvenance,
            summary="Loaded models, execution providers, missing weights, provenance marks")
async def models(request: Request, settings: SettingsDep) -> ModelsWithProvenance:
    hub = request.app.state.hub
    return ModelsWithProvenance(
        providers=hub.providers,
        weights_dir=str(settings.weights_dir),
        models=[vars(s) for s in hub.statuses] + nsfw.gate().model_info(),
        jobs=hub.job_status(),
        provenance=ProvenanceStatus(**provenance.status()),
    )
