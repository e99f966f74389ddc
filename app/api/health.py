"""Probes and scraping: `GET /healthz`, `GET /readyz`, `GET /metrics` (never authenticated)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from app.api.deps import MetricsDep, RuntimeDep
from app.api.metrics import CONTENT_TYPE_LATEST
from app.api.responses import METRICS_RESPONSES, READY_RESPONSES

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    """Liveness: answers as long as the event loop runs."""
    return {"status": "ok"}


@router.get("/readyz", responses=READY_RESPONSES, summary="The model is loaded and the worker accepts jobs")
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    """Readiness: 503 while loading and again while draining for shutdown."""
    if runtime.ready():
        return JSONResponse({"status": "ready", "queue_depth": runtime.engine.queue_depth()})
    state = "draining" if runtime.draining else "loading"
    return JSONResponse({"status": state}, status_code=503, headers={"Retry-After": "1"})


@router.get("/metrics", response_class=PlainTextResponse, responses=METRICS_RESPONSES, summary="Prometheus metrics")
async def metrics(registry: MetricsDep) -> Response:
    """The Prometheus text exposition of this app's registry."""
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)
