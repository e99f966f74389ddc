"""Secrets never reach a log line: query strings and credentials are redacted in every handler's records.

uvicorn logs the path with its query for WebSocket handshakes (`"WebSocket /v1/audio/stream?api_key=..."`), and
browsers can only send their key that way; redacting in the handlers catches every logger, ours and uvicorn's,
including records that propagate from child loggers.
"""

from __future__ import annotations

import logging
import re

REDACTED = "[redacted]"
_QUERY = re.compile(r"(/[^\s\"'?]*)\?[^\s\"']*")
_CREDENTIAL = re.compile(r"(?i)\b(api[_-]?key|authorization|token)(\s*[=:]\s*)(?:bearer\s+)?[^\s\"'&,;]+")
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)[^\s\"'&,;]+")


def redact(text: str) -> str:
    """`text` with every URL query string and every `api_key=`/`Bearer`-style credential replaced."""
    text = _QUERY.sub(rf"\1?{REDACTED}", text)
    text = _CREDENTIAL.sub(rf"\1\2{REDACTED}", text)
    return _BEARER.sub(rf"\1\2{REDACTED}", text)


class RedactingFilter(logging.Filter):
    """Rewrites a record's message with `redact` (formats it once, so the arguments are covered too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keeps the record; only its text changes."""
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install_redaction(logger_names: tuple[str, ...] = ("", "uvicorn", "uvicorn.error", "uvicorn.access")) -> None:
    """Add the filter to every handler of these loggers (call after logging is configured)."""
    shared = RedactingFilter()
    for name in logger_names:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(shared)
