"""Hardening against the real server: secrets never reach the log, WebSocket origins are checked, slow
clients are dropped."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.integration.conftest import API_KEYS, ServerProcess, serve_process

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
    log = keyed_server.log_with("WebSocket")
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


@pytest.fixture(scope="module")
def strict_server(tiny_model_dir, tmp_path_factory):
    """Short connection limits: 1 s to send headers, 1 s of keep-alive idleness."""
    yield from serve_process(tiny_model_dir, tmp_path_factory, "strict",
                             {"ASR_HEADER_TIMEOUT_S": "1", "ASR_KEEP_ALIVE_S": "1"})


def read_until_closed(sock: socket.socket, limit_s: float = 30.0) -> bytes:
    """Everything the server sends until it closes the connection; fails if it is still open after `limit_s`
    (a generous bound: the server's own limit is 1 s)."""
    sock.settimeout(limit_s)
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except TimeoutError:
        pytest.fail(f"the server kept the connection open; got {data[:200]!r}")
    except ConnectionResetError:
        pass
    return data


def test_client_that_never_finishes_its_headers_is_dropped(strict_server):
    with socket.create_connection(("127.0.0.1", strict_server.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # and never the rest
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408")
    assert httpx.get(f"{strict_server.url}/healthz", timeout=10).status_code == 200


def test_idle_keep_alive_connection_is_closed(strict_server):
    with socket.create_connection(("127.0.0.1", strict_server.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"status":"ok"}')


def test_openai_client_hard_coded_to_whisper_1_is_served(server):
    from openai import OpenAI

    from tests.conftest import SHARED_AUDIO

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)
    with (SHARED_AUDIO / "en_fsdd_0_george_0.wav").open("rb") as f:
        result = client.audio.transcriptions.create(model="whisper-1", file=f, extra_body={"denoising_steps": 2})
    assert isinstance(result.text, str)
