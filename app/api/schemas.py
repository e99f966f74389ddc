"""Request and response shapes of the HTTP API. The transcription form is one pydantic type: its validation, its
error messages (`app.request_options`) and its OpenAPI schema all come from it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field
from starlette.datastructures import FormData, UploadFile

from app.api.errors import ApiError, bad_parameter
from app.formats import Extras
from app.request_options import OptionError, RequestOptions, parse_options

ResponseFormat = Literal["json", "text", "verbose_json", "srt", "vtt"]
TimestampGranularity = Literal["segment", "word"]
Include = Literal["logprobs"]
# Repeatable fields, under the names clients send them, by the field's alias.
_LIST_FIELDS = {"timestamp_granularities[]": "timestamp_granularities[]",
                "timestamp_granularities": "timestamp_granularities[]",
                "include[]": "include[]", "include": "include[]"}


class TranscriptionForm(RequestOptions):
    """The text fields of `POST /v1/audio/transcriptions` (DESIGN.md §3); `file` is read separately."""

    model: str | None = Field(None, description="must name the served model when given")
    response_format: ResponseFormat = "json"
    stream: bool = Field(False, description="Server-Sent Events: OpenAI's `transcript.text.delta` (text that can "
                                            "no longer change) and `transcript.text.done`")
    stream_drafts: bool = Field(False, description="extension: with stream, also a `transcript.text.draft` event "
                                                   "per denoising step (the canvas as it anneals)")
    timestamp_granularities: list[TimestampGranularity] = Field(
        [], alias="timestamp_granularities[]",
        description="`segment` (always present) and/or `word` (forced alignment on the CTC head)")
    include: list[Include] = Field([], alias="include[]", description="`logprobs`: the final canvas's token "
                                                                      "log-probabilities")
    temperature: float | None = Field(None, description="accepted for OpenAI clients and ignored")

    @property
    def extras(self) -> Extras:
        """What the response carries beyond the text."""
        return Extras(logprobs="logprobs" in self.include, words="word" in self.timestamp_granularities)


def option_error(exc: OptionError) -> ApiError:
    """400 naming the parameter."""
    return bad_parameter(exc.param, exc.message, code=exc.code)


def parse_transcription_form(form: FormData) -> tuple[TranscriptionForm, UploadFile]:
    """Validate every text field and find the upload; unknown fields are ignored (OpenAI clients send some)."""
    known = {field.alias or key for key, field in TranscriptionForm.model_fields.items()} | set(_LIST_FIELDS)
    raw: dict[str, Any] = {}
    for name, value in form.multi_items():
        if name not in known:
            continue
        if not isinstance(value, str):
            raise bad_parameter(name, f"{name} must be a text field, got a file upload")
        if name in _LIST_FIELDS:
            raw.setdefault(_LIST_FIELDS[name], []).append(value.strip())
        else:
            raw[name] = value
    try:
        return parse_options(TranscriptionForm, raw), _upload(form)
    except OptionError as exc:
        raise option_error(exc) from None


def _upload(form: FormData) -> UploadFile:
    value = form.get("file")
    if value is None:
        raise bad_parameter("file", "file is required: send the audio as a multipart file field named 'file'",
                            code="missing_required_parameter")
    if not isinstance(value, UploadFile):
        raise bad_parameter("file", "file must be a file upload (multipart file field), got a text field")
    return value


def transcription_form_openapi() -> dict[str, Any]:
    """The multipart request body for /docs, from `TranscriptionForm` (the form is read by hand, after
    authentication and under the body limit, so FastAPI cannot derive it)."""
    schema = TranscriptionForm.model_json_schema(by_alias=True)
    properties = {name: _without_null(prop) for name, prop in schema["properties"].items()}
    schema["properties"] = {"file": {"type": "string", "format": "binary"}, **properties}
    schema["required"] = ["file"]
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


def _without_null(prop: dict[str, Any]) -> dict[str, Any]:
    """A form field is either sent or left out; multipart has no null, so `anyOf [T, null]` is documented as T."""
    options = prop.get("anyOf")
    if not options:
        return prop
    kept = [option for option in options if option.get("type") != "null"]
    rest = {key: value for key, value in prop.items() if key != "anyOf"}
    return {**rest, **kept[0]} if len(kept) == 1 else {**rest, "anyOf": kept}


def check_model(requested: str | None, served: str, aliases: list[str] = []) -> None:  # noqa: B006 - read only
    """404 `model_not_found` unless `requested` is empty, names the served model or one of its aliases."""
    if requested is not None and requested != served and requested not in aliases:
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
