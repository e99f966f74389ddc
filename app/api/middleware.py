"""Pure ASGI middleware (no BaseHTTPMiddleware: it buffers and hides client disconnects).

- `BodyLimitMiddleware` refuses an oversized upload while it arrives: at once from Content-Length, else as
  soon as the running count of received body bytes passes the limit, before the rest is read.
- `AccessLogMiddleware` gives every request an id (echoed as X-Request-ID), writes one key=value log line per
  request and records the request metrics.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import ApiError, upload_too_large
from app.api.metrics import Metrics

access_log = logging.getLogger("diffusion_asr.access")

ENDPOINTS = frozenset({
    "/v1/audio/transcriptions", "/v1/models", "/healthz", "/readyz", "/metrics",
})
"""Paths that get their own metric label; anything else is `other`, so random URLs cannot blow up cardinality."""

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_PLAIN_PATH = re.compile(r"^[A-Za-z0-9/._~%-]*$")


def _loggable(path: str) -> str:
    # Paths come from the client: quote anything unusual so it cannot forge extra fields or lines.
    return path if _PLAIN_PATH.match(path) else json.dumps(path)


async def _send_error(send: Send, error: ApiError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class BodyLimitMiddleware:
    """413 for request bodies past `max_bytes` (`limit_mb` is the limit users are told), decided before the
    whole body is buffered."""

    def __init__(self, app: ASGIApp, max_bytes: int, limit_mb: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.limit_mb = limit_mb

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check Content-Length up front, then count body bytes as the app reads them."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        error = upload_too_large(self.limit_mb)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _send_error(send, error)
            return

        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised into whatever is reading the body (the multipart parser); the ApiError handler
                    # turns it into the 413 response, and the connection closes with the rest unread.
                    raise error
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except ApiError as exc:
            if exc is not error or started:
                raise
            await _send_error(send, error)


class AccessLogMiddleware:
    """One structured log line and the request metrics per HTTP request; keys and headers never logged."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Wrap the request: assign its id, time it, log it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            path = scope.get("path", "")
            endpoint = path if path in ENDPOINTS else "other"
            self.metrics.observe_request(endpoint, status, seconds)
            access_log.info(
                "request_id=%s method=%s path=%s status=%d audio_s=%.3f queue_ms=%.1f total_ms=%.1f",
                request_id, scope.get("method", "-"), _loggable(path), status, state.get("audio_seconds", 0.0),
                state.get("queue_ms", 0.0), seconds * 1000.0,
            )
