"""One WebSocket streaming session: frames in, partial/draft/final messages out (DESIGN.md §4).

The protocol, close codes and limits are described in docs/streaming.md; admission and the route are in
`app/api/stream.py`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketDisconnected

from app.api.deps import Runtime
from app.api.errors import from_engine_error
from app.audio.errors import AudioError
from app.audio.resample import SAMPLE_RATE
from app.audio.stream_buffer import (
    Segment, SpanSplitter, StreamBuffer,
)
from app.audio.vad import AudioInput, AudioWindow
from app.engine.client import EngineClient
from app.engine.errors import EngineError
from app.formats import timing_dict
from app.languages import UNKNOWN_LANGUAGE
from app.results import DecodeOptions, Timing, Transcription

log = logging.getLogger("diffusion_asr.api")

NORMAL, POLICY, TOO_BIG, INTERNAL, TRY_LATER, GONE = 1000, 1008, 1009, 1011, 1013, 1006
MAX_CONTROL_CHARS = 1024
"""Longest text frame read as a control message; `{"type": "flush"}` needs 17 characters."""
MAX_CONTROL_DEPTH = 4
"""Deepest bracket nesting parsed: a control message is one flat object, and a deep one would exhaust the
parser's recursion."""


class Refused(Exception):
    """A connection turned away before its session starts: an `error` message, then `close_code`."""

    def __init__(self, code: str, message: str, close_code: int) -> None:
        super().__init__(message)
        self.code, self.message, self.close_code = code, message, close_code


class ClientGone(Exception):
    """The client disconnected; nothing more can be sent."""


@dataclass(frozen=True)
class StreamParams:
    """A session's validated query parameters."""

    options: DecodeOptions  # the resolved language, steps and seed of every final and partial
    sample_rate: int
    encoding: str
    drafts: bool


@dataclass(frozen=True)
class Close:
    """How the server ends a session."""

    code: int
    reason: str


def _seconds(sample: int | None) -> float | None:
    return None if sample is None else sample / SAMPLE_RATE


class StreamSession:
    """One connection: reads frames and control messages, runs partial and final jobs, writes messages in order."""

    def __init__(self, websocket: WebSocket, runtime: Runtime, params: StreamParams, buffer: StreamBuffer,
                 splitter: SpanSplitter) -> None:
        self.ws, self.runtime, self.params, self.buffer, self.splitter = websocket, runtime, params, buffer, splitter
        self.settings = runtime.settings
        self.engine: EngineClient = runtime.engine
        self.id = uuid.uuid4().hex
        self.options = params.options
        self.outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.finals: asyncio.Queue[tuple[int, Segment, asyncio.Task[Transcription]] | None] = asyncio.Queue()
        self.segment_id = 0  # id of the open segment; a partial carries it, its final will too
        self.finals_sent = 0
        self._jobs: set[asyncio.Task[Any]] = set()
        self._partial: asyncio.Task[None] | None = None
        self._partial_mark: int | None = None  # stream sample at which the last partial was started
        self._interval = int(self.settings.stream.partial_interval_s * SAMPLE_RATE)

    async def run(self) -> Close:
        """Serve the session until it ends; every job it started is cancelled on the way out."""
        close = Close(GONE, "client went away")
        try:
            async with asyncio.TaskGroup() as group:
                writer, sender = group.create_task(self._write()), group.create_task(self._send_finals())
                self._send(self._greeting())
                close = await self._receive()
                # After the last frame the client may still hang up while its finals are computed.
                watcher = group.create_task(self._watch_disconnect())
                self._finalize(await asyncio.to_thread(self.buffer.flush, True))
                self.finals.put_nowait(None)
                await sender
                self.outbox.put_nowait(None)
                await writer
                watcher.cancel()
            await self._close(close)
        except* ClientGone:
            close = Close(GONE, "client went away")
        except* Exception:
            log.exception("stream %s failed", self.id)
            close = Close(INTERNAL, "internal error")
            await self._abort()
        finally:
            for job in list(self._jobs):
                job.cancel()  # the engine drops a cancelled job, queued or running
        return close

    def _greeting(self) -> dict[str, Any]:
        """The first message of a session."""
        return {"type": "ready", "session_id": self.id, "model": self.engine.model_name,
                "sample_rate": self.params.sample_rate, "window_seconds": self.engine.window_seconds}

    # ---- reading --------------------------------------------------------------------------------------------

    async def _receive(self) -> Close:
        settings = self.settings
        limit = int(settings.stream.max_session_s * SAMPLE_RATE)
        while True:
            try:
                message = await asyncio.wait_for(self.ws.receive(), settings.stream.idle_timeout_s)
            except TimeoutError:
                return Close(NORMAL, "idle timeout")
            if message["type"] == "websocket.disconnect":
                raise ClientGone()
            if message.get("bytes") is not None:
                data = message["bytes"]
                if len(data) > settings.stream.max_frame_bytes:
                    self._error("frame_too_large", f"A binary frame may hold at most "
                                f"{settings.stream.max_frame_bytes} bytes, got {len(data)}.")
                    return Close(TOO_BIG, "frame too large")
                await self._audio(data)
                if self.buffer.total >= limit:
                    return Close(NORMAL, "session audio limit reached")
            elif message.get("text") is not None:
                kind = self._control(message["text"])
                if kind == "end":
                    return Close(NORMAL, "end of stream")
                if kind == "flush":
                    self._finalize(await asyncio.to_thread(self.buffer.flush))

    def _control(self, text: str) -> str | None:
        message = parse_control(text)
        kind = message.get("type") if isinstance(message, dict) else None
        if kind in ("flush", "end"):
            return kind
        self._error("bad_message", 'Text frames must be JSON objects {"type": "flush"} or {"type": "end"}; '
                    f"got {text[:80]!r}.")
        return None

    async def _audio(self, data: bytes) -> None:
        try:
            segments = await asyncio.to_thread(self.buffer.push, data)
        except AudioError as exc:  # NaN/inf samples: the frame is refused, the session goes on
            self._error(exc.code, str(exc))
            return
        self._finalize(segments)
        self._maybe_partial()

    async def _watch_disconnect(self) -> None:
        while (await self.ws.receive())["type"] != "websocket.disconnect":
            pass  # frames after the end are not transcribed
        raise ClientGone()

    # ---- jobs -----------------------------------------------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)
        return task

    def _finalize(self, segments: list[Segment]) -> None:
        for segment in segments:
            if self._partial is not None:
                self._partial.cancel()  # it was for the segment just closed
            self.finals.put_nowait((self.segment_id, segment, self._spawn(self._transcribe(self.segment_id, segment))))
            self.segment_id += 1
            self._partial_mark = None

    def _maybe_partial(self) -> None:
        segmenter = self.buffer.segmenter
        if not segmenter.has_speech or (self._partial is not None and not self._partial.done()):
            return  # no utterance yet, or one partial already in flight: skip rather than pile up
        if self.engine.queue_depth() > 0:
            return  # jobs are waiting: interim text yields to finals (tried again on the next frame)
        since = self._partial_mark if self._partial_mark is not None else segmenter.speech_start()
        if since is None or self.buffer.total - since < self._interval:
            return
        self._partial_mark = self.buffer.total
        origin, samples = self.buffer.open_audio()
        self._partial = self._spawn(self._run_partial(self.segment_id, origin, samples))

    async def _run_partial(self, segment_id: int, origin: int, samples: Any) -> None:
        # Best effort and never longer than a window, so no VAD split: the final is the exact one.
        window = AudioWindow(0.0, samples.shape[0] / SAMPLE_RATE, samples, has_speech=True)
        try:
            result = await self.engine.transcribe(AudioInput([window], window.end), self.options,
                                                  self.settings.engine.request_timeout_s)
        except EngineError:
            return  # the final will still come; a busy engine just skips this refresh
        except Exception:  # noqa: BLE001 - interim text must never end the session
            log.warning("stream %s: partial failed", self.id, exc_info=True)
            return
        if segment_id == self.segment_id:
            self._send({"type": "partial", "segment_id": segment_id, "text": result.text,
                        "language": result.language, "start": origin / SAMPLE_RATE,
                        "end": (origin + samples.shape[0]) / SAMPLE_RATE})

    async def _transcribe(self, segment_id: int, segment: Segment) -> Transcription:
        # The upload path exactly: the same window split in the decode pool, one engine request with the seed.
        loop = asyncio.get_running_loop()
        audio = await loop.run_in_executor(self.runtime.decode_pool, self.splitter.split, segment.samples,
                                           self.engine.window_seconds)
        on_draft = None
        if self.params.drafts:
            on_draft = lambda step, of, text: self._send(  # noqa: E731
                {"type": "draft", "segment_id": segment_id, "step": step, "of": of, "text": text})
        return await self.engine.transcribe(audio, self.options, self.settings.engine.request_timeout_s, on_draft=on_draft)

    async def _send_finals(self) -> None:
        """Send finals in segment order, however their jobs finish."""
        while (item := await self.finals.get()) is not None:
            segment_id, segment, job = item
            try:
                result, failure = await job, None
            except EngineError as exc:  # this segment is lost, the session goes on
                result, failure = None, from_engine_error(exc)
                self._error(failure.code or "engine_error", failure.message, segment_id=segment_id)
            self._send(self._final(segment_id, segment, result, failure.code if failure else None))
            self.finals_sent += 1

    def _final(self, segment_id: int, segment: Segment, result: Transcription | None, error: str | None) -> dict:
        cut = segment.cut
        message = {
            "type": "final", "segment_id": segment_id,
            "text": result.text if result else "",
            "language": result.language if result else (self.options.language or UNKNOWN_LANGUAGE),
            "start": cut.start / SAMPLE_RATE, "end": cut.end / SAMPLE_RATE,
            "timing": timing_dict(result.timing if result else Timing(batch_size=0)),
            "speech_start": _seconds(cut.speech_start), "speech_end": _seconds(cut.speech_end),
            "reason": cut.reason,
        }
        if error is not None:
            message["error"] = error
        return message

    # ---- writing --------------------------------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        self.outbox.put_nowait(message)

    def _error(self, code: str, message: str, **extra: Any) -> None:
        self._send({"type": "error", "code": code, "message": message, **extra})

    async def _write(self) -> None:
        # The only task that sends data frames, so messages go out in the order they were queued.
        while (message := await self.outbox.get()) is not None:
            try:
                await self.ws.send_text(json.dumps(message, ensure_ascii=False))
            except (WebSocketDisconnect, WebSocketDisconnected) as exc:
                raise ClientGone() from exc

    async def _close(self, close: Close) -> None:
        try:
            await self.ws.close(close.code, close.reason)
        except (WebSocketDisconnect, WebSocketDisconnected, OSError):
            pass

    async def _abort(self) -> None:
        await error_and_close(self.ws, Refused("internal_error", "Internal server error.", INTERNAL))


def bracket_depth(text: str) -> int:
    """Deepest bracket nesting of `text` (brackets inside strings count too: an upper bound is enough)."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def parse_control(text: str) -> object:
    """The JSON value of a control frame, or None when it is not JSON, too long or nested too deep (checked
    before parsing, so no frame can make the parser recurse without bound)."""
    if len(text) > MAX_CONTROL_CHARS or bracket_depth(text) > MAX_CONTROL_DEPTH:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


async def error_and_close(websocket: WebSocket, refusal: Refused, accept: bool = False) -> None:
    try:
        if accept:  # a close before accepting becomes an HTTP 403, and the client would never see the code
            await websocket.accept()
        await websocket.send_text(json.dumps({"type": "error", "code": refusal.code, "message": refusal.message}))
        await websocket.close(refusal.close_code, refusal.code)
    except (WebSocketDisconnect, WebSocketDisconnected, OSError, RuntimeError):
        pass  # the client is gone or the socket already closing: nothing left to tell it
