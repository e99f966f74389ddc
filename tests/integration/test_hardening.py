"""Hardening against the real server: secrets never reach the log, WebSocket origins are checked, slow
clients are dropped."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.integration.conftest import API_KEYS, ServerProcess

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


def test_sigterm_with_default_settings_turns_readiness_503_then_exits_0(tiny_model_dir, tmp_path):
    server = ServerProcess(tiny_model_dir, {}, tmp_path / "default-stop.log")
    try:
        server.wait_ready()
        server.process.terminate()
        # The default grace keeps the listener open with readiness at 503 before it closes.
        statuses = []
        while not statuses or statuses[-1] == 200:
            statuses.append(httpx.get(f"{server.url}/readyz", timeout=5).status_code)
        assert statuses[-1] == 503
        assert server.process.wait(timeout=60) == 0
    finally:
        server.stop()
    log = server.log_path.read_text()
    assert "draining" in log and "Traceback" not in log
