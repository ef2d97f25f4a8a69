"""Operator endpoints: liveness, readiness, loaded models."""

from __future__ import annotations

import os

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app import __version__
from app.deps import SettingsDep
from app.media import provenance
from app.schemas import HealthResponse, ModelsResponse, ProvenanceStatus, ReadyResponse
from app.services import nsfw

router = APIRouter(tags=["operations"])


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


@router.get("/models", response_model=ModelsResponse,
            summary="Loaded models, execution providers, missing weights, provenance marks")
async def models(request: Request, settings: SettingsDep) -> ModelsResponse:
    hub = request.app.state.hub
    return ModelsResponse(
        providers=hub.providers,
        weights_dir=str(settings.weights_dir),
        models=[vars(s) for s in hub.statuses] + nsfw.gate().model_info(),
        jobs=hub.job_status(),
        provenance=ProvenanceStatus(**provenance.status()),
    )
