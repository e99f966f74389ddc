"""WS /v1/realtime?intent=transcription against a fake engine and an energy VAD: the events, their order and
shapes (checked with the `openai` SDK's own models), item spans, manual commits, bad events and keys."""

from __future__ import annotations

import base64
import json
import warnings

import numpy as np
import pytest
from fastapi.testclient import TestClient
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter
from starlette.websockets import WebSocketDisconnect

from app.engine.errors import QueueFullError
from tests.unit.test_stream_api import make_client

URL = "/v1/realtime?intent=transcription"
KEY = "realtime-unit-key"
SERVER_EVENT = TypeAdapter(RealtimeServerEvent)


@pytest.fixture(scope="module")
def served():
    client, engine = make_client()
    with client:
        yield client, engine


def pcm(pattern: list[tuple[bool, float]], rate: int) -> bytes:
    """Loud noise (speech to the energy VAD) or zeros, durations in seconds, as PCM16 at `rate`."""
    rng = np.random.default_rng(3)
    parts = [(rng.uniform(-0.5, 0.5, int(s * rate)) if loud else np.zeros(int(s * rate))) for loud, s in pattern]
    return (np.concatenate(parts) * 32767).astype("<i2").tobytes()


def append(ws, data: bytes, chunk_bytes: int = 4800) -> None:
    for i in range(0, len(data), chunk_bytes):
        ws.send_json({"type": "input_audio_buffer.append", "audio": base64.b64encode(data[i: i + chunk_bytes]).decode()})


def sdk_view(message: dict) -> dict:
    """The event as the SDK's models type it: they allow only OpenAI's 24 kHz, this server's rate extension
    aside (the SDK parses events without validating, so other rates reach its users intact)."""
    view = json.loads(json.dumps(message))
    audio_format = (view.get("session") or {}).get("audio", {}).get("input", {}).get("format")
    if audio_format is not None:
        audio_format["rate"] = 24000
    return view


def receive(ws) -> dict:
    """The next event, validated as the SDK's model of its type."""
    message = ws.receive_json()
    parsed = SERVER_EVENT.validate_python(sdk_view(message))
    assert parsed.type == message["type"]
    return message


def until(ws, kind: str, count: int = 1) -> list[dict]:
    """Every event up to and including the `count`-th of type `kind`."""
    events = []
    while sum(e["type"] == kind for e in events) < count:
        events.append(receive(ws))
    return events


def update(ws, session: dict) -> dict:
    ws.send_json({"type": "session.update", "session": {"type": "transcription", **session}})
    return receive(ws)


def test_session_created_then_server_vad_items_at_24khz(served):
    client, _ = served
    audio = pcm([(False, 0.5), (True, 1.5), (False, 1.0), (True, 1.0), (False, 1.0)], 24000)
    with client.websocket_connect(URL) as ws:
        created = receive(ws)
        session = created["session"]
        assert created["type"] == "session.created" and session["type"] == "transcription"
        assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        append(ws, audio)
        events = until(ws, "conversation.item.input_audio_transcription.completed", 2)
    kinds = [e["type"] for e in events]
    per_item = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                "input_audio_buffer.committed", "conversation.item.input_audio_transcription.delta",
                "conversation.item.input_audio_transcription.completed"]
    assert kinds == per_item * 2
    items = [events[i: i + 5] for i in (0, 5)]
    for started, stopped, committed, delta, completed in items:
        assert len({started["item_id"], stopped["item_id"], committed["item_id"], completed["item_id"]}) == 1
        # The item's audio, resampled to 16 kHz, is exactly what was transcribed (the fake names its length).
        samples = (stopped["audio_end_ms"] - started["audio_start_ms"]) * 16
        assert completed["transcript"] == delta["delta"] == f"{samples} samples seed 0"
        assert completed["usage"] == {"type": "duration", "seconds": samples / 16000}
    (first_start, first_stop, first_commit, *_), (second_start, _, second_commit, *_) = items
    assert second_commit["previous_item_id"] == first_commit["item_id"]
    # Speech runs 0.5-2.0 s and 3.0-4.0 s; an item ends after silence_duration_ms (500) of silence.
    assert first_start["audio_start_ms"] < 500 and 2500 <= first_stop["audio_end_ms"] < 2600
    assert first_stop["audio_end_ms"] <= second_start["audio_start_ms"] < 3000


def test_manual_commit_clear_and_options(served):
    client, engine = served
    with client.websocket_connect(URL) as ws:
        receive(ws)
        updated = update(ws, {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000},
                                                  "turn_detection": None,
                                                  "transcription": {"language": "de", "model": "fake-model"}}}})
        assert updated["type"] == "session.updated"
        assert updated["session"]["audio"]["input"]["turn_detection"] is None
        assert updated["session"]["audio"]["input"]["transcription"]["language"] == "de"
        append(ws, pcm([(True, 0.5), (False, 0.7), (True, 0.3)], 16000))  # pauses do not commit in manual mode
        ws.send_json({"type": "input_audio_buffer.commit"})
        first = until(ws, "conversation.item.input_audio_transcription.completed")
        assert [e["type"] for e in first][0] == "input_audio_buffer.committed"
        assert first[-1]["transcript"] == "24000 samples seed 0"
        ws.send_json({"type": "input_audio_buffer.commit", "event_id": "evt_empty"})
        error = receive(ws)
        assert error["type"] == "error" and error["error"]["code"] == "input_audio_buffer_commit_empty"
        assert error["error"]["event_id"] == "evt_empty"
        append(ws, pcm([(True, 0.4)], 16000))
        ws.send_json({"type": "input_audio_buffer.clear"})
        assert receive(ws)["type"] == "input_audio_buffer.cleared"
        append(ws, pcm([(True, 0.2)], 16000))
        ws.send_json({"type": "input_audio_buffer.commit"})
        second = until(ws, "conversation.item.input_audio_transcription.completed")
    assert second[0]["previous_item_id"] == first[0]["item_id"]
    assert second[-1]["transcript"] == "3200 samples seed 0"  # the cleared 0.4 s is in no item


@pytest.mark.parametrize("kind, encode", [("audio/pcmu", "lin2ulaw"), ("audio/pcma", "lin2alaw")])
def test_g711_telephone_audio_is_expanded_and_cut_by_the_vad(served, kind, encode):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop  # the standard library's encoder: an independent source of G.711 bytes
    client, _ = served
    with client.websocket_connect(URL) as ws:
        receive(ws)
        updated = update(ws, {"audio": {"input": {"format": {"type": kind}}}})
        assert updated["session"]["audio"]["input"]["format"] == {"type": kind}
        append(ws, getattr(audioop, encode)(pcm([(False, 0.3), (True, 1.0), (False, 1.0)], 8000), 2))
        events = until(ws, "conversation.item.input_audio_transcription.completed")
    started, stopped, completed = events[0], events[1], events[-1]
    assert [started["type"], stopped["type"]] == ["input_audio_buffer.speech_started",
                                                  "input_audio_buffer.speech_stopped"]
    assert 1300 <= stopped["audio_end_ms"] < 1900  # speech ends at 1.3 s, the item 500 ms of silence later
    assert completed["transcript"] == f"{(stopped['audio_end_ms'] - started['audio_start_ms']) * 16} samples seed 0"


def test_a_long_manual_buffer_is_one_item(served):
    client, _ = served
    with client.websocket_connect(URL) as ws:
        receive(ws)
        update(ws, {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}, "turn_detection": None}}})
        append(ws, pcm([(True, 65.0)], 16000), chunk_bytes=64000)  # past two 30 s model windows
        ws.send_json({"type": "input_audio_buffer.commit"})
        events = until(ws, "conversation.item.input_audio_transcription.completed")
    assert [e["type"] for e in events].count("input_audio_buffer.committed") == 1
    assert events[-1]["transcript"] == f"{65 * 16000} samples seed 0"


@pytest.mark.parametrize("sent, code, param", [
    ("{not json", "invalid_json", None),
    ('{"type": "response.create"}', "invalid_event", "type"),
    ('["input_audio_buffer.append"]', "invalid_event", "type"),
    ('{"type": "input_audio_buffer.append", "audio": "@@@"}', "invalid_value", "audio"),
    ('{"type": "input_audio_buffer.append"}', "missing_required_parameter", "audio"),
    ('{"type": "session.update", "session": {"type": "realtime"}}', "invalid_value", "session.type"),
    ('{"type": "session.update", "session": {"type": "transcription", "voice": "x"}}', "unknown_parameter",
     "session.voice"),
    ('{"type": "session.update", "session": {"type": "transcription", "audio": {"input": {"turn_detection": '
     '{"type": "semantic_vad"}}}}}', "invalid_value", "session.audio.input.turn_detection.type"),
    ('{"type": "session.update", "session": {"type": "transcription", "audio": {"input": {"format": '
     '{"type": "audio/ogg"}}}}}', "invalid_value", "session.audio.input.format"),
    ('{"type": "session.update", "session": {"type": "transcription", "audio": {"input": {"format": '
     '{"type": "audio/pcm", "rate": 4000}}}}}', "invalid_value", "session.audio.input.format.rate"),
    ('{"type": "session.update", "session": {"type": "transcription", "audio": {"input": {"transcription": '
     '{"language": "xx"}}}}}', "unsupported_language", "session.audio.input.transcription.language"),
    ('{"type": "session.update", "session": {"type": "transcription", "audio": {"input": {"transcription": '
     '{"model": "whisper-9"}}}}}', "model_not_found", "session.audio.input.transcription.model"),
])
def test_a_bad_event_gets_an_error_event_and_the_session_goes_on(served, sent, code, param):
    client, _ = served
    with client.websocket_connect(URL) as ws:
        receive(ws)
        ws.send_text(sent)
        error = receive(ws)
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
        assert (error["error"]["code"], error["error"]["param"]) == (code, param)
        assert update(ws, {})["type"] == "session.updated"  # still serving


def test_buffer_shape_is_fixed_after_the_first_append_and_binary_frames_are_refused(served):
    client, _ = served
    with client.websocket_connect(URL) as ws:
        receive(ws)
        append(ws, pcm([(False, 0.1)], 24000))
        ws.send_bytes(b"\x00\x00")
        assert receive(ws)["error"]["code"] == "invalid_event"
        error = update(ws, {"audio": {"input": {"turn_detection": None}}})
        assert error["type"] == "error" and error["error"]["param"] == "session.audio.input"
        kept = update(ws, {"audio": {"input": {"transcription": {"prompt": "names"}}}})
        assert kept["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        assert kept["session"]["audio"]["input"]["transcription"]["prompt"] == "names"


def test_an_engine_failure_fails_the_item_not_the_session(served):
    client, engine = served
    with client.websocket_connect(URL) as ws:
        receive(ws)
        update(ws, {"audio": {"input": {"turn_detection": None}}})
        engine.fail = QueueFullError("queue full", retry_after=1)
        try:
            append(ws, pcm([(True, 0.5)], 24000))
            ws.send_json({"type": "input_audio_buffer.commit"})
            failed = until(ws, "conversation.item.input_audio_transcription.failed")[-1]
        finally:
            engine.fail = None
        assert failed["error"]["code"] == "queue_full"
        append(ws, pcm([(True, 0.5)], 24000))
        ws.send_json({"type": "input_audio_buffer.commit"})
        assert until(ws, "conversation.item.input_audio_transcription.completed")[-1]["transcript"]


def refused(client: TestClient, url: str, **kwargs) -> tuple[dict, int]:
    with client.websocket_connect(url, **kwargs) as ws:
        error = receive(ws)
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    return error, closed.value.code


def test_keys_by_header_subprotocol_or_query_and_refusals():
    client, _ = make_client(api_keys=KEY, stream_max_sessions=1)
    with client:
        error, code = refused(client, URL)
        assert error["error"]["code"] == "invalid_api_key" and code == 1008
        error, code = refused(client, URL, subprotocols=["realtime", "openai-insecure-api-key.wrong"])
        assert error["error"]["code"] == "invalid_api_key" and code == 1008
        with client.websocket_connect(URL, subprotocols=["realtime", f"openai-insecure-api-key.{KEY}"]) as ws:
            assert ws.accepted_subprotocol == "realtime"
            assert receive(ws)["type"] == "session.created"
            busy, code = refused(client, URL, headers={"Authorization": f"Bearer {KEY}"})
            assert busy["error"]["code"] == "overloaded" and code == 1013
        with client.websocket_connect(f"{URL}&api_key={KEY}") as ws:
            assert receive(ws)["type"] == "session.created"
        for url, expected in ((f"/v1/realtime?intent=conversation&api_key={KEY}", "invalid_intent"),
                              (f"{URL}&model=gpt-4o-transcribe&api_key={KEY}", "model_not_found")):
            error, code = refused(client, url)
            assert error["error"]["code"] == expected and code == 1008
        metrics = client.get("/metrics").text
        assert "asr_active_streams 0.0" in metrics  # every session, refused or served, gave its place back
        assert 'asr_rejected_total{reason="streams_full"} 1.0' in metrics


def closing(ws) -> tuple[list[dict], int, str]:
    """Every event until the server closes; returns (events, close code, reason)."""
    events = []
    while True:
        message = ws.receive()
        if message["type"] == "websocket.close":
            return events, message["code"], message.get("reason", "")
        events.append(json.loads(message["text"]))
        SERVER_EVENT.validate_python(sdk_view(events[-1]))


def test_an_internal_error_closes_1011_with_an_error_event(served):
    client, engine = served
    with client.websocket_connect(URL) as ws:
        receive(ws)
        append(ws, pcm([(True, 0.3)], 24000))
        engine.fail = RuntimeError("boom")
        try:
            ws.send_json({"type": "input_audio_buffer.commit"})
            events, code, _ = closing(ws)
        finally:
            engine.fail = None
    assert code == 1011 and events[-1]["error"]["code"] == "internal_error"
    assert events[-1]["error"]["type"] == "server_error"


def test_limits_complete_committed_items_drop_the_rest_and_close_1000():
    client, _ = make_client(stream_idle_timeout_s=0.5, stream_max_session_s=2.0)
    with client:
        with client.websocket_connect(URL) as ws:
            receive(ws)
            append(ws, pcm([(True, 0.5), (False, 0.7), (True, 0.3)], 24000))  # the second utterance never ends
            events, code, reason = closing(ws)
        assert (code, reason) == (1000, "idle timeout")
        assert [e["type"] for e in events].count("conversation.item.input_audio_transcription.completed") == 1
        with client.websocket_connect(URL) as ws:
            receive(ws)
            append(ws, pcm([(True, 0.5), (False, 2.0)], 24000))
            events, code, reason = closing(ws)
        assert (code, reason) == (1000, "session audio limit reached")
        assert [e["error"]["code"] for e in events if e["type"] == "error"] == ["session_audio_limit"]
        assert [e["type"] for e in events].count("conversation.item.input_audio_transcription.completed") == 1


def test_a_deeply_nested_event_is_invalid_json_and_the_session_goes_on(served):
    client, _ = served
    with client.websocket_connect(URL) as ws:
        receive(ws)
        ws.send_text('{"type": "session.update", "session": ' + "[" * 5000 + "]" * 5000 + "}")
        error = receive(ws)
        assert error["error"]["code"] == "invalid_json" and "8 levels" in error["error"]["message"]
        assert update(ws, {})["type"] == "session.updated"  # still serving


def test_origins_and_model_aliases_as_the_other_endpoints_check_them():
    client, _ = make_client(cors_origins="https://app.example")
    with client:
        error, code = refused(client, URL, headers={"Origin": "https://evil.example"})
        assert error["error"]["code"] == "origin_not_allowed" and code == 1008
        for origin in ("https://app.example", "http://testserver"):  # a listed origin, the server's own
            with client.websocket_connect(URL, headers={"Origin": origin}) as ws:
                assert receive(ws)["type"] == "session.created"
        with client.websocket_connect(f"{URL}&model=whisper-1") as ws:  # the default alias
            assert receive(ws)["type"] == "session.created"
            updated = update(ws, {"audio": {"input": {"transcription": {"model": "whisper-1"}}}})
            assert updated["type"] == "session.updated"
