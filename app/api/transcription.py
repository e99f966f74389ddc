"""Transcription logic behind the router: decode off the event loop, submit to the engine client, follow the
client's connection, render the result. Nothing here touches tensors; the engine owns the model.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from concurrent.futures import Executor
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Receive

from app.api.admission import Reservation
from app.api.deps import Runtime
from app.api.errors import ApiError
from app.api.metrics import Metrics
from app.audio.decode import AudioLimits, decode_audio
from app.audio.errors import AudioError
from app.audio.vad import AudioInput, SpeechSpanSource, split_audio
from app.config import Settings
from app.engine.client import EngineClient
from app.engine.errors import QueueFullError
from app.formats import Extras, json_body, render
from app.results import Transcription

T = TypeVar("T")

_MEDIA_TYPES = {"text": "text/plain", "srt": "text/plain", "vtt": "text/vtt"}


class ClientGoneError(ApiError):
    """The client closed its connection before the result was ready (logged as nginx's 499)."""

    def __init__(self) -> None:
        super().__init__(499, "The client closed the request.", code="client_closed")


def audio_limits(settings: Settings) -> AudioLimits:
    """Byte and duration limits of one upload."""
    return AudioLimits(max_bytes=int(settings.server.max_upload_mb * 1024 * 1024),
                       max_seconds=settings.server.max_audio_seconds)


def decode_and_split(data: bytes, limits: AudioLimits, window_seconds: float, vad: SpeechSpanSource) -> AudioInput:
    """Decode an upload and split it into windows (blocking: run it in the decode pool)."""
    started = time.perf_counter()
    samples = decode_audio(data, limits)
    decode_ms = (time.perf_counter() - started) * 1000.0
    return split_audio(samples, window_seconds, vad, decode_ms)


async def prepare_audio(
    data: bytes, settings: Settings, pool: Executor, engine: EngineClient, vad: SpeechSpanSource, metrics: Metrics,
) -> AudioInput:
    """Decode + VAD split in the decode thread pool; raises (and counts) `AudioError` for bad input."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(
            pool, decode_and_split, data, audio_limits(settings), engine.window_seconds, vad
        )
    except AudioError as exc:
        metrics.rejected.labels(reason=exc.code).inc()
        raise


def admit(runtime: Runtime, engine: EngineClient) -> Reservation:
    """Reserve the request's place in the queue on arrival, before its upload is read or decoded; refused at
    once (503) when reserved and queued requests fill `ASR_MAX_QUEUE`."""
    try:
        return runtime.admission.reserve(engine.queue_depth(), runtime.clock())
    except QueueFullError:
        runtime.metrics.job_rejected("queue_full")
        raise


async def wait_for_disconnect(receive: Receive) -> None:
    """Return when the client disconnects (the body has been read, so only `http.disconnect` can come)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(awaitable: Awaitable[T], request: Request) -> T:
    """Await `awaitable`, cancelling it (the engine then drops the job) if the client goes away first."""
    job = asyncio.ensure_future(awaitable)
    watcher = asyncio.ensure_future(wait_for_disconnect(request.receive))
    try:
        await asyncio.wait({job, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if job.done():
            return job.result()
        raise ClientGoneError()
    finally:
        watcher.cancel()
        if not job.done():
            job.cancel()


def render_response(result: Transcription, response_format: str, model: str, extras: Extras = Extras()) -> Response:
    """json/verbose_json as JSON (DESIGN.md §3), text/srt as text/plain, vtt as text/vtt."""
    if response_format in ("json", "verbose_json"):
        return JSONResponse(json_body(result, response_format, model, extras))
    return PlainTextResponse(render(result, response_format, model), media_type=_MEDIA_TYPES[response_format])


def note_result(request: Request, result: Transcription) -> None:
    """Expose the queue wait to the access log line."""
    request.state.queue_ms = result.timing.queue_ms
