"""`WS /v1/audio/stream` (DESIGN.md §4): live PCM in; partial, draft and final transcripts out.

Each final is transcribed exactly as an upload of its span would be (same VAD split, same engine call, same
seed), so its text equals `POST /v1/audio/transcriptions` on that audio. Protocol, close codes and limits:
docs/streaming.md.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, WebSocket
from pydantic import Field
from starlette.websockets import WebSocketDisconnect, WebSocketDisconnected

from app.api.auth import is_authorized
from app.api.deps import Runtime
from app.api.stream_session import POLICY, TRY_LATER, Refused, StreamParams, StreamSession, error_and_close
from app.audio.resample import SAMPLE_RATE
from app.audio.segmenter import FrameVad
from app.audio.stream_buffer import ENCODINGS, SileroFrameVad, SpanSplitter, StreamBuffer, new_stream_buffer
from app.request_options import OptionError, RequestOptions, RequestResolver, parse_options

log = logging.getLogger("diffusion_asr.api")
router = APIRouter(tags=["audio"])

MIN_RATE, MAX_RATE = 1000, 384_000


class StreamQuery(RequestOptions):
    """The query of `WS /v1/audio/stream` (DESIGN.md §4, plus `seed`)."""

    sample_rate: int = Field(SAMPLE_RATE, ge=MIN_RATE, le=MAX_RATE)
    encoding: Literal[tuple(ENCODINGS)] = "pcm_s16le"  # type: ignore[valid-type]
    drafts: bool = False


def parse_params(query: Mapping[str, str], resolver: RequestResolver) -> StreamParams:
    """Validate the query; a bad value refuses the connection with 1008."""
    try:
        parsed = parse_options(StreamQuery, query)
        options = resolver.resolve(parsed)
    except OptionError as exc:
        # The streaming protocol's code for a bad value is `bad_parameter` (docs/streaming.md).
        code = "bad_parameter" if exc.code == "invalid_value" else exc.code
        raise Refused(code, exc.message, POLICY) from None
    return StreamParams(options=options, sample_rate=parsed.sample_rate, encoding=parsed.encoding,
                        drafts=parsed.drafts)


def stream_sessions(app: FastAPI) -> set[str]:
    """The tickets of the open streaming sessions (both WebSocket protocols share `ASR_STREAM_MAX_SESSIONS`)."""
    if not hasattr(app.state, "stream_sessions"):
        app.state.stream_sessions = set()
    return app.state.stream_sessions


def origin_allowed(origin: str | None, host: str | None, allowed: list[str]) -> bool:
    """Browsers send `Origin` on every WebSocket handshake and CORS does not apply to WebSockets, so the check is
    ours: no Origin (a non-browser client), the page's own origin, or one of `ASR_CORS_ORIGINS` (`*`: any)."""
    if origin is None or "*" in allowed or origin in allowed:
        return True
    parsed = urlsplit(origin)
    return bool(host) and parsed.scheme in ("http", "https") and parsed.netloc.lower() == host.lower()


def admit(websocket: WebSocket, runtime: Runtime) -> StreamParams:
    """Origin, authentication, parameters, readiness, capacity (in that order); raises `Refused`."""
    settings = runtime.settings
    origin = websocket.headers.get("origin")
    if not origin_allowed(origin, websocket.headers.get("host"), settings.server.cors_origins):
        raise Refused("origin_not_allowed", f"Connections from the origin {origin[:100]!r} are not allowed; "
                      "the server lists allowed origins in ASR_CORS_ORIGINS.", POLICY)
    if not is_authorized(settings, websocket.headers, websocket.query_params):
        raise Refused("unauthorized", "Missing or invalid API key: send 'Authorization: Bearer <key>' or "
                      "the api_key query parameter.", POLICY)
    if not runtime.ready():
        raise Refused("not_ready", "The model is loading or the server is shutting down; retry shortly.", TRY_LATER)
    params = parse_params(websocket.query_params, runtime.resolver)
    if len(stream_sessions(websocket.app)) >= settings.stream.max_sessions:
        runtime.metrics.rejected.labels(reason="streams_full").inc()
        raise Refused("overloaded", f"All {settings.stream.max_sessions} streaming sessions are in use; "
                      "retry shortly.", TRY_LATER)
    return params


def span_splitter(app: FastAPI, runtime: Runtime) -> SpanSplitter:
    """The app's one splitter of committed spans into windows (built on first use)."""
    if getattr(app.state, "stream_splitter", None) is None:
        app.state.stream_splitter = SpanSplitter(runtime.vad, runtime.settings.server.decode_threads)
    return app.state.stream_splitter


def new_frame_vad(app: FastAPI) -> FrameVad:
    """Blocking (run it in a thread): a streaming VAD of a session's own (silero, copied from one template)."""
    factory = getattr(app.state, "stream_vad_factory", None)  # tests inject a deterministic one
    if factory is None:
        if getattr(app.state, "stream_vad_template", None) is None:
            app.state.stream_vad_template = SileroFrameVad.load_template()
        template = app.state.stream_vad_template
        factory = lambda: SileroFrameVad.from_template(template)  # noqa: E731
    return factory()


def _new_buffer(app: FastAPI, runtime: Runtime, params: StreamParams) -> StreamBuffer:
    """Blocking (run it in a thread): the session's buffer with its own streaming VAD."""
    settings, window = runtime.settings.stream, runtime.engine.window_seconds
    return new_stream_buffer(params.encoding, params.sample_rate, new_frame_vad(app), window,
                             settings.endpoint_silence_ms / 1000.0, min(settings.max_silence_s, window))


@router.websocket("/v1/audio/stream")
async def stream_audio(websocket: WebSocket) -> None:
    """Live transcription over a WebSocket (DESIGN.md §4; docs/streaming.md)."""
    runtime: Runtime = websocket.app.state.runtime
    try:
        params = admit(websocket, runtime)
    except Refused as refusal:
        await error_and_close(websocket, refusal, accept=True)
        return
    sessions, ticket = stream_sessions(websocket.app), uuid.uuid4().hex
    sessions.add(ticket)  # no await since the capacity check, so concurrent handshakes cannot overshoot
    runtime.metrics.active_streams.inc()
    try:
        await websocket.accept()
        buffer = await asyncio.to_thread(_new_buffer, websocket.app, runtime, params)
        session = StreamSession(websocket, runtime, params, buffer, span_splitter(websocket.app, runtime))
        close = await session.run()
        log.info("stream %s closed %d (%s): %.1f s of audio, %d finals", session.id, close.code, close.reason,
                 buffer.total / SAMPLE_RATE, session.finals_sent)
    except (WebSocketDisconnect, WebSocketDisconnected):
        pass
    finally:
        sessions.discard(ticket)
        runtime.metrics.active_streams.dec()
