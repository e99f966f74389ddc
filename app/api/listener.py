"""The HTTP connection protocol: uvicorn's, plus a limit on how long a client may take to send its request
headers, so slow clients (slowloris) cannot hold connections open forever.

uvicorn already closes idle keep-alive connections (`timeout_keep_alive`, set from `ASR_KEEP_ALIVE_S`) but has
no limit on reading headers. The clock starts when the connection opens (or, on a kept-alive connection, when
the next request's first byte arrives) and stops once the headers are complete; request bodies are bounded by
the upload limit and the request deadline instead.
"""

from __future__ import annotations

import asyncio
from asyncio import TimerHandle

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_TIMEOUT_RESPONSE = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that answers 408 and closes when headers take longer than
    `header_timeout_s`."""

    header_timeout_s: float = 10.0
    _header_timer: TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the header clock as the connection opens."""
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        """A request starts (the first, or the next on a kept-alive connection)."""
        super().on_message_begin()
        if self._header_timer is None:
            self._arm()

    def on_headers_complete(self) -> None:
        """The headers are in: the request is in the app's hands now."""
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        """No timer may outlive its connection."""
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()


def http_protocol(header_timeout_s: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class for uvicorn's `http=` with this header timeout."""
    return type("HeaderTimeoutHttp", (HeaderTimeoutProtocol,), {"header_timeout_s": header_timeout_s})
