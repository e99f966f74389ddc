"""Log redaction: query strings and credentials never reach a handler's output."""

from __future__ import annotations

import io
import logging

import pytest

from app.api.logs import REDACTED, RedactingFilter, redact


@pytest.mark.parametrize("line, secret", [
    ('127.0.0.1:5 - "WebSocket /v1/audio/stream?api_key=s3cret&language=en" [accepted]', "s3cret"),
    ("GET /v1/models?token=abc123 HTTP/1.1", "abc123"),
    ("header Authorization: Bearer sk-live-1", "sk-live-1"),
    ("retrying with api_key=k-99", "k-99"),
])
def test_redact_removes_the_secret(line, secret):
    cleaned = redact(line)
    assert secret not in cleaned and REDACTED in cleaned


def test_plain_lines_are_unchanged():
    line = "request_id=ab method=POST path=/v1/audio/transcriptions status=200 audio_s=1.000"
    assert redact(line) == line


def test_filter_on_a_handler_covers_propagated_records_and_arguments():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    parent = logging.getLogger("redaction-test")
    parent.addHandler(handler)
    parent.setLevel(logging.INFO)
    try:
        logging.getLogger("redaction-test.child").info('%s - "WebSocket %s"', "1.2.3.4", "/s?api_key=topsecret")
    finally:
        parent.removeHandler(handler)
    assert "topsecret" not in stream.getvalue() and '"WebSocket /s?[redacted]"' in stream.getvalue()
