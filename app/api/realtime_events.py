"""The OpenAI Realtime transcription protocol's data: the session configuration a client may set with
`session.update`, and the server events, shaped as the `openai` SDK's `types/realtime` models define them.

Pure data and validation (no sockets, no audio); the session that uses them is `app/api/realtime_session.py`.
Protocol and extensions: docs/realtime.md.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.api.errors import INVALID_REQUEST
from app.audio.g711 import RATE as G711_RATE

DEFAULT_RATE = 24000
"""OpenAI's only PCM rate; other rates are this server's extension (the audio is resampled to 16 kHz)."""
MIN_RATE, MAX_RATE = 8000, 96000
LOGPROBS = "item.input_audio_transcription.logprobs"
PCM = "audio/pcm"
G711_LAWS = {"audio/pcmu": "ulaw", "audio/pcma": "alaw"}
"""OpenAI's G.711 formats (8 kHz telephone audio, one byte per sample) and their law."""


def new_id(prefix: str) -> str:
    """An identifier in OpenAI's style (`event_…`, `item_…`, `sess_…`)."""
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


# ---- what a client sends in session.update ---------------------------------------------------------------------

class _Strict(BaseModel):
    # An unknown key is reported, as OpenAI reports `Unknown parameter`, instead of being silently dropped.
    model_config = ConfigDict(extra="forbid")


class PcmFormat(_Strict):
    type: Literal["audio/pcm"] = PCM
    rate: int = Field(DEFAULT_RATE, ge=MIN_RATE, le=MAX_RATE)


class G711Format(_Strict):
    type: Literal["audio/pcmu", "audio/pcma"]


AudioFormat = Annotated[PcmFormat | G711Format, Field(discriminator="type")]


class ServerVad(_Strict):
    type: Literal["server_vad"]
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(300, ge=0, le=5000)
    silence_duration_ms: int = Field(500, ge=32, le=10000)
    # About responses of conversation sessions: accepted so conversation-style configs validate, never used.
    create_response: bool | None = None
    interrupt_response: bool | None = None
    idle_timeout_ms: int | None = None


class TranscriptionConfig(_Strict):
    model: str | None = None
    language: str | None = None
    prompt: str | None = None


class NoiseReduction(_Strict):
    type: str | None = None
    strength: float | None = None


class InputConfig(_Strict):
    format: AudioFormat | None = None
    transcription: TranscriptionConfig | None = None
    turn_detection: ServerVad | None = None
    noise_reduction: NoiseReduction | None = None  # accepted; the effective setting is always off (null)


class AudioConfig(_Strict):
    input: InputConfig | None = None


class SessionUpdate(_Strict):
    type: Literal["transcription"]
    audio: AudioConfig | None = None
    include: list[Literal["item.input_audio_transcription.logprobs"]] | None = None


class BadEvent(Exception):
    """A client event this server refuses: answered with an `error` event; the session goes on."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


def parse_session_update(session: Any) -> SessionUpdate:
    """Validate the `session` object of a `session.update`; raises `BadEvent` naming the first bad field."""
    try:
        return SessionUpdate.model_validate(session)
    except ValidationError as exc:
        error = exc.errors()[0]
        # A discriminated union puts the tag it chose into the path (`format.audio/pcm.rate`): leave it out.
        param = ".".join(["session", *(str(p) for p in error.get("loc", ()) if p not in (PCM, *G711_LAWS))])
        kind = error.get("type", "")
        if kind == "extra_forbidden":
            raise BadEvent("unknown_parameter", f"Unknown or unsupported parameter: '{param}'.", param) from None
        if kind == "missing":
            raise BadEvent("missing_required_parameter", f"Missing required parameter: '{param}'.", param) from None
        got = error.get("input")
        raise BadEvent("invalid_value", f"Invalid value for '{param}': {error.get('msg', 'invalid')}, got {got!r}.",
                       param) from None


# ---- the effective configuration ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Vad:
    """Server VAD turn detection as the session uses it."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


@dataclass(frozen=True)
class SessionConfig:
    """What a transcription session does now; `vad` None means manual commits (`turn_detection: null`)."""

    model: str
    encoding: str = PCM  # audio/pcm (PCM16), audio/pcmu or audio/pcma
    rate: int = DEFAULT_RATE
    vad: Vad | None = Vad()
    language: str | None = None
    prompt: str | None = None
    logprobs: bool = False

    def shapes_audio(self, other: SessionConfig) -> bool:
        """Whether going from `self` to `other` changes how incoming audio is buffered and cut."""
        return (self.encoding, self.rate, self.vad) != (other.encoding, other.rate, other.vad)


def apply_update(config: SessionConfig, update: SessionUpdate) -> SessionConfig:
    """`config` with the fields present in `update` changed (absent fields keep their value; null clears)."""
    changes: dict[str, Any] = {}
    if "include" in update.model_fields_set:
        changes["logprobs"] = LOGPROBS in (update.include or [])
    given = update.audio.input if update.audio is not None else None
    if given is None:
        return replace(config, **changes)
    if "format" in given.model_fields_set:
        audio_format = given.format or PcmFormat()
        changes["encoding"] = audio_format.type
        changes["rate"] = audio_format.rate if isinstance(audio_format, PcmFormat) else G711_RATE
    if "turn_detection" in given.model_fields_set:
        vad = given.turn_detection
        changes["vad"] = None if vad is None else Vad(vad.threshold, vad.prefix_padding_ms, vad.silence_duration_ms)
    if "transcription" in given.model_fields_set:
        transcription = given.transcription or TranscriptionConfig()
        fields = transcription.model_fields_set
        changes.update({name: getattr(transcription, name) for name in ("language", "prompt") if name in fields})
    return replace(config, **changes)


def session_object(session_id: str, config: SessionConfig) -> dict[str, Any]:
    """The session as `session.created` / `session.updated` report it (the effective configuration)."""
    vad = None if config.vad is None else {
        "type": "server_vad", "threshold": config.vad.threshold,
        "prefix_padding_ms": config.vad.prefix_padding_ms, "silence_duration_ms": config.vad.silence_duration_ms,
    }
    return {
        "type": "transcription", "object": "realtime.transcription_session", "id": session_id,
        "audio": {"input": {
            "format": {"type": PCM, "rate": config.rate} if config.encoding == PCM else {"type": config.encoding},
            "transcription": {"model": config.model, "language": config.language, "prompt": config.prompt},
            "turn_detection": vad,
            "noise_reduction": None,
        }},
        "include": [LOGPROBS] if config.logprobs else None,
    }


# ---- server events -----------------------------------------------------------------------------------------------

def event(kind: str, **fields: Any) -> dict[str, Any]:
    """A server event of type `kind` with a fresh `event_id`."""
    return {"type": kind, "event_id": new_id("event"), **fields}


def error_event(code: str, message: str, param: str | None = None, client_event_id: str | None = None,
                error_type: str = INVALID_REQUEST) -> dict[str, Any]:
    """OpenAI's `error` event (`RealtimeErrorEvent`)."""
    return event("error", error={"type": error_type, "code": code, "message": message, "param": param,
                                 "event_id": client_event_id})


def milliseconds(sample: int, rate: int) -> int:
    """A sample index on the session's 16 kHz clock, in whole milliseconds."""
    return (sample * 1000) // rate
