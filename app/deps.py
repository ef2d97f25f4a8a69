"""FastAPI dependencies: the per-process model hub, inference pool and settings."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings
from app.errors import ServiceUnavailableError
from app.inference import InferencePool
from models.hub import ModelHub


def settings_dep(request: Request) -> Settings:
    """The Settings the app was created with (``create_app(settings)``): every dependency sees that one."""
    return request.app.state.settings


def hub_dep(request: Request) -> ModelHub:
    hub: ModelHub = request.app.state.hub
    if not hub.ready:
        raise ServiceUnavailableError("loading", "models are still loading; see /readyz", retry_after=5)
    return hub


def pool_dep(request: Request) -> InferencePool:
    return request.app.state.pool


HubDep = Annotated[ModelHub, Depends(hub_dep)]
PoolDep = Annotated[InferencePool, Depends(pool_dep)]
SettingsDep = Annotated[Settings, Depends(settings_dep)]
