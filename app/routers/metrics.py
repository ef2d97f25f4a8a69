"""``GET /metrics``: Prometheus text format, every worker's samples merged (see app/metrics.py)."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Request, Response

from app import metrics

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    summary="Prometheus metrics of all workers (requests, stage latencies, inference queue, models, jobs)",
    response_class=Response,
    responses={200: {"description": "Prometheus text exposition format",
                     "content": {"text/plain": {"example": 'faceapi_http_requests_total{backend="builtin",'
                                                           'method="POST",route="/faceswap",status="200"} 3.0\n'}}},
               401: {"description": "FACEAPI_METRICS_ACCESS asks for a key and none or a wrong one was sent"}},
)
async def metrics_endpoint(request: Request) -> Response:
    jobs = getattr(request.app.state, "jobs", None)
    body = await anyio.to_thread.run_sync(metrics.render, jobs)
    return Response(body, media_type=metrics.CONTENT_TYPE)
