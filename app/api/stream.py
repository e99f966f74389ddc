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

from fastapi import APIRouter, FastAPI, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketDisconnected

from app.api.auth import is_authorized
from app.api.deps import Runtime
from app.api.schemas import MAX_SEED, MAX_STEPS, MIN_STEPS
from app.audio.resample import SAMPLE_RATE
from app.audio.stream_buffer import ENCODINGS, SileroFrameVad, SpanSplitter, StreamBuffer, new_stream_buffer
from app.api.stream_session import POLICY, TRY_LATER, Refused, StreamParams, StreamSession, error_and_close
from app.model.asr_config import SUPPORTED_LANGUAGES

log = logging.getLogger("diffusion_asr.api")
router = APIRouter(tags=["audio"])

MIN_RATE, MAX_RATE = 1000, 384_000
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off", ""}


def _integer(query: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    raw = (query.get(name) or "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise Refused("bad_parameter", f"{name} must be an integer between {low} and {high}, got {raw!r}", POLICY)
    return value


def parse_params(query: Mapping[str, str], default_seed: int) -> StreamParams:
    """Validate the query (DESIGN.md §4 plus `seed`); a bad value refuses the connection with 1008."""
    language = (query.get("language") or "").strip().lower() or None
    if language is not None and language not in SUPPORTED_LANGUAGES:
        raise Refused("unsupported_language",
                      f"language must be one of {', '.join(SUPPORTED_LANGUAGES)}, got {language!r}", POLICY)
    encoding = (query.get("encoding") or "pcm_s16le").strip()
    if encoding not in ENCODINGS:
        raise Refused("bad_parameter", f"encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}", POLICY)
    drafts = (query.get("drafts") or "").strip().lower()
    if drafts not in _TRUE | _FALSE:
        raise Refused("bad_parameter", f"drafts must be true or false, got {drafts!r}", POLICY)
    seed = _integer(query, "seed", 0, MAX_SEED)
    return StreamParams(
        language=language,
        sample_rate=_integer(query, "sample_rate", MIN_RATE, MAX_RATE) or SAMPLE_RATE,
        encoding=encoding,
        steps=_integer(query, "denoising_steps", MIN_STEPS, MAX_STEPS),
        drafts=drafts in _TRUE,
        seed=default_seed if seed is None else seed,
    )


def _sessions(app: FastAPI) -> set[str]:
    if not hasattr(app.state, "stream_sessions"):
        app.state.stream_sessions = set()
    return app.state.stream_sessions


def admit(websocket: WebSocket, runtime: Runtime) -> StreamParams:
    """Authentication, parameters, readiness, capacity (in that order); raises `Refused`."""
    settings = runtime.settings
    if not is_authorized(settings, websocket.headers, websocket.query_params):
        raise Refused("unauthorized", "Missing or invalid API key: send 'Authorization: Bearer <key>' or "
                      "the api_key query parameter.", POLICY)
    params = parse_params(websocket.query_params, settings.default_seed)
    if not runtime.ready():
        raise Refused("not_ready", "The model is loading or the server is shutting down; retry shortly.", TRY_LATER)
    if len(_sessions(websocket.app)) >= settings.stream_max_sessions:
        runtime.metrics.rejected.labels(reason="streams_full").inc()
        raise Refused("overloaded", f"All {settings.stream_max_sessions} streaming sessions are in use; "
                      "retry shortly.", TRY_LATER)
    return params


def _splitter(app: FastAPI, runtime: Runtime) -> SpanSplitter:
    if getattr(app.state, "stream_splitter", None) is None:
        app.state.stream_splitter = SpanSplitter(runtime.vad, runtime.settings.decode_threads)
    return app.state.stream_splitter


def _new_buffer(app: FastAPI, runtime: Runtime, params: StreamParams) -> StreamBuffer:
    """Blocking (run it in a thread): the session's buffer with its own streaming VAD."""
    factory = getattr(app.state, "stream_vad_factory", None)  # tests inject a deterministic one
    if factory is None:
        if getattr(app.state, "stream_vad_template", None) is None:
            app.state.stream_vad_template = SileroFrameVad.load_template()
        template = app.state.stream_vad_template
        factory = lambda: SileroFrameVad.from_template(template)  # noqa: E731
    settings, window = runtime.settings, runtime.engine.window_seconds
    return new_stream_buffer(params.encoding, params.sample_rate, factory(), window,
                             settings.stream_endpoint_silence_ms / 1000.0, min(settings.stream_max_silence_s, window))


@router.websocket("/v1/audio/stream")
async def stream_audio(websocket: WebSocket) -> None:
    """Live transcription over a WebSocket (DESIGN.md §4; docs/streaming.md)."""
    runtime: Runtime = websocket.app.state.runtime
    try:
        params = admit(websocket, runtime)
    except Refused as refusal:
        await error_and_close(websocket, refusal, accept=True)
        return
    sessions, ticket = _sessions(websocket.app), uuid.uuid4().hex
    sessions.add(ticket)  # no await since the capacity check, so concurrent handshakes cannot overshoot
    runtime.metrics.active_streams.inc()
    try:
        await websocket.accept()
        buffer = await asyncio.to_thread(_new_buffer, websocket.app, runtime, params)
        session = StreamSession(websocket, runtime, params, buffer, _splitter(websocket.app, runtime))
        close = await session.run()
        log.info("stream %s closed %d (%s): %.1f s of audio, %d finals", session.id, close.code, close.reason,
                 buffer.total / SAMPLE_RATE, session.finals_sent)
    except (WebSocketDisconnect, WebSocketDisconnected):
        pass
    finally:
        sessions.discard(ticket)
        runtime.metrics.active_streams.dec()
