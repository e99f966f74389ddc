"""Request and response shapes of the HTTP API, and validation of the transcription form.

Validation messages follow one pattern, naming the parameter, the limit and the value received
(`denoising_steps must be between 1 and 64, got 100`), so a client can fix its request from the message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel
from starlette.datastructures import FormData, UploadFile

from app.api.errors import ApiError, bad_parameter
from app.formats import RESPONSE_FORMATS
from app.model.asr_config import SUPPORTED_LANGUAGES

MIN_STEPS, MAX_STEPS = 1, 64
MAX_SEED = 2**32 - 1  # the pipeline derives per-window torch seeds as seed * 1_000_003 + window
TIMESTAMP_GRANULARITIES = ("segment",)
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off", ""}
KNOWN_FIELDS = frozenset({
    "file", "model", "language", "prompt", "response_format", "timestamp_granularities[]",
    "timestamp_granularities", "stream", "denoising_steps", "seed", "temperature",
})


@dataclass(frozen=True)
class TranscriptionRequest:
    """A validated `POST /v1/audio/transcriptions` form (the upload's bytes are read separately)."""

    file: UploadFile
    model: str | None
    language: str | None
    prompt: str | None
    response_format: str
    stream: bool
    denoising_steps: int | None
    seed: int | None


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_parameter(name, f"{name} must be a text field, got a file upload")
    return value.strip() or None


def _integer(form: FormData, name: str, low: int, high: int) -> int | None:
    raw = _text(form, name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise bad_parameter(name, f"{name} must be an integer between {low} and {high}, got {raw!r}") from None
    if not low <= value <= high:
        raise bad_parameter(name, f"{name} must be between {low} and {high}, got {value}")
    return value


def _boolean(form: FormData, name: str) -> bool:
    raw = (_text(form, name) or "").lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise bad_parameter(name, f"{name} must be true or false, got {raw!r}")


def _choice(form: FormData, name: str, choices: tuple[str, ...], default: str | None) -> str | None:
    raw = _text(form, name)
    if raw is None:
        return default
    if raw not in choices:
        raise bad_parameter(name, f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _upload(form: FormData) -> UploadFile:
    value = form.get("file")
    if value is None:
        raise bad_parameter("file", "file is required: send the audio as a multipart file field named 'file'",
                            code="missing_required_parameter")
    if not isinstance(value, UploadFile):
        raise bad_parameter("file", "file must be a file upload (multipart file field), got a text field")
    return value


def _granularities(form: FormData) -> None:
    values = form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities")
    for value in values:
        if not isinstance(value, str) or value.strip() not in TIMESTAMP_GRANULARITIES:
            shown = value.strip() if isinstance(value, str) else "a file"
            raise bad_parameter("timestamp_granularities[]",
                                f"timestamp_granularities[] supports only 'segment', got {shown!r}")


def parse_transcription_form(form: FormData, max_prompt_chars: int) -> TranscriptionRequest:
    """Validate every field of DESIGN.md §3; `temperature` and unknown fields are accepted and ignored
    (OpenAI clients send them)."""
    prompt = _text(form, "prompt")
    if prompt is not None and len(prompt) > max_prompt_chars:
        raise bad_parameter("prompt", f"prompt must be at most {max_prompt_chars} characters, got {len(prompt)}")
    language = _text(form, "language")
    if language is not None:
        language = language.lower()
        if language not in SUPPORTED_LANGUAGES:
            raise bad_parameter("language", f"language must be one of {', '.join(SUPPORTED_LANGUAGES)}, "
                                f"got {language!r}", code="unsupported_language")
    _granularities(form)
    return TranscriptionRequest(
        file=_upload(form),
        model=_text(form, "model"),
        language=language,
        prompt=prompt,
        response_format=_choice(form, "response_format", RESPONSE_FORMATS, "json") or "json",
        stream=_boolean(form, "stream"),
        denoising_steps=_integer(form, "denoising_steps", MIN_STEPS, MAX_STEPS),
        seed=_integer(form, "seed", 0, MAX_SEED),
    )


def check_model(requested: str | None, served: str) -> None:
    """404 `model_not_found` unless `requested` is empty or names the served model."""
    if requested is not None and requested != served:
        raise ApiError(404, f"The model {requested!r} does not exist; this server serves {served!r}.",
                       code="model_not_found", param="model")


class ModelCard(BaseModel):
    """One entry of `GET /v1/models` (OpenAI shape)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "diffusion-asr"


class ModelList(BaseModel):
    """`GET /v1/models`."""

    object: Literal["list"] = "list"
    data: list[ModelCard]
