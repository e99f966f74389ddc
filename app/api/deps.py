"""The app's lifespan objects (`Runtime`, stored on `app.state.runtime`) and the dependencies that hand
them to routers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from app.api.admission import Admission, Clock, monotonic
from app.api.errors import ApiError
from app.api.metrics import Metrics
from app.audio.vad import SpeechSpanSource
from app.config import Settings
from app.engine.client import EngineClient
from app.request_options import RequestResolver


@dataclass
class Runtime:
    """Everything one app instance owns; filled in by the lifespan, read by the routers."""

    settings: Settings
    metrics: Metrics
    engine: EngineClient | None = None
    decode_pool: ThreadPoolExecutor | None = None
    vad: SpeechSpanSource | None = None
    resolver: RequestResolver | None = None
    """Turns request options into decode options for the loaded model (set once it is loaded)."""
    warmed_up: bool = False
    loaded_at: int = 0
    """Unix time the model finished loading (the `created` of `/v1/models`)."""
    draining: bool = False
    admission: Admission = field(default_factory=lambda: Admission(0))
    """Places reserved by requests that arrived and are not yet queued (sized by `create_app`)."""
    clock: Clock = monotonic
    """What request deadlines are measured with."""

    def ready(self) -> bool:
        """Model loaded, warm-up done, worker running, and not shutting down."""
        return self.engine is not None and self.warmed_up and not self.draining and self.engine.ready()


def get_runtime(request: Request) -> Runtime:
    """The app's runtime."""
    return request.app.state.runtime


def get_settings(runtime: Annotated[Runtime, Depends(get_runtime)]) -> Settings:
    """The app's settings."""
    return runtime.settings


def get_metrics(runtime: Annotated[Runtime, Depends(get_runtime)]) -> Metrics:
    """The app's metrics."""
    return runtime.metrics


def get_engine(runtime: Annotated[Runtime, Depends(get_runtime)]) -> EngineClient:
    """The engine, or 503 while the model is loading. While draining, work is still taken until the engine
    itself stops accepting (then it answers 503 `shutting_down`): requests routed here before readiness
    turned 503 should still succeed."""
    if runtime.engine is None or not runtime.warmed_up:
        raise ApiError(503, "The model is still loading; retry shortly.", code="not_ready",
                       headers={"Retry-After": "5"})
    return runtime.engine


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
EngineDep = Annotated[EngineClient, Depends(get_engine)]
