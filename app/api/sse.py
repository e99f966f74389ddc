"""`stream=true`: Server-Sent Events for one transcription.

Format (data-only events, so `EventSource.onmessage` and OpenAI's SSE decoder both read every one):

    data: {"type": "draft", "step": 1, "of": 8, "text": "..."}      one per denoising step
    ...
    data: {"type": "final", "text": ..., "segments": [...], "timing": {...}, ...}   the full json body
    data: [DONE]

A failure after the stream has started is sent as `data: {"type": "error", "error": {...OpenAI shape}}`
followed by `data: [DONE]`. Failures before the first event (queue full, bad audio, ...) are ordinary HTTP
error responses, because the stream only starts once the job has produced its first draft.

`step` counts the request's executed steps over all its windows (so the number of drafts equals the final
`timing.steps_used`); `of` is the step budget (windows x denoising_steps), which adaptive stopping may
leave unused. `text` is the whole request's current draft. Windows without speech take no steps.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import StreamingResponse

from app.api.errors import ApiError, from_engine_error
from app.api.transcription import note_result, unless_disconnected
from app.audio.vad import AudioInput
from app.engine.client import EngineClient
from app.engine.errors import EngineError
from app.formats import to_json
from app.results import DecodeOptions, Transcription

log = logging.getLogger("diffusion_asr.api")

DONE = "data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

Draft = tuple[int, int, str]


def sse_event(payload: dict[str, Any]) -> str:
    """One `data:` event (JSON keeps it on one line)."""
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def draft_event(draft: Draft) -> str:
    """The event of one denoising step's draft."""
    step, of, text = draft
    return sse_event({"type": "draft", "step": step, "of": of, "text": text})


def final_event(result: Transcription, model: str) -> str:
    """The event carrying the whole json result."""
    return sse_event({"type": "final", **to_json(result, model)})


async def _next_event(drafts: asyncio.Queue[Draft], job: asyncio.Future[Transcription]) -> Draft | None:
    """The next draft, or None once the job has finished and every draft before it has been taken."""
    if not drafts.empty():
        return drafts.get_nowait()
    if job.done():
        return None
    getter = asyncio.ensure_future(drafts.get())
    try:
        await asyncio.wait({getter, job}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not getter.done():
            getter.cancel()
    if getter.done() and not getter.cancelled():
        return getter.result()
    return drafts.get_nowait() if not drafts.empty() else None


def _as_api_error(exc: Exception) -> ApiError:
    if isinstance(exc, EngineError):
        return from_engine_error(exc)
    log.exception("streamed transcription failed", exc_info=exc)
    return ApiError(500, "Internal server error.", code="internal_error")


async def _events(
    request: Request, first: Draft | None, drafts: asyncio.Queue[Draft], job: asyncio.Future[Transcription],
    model: str,
) -> AsyncIterator[str]:
    try:
        draft = first
        while draft is not None:
            yield draft_event(draft)
            draft = await _next_event(drafts, job)
        try:
            result = job.result()
        except Exception as exc:  # the status line is sent: the error can only travel as an event
            yield sse_event({"type": "error", **_as_api_error(exc).body()})
        else:
            note_result(request, result)
            yield final_event(result, model)
        yield DONE
    finally:
        # A client that went away cancels this generator; the job must not outlive it.
        if not job.done():
            job.cancel()


async def stream_transcription(
    request: Request, engine: EngineClient, audio: AudioInput, options: DecodeOptions, timeout_s: float,
) -> StreamingResponse:
    """Submit the job and answer with its event stream once the first draft (or the result) exists."""
    drafts: asyncio.Queue[Draft] = asyncio.Queue()
    job = asyncio.ensure_future(
        engine.transcribe(audio, options, timeout_s, on_draft=lambda s, n, t: drafts.put_nowait((s, n, t)))
    )
    try:
        first = await unless_disconnected(_next_event(drafts, job), request)
    except BaseException:
        job.cancel()
        raise
    if first is None and not job.cancelled() and job.exception() is not None:
        raise job.exception()  # nothing sent yet: an ordinary error response
    return StreamingResponse(
        _events(request, first, drafts, job, engine.model_name),
        media_type="text/event-stream", headers=SSE_HEADERS,
    )
