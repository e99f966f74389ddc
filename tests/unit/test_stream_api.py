"""WS /v1/audio/stream against a fake engine and an energy VAD: messages, ordering, limits, errors."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.api.app import LoadedModel, create_app
from app.config import Settings
from app.engine.errors import QueueFullError
from app.results import StepStats
from app.results import Segment, Timing, Transcription
from tests.unit.test_stream_segmenter import EnergyVad

URL = "/v1/audio/stream"
RATE = 16000


class FakeVad:
    def speech_spans(self, audio: np.ndarray) -> list[tuple[float, float]]:
        return [(0.0, audio.shape[0] / RATE)]


class FakeEngine:
    """Text names the number of samples and the seed, so tests can check spans and options."""

    model_name = "fake-model"
    window_seconds = 30.0
    default_steps = 3
    languages = ("en", "de", "fr", "es", "hi", "zh")

    def __init__(self) -> None:
        self.fail: Exception | None = None
        self.running = False
        self.delay = 0.0

    def start(self) -> None:
        self.running = True

    def stop(self) -> None:
        self.running = False

    async def drain(self, timeout_s: float) -> None:
        self.running = False

    def ready(self) -> bool:
        return self.running

    def queue_depth(self) -> int:
        return 0

    async def transcribe(self, audio, options, timeout_s, on_draft=None) -> Transcription:
        if self.fail is not None:
            raise self.fail
        await asyncio.sleep(self.delay)
        steps = []
        for step in range(1, options.steps + 1):
            if on_draft is not None:
                on_draft(step, options.steps, f"draft {step}")
            steps.append(StepStats(step=step, ms=1.0, accepted=1, mean_entropy=0.5))
        n = sum(w.samples.shape[0] for w in audio.windows)
        timing = Timing(steps=steps)
        text = f"{n} samples seed {options.seed}"
        return Transcription(text, "en", audio.duration, [Segment(0, 0.0, audio.duration, text, "en", timing)], timing)


def make_client(**overrides) -> tuple[TestClient, FakeEngine]:
    engine = FakeEngine()
    loader = lambda s, observer: LoadedModel(engine=engine, vad=FakeVad(), info={"model": "fake-model"})  # noqa: E731
    app = create_app(Settings.flat(**{"stream_max_sessions": 2, **overrides}), loader=loader)
    app.state.stream_vad_factory = EnergyVad
    return TestClient(app), engine


@pytest.fixture(scope="module")
def served():
    client, engine = make_client()
    with client:
        yield client, engine


def pcm(pattern: list[tuple[bool, float]]) -> bytes:
    rng = np.random.default_rng(1)
    parts = [(rng.uniform(-0.5, 0.5, int(s * RATE)) if loud else np.zeros(int(s * RATE))) for loud, s in pattern]
    return (np.concatenate(parts) * 32767).astype("<i2").tobytes()


def send_audio(ws, data: bytes, frame_bytes: int = 640) -> None:
    for i in range(0, len(data), frame_bytes):
        ws.send_bytes(data[i: i + frame_bytes])


def collect(ws) -> tuple[list[dict], int, str]:
    """Every message until the server closes; returns (messages, close code, reason)."""
    messages = []
    while True:
        message = ws.receive()
        if message["type"] == "websocket.close":
            return messages, message["code"], message.get("reason", "")
        messages.append(json.loads(message["text"]))


def finals(messages: list[dict]) -> list[dict]:
    return [m for m in messages if m["type"] == "final"]


def test_finals_tile_the_stream_with_partials_first_and_one_draft_per_step(served):
    client, _ = served
    audio = pcm([(False, 0.3), (True, 2.5), (False, 1.0), (True, 1.2), (False, 0.2)])
    with client.websocket_connect(f"{URL}?drafts=true&seed=5") as ws:
        ready = ws.receive_json()
        assert ready["type"] == "ready" and ready["model"] == "fake-model" and ready["sample_rate"] == RATE
        send_audio(ws, audio)
        ws.send_text(json.dumps({"type": "end"}))
        messages, code, reason = collect(ws)
    assert code == 1000 and reason == "end of stream"
    got = finals(messages)
    assert [f["segment_id"] for f in got] == list(range(len(got)))
    assert got[0]["start"] == 0 and got[-1]["end"] * RATE == len(audio) // 2
    for before, after in zip(got, got[1:]):
        assert before["end"] == after["start"]
    for final in got:
        assert final["text"] == f"{round((final['end'] - final['start']) * RATE)} samples seed 5"
        drafts = [m for m in messages if m["type"] == "draft" and m["segment_id"] == final["segment_id"]]
        assert len(drafts) == final["timing"]["steps_used"] == 3
        index = messages.index(final)
        for m in messages:
            if m["type"] == "partial" and m["segment_id"] == final["segment_id"]:
                assert messages.index(m) < index
    assert any(m["type"] == "partial" for m in messages)
    assert got[0]["reason"] == "endpoint" and got[0]["speech_start"] > 0


def test_flush_and_bad_messages(served):
    client, _ = served
    with client.websocket_connect(URL) as ws:
        ws.receive_json()
        send_audio(ws, pcm([(True, 0.5)]))
        ws.send_text('{"type": "flush"}')
        assert finals([ws.receive_json()])[0]["reason"] == "flush"
        for bad in ("not json", '{"type": "rewind"}', "[1, 2]"):
            ws.send_text(bad)
            error = ws.receive_json()
            assert error["type"] == "error" and error["code"] == "bad_message"
        ws.send_text('{"type": "end"}')
        messages, code, _ = collect(ws)
    assert code == 1000 and finals(messages) == []  # nothing was left to finalize


@pytest.mark.parametrize("query, code", [
    ("language=xx", "unsupported_language"), ("encoding=mp3", "bad_parameter"),
    ("sample_rate=abc", "bad_parameter"), ("denoising_steps=0", "bad_parameter"), ("drafts=maybe", "bad_parameter"),
])
def test_bad_query_is_refused_with_1008(served, query, code):
    client, _ = served
    with client.websocket_connect(f"{URL}?{query}") as ws:
        messages, close, _ = collect(ws)
    assert close == 1008 and messages[0]["code"] == code


def test_engine_error_keeps_the_span_and_the_session(served):
    client, engine = served
    with client.websocket_connect(URL) as ws:
        ws.receive_json()
        send_audio(ws, pcm([(True, 0.4)]))
        engine.fail = QueueFullError(9)
        try:
            ws.send_text('{"type": "flush"}')
            error, final = ws.receive_json(), ws.receive_json()
        finally:
            engine.fail = None
        assert error["code"] == "queue_full" and error["segment_id"] == 0
        assert final["type"] == "final" and final["error"] == "queue_full" and final["text"] == ""
        send_audio(ws, pcm([(True, 0.2)]))
        ws.send_text('{"type": "end"}')
        messages, code, _ = collect(ws)
    assert code == 1000 and finals(messages)[0]["text"].startswith("3200 samples")


def test_internal_error_closes_1011(served):
    client, engine = served
    with client.websocket_connect(URL) as ws:
        ws.receive_json()
        send_audio(ws, pcm([(True, 0.2)]))
        engine.fail = RuntimeError("boom")
        try:
            ws.send_text('{"type": "flush"}')
            messages, code, _ = collect(ws)
        finally:
            engine.fail = None
    assert code == 1011 and messages[-1]["code"] == "internal_error"


def test_idle_timeout_and_session_limit_finalize_then_close_1000():
    client, _ = make_client(stream_idle_timeout_s=0.5, stream_max_session_s=1.0)
    with client:
        with client.websocket_connect(URL) as ws:
            ws.receive_json()
            send_audio(ws, pcm([(True, 0.3)]))
            messages, code, reason = collect(ws)
        assert (code, reason) == (1000, "idle timeout") and len(finals(messages)) == 1
        with client.websocket_connect(URL) as ws:
            ws.receive_json()
            send_audio(ws, pcm([(False, 1.5)]))
            messages, code, reason = collect(ws)
        assert (code, reason) == (1000, "session audio limit reached")
        assert finals(messages)[-1]["end"] >= 1.0


def test_sessions_past_the_limit_get_1013(served):
    client, _ = served
    with client.websocket_connect(URL) as one, client.websocket_connect(URL) as two:
        one.receive_json(), two.receive_json()
        with client.websocket_connect(URL) as three:
            messages, code, _ = collect(three)
        assert code == 1013 and messages == [{"type": "error", "code": "overloaded", "message": messages[0]["message"]}]
    metrics = client.get("/metrics").text
    assert 'asr_rejected_total{reason="streams_full"} 1.0' in metrics
    assert "asr_active_streams 0.0" in metrics
