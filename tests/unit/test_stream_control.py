"""WS control frames are parsed with a size and depth bound: a hostile frame is a `bad_message`, never the end
of the session."""

from __future__ import annotations

import pytest

from tests.unit.test_stream_api import collect, finals, make_client, pcm, send_audio

URL = "/v1/audio/stream"
DEEP = "[" * 5000 + "]" * 5000  # 10 KB; deeper than Python's recursion limit
DEEP_OBJECT = '{"type": "flush", "x": ' + "[" * 2000 + "]" * 2000 + "}"
LARGE = '{"type": "flush", "pad": "' + "x" * 70_000 + '"}'


@pytest.fixture(scope="module")
def client():
    client, _ = make_client()
    with client:
        yield client


@pytest.mark.parametrize("frame", [DEEP, DEEP_OBJECT, LARGE], ids=["deep-array", "deep-object", "large"])
def test_hostile_control_frame_is_bad_message_and_the_session_goes_on(client, frame):
    with client.websocket_connect(URL) as ws:
        assert ws.receive_json()["type"] == "ready"
        send_audio(ws, pcm([(True, 0.4)]))
        ws.send_text(frame)
        error = ws.receive_json()
        assert error["type"] == "error" and error["code"] == "bad_message"
        assert len(error["message"]) < 300  # the frame is not echoed back whole
        ws.send_text('{"type": "end"}')
        messages, code, _ = collect(ws)
    assert code == 1000
    # The audio sent before the bad frame still gets its final.
    assert finals(messages)[0]["text"].startswith(f"{int(0.4 * 16000)} samples")


def test_ready_names_the_loaded_models_window():
    client, engine = make_client()
    engine.window_seconds = 6.0  # the embedded default model's window
    with client, client.websocket_connect(URL) as ws:
        ready = ws.receive_json()
    assert ready["type"] == "ready" and ready["window_seconds"] == 6.0
