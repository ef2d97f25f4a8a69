"""Ray Serve deployment of the face studio: the same FastAPI app (``app.main.create_app``) as the HTTP ingress,
with the face detector and the swapper in a second deployment that groups the calls of concurrent requests
with ``@serve.batch``.

    Ray HTTP proxy → FaceStudio (ingress: the whole app, its lifespan, one ModelHub per replica)
                          └─ detector ``get`` / swapper ``get`` → FaceModels (``@serve.batch`` detect, swap)

The ingress replica's hub is a :class:`RemoteFaceHub`: the services ask it for ``hub.analyser(backend)`` and
``hub.swapper(backend)`` as always and get the replica's own model behind a small adapter whose ``get`` is a call
to ``FaceModels`` through a deployment handle (everything else, e.g. ``embed``, runs on the local model). So
/faceswap, /swap_img, /swap_url, /analyze, /enhance's detection and the video swap send their detections and
swaps to the batching deployment; lip sync and gender swap keep their own detectors.

Ray is imported only in this package: the plain server (``python -m app serve``) never imports it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from models.base import Analyser, Swapper
from models.face import Face
from models.hub import ModelHub

log = logging.getLogger("serve")

INGRESS = "FaceStudio"
FACE_MODELS = "FaceModels"
CALL_TIMEOUT_S = 600.0  # one detection or swap, queue included; far above any real call


# ---- the batching deployment --------------------------------------------------------------------------------


@dataclass
class DetectCall:
    backend: str
    img: np.ndarray
    embeddings: bool = False
    max_num: int = 0


@dataclass
class SwapCall:
    backend: str
    img: np.ndarray
    target: Face
    source: Face
    source_img: np.ndarray | None  # None for a swapper that works from the source's embedding only


def hub_options() -> dict[str, Any]:
    """ModelHub's arguments from the replica's FACEAPI_ settings (runtime_env env_vars of the config file)."""
    from app.config import get_settings

    s = get_settings()
    return {"weights_dir": s.weights_dir, "jobs": list(s.enabled_jobs), "provider_pref": s.execution_provider,
            "det_size": s.det_size, "det_thresh": s.det_threshold, "builtin_upsample": s.builtin_upsample,
            "builtin_min_score": s.builtin_min_score}


@serve.deployment(name=FACE_MODELS, max_ongoing_requests=64)
class FaceModels:
    """The face detectors and swappers of the enabled jobs, loaded once per replica (the analysers and
    swappers only). Concurrent calls, from any ingress replica, are grouped into batches of up to
    ``max_batch_size`` (waiting at most ``batch_wait_timeout_s`` for the batch to fill) and run one batch at a
    time in a worker thread. The ONNX graphs of det_10g and inswapper_128 take one image per run and dlib's
    detector one image per call, so a batch runs its calls one after another on the model: what the batch
    buys is one hand-off per group of requests and a replica that never runs two model calls at once."""

    def __init__(self, max_batch_size: int = 8, batch_wait_timeout_s: float = 0.0) -> None:
        from app.config import get_settings
        from app.observability import setup_logging

        setup_logging(get_settings().log_level)
        self.hub = ModelHub(**hub_options(), kinds=("analyser", "swapper"))
        self.hub.load()  # synchronous: the replica is ready once its models are
        for method in (self.detect, self.swap):
            method.set_max_batch_size(max_batch_size)
            method.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self._sizes: dict[str, Counter[int]] = {"detect": Counter(), "swap": Counter()}
        self._lock = threading.Lock()

    def _count(self, kind: str, n: int) -> None:
        with self._lock:
            self._sizes[kind][n] += 1

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0)
    async def detect(self, calls: list[DetectCall]) -> list[list[Face]]:
        self._count("detect", len(calls))
        return await asyncio.to_thread(self._detect, calls)

    def _detect(self, calls: list[DetectCall]) -> list[list[Face]]:
        return [self.hub.analyser(c.backend).get(c.img, embeddings=c.embeddings, max_num=c.max_num) for c in calls]

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0)
    async def swap(self, calls: list[SwapCall]) -> list[np.ndarray]:
        self._count("swap", len(calls))
        return await asyncio.to_thread(self._swap, calls)

    def _swap(self, calls: list[SwapCall]) -> list[np.ndarray]:
        return [self.hub.swapper(c.backend).get(c.img, c.target, c.source, c.source_img) for c in calls]

    def batch_sizes(self) -> dict[str, dict[int, int]]:
        """How many batches of each size this replica ran, per method (for tests and operators)."""
        with self._lock:
            return {k: dict(v) for k, v in self._sizes.items()}

    def loaded(self) -> dict[str, list[str]]:
        return {"analysers": sorted(self.hub.analysers), "swappers": sorted(self.hub.swappers)}


# ---- the ingress replica's side -----------------------------------------------------------------------------


class RemoteAnalyser:
    """The replica's own analyser, whose detection (``get``) runs in ``FaceModels``."""

    def __init__(self, local: Analyser, handle: DeploymentHandle, backend: str) -> None:
        self._local, self._handle, self._backend = local, handle, backend

    def get(self, img: np.ndarray, embeddings: bool = False, max_num: int = 0) -> list[Face]:
        call = DetectCall(self._backend, img, embeddings, max_num)
        return self._handle.detect.remote(call).result(timeout_s=CALL_TIMEOUT_S)

    def __getattr__(self, name: str) -> Any:  # name, embedding_size, embed, prepare…
        return getattr(self._local, name)


class RemoteSwapper:
    """The replica's own swapper, whose ``get`` runs in ``FaceModels``."""

    def __init__(self, local: Swapper, handle: DeploymentHandle, backend: str) -> None:
        self._local, self._handle, self._backend = local, handle, backend

    def get(self, img: np.ndarray, target: Face, source: Face, source_img: np.ndarray | None = None) -> np.ndarray:
        # inswapper reads the source's embedding only: its pixels are not shipped
        pixels = None if self._local.needs_source_embedding else source_img
        call = SwapCall(self._backend, img, target, source, pixels)
        return self._handle.swap.remote(call).result(timeout_s=CALL_TIMEOUT_S)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._local, name)


class RemoteFaceHub(ModelHub):
    """The app's ModelHub, with ``analyser()`` and ``swapper()`` answering through ``FaceModels``."""

    def __init__(self, *args: Any, face_models: DeploymentHandle, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.face_models = face_models

    def analyser(self, backend: str) -> Analyser:
        return RemoteAnalyser(super().analyser(backend), self.face_models, backend)  # type: ignore[return-value]

    def swapper(self, backend: str) -> Swapper:
        return RemoteSwapper(super().swapper(backend), self.face_models, backend)  # type: ignore[return-value]


@serve.deployment(name=INGRESS, max_ongoing_requests=32)
@serve.ingress()
class FaceStudio:
    """The whole FastAPI app of ``app.main.create_app``, built in the replica (its lifespan loads the models once
    per replica). With a ``FaceModels`` handle its detections and swaps go there."""

    def __init__(self, face_models: DeploymentHandle | None = None) -> None:
        self.face_models = face_models
        self.started = time.time()

    def __serve_build_asgi_app__(self) -> FastAPI:
        from app.main import create_app

        if self.face_models is None:
            return create_app()
        return create_app(hub_factory=partial(RemoteFaceHub, face_models=self.face_models))


class BuildArgs(BaseModel):
    """``args`` of an application in a Serve config file (``import_path: serve.app:build``)."""

    batch: bool = Field(True, description="Run the face detector and swapper in the batching FaceModels "
                                          "deployment; false = each ingress replica runs its own.")
    max_batch_size: int = Field(8, ge=1, le=256, description="Most calls FaceModels groups into one batch.")
    batch_wait_timeout_s: float = Field(0.0, ge=0.0, le=1.0,
                                        description="Longest a call waits for its batch to fill, seconds (0: calls "
                                                    "that queue while a batch runs form the next one).")


def build(args: dict[str, Any]) -> Application:
    """The Serve application: ``serve run serve/cpu.yaml`` (or ``serve run serve.app:build``)."""
    opts = BuildArgs.model_validate(args or {})
    if not opts.batch:
        return FaceStudio.bind(None)
    return FaceStudio.bind(FaceModels.bind(opts.max_batch_size, opts.batch_wait_timeout_s))
