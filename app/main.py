"""App factory and lifespan: settings read once, models loaded once per worker process."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app import __version__, audit, memory, metrics
from app.config import Settings, get_settings
from app.docs import install_docs
from app.errors import install_error_handlers
from app.inference import InferencePool
from app.jobs.kinds import KINDS
from app.jobs.service import JobService
from app.media import provenance
from app.observability import RequestIdMiddleware, setup_logging
from app.routers import analyze, enhance, faceswap, faceswap_video, genderswap, health, jobs, lipsync, studio, swap_url
from app.routers.metrics import router as metrics_router
from app.security import AccessMiddleware, access_middleware_options
from app.services import nsfw
from app.storage import Bucket, StorageError
from app.uploads import BodyLimitMiddleware, body_caps, use_temp_dir
from models.hub import ModelHub

# Gender swap runs Stable Diffusion through diffusers/transformers, imported lazily (only when the job is enabled).
# They must never ask the Hugging Face hub: with these set, a missing file fails at once (503 with the download
# command) instead of hanging on a machine without a network.
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DIFFUSERS_OFFLINE"):
    os.environ[_var] = "1"

DESCRIPTION = """
Self-hosted face studio: face swap, face restoration and upscaling, face analysis (lip sync and gender swap
follow).

Every image endpoint takes multipart uploads and answers with the image, or with JSON errors of the form
`{"error": {"code", "message", "field"}}`. Responses name the backend that produced them in `X-Face-Backend`:
`builtin` (dlib + classical warp, no download) or `neural` (insightface buffalo_l + inswapper_128, after
`python -m app weights download`).
"""

# Response headers a browser page may read across origins (CORS).
EXPOSED_HEADERS = ["Location", "Retry-After", "X-Request-ID", "X-Worker-Pid", "X-Face-Backend",
                   "X-Faces-Swapped", "X-Faces-Enhanced", "X-Frames", "Server-Timing", "Content-Disposition",
                   "Preference-Applied", "X-NSFW"]


def open_bucket(settings: Settings) -> tuple[Bucket | None, str | None]:
    """The /swap_url bucket; a local directory is created if missing. A broken storage setting disables
    /swap_url (503 with the reason) instead of taking the whole server down."""
    url = settings.storage_url
    try:
        if "://" not in url or url.startswith("file://"):
            Path(url.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        return Bucket(url, settings.storage_results_prefix), None
    except (StorageError, OSError) as exc:
        logging.getLogger("app").error("storage unavailable", extra={"url": url, "error": str(exc)})
        return None, "the storage bucket is unavailable (FACEAPI_STORAGE_URL); the server log has the reason"


def create_app(settings: Settings | None = None, hub_factory: Callable[..., ModelHub] = ModelHub) -> FastAPI:
    """``hub_factory`` builds the worker's model hub (ModelHub's arguments); the Ray Serve deployment
    (serve/) passes one whose face detector and swapper run in a batching deployment."""
    settings = settings or get_settings()
    setup_logging(settings.log_level)
    use_temp_dir(settings.temp_dir)  # multipart uploads roll over to disk here, never whole in memory
    memory.configure(settings.malloc_trim_mb, settings.malloc_arena_max)  # app/memory.py: heap back after big work
    audit.configure(settings.audit_log_path(), settings.audit_log_max_bytes, settings.audit_log_backups)
    provenance.configure(settings.provenance == "on", settings.c2pa_cert, settings.c2pa_key, settings.c2pa_alg,
                         settings.c2pa_tsa_url)  # AI marks on every output (app/media/provenance.py)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = InferencePool(settings.inference_threads, settings.max_queue)
        hub = hub_factory(
            settings.weights_dir,
            list(settings.enabled_jobs),
            provider_pref=settings.execution_provider,
            det_size=settings.det_size,
            det_thresh=settings.det_threshold,
            builtin_upsample=settings.builtin_upsample,
            builtin_min_score=settings.builtin_min_score,
        )
        app.state.hub = hub
        nsfw.configure(settings)  # the content gate (FACEAPI_NSFW): its detector loads here when on
        app.state.bucket, app.state.bucket_error = open_bucket(settings)
        hub.start_loading()
        metrics.worker_started()
        metrics.watch_hub(hub)
        app.state.jobs = JobService(settings, hub, KINDS)  # store + runner + sweeper of this worker
        metrics.instrument_jobs(app.state.jobs)  # job counts and durations when a job ends
        app.state.jobs.start()
        logging.getLogger("app").info("worker started", extra={"jobs": settings.enabled_jobs})
        yield
        app.state.jobs.stop()
        metrics.worker_stopped()

    app = FastAPI(title="Face studio", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.state.settings = settings
    install_docs(app)
    install_error_handlers(app)
    # outermost last: request id → metrics → CORS (answers preflights, decorates 401/429) → API keys → body cap
    # → audit line (reads the key id) → malloc_trim after large work
    app.add_middleware(memory.TrimMiddleware)
    app.add_middleware(audit.AuditMiddleware)
    app.add_middleware(nsfw.NsfwHeaderMiddleware)  # X-NSFW from what the request's work flagged (FACEAPI_NSFW=flag)
    app.add_middleware(BodyLimitMiddleware, max_body=body_caps(settings))
    app.add_middleware(AccessMiddleware, **access_middleware_options(settings))
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["*"], expose_headers=EXPOSED_HEADERS, max_age=600)
    app.add_middleware(metrics.MetricsMiddleware)
    app.add_middleware(RequestIdMiddleware)
    for router in (health.router, analyze.router, faceswap.router, faceswap_video.router, swap_url.router,
                   enhance.router, genderswap.router, lipsync.router, jobs.router, studio.router):
        app.include_router(router)
    app.include_router(metrics_router)
    return app


app = create_app()
