"""Hardening against the real server: secrets never reach the log, WebSocket origins are checked, slow
clients are dropped."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.integration.conftest import API_KEYS

pytestmark = pytest.mark.integration

STREAM = "/v1/audio/stream"


async def first_message(url: str, **kwargs) -> dict:
    async with connect(url, **kwargs) as ws:
        return json.loads(await ws.recv())


def test_websocket_query_key_never_reaches_the_log(keyed_server):
    base = keyed_server.url.replace("http://", "ws://") + STREAM
    accepted = asyncio.run(first_message(f"{base}?api_key={API_KEYS[0]}&language=en"))
    refused = asyncio.run(first_message(f"{base}?api_key=guessed-secret-value"))
    assert accepted["type"] == "ready" and refused["code"] == "unauthorized"
    log = keyed_server.log_text()
    assert "WebSocket" in log  # uvicorn's own handshake lines are there, with the query redacted
    for secret in (API_KEYS[0], "guessed-secret-value", "api_key="):
        assert secret not in log
