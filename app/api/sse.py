"""`stream=true`: Server-Sent Events for one transcription, as OpenAI's API and SDKs define them.

Events (data-only, so `EventSource.onmessage` and the `openai` SDK's decoder both read every one):

    data: {"type": "transcript.text.delta", "delta": "...", "logprobs": [...]}   text that can no longer change
    data: {"type": "transcript.text.done", "text": "...", "logprobs": [...], ...}  the whole json body
    data: [DONE]

A diffusion canvas rewrites itself: each step re-noises every position it did not accept and re-draws the
accepted ones, so no part of a window's text is final before its row stops. A delta therefore carries a
window's text once that window and every window before it are finished (the separator between windows
included), and the remainder comes the moment the request completes; the deltas concatenate to the `done`
text. `logprobs` appear (on deltas and on `done`) only with `include[]=logprobs`.

Extension, only with `stream_drafts=true`: `{"type": "transcript.text.draft", "step", "of", "text"}` after every
denoising step, the request's whole draft as the canvas anneals. `step` counts the request's executed steps over
all its windows (the number of drafts equals the final `timing.steps_used`); `of` is the step budget (windows x
denoising_steps), which adaptive stopping may leave unused.

A failure after the stream has started is sent as `data: {"type": "error", "error": {...OpenAI shape}}`
(which the SDK raises as `APIError`) followed by `data: [DONE]`. Failures before the first event (queue full,
bad audio, ...) are ordinary HTTP error responses, because the stream only starts with its first event.
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
from app.formats import Extras, logprobs_list, to_json
from app.results import CommittedText, DecodeOptions, Segment, Transcription

log = logging.getLogger("diffusion_asr.api")

DONE = "data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DELTA, DONE_EVENT, DRAFT = "transcript.text.delta", "transcript.text.done", "transcript.text.draft"

Event = dict[str, Any]


def sse_event(payload: Event) -> str:
    """One `data:` event (JSON keeps it on one line)."""
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def draft_payload(step: int, of: int, text: str) -> Event:
    """The extension event of one denoising step's draft."""
    return {"type": DRAFT, "step": step, "of": of, "text": text}


def delta_payload(text: str, segment: Segment, extras: Extras) -> Event:
    """`transcript.text.delta` for newly committed text (the logprobs of the window it came from)."""
    payload: Event = {"type": DELTA, "delta": text}
    if extras.logprobs:
        payload["logprobs"] = logprobs_list(segment.logprobs)
    return payload


def done_payload(result: Transcription, model: str, extras: Extras) -> Event:
    """`transcript.text.done`: OpenAI's `text` (and `logprobs` when asked) plus the json body's extensions."""
    return {"type": DONE_EVENT, **to_json(result, model, extras)}


class DeltaTracker:
    """Turns finished windows into delta events, each piece of text exactly once."""

    def __init__(self, extras: Extras) -> None:
        self.extras = extras
        self.committed = CommittedText()

    def deltas(self, segments: list[Segment]) -> list[Event]:
        """The delta events the newly finished `segments` commit."""
        return [delta_payload(text, segment, self.extras)
                for finished in segments for text, segment in self.committed.add(finished)]


async def _next_event(events: asyncio.Queue[Event], job: asyncio.Future[Transcription]) -> Event | None:
    """The next queued event, or None once the job has finished and every event before it has been taken."""
    if not events.empty():
        return events.get_nowait()
    if job.done():
        return None
    getter = asyncio.ensure_future(events.get())
    try:
        await asyncio.wait({getter, job}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not getter.done():
            getter.cancel()
    if getter.done() and not getter.cancelled():
        return getter.result()
    return events.get_nowait() if not events.empty() else None


def _as_api_error(exc: Exception) -> ApiError:
    if isinstance(exc, EngineError):
        return from_engine_error(exc)
    log.exception("streamed transcription failed", exc_info=exc)
    return ApiError(500, "Internal server error.", code="internal_error")


async def _events(
    request: Request, first: Event | None, events: asyncio.Queue[Event], job: asyncio.Future[Transcription],
    tracker: DeltaTracker, model: str,
) -> AsyncIterator[str]:
    try:
        event = first
        while event is not None:
            yield sse_event(event)
            event = await _next_event(events, job)
        try:
            result = job.result()
        except Exception as exc:  # the status line is sent: the error can only travel as an event
            yield sse_event({"type": "error", **_as_api_error(exc).body()})
        else:
            note_result(request, result)
            # Complete: whatever no window reported yet is final now.
            for delta in tracker.deltas(result.segments):
                yield sse_event(delta)
            yield sse_event(done_payload(result, model, tracker.extras))
        yield DONE
    finally:
        # A client that went away cancels this generator; the job must not outlive it.
        if not job.done():
            job.cancel()


async def stream_transcription(
    request: Request, engine: EngineClient, audio: AudioInput, options: DecodeOptions, timeout_s: float,
    extras: Extras, drafts: bool = False,
) -> StreamingResponse:
    """Submit the job and answer with its event stream once the first event (or the result) exists."""
    events: asyncio.Queue[Event] = asyncio.Queue()
    tracker = DeltaTracker(extras)

    def on_segment(segment: Segment) -> None:
        for delta in tracker.deltas([segment]):
            events.put_nowait(delta)

    on_draft = (lambda s, n, t: events.put_nowait(draft_payload(s, n, t))) if drafts else None
    job = asyncio.ensure_future(
        engine.transcribe(audio, options, timeout_s, on_draft=on_draft, on_segment=on_segment)
    )
    try:
        first = await unless_disconnected(_next_event(events, job), request)
    except BaseException:
        job.cancel()
        raise
    if first is None and not job.cancelled() and job.exception() is not None:
        raise job.exception()  # nothing sent yet: an ordinary error response
    return StreamingResponse(
        _events(request, first, events, job, tracker, engine.model_name),
        media_type="text/event-stream", headers=SSE_HEADERS,
    )
