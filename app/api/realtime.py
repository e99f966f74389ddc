"""`WS /v1/realtime?intent=transcription`: OpenAI's Realtime transcription session, as the `openai` SDK's
`client.realtime.connect(..., extra_query={"intent": "transcription"})` speaks it (docs/realtime.md).

Admission mirrors `/v1/audio/stream` (key, readiness, the shared pool of streaming sessions) and answers in
OpenAI's `error` event shape; the session itself is `app/api/realtime_session.py`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
from fastapi import APIRouter, FastAPI, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketDisconnected

from app.api.auth import key_is_valid, presented_key
from app.api.deps import Runtime
from app.api.realtime_events import SessionConfig
from app.api.realtime_session import ENCODING, RealtimeSession, error_and_close
from app.api.stream import new_frame_vad, origin_allowed, span_splitter, stream_sessions
from app.api.stream_session import POLICY, TRY_LATER, Refused
from app.audio.resample import SAMPLE_RATE
from app.audio.segmenter import StreamSegmenter
from app.audio.stream_buffer import StreamBuffer

log = logging.getLogger("diffusion_asr.api")
router = APIRouter(tags=["audio"])

SUBPROTOCOL = "realtime"
KEY_SUBPROTOCOL = "openai-insecure-api-key."
"""Browsers cannot set headers on a WebSocket: OpenAI's clients offer the key as a subprotocol instead."""
SILENCE_SLACK_S = 0.5
"""Silence kept before an utterance beyond `prefix_padding_ms` before the rest is dropped as a silent cut."""


class AlwaysSpeech:
    """The frame VAD of manual sessions: every frame counts as speech, so the segmenter cuts only at the window
    (those cuts wait for the client's commit)."""

    def probabilities(self, frames: np.ndarray) -> list[float]:
        """1.0 for every frame."""
        return [1.0] * frames.shape[0]


def subprotocol_key(offered: Sequence[str]) -> str | None:
    """The key carried by an `openai-insecure-api-key.<key>` subprotocol, else None."""
    for protocol in offered:
        if protocol.startswith(KEY_SUBPROTOCOL) and len(protocol) > len(KEY_SUBPROTOCOL):
            return protocol[len(KEY_SUBPROTOCOL):]
    return None


def authorized(keys: Sequence[str], headers: Mapping[str, str], query: Mapping[str, str],
               offered: Sequence[str]) -> bool:
    """True without configured keys, else when the bearer header, the key subprotocol or `api_key` holds one."""
    if not keys:
        return True
    return key_is_valid(presented_key(headers, query) or subprotocol_key(offered), keys)


def admit(websocket: WebSocket, runtime: Runtime, offered: Sequence[str]) -> SessionConfig:
    """Origin, authentication, intent and model, readiness, capacity (in that order); raises `Refused`."""
    settings, query = runtime.settings, websocket.query_params
    origin = websocket.headers.get("origin")
    if not origin_allowed(origin, websocket.headers.get("host"), settings.server.cors_origins):
        raise Refused("origin_not_allowed", f"Connections from the origin {origin[:100]!r} are not allowed; "
                      "the server lists allowed origins in ASR_CORS_ORIGINS.", POLICY)
    if not authorized(settings.server.api_keys, websocket.headers, query, offered):
        raise Refused("invalid_api_key", "Missing or invalid API key: send 'Authorization: Bearer <key>' or the "
                      f"'{KEY_SUBPROTOCOL}<key>' subprotocol.", POLICY)
    if query.get("intent", "transcription") != "transcription":
        raise Refused("invalid_intent", "This server runs transcription sessions only: connect with "
                      "intent=transcription.", POLICY)
    if not runtime.ready():
        raise Refused("not_ready", "The model is loading or the server is shutting down; retry shortly.", TRY_LATER)
    model = runtime.engine.model_name
    if query.get("model") not in (None, "", model, *settings.server.model_aliases):
        raise Refused("model_not_found", f"The model {query.get('model')!r} does not exist; this server serves "
                      f"{model!r}.", POLICY)
    if len(stream_sessions(websocket.app)) >= settings.stream.max_sessions:
        runtime.metrics.rejected.labels(reason="streams_full").inc()
        raise Refused("overloaded", f"All {settings.stream.max_sessions} streaming sessions are in use; "
                      "retry shortly.", TRY_LATER)
    return SessionConfig(model=model)


def new_buffer(app: FastAPI, runtime: Runtime, config: SessionConfig) -> StreamBuffer:
    """Blocking (run it in a thread): a buffer cut by server VAD with the session's parameters, or, in manual
    mode, only at the model's window."""
    window = runtime.engine.window_seconds
    vad = config.vad
    if vad is None:
        segmenter = StreamSegmenter(AlwaysSpeech(), window, window, max_silence_s=window)
    else:
        padding_s = vad.prefix_padding_ms / 1000.0
        segmenter = StreamSegmenter(new_frame_vad(app), window, vad.silence_duration_ms / 1000.0,
                                    max_silence_s=min(padding_s + SILENCE_SLACK_S, window), preroll_s=padding_s,
                                    threshold=vad.threshold)
    return StreamBuffer(ENCODING, config.rate, segmenter)


async def refuse(websocket: WebSocket, refusal: Refused, subprotocol: str | None) -> None:
    """Accept (a refused handshake would hide the reason), send an `error` event, close with its code."""
    try:
        await websocket.accept(subprotocol=subprotocol)
    except (WebSocketDisconnect, WebSocketDisconnected, OSError, RuntimeError):
        return  # the client is gone: nothing left to tell it
    await error_and_close(websocket, refusal.code, refusal.message, refusal.close_code)


@contextmanager
def session_slot(app: FastAPI, runtime: Runtime) -> Iterator[None]:
    """Hold one place in the pool of streaming sessions (shared with `/v1/audio/stream`) and its gauge."""
    sessions, ticket = stream_sessions(app), uuid.uuid4().hex
    sessions.add(ticket)
    runtime.metrics.active_streams.inc()
    try:
        yield
    finally:
        sessions.discard(ticket)
        runtime.metrics.active_streams.dec()


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket) -> None:
    """An OpenAI Realtime transcription session (docs/realtime.md)."""
    runtime: Runtime = websocket.app.state.runtime
    offered = list(websocket.scope.get("subprotocols") or [])
    subprotocol = SUBPROTOCOL if SUBPROTOCOL in offered else None  # never echo the key subprotocol
    try:
        config = admit(websocket, runtime, offered)
    except Refused as refusal:
        await refuse(websocket, refusal, subprotocol)
        return
    app = websocket.app
    with session_slot(app, runtime):  # no await since the capacity check, so handshakes cannot overshoot
        try:
            await websocket.accept(subprotocol=subprotocol)
            buffer = await asyncio.to_thread(new_buffer, app, runtime, config)
            session = RealtimeSession(websocket, runtime, config, buffer,
                                      lambda c: new_buffer(app, runtime, c), span_splitter(app, runtime))
            close = await session.run()
            log.info("realtime %s closed %d (%s): %.1f s of audio, %d items", session.session_id, close.code,
                     close.reason, session.buffer.total / SAMPLE_RATE, session.finals_sent)
        except (WebSocketDisconnect, WebSocketDisconnected):
            pass
