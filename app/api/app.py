"""The app factory and its lifespan: load the model, start and warm up the worker, drain it on shutdown."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.api import health, http, models, realtime, stream
from app.api.admission import Admission
from app.api.deps import Runtime
from app.api.errors import install_error_handlers
from app.api.metrics import Metrics
from app.api.middleware import AccessLogMiddleware, BodyLimitMiddleware
from app.api.page import install_page
from app.audio.decode import SAMPLE_RATE
from app.audio.vad import SpeechSpanSource, split_audio
from app.config import Settings
from app.engine.client import EngineClient
from app.engine.observer import EngineObserver
from app.request_options import RequestOptions, RequestResolver

log = logging.getLogger("diffusion_asr.api")

MULTIPART_OVERHEAD_BYTES = 64 * 1024
"""Room for multipart boundaries and the text fields on top of the file-size limit (decode checks the file)."""
WARMUP_SECONDS = 0.5


class ManagedEngine(EngineClient, Protocol):
    """The engine as the lifespan drives it (the worker); each may be sync or async."""

    def start(self) -> Any:
        """Start the worker."""

    def drain(self, timeout_s: float) -> Any:
        """Refuse new jobs and let queued and running ones finish, for up to `timeout_s`."""

    def stop(self) -> Any:
        """Stop the worker (jobs still pending fail with ShuttingDownError)."""


@dataclass
class LoadedModel:
    """What loading produces: the engine, the VAD used to split uploads, and the model's description."""

    engine: ManagedEngine
    vad: SpeechSpanSource
    info: dict[str, str]


Loader = Callable[[Settings, EngineObserver], LoadedModel]
"""Blocking: builds the engine (runs in a thread). Tests pass a fake one to `create_app`."""


def load_engine(settings: Settings, observer: EngineObserver) -> LoadedModel:
    """Load the pipeline the settings describe and wrap it in the batching worker (not started yet)."""
    from app.checkpoint.loading import load_from_settings, resolve_paths
    from app.engine.worker import EngineWorker

    paths = resolve_paths(settings.model)
    pipeline = load_from_settings(settings.model)
    vad = pipeline.vad  # built here, so the first upload does not pay for loading silero
    info = {
        "model": pipeline.name,
        "encoder": str(paths.encoder),
        "backbone": str(paths.backbone),
        "adapter": str(paths.adapter),
        "device": str(pipeline.device),
        "dtype": str(pipeline.dtype).removeprefix("torch."),
    }
    worker = EngineWorker(pipeline, settings.engine, observer)
    worker.warm_up()  # every model stage once, before serving: first calls allocate and pick kernels
    return LoadedModel(engine=worker, vad=vad, info=info)


def resolver_for(engine: EngineClient, settings: Settings) -> RequestResolver:
    """The request resolver of the loaded model under these settings."""
    return RequestResolver.for_model(engine.languages, engine.default_steps, settings.model.denoising_steps,
                                     settings.model.default_seed, settings.server.max_prompt_chars)


async def _call(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


async def warm_up(runtime: Runtime) -> None:
    """One short silent clip through the same path as an upload (decode pool, VAD, queue, worker thread,
    future hand-off), so readiness means the whole path answers."""
    engine, settings = runtime.engine, runtime.settings
    silence = np.zeros(int(WARMUP_SECONDS * SAMPLE_RATE), dtype=np.float32)
    loop = asyncio.get_running_loop()
    audio = await loop.run_in_executor(
        runtime.decode_pool, split_audio, silence, engine.window_seconds, runtime.vad, 0.0
    )
    started = time.perf_counter()
    options = runtime.resolver.resolve(RequestOptions(denoising_steps=2))
    await engine.transcribe(audio, options, settings.engine.request_timeout_s)
    log.info("engine round trip done in %.0f ms", (time.perf_counter() - started) * 1000.0)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start-up: load, start, warm up, mark ready. Shutdown: readiness 503, drain, stop."""
    runtime: Runtime = app.state.runtime
    settings = runtime.settings
    runtime.decode_pool = ThreadPoolExecutor(settings.server.decode_threads, thread_name_prefix="asr-decode")
    loaded: LoadedModel | None = None
    try:
        started = time.perf_counter()
        loaded = await asyncio.to_thread(app.state.loader, settings, runtime.metrics)
        log.info("model loaded and warmed up in %.1f s", time.perf_counter() - started)
        runtime.metrics.set_model_info(**loaded.info)
        await _call(loaded.engine.start())
        runtime.engine, runtime.vad, runtime.loaded_at = loaded.engine, loaded.vad, int(time.time())
        runtime.resolver = resolver_for(loaded.engine, settings)
        await warm_up(runtime)
        runtime.warmed_up = True
        log.info("ready: model=%s device=%s", loaded.info.get("model"), loaded.info.get("device"))
        yield
    finally:
        runtime.draining = True
        if loaded is not None:
            log.info("draining: up to %.1f s for queued and running jobs", settings.engine.drain_timeout_s)
            await _call(loaded.engine.drain(settings.engine.drain_timeout_s))
            await _call(loaded.engine.stop())
        runtime.decode_pool.shutdown(wait=False, cancel_futures=True)


def mark_draining(app: FastAPI) -> None:
    """Turn readiness to 503 now (called on SIGTERM, before the server stops taking connections)."""
    app.state.runtime.draining = True


def create_app(settings: Settings | None = None, *, loader: Loader | None = None) -> FastAPI:
    """A new app with its own settings, metrics registry and engine (`loader` replaces model loading in
    tests)."""
    settings = settings or Settings()
    app = FastAPI(
        title="diffusion-asr-server",
        summary="OpenAI-compatible speech-to-text with diffusion ASR",
        lifespan=lifespan,
    )
    app.state.runtime = Runtime(settings=settings, metrics=Metrics(), admission=Admission(settings.engine.max_queue))
    app.state.loader = loader or load_engine
    install_error_handlers(app)
    app.include_router(http.router)
    app.include_router(models.router)
    app.include_router(health.router)
    app.include_router(stream.router)
    app.include_router(realtime.router)
    install_page(app)
    # Starlette wraps in reverse order: the access log is outermost, so it sees the body limit's 413s too.
    limit = int(settings.server.max_upload_mb * 1024 * 1024) + MULTIPART_OVERHEAD_BYTES
    app.add_middleware(BodyLimitMiddleware, max_bytes=limit, limit_mb=settings.server.max_upload_mb)
    if settings.server.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.server.cors_origins, allow_methods=["*"], allow_headers=["*"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(AccessLogMiddleware, metrics=app.state.runtime.metrics)
    return app
