"""Bearer-key checks: constant-time comparison helpers, 401 shape, unauthenticated probes."""

from __future__ import annotations

import logging

from fastapi.testclient import TestClient

from app.api.app import LoadedModel, create_app
from app.api.auth import bearer_token, is_authorized, key_is_valid, presented_key
from app.config import Settings
from test_api_http import URL, FakeEngine, FakeVad, assert_error, post


def keyed_client() -> TestClient:
    loader = lambda s, o: LoadedModel(engine=FakeEngine(), vad=FakeVad(), info={})  # noqa: E731
    return TestClient(create_app(Settings.flat(api_keys="k-one, k-two"), loader=loader), raise_server_exceptions=False)


def test_helpers():
    assert key_is_valid("k2", ["k1", "k2"]) and not key_is_valid("k3", ["k1", "k2"])
    assert not key_is_valid(None, ["k1"]) and not key_is_valid("", ["k1"])
    assert bearer_token("Bearer abc") == "abc" and bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None and bearer_token("Bearer") is None and bearer_token(None) is None
    assert presented_key({"authorization": "Bearer h"}, {"api_key": "q"}) == "h"
    assert presented_key({}, {"api_key": "q"}) == "q"
    settings = Settings.flat(api_keys="a,b")
    assert is_authorized(settings, {}, {"api_key": "b"}) and not is_authorized(settings, {}, {"api_key": "c"})
    assert is_authorized(Settings(), {}, {})


def test_missing_and_wrong_keys_are_401(caplog):
    with caplog.at_level(logging.INFO), keyed_client() as client:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic k-one"}):
            response = post(client, headers=headers)
            assert_error(response, 401, "invalid_api_key")
            assert response.headers["www-authenticate"] == "Bearer"
            assert_error(client.get("/v1/models", headers=headers), 401, "invalid_api_key")
        assert post(client, headers={"Authorization": "Bearer k-two"}).status_code == 200
        assert client.get("/v1/models", headers={"Authorization": "Bearer k-one"}).status_code == 200
        for path in ("/healthz", "/readyz", "/metrics"):
            assert client.get(path).status_code == 200
    assert "k-one" not in caplog.text and "k-two" not in caplog.text and "nope" not in caplog.text


def test_auth_runs_before_the_body_is_read():
    with keyed_client() as client:
        response = client.post(URL, content=b"--zz\r\nnot multipart", headers={"content-type": "multipart/form-data"})
    assert_error(response, 401, "invalid_api_key")
