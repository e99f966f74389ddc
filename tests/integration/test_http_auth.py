"""A server with API keys: the openai client with a key, 401s, keys never logged; then SIGTERM drains it."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest
from openai import OpenAI

from tests.integration.conftest import API_KEYS
from tests.conftest import SHARED_AUDIO

pytestmark = pytest.mark.integration

URL = "/v1/audio/transcriptions"
SHORT = SHARED_AUDIO / "en_fsdd_0_george_0.wav"


def post(url: str, headers: dict[str, str], steps: int = 2, timeout: float = 60.0) -> httpx.Response:
    return httpx.post(f"{url}{URL}", files={"file": (SHORT.name, SHORT.read_bytes())},
                      data={"language": "en", "denoising_steps": str(steps)}, headers=headers, timeout=timeout)


@pytest.fixture(scope="module")
def model_name(keyed_server) -> str:
    headers = {"Authorization": f"Bearer {API_KEYS[0]}"}
    return httpx.get(f"{keyed_server.url}/v1/models", headers=headers, timeout=10).json()["data"][0]["id"]


@pytest.mark.parametrize("fmt", ["json", "verbose_json", "text", "srt", "vtt"])
def test_openai_client_with_key(keyed_server, model_name, fmt):
    client = OpenAI(base_url=f"{keyed_server.url}/v1", api_key=API_KEYS[1], max_retries=0, timeout=60)
    with SHORT.open("rb") as f:
        result = client.audio.transcriptions.create(model=model_name, file=f, response_format=fmt, language="en",
                                                    extra_body={"denoising_steps": 2})
    text = result.text if fmt in ("json", "verbose_json") else result
    assert isinstance(text, str) and text.strip()


def test_openai_client_with_wrong_key_raises_authentication_error(keyed_server, model_name):
    client = OpenAI(base_url=f"{keyed_server.url}/v1", api_key="wrong-key", max_retries=0, timeout=30)
    with SHORT.open("rb") as f, pytest.raises(openai.AuthenticationError) as info:
        client.audio.transcriptions.create(model=model_name, file=f)
    assert info.value.code == "invalid_api_key"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": API_KEYS[0]}])
def test_missing_or_wrong_key_is_401_then_next_request_works(keyed_server, headers):
    response = post(keyed_server.url, headers)
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"} and error["code"] == "invalid_api_key"
    assert post(keyed_server.url, {"Authorization": f"Bearer {API_KEYS[0]}"}).status_code == 200


def test_probes_and_metrics_need_no_key(keyed_server):
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(f"{keyed_server.url}{path}").status_code == 200


def test_keys_never_logged(keyed_server):
    post(keyed_server.url, {"Authorization": "Bearer leaked-guess"})
    log = keyed_server.log_with("status=401")
    assert "status=401" in log
    for secret in (*API_KEYS, "leaked-guess", "Bearer"):
        assert secret not in log


def test_sigterm_turns_readiness_503_and_finishes_requests_in_flight(stopping_server):
    server = stopping_server
    headers = {"Authorization": f"Bearer {API_KEYS[0]}"}
    outcome: dict[str, httpx.Response] = {}
    worker = threading.Thread(target=lambda: outcome.setdefault("r", post(server.url, headers, steps=64)))
    worker.start()
    server.process.terminate()
    # The grace period (5 s) keeps the listener open with readiness at 503; polled until it answers so.
    deadline = time.monotonic() + 5.0
    ready = 200
    while ready == 200 and time.monotonic() < deadline:
        ready = httpx.get(f"{server.url}/readyz", timeout=2).status_code
        time.sleep(0.05)
    assert ready == 503
    worker.join(timeout=60)
    assert outcome["r"].status_code == 200  # sent before the signal or during the grace period: served
    assert server.process.wait(timeout=60) == 0  # a clean drain is a clean exit
    assert "draining" in server.log_text()
