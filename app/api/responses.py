"""The documented answers of each route for the OpenAPI schema (`/openapi.json`, `/docs`): every error status a
route can return, in OpenAI's error shape, and the media types of its successful answers."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    """OpenAI's error object."""

    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorBody(BaseModel):
    """`{"error": {...}}`, the body of every error answer."""

    error: ErrorDetail


ERROR_MEANINGS = {
    400: "A parameter is missing or invalid (`param` names it).",
    401: "Missing or invalid API key.",
    404: "Unknown model (`model_not_found`) or route.",
    413: "The upload or its audio is over the configured limit.",
    415: "The file is not in an audio format that can be decoded (`invalid_audio`).",
    422: "The file decodes to no usable audio: empty, truncated, no audio track, invalid samples (`invalid_audio`).",
    500: "The model failed on this request; other requests are unaffected.",
    503: "Queue full, model loading or server shutting down; retry after `Retry-After` seconds.",
    504: "The request's deadline passed (counted from its arrival).",
}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these error statuses, each with the error body's schema."""
    entries: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": ErrorBody, "description": ERROR_MEANINGS[status]}
        if status == 503:
            entry["headers"] = _RETRY_AFTER
        entries[status] = entry
    return entries


def transcription_responses() -> dict[int | str, dict[str, Any]]:
    """`POST /v1/audio/transcriptions`: JSON, text, subtitles or an SSE stream, and every error it answers."""
    text = {"schema": {"type": "string"}}
    success = {
        "description": "The transcription in the requested `response_format` (or Server-Sent Events with "
                       "`stream=true`).",
        "content": {"application/json": {"schema": {"type": "object"}}, "text/plain": text, "text/vtt": text,
                    "text/event-stream": text},
    }
    return {200: success, **error_responses(400, 401, 404, 413, 415, 422, 500, 503, 504)}


METRICS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Prometheus text exposition format 0.0.4.",
          "content": {"text/plain": {"schema": {"type": "string"}}}},
}
READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Ready: the model is loaded and the worker takes jobs."},
    **error_responses(503),
}
