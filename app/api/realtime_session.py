"""One OpenAI Realtime transcription session (`WS /v1/realtime?intent=transcription`): JSON client events in,
OpenAI server events out, on the streaming machinery of `/v1/audio/stream` (`StreamSession`).

What it keeps from the streaming session: the buffer (PCM decode, resampling to 16 kHz, the VAD segmenter's
exactly-once cuts), each item transcribed exactly as an upload of its audio, in-order delivery by one writer,
limits and job cancellation. What it changes: the messages, and which cuts become items:
- server VAD: every utterance the segmenter closes (endpoint or window) is committed as one item; silence-only
  cuts are dropped, as OpenAI drops audio without speech;
- manual (`turn_detection: null`): nothing is committed until `input_audio_buffer.commit`, which commits all
  audio since the previous commit as one item.
Protocol details: docs/realtime.md.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import numpy as np
from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketDisconnected

from app.api.deps import Runtime
from app.api.errors import INVALID_REQUEST, SERVER_ERROR, from_engine_error
from app.api.realtime_events import (
    G711_LAWS, BadEvent, SessionConfig, apply_update, error_event, event, milliseconds, new_id,
    parse_session_update, session_object,
)
from app.api.stream_session import (
    INTERNAL, NORMAL, ClientGone, Close, StreamParams, StreamSession, bracket_depth,
)
from app.audio.resample import SAMPLE_RATE
from app.audio.g711 import to_pcm16
from app.audio.segmenter import Cut
from app.audio.stream_buffer import Segment, SpanSplitter, StreamBuffer
from app.engine.errors import EngineError
from app.formats import all_logprobs, logprobs_list
from app.request_options import OptionError, RequestOptions, RequestResolver, parse_options
from app.results import DecodeOptions

MIN_COMMIT_SAMPLES = SAMPLE_RATE // 10
"""OpenAI refuses to commit less than 100 ms of audio; so does this server."""
ENCODING = "pcm_s16le"
"""What the buffer reads: PCM16 as sent, or expanded from G.711."""
MAX_EVENT_DEPTH = 8
"""The deepest event of the protocol (session.update's turn detection) nests 5 levels: room to spare, no more."""

BufferFactory = Callable[[SessionConfig], StreamBuffer]
"""Blocking: a fresh buffer for a configuration (run in a thread)."""


def resolve_options(resolver: RequestResolver, config: SessionConfig) -> DecodeOptions:
    """The decode options of a configuration's transcription settings; raises `BadEvent`."""
    try:
        return resolver.resolve(parse_options(RequestOptions, {"language": config.language, "prompt": config.prompt}))
    except OptionError as exc:
        param = f"session.audio.input.transcription.{exc.param}"
        raise BadEvent(exc.code, exc.message, param) from None


def decode_audio(message: dict[str, Any], max_bytes: int) -> bytes:
    """The PCM bytes of an `input_audio_buffer.append`; raises `BadEvent`."""
    audio = message.get("audio")
    if not isinstance(audio, str):
        raise BadEvent("missing_required_parameter", "input_audio_buffer.append needs 'audio': base64 PCM16.",
                       "audio")
    try:
        data = base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise BadEvent("invalid_value", "'audio' must be base64-encoded PCM16 audio.", "audio") from None
    if len(data) > max_bytes:
        raise BadEvent("audio_too_large", f"One append may carry at most {max_bytes} bytes of audio, got "
                       f"{len(data)}; send smaller chunks.", "audio")
    return data


def joined(segments: list[Segment]) -> Segment:
    """Consecutive segments as one (they tile the stream, so the audio is their concatenation)."""
    if len(segments) == 1:
        return segments[0]
    first, last = segments[0].cut, segments[-1].cut
    speech = [s.cut for s in segments if s.cut.has_speech]
    cut = Cut(first.start, last.end, speech[0].speech_start if speech else None,
              speech[-1].speech_end if speech else None, "commit")
    return Segment(cut, np.concatenate([s.samples for s in segments]))



class RealtimeSession(StreamSession):
    """A `StreamSession` that speaks OpenAI's Realtime transcription events."""

    def __init__(self, websocket: WebSocket, runtime: Runtime, config: SessionConfig, buffer: StreamBuffer,
                 new_buffer: BufferFactory, splitter: SpanSplitter) -> None:
        options = resolve_options(runtime.resolver, config)
        params = StreamParams(options=options, sample_rate=config.rate, encoding=ENCODING, drafts=False)
        super().__init__(websocket, runtime, params, buffer, splitter)
        self.config = config
        self.session_id = f"sess_{self.id[:24]}"
        self._new_buffer = new_buffer
        self._appended = False  # from the first append on, the buffer's rate and turn detection are fixed
        self._item: str | None = None  # the open item's id, once speech_started announced it
        self._previous_item: str | None = None
        self._pending: list[Segment] = []  # manual mode: audio cut at the window but not committed yet
        self._item_ids: dict[int, str] = {}  # job number (the base session's segment id) -> item id
        self._ending = False  # uncommitted audio at the end of a session is dropped, as OpenAI does

    def _greeting(self) -> dict[str, Any]:
        return event("session.created", session=session_object(self.session_id, self.config))

    # ---- reading --------------------------------------------------------------------------------------------

    async def _receive(self) -> Close:
        stream = self.settings.stream
        limit = int(stream.max_session_s * SAMPLE_RATE)
        while True:
            try:
                message = await asyncio.wait_for(self.ws.receive(), stream.idle_timeout_s)
            except TimeoutError:
                self._ending = True
                return Close(NORMAL, "idle timeout")
            if message["type"] == "websocket.disconnect":
                raise ClientGone()
            await self._event(message.get("text"))
            if self.buffer.total >= limit:
                self._ending = True
                self._error("session_audio_limit", f"A session may carry at most {stream.max_session_s:g} s "
                            "of audio; open a new session.")
                return Close(NORMAL, "session audio limit reached")

    async def _event(self, text: str | None) -> None:
        """Handle one client event; a bad one is answered with an `error` event and the session goes on."""
        client_event_id = None
        try:
            message = self._parse(text)
            client_event_id = message.get("event_id") if isinstance(message.get("event_id"), str) else None
            await self._handler(message["type"])(message)
        except BadEvent as exc:
            self._send(error_event(exc.code, exc.message, exc.param, client_event_id))

    @staticmethod
    def _parse(text: str | None) -> dict[str, Any]:
        if text is None:
            raise BadEvent("invalid_event", "Binary frames are not part of the Realtime protocol; send audio as "
                           "base64 in input_audio_buffer.append events.")
        if bracket_depth(text) > MAX_EVENT_DEPTH:  # checked before parsing: json.loads recurses per level
            raise BadEvent("invalid_json", f"Events nest at most {MAX_EVENT_DEPTH} levels deep.")
        try:
            message = json.loads(text)
        except ValueError:
            raise BadEvent("invalid_json", f"Events must be JSON objects; got {text[:80]!r}.") from None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise BadEvent("invalid_event", f"Events must be JSON objects with a string 'type'; got {text[:80]!r}.",
                           "type")
        return message

    def _handler(self, kind: str) -> Callable[[dict[str, Any]], Awaitable[None]]:
        handlers = {
            "session.update": self._update, "input_audio_buffer.append": self._append,
            "input_audio_buffer.commit": self._commit, "input_audio_buffer.clear": self._clear,
        }
        if kind not in handlers:
            raise BadEvent("invalid_event", f"Unsupported event type {kind!r}: a transcription session accepts "
                           f"{', '.join(handlers)}.", "type")
        return handlers[kind]

    # ---- client events --------------------------------------------------------------------------------------

    async def _update(self, message: dict[str, Any]) -> None:
        update = parse_session_update(message.get("session"))
        given = update.audio.input.transcription if update.audio and update.audio.input else None
        if given is not None and given.model not in (None, self.engine.model_name,
                                                     *self.runtime.settings.server.model_aliases):
            raise BadEvent("model_not_found", f"The model {given.model!r} does not exist; this server serves "
                           f"{self.engine.model_name!r}.", "session.audio.input.transcription.model")
        config = apply_update(self.config, update)
        options = resolve_options(self.runtime.resolver, config)
        if self.config.shapes_audio(config):
            if self._appended:
                raise BadEvent("invalid_value", "The audio format and turn detection can only change before the "
                               "first input_audio_buffer.append.", "session.audio.input")
            self.buffer = await asyncio.to_thread(self._new_buffer, config)
        self.config, self.options = config, options
        self.params = replace(self.params, options=options, sample_rate=config.rate)
        self._send(event("session.updated", session=session_object(self.session_id, config)))

    async def _append(self, message: dict[str, Any]) -> None:
        data = decode_audio(message, self.settings.stream.max_frame_bytes)
        if self.config.encoding in G711_LAWS:
            data = to_pcm16(data, G711_LAWS[self.config.encoding])
        self._appended = True
        await self._audio(data)  # decode, resample, VAD cuts -> `_finalize`
        if self.config.vad is not None and self._item is None and self.buffer.segmenter.has_speech:
            self._speech_started(self.buffer.segmenter.origin)

    async def _commit(self, message: dict[str, Any]) -> None:
        start = self._pending[0].cut.start if self._pending else self.buffer.segmenter.origin
        if self.buffer.total - start < MIN_COMMIT_SAMPLES:
            held = (self.buffer.total - start) * 1000 / SAMPLE_RATE
            raise BadEvent("input_audio_buffer_commit_empty", "Error committing input audio buffer: buffer too "
                           f"small. Expected at least 100ms of audio, but buffer only has {held:.2f}ms of audio.")
        segments = self._pending + await asyncio.to_thread(self.buffer.flush)
        self._pending = []
        self._commit_item(joined(segments))

    async def _clear(self, message: dict[str, Any]) -> None:
        await asyncio.to_thread(self.buffer.flush)  # the open audio is cut and dropped: the clock runs on
        self._pending, self._item = [], None
        self._send(event("input_audio_buffer.cleared"))

    # ---- items ----------------------------------------------------------------------------------------------

    def _speech_started(self, start: int) -> None:
        self._item = new_id("item")
        self._send(event("input_audio_buffer.speech_started", item_id=self._item,
                         audio_start_ms=milliseconds(start, SAMPLE_RATE)))

    def _finalize(self, segments: list[Segment]) -> None:
        """Route the cuts the segmenter closed: utterances become items (server VAD) or wait for a commit."""
        for segment in segments:
            if self._ending or segment.cut.reason == "silence":
                continue
            if self.config.vad is None:
                self._pending.append(segment)
                continue
            if self._item is None:  # speech began and ended within one append
                self._speech_started(segment.cut.start)
            self._send(event("input_audio_buffer.speech_stopped", item_id=self._item,
                             audio_end_ms=milliseconds(segment.cut.end, SAMPLE_RATE)))
            self._commit_item(segment)

    def _commit_item(self, segment: Segment) -> None:
        item, self._item = self._item or new_id("item"), None
        self._send(event("input_audio_buffer.committed", item_id=item, previous_item_id=self._previous_item))
        self._previous_item = item
        number, self.segment_id = self.segment_id, self.segment_id + 1
        self._item_ids[number] = item
        self.finals.put_nowait((number, segment, self._spawn(self._transcribe(number, segment))))

    def _maybe_partial(self) -> None:
        """No interim text: OpenAI's transcription deltas only ever append, and a diffusion draft rewrites."""

    async def _send_finals(self) -> None:
        """One delta (the whole text) and one `completed` per item, in commit order, however jobs finish."""
        while (entry := await self.finals.get()) is not None:
            number, segment, job = entry
            item = self._item_ids.pop(number)
            try:
                result = await job
            except EngineError as exc:  # this item is lost, the session goes on
                failure = from_engine_error(exc)
                self._send(event("conversation.item.input_audio_transcription.failed", item_id=item,
                                 content_index=0, error={"type": failure.type, "code": failure.code,
                                                        "message": failure.message, "param": None}))
                continue
            # The final step's token log-probabilities, the same numbers an upload's include[]=logprobs returns.
            extra = {"logprobs": logprobs_list(all_logprobs(result))} if self.config.logprobs else {}
            if result.text:
                self._send(event("conversation.item.input_audio_transcription.delta", item_id=item,
                                 content_index=0, delta=result.text, **extra))
            self._send(event("conversation.item.input_audio_transcription.completed", item_id=item,
                             content_index=0, transcript=result.text, **extra,
                             usage={"type": "duration", "seconds": segment.samples.shape[0] / SAMPLE_RATE}))
            self.finals_sent += 1

    # ---- writing --------------------------------------------------------------------------------------------

    def _error(self, code: str, message: str, **extra: Any) -> None:
        self._send(error_event(code, message))

    async def _abort(self) -> None:
        await error_and_close(self.ws, "internal_error", "Internal server error.", INTERNAL, error_type=SERVER_ERROR)


async def error_and_close(websocket: WebSocket, code: str, message: str, close_code: int,
                          error_type: str = INVALID_REQUEST) -> None:
    """Send one `error` event and close with `close_code` (the socket must be accepted)."""
    try:
        await websocket.send_text(json.dumps(error_event(code, message, error_type=error_type)))
        await websocket.close(close_code, code)
    except (WebSocketDisconnect, WebSocketDisconnected, OSError, RuntimeError):
        pass  # the client is gone or the socket already closing: nothing left to tell it
