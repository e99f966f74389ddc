"""Model-name aliases (`ASR_MODEL_ALIASES`, default `whisper-1`): accepted in `model`; /v1/models still lists the
one served model under its own name."""

from __future__ import annotations

from tests.unit.test_api_http import assert_error, make_client, post


def test_default_alias_is_whisper_1():
    client, _ = make_client()
    with client:
        response = post(client, {"model": "whisper-1"})
        assert response.status_code == 200 and response.json()["model"] == "fake-model"
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["fake-model"]


def test_configured_aliases_replace_the_default():
    client, _ = make_client(model_aliases="my-asr, team-model")
    with client:
        assert post(client, {"model": "team-model"}).status_code == 200
        assert_error(post(client, {"model": "whisper-1"}), 404, "model_not_found", "model")


def test_empty_setting_turns_aliases_off():
    client, _ = make_client(model_aliases="")
    with client:
        assert_error(post(client, {"model": "whisper-1"}), 404, "model_not_found", "model")
