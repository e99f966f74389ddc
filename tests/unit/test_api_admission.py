"""Admission counts from arrival: a burst past ASR_MAX_QUEUE is refused before anything is decoded, and the
deadline runs from arrival (decoding and VAD spend it). Decoding is held or the clock is moved by hand."""

from __future__ import annotations

import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import numpy as np
from fastapi.testclient import TestClient

from app.api.app import LoadedModel, create_app
from app.config import Settings
from tests.unit.test_api_http import URL, FakeEngine, wav_bytes


class GateVad:
    """Blocks every split (it runs in the decode pool) until the gate opens."""

    def __init__(self) -> None:
        self.gate = threading.Event()

    def speech_spans(self, audio: np.ndarray) -> list[tuple[float, float]]:
        assert self.gate.wait(30), "the test never opened the gate"
        return [(0.0, audio.shape[0] / 16000)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ClockVad:
    """Decoding 'takes' `seconds` on the fake clock."""

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        self.clock, self.seconds = clock, seconds

    def speech_spans(self, audio: np.ndarray) -> list[tuple[float, float]]:
        self.clock.now += self.seconds
        return [(0.0, audio.shape[0] / 16000)]


class RecordingEngine(FakeEngine):
    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[float] = []

    async def transcribe(self, audio, options, timeout_s, on_draft=None):
        self.timeouts.append(timeout_s)
        return await super().transcribe(audio, options, timeout_s, on_draft)


def client_for(engine, vad, **settings) -> TestClient:
    loader = lambda s, observer: LoadedModel(engine=engine, vad=vad, info={"model": "fake-model"})  # noqa: E731
    return TestClient(create_app(Settings.flat(**settings), loader=loader))


def post(client: TestClient):
    return client.post(URL, files={"file": ("a.wav", wav_bytes())}, data={"denoising_steps": "2"})


def test_burst_beyond_the_queue_is_refused_before_decoding():
    vad, engine = GateVad(), FakeEngine()
    client = client_for(engine, vad, max_queue=2, decode_threads=1)
    vad.gate.set()  # the lifespan's warm-up goes through the VAD too
    with client:
        assert post(client).status_code == 200
        vad.gate.clear()
        with ThreadPoolExecutor(6) as pool:
            pending = {pool.submit(post, client) for _ in range(6)}
            refused = []
            while len(refused) < 4:  # no decode can finish while the gate is shut
                done, pending = wait(pending, timeout=30, return_when=FIRST_COMPLETED)
                assert done, "a burst past the queue waited instead of being refused"
                refused += [f.result() for f in done]
            assert not vad.gate.is_set()
            vad.gate.set()
            served = [f.result() for f in pending]
    assert [r.status_code for r in refused] == [503] * 4
    assert all(r.json()["error"]["code"] == "queue_full" and r.headers["retry-after"] for r in refused)
    assert [r.status_code for r in served] == [200, 200]
    with client:
        assert 'asr_rejected_total{reason="queue_full"} 4.0' in client.get("/metrics").text
        assert post(client).status_code == 200  # reservations were all given back


def test_deadline_counts_from_arrival():
    clock, engine = FakeClock(), RecordingEngine()
    vad = ClockVad(clock, 4.0)
    client = client_for(engine, vad, request_timeout_s=10)
    client.app.state.runtime.clock = clock
    with client:
        engine.timeouts.clear()
        assert post(client).status_code == 200
    assert engine.timeouts == [6.0]  # 10 s from arrival, 4 of them spent decoding


def test_deadline_spent_before_the_engine_is_504_without_a_job():
    clock, engine = FakeClock(), RecordingEngine()
    client = client_for(engine, ClockVad(clock, 12.0), request_timeout_s=10)
    client.app.state.runtime.clock = clock
    with client:
        engine.timeouts.clear()
        response = post(client)
    assert response.status_code == 504 and response.json()["error"]["code"] == "deadline_exceeded"
    assert engine.timeouts == []
