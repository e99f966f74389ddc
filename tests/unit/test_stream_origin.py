"""WebSocket handshakes are origin-checked like CORS: listed origins, the page's own origin and non-browser
clients (no Origin) are served; any other browser origin is refused with 1008."""

from __future__ import annotations

import pytest

from tests.unit.test_stream_api import collect, make_client

URL = "/v1/audio/stream"


@pytest.fixture(scope="module")
def listed():
    client, _ = make_client(cors_origins="https://app.example")
    with client:
        yield client


@pytest.fixture(scope="module")
def unlisted():
    client, _ = make_client()
    with client:
        yield client


def first(client, origin: str | None) -> tuple[dict, int | None]:
    headers = {"origin": origin} if origin else {}
    with client.websocket_connect(URL, headers=headers) as ws:
        message = ws.receive_json()
        if message["type"] == "ready":
            return message, None
        _, code, _ = collect(ws)
        return message, code


@pytest.mark.parametrize("origin", ["https://app.example", "http://testserver", None])
def test_allowed_origins_are_served(listed, origin):
    assert first(listed, origin)[0]["type"] == "ready"


@pytest.mark.parametrize("origin", ["https://evil.example", "https://app.example.evil.test", "null"])
def test_other_origins_are_refused(listed, unlisted, origin):
    for client in (listed, unlisted):
        message, code = first(client, origin)
        assert code == 1008 and message["code"] == "origin_not_allowed"


def test_same_origin_page_needs_no_listing(unlisted):
    assert first(unlisted, "http://testserver")[0]["type"] == "ready"


def test_wildcard_allows_any_origin():
    client, _ = make_client(cors_origins="*")
    with client:
        assert first(client, "https://anywhere.example")[0]["type"] == "ready"
