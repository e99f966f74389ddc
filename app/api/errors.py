"""OpenAI's error shape `{"error": {"message", "type", "code", "param"}}` for every failure the API returns.

Handlers cover our own `ApiError`, audio and engine errors, FastAPI validation errors, Starlette's HTTP
errors (404/405 routes, malformed multipart) and anything unexpected (500, logged with its traceback).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.audio.errors import AudioError, AudioTooLargeError, AudioTooLongError, UndecodableAudioError
from app.engine.errors import (
    DeadlineExceededError,
    EngineError,
    JobCancelledError,
    JobFailedError,
    QueueFullError,
    ShuttingDownError,
)

log = logging.getLogger("diffusion_asr.api")

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"


class ApiError(Exception):
    """An error answered with `status` in OpenAI's shape; the message is shown to the client as is."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        type_: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type_ or (SERVER_ERROR if status >= 500 else INVALID_REQUEST)
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}

    def response(self) -> JSONResponse:
        """The JSON response with this error's status and headers."""
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_parameter(param: str, message: str, code: str = "invalid_value") -> ApiError:
    """400 naming the parameter; `message` should state the limit and the value received."""
    return ApiError(400, message, code=code, param=param)


def unauthorized(message: str) -> ApiError:
    """401 with the challenge clients expect."""
    return ApiError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def upload_too_large(limit_mb: float) -> ApiError:
    """413 for a request body past the upload limit (the connection is closed: the rest stays unread)."""
    return ApiError(
        413, f"The upload exceeds the {limit_mb:g} MB limit.",
        code="audio_too_large", param="file", headers={"Connection": "close"},
    )


def from_audio_error(exc: AudioError) -> ApiError:
    """Audio that is too big or too long is 413; data FFmpeg does not recognise is 415; a recognised file
    that holds no usable audio (empty, truncated, no audio track, NaN samples) is 422."""
    if isinstance(exc, (AudioTooLargeError, AudioTooLongError)):
        return ApiError(413, str(exc), code=exc.code, param="file")
    status = 415 if isinstance(exc, UndecodableAudioError) else 422
    return ApiError(status, str(exc), code=exc.code, param="file")


def from_engine_error(exc: EngineError) -> ApiError:
    """Queue full / shutting down: 503 with Retry-After; deadline: 504; failed batch: 500."""
    if isinstance(exc, QueueFullError):
        return ApiError(503, str(exc), code="queue_full", headers={"Retry-After": str(max(1, exc.retry_after))})
    if isinstance(exc, ShuttingDownError):
        return ApiError(503, "The server is shutting down; retry on another replica.", code="shutting_down",
                        headers={"Retry-After": "1"})
    if isinstance(exc, DeadlineExceededError):
        return ApiError(504, str(exc) or "The request's deadline passed before its transcript was ready.",
                        code="deadline_exceeded")
    if isinstance(exc, JobCancelledError):
        return ApiError(503, "The request was cancelled before it finished.", code="cancelled")
    if isinstance(exc, JobFailedError):
        return ApiError(500, "The model failed on this request; other requests are unaffected. "
                        + (str(exc) or ""), code="job_failed")
    return ApiError(500, "The engine could not complete the request.", code="engine_error")


def _describe_validation(exc: RequestValidationError) -> ApiError:
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "header", "path", "form")]
    param = loc[-1] if loc else None
    message = first.get("msg", "invalid request")
    if "input" in first and first.get("type") != "missing":
        message = f"{message}, got {first['input']!r}"
    return bad_parameter(param or "request", f"{param}: {message}" if param else message)


_HTTP_CODES = {400: "invalid_request", 401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed",
               413: "request_too_large"}


def install_error_handlers(app: FastAPI) -> None:
    """Route every error through OpenAI's shape."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(AudioError)
    async def _audio_error(_: Request, exc: AudioError) -> JSONResponse:
        return from_audio_error(exc).response()

    @app.exception_handler(EngineError)
    async def _engine_error(_: Request, exc: EngineError) -> JSONResponse:
        return from_engine_error(exc).response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _describe_validation(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            message = f"No route for {request.method} {request.url.path}."
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}."
        error = ApiError(exc.status_code, message, code=_HTTP_CODES.get(exc.status_code),
                         headers=dict(exc.headers or {}))
        return error.response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return ApiError(500, "Internal server error.", code="internal_error").response()
