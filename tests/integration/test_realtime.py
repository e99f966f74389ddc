"""WS /v1/realtime?intent=transcription on a real server (subprocess on 127.0.0.1, tiny random model) with the
official `openai` SDK's realtime client, as a user writes it. Every event is also validated with the SDK's own
models. Audio is paced at real time where a test says so; no verdict depends on how fast the machine is."""

from __future__ import annotations

import asyncio
import base64
import json
import struct

import httpx
import numpy as np
import pytest
from openai import AsyncOpenAI
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from app.audio.resample import resample_pcm
from app.bench.stream import load_pcm
from tests.conftest import SHARED_AUDIO
from tests.integration.conftest import API_KEYS, ServerProcess
from tests.unit.test_realtime_api import sdk_view

pytestmark = pytest.mark.integration

KEY = API_KEYS[0]
INTENT = {"intent": "transcription"}
SERVER_EVENT = TypeAdapter(RealtimeServerEvent)
CHUNK_S = 0.02


def wav_f32(samples: np.ndarray, rate: int = 16000) -> bytes:
    """A float32 WAV, so the upload holds exactly the samples the session transcribed (no requantization)."""
    data = np.asarray(samples, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    return (b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE" + b"fmt "
            + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data)


def http_body(server: ServerProcess, samples: np.ndarray, **form: str) -> dict:
    response = httpx.post(f"{server.url}/v1/audio/transcriptions", files={"file": ("span.wav", wav_f32(samples))},
                          data=form, headers={"Authorization": f"Bearer {KEY}"}, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def http_text(server: ServerProcess, samples: np.ndarray) -> str:
    return http_body(server, samples)["text"]


def pcm16_at_24k(path) -> np.ndarray:
    """A shared clip as PCM16 at OpenAI's 24 kHz (linear interpolation: any faithful 24 kHz signal will do)."""
    x = np.frombuffer(load_pcm(path), dtype="<i2").astype(np.float64)
    t = np.arange(x.shape[0] * 3 // 2) / 24000
    return np.round(np.interp(t, np.arange(x.shape[0]) / 16000, x)).astype("<i2")


def client(server: ServerProcess, key: str = KEY) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{server.url}/v1", api_key=key)


async def next_event(conn) -> dict:
    """The next server event: parsed by the SDK, and validated against its model of that type."""
    raw = await conn.recv_bytes()
    message = json.loads(raw)
    assert conn.parse_event(raw).type == SERVER_EVENT.validate_python(sdk_view(message)).type
    return message


async def send_paced(conn, pcm: np.ndarray, rate: int) -> None:
    """Append `pcm` in 20 ms chunks on a real-time schedule, then ask for an update as a barrier: the server
    answers it after every event the appends caused."""
    loop = asyncio.get_running_loop()
    step, start = int(rate * CHUNK_S), loop.time()
    for k, i in enumerate(range(0, pcm.shape[0], step)):
        await asyncio.sleep(max(0.0, start + k * CHUNK_S - loop.time()))
        await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i: i + step].tobytes()).decode())
    await conn.session.update(session={"type": "transcription"})


def test_server_vad_items_equal_the_upload_of_their_span(keyed_server):
    speech = pcm16_at_24k(SHARED_AUDIO / "en_whisper_jfk.flac")
    pcm = np.concatenate([speech, np.zeros(24000, dtype="<i2")])  # a second of silence ends the last utterance

    async def scenario() -> list[dict]:
        async with client(keyed_server).realtime.connect(extra_query=INTENT) as conn:
            created = await next_event(conn)
            assert created["type"] == "session.created"
            assert created["session"]["audio"]["input"]["format"]["rate"] == 24000
            sender = asyncio.create_task(send_paced(conn, pcm, 24000))
            events, barrier = [], False
            while not (barrier and count(events, "input_audio_buffer.committed")
                       == count(events, "conversation.item.input_audio_transcription.completed")):
                events.append(await next_event(conn))
                barrier = barrier or events[-1]["type"] == "session.updated"
            await sender
            return events

    events = asyncio.run(scenario())
    assert not [e for e in events if e["type"] == "error"], events
    samples = resample_pcm(pcm.astype(np.float32) / 32768, 24000)  # what the session heard, at 16 kHz
    items = item_events(events)
    assert items
    ends = []
    for item, kinds in items.items():
        assert [e["type"] for e in kinds if e["type"] != "conversation.item.input_audio_transcription.delta"] == [
            "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed", "conversation.item.input_audio_transcription.completed"]
        start, end = kinds[0]["audio_start_ms"], kinds[1]["audio_end_ms"]
        completed = kinds[-1]
        deltas = "".join(e["delta"] for e in kinds if e["type"].endswith(".delta"))
        assert deltas == completed["transcript"] == http_text(keyed_server, samples[start * 16: end * 16])
        ends.append((start, end))
    assert all(a[1] <= b[0] for a, b in zip(ends, ends[1:]))  # items follow each other, never overlap


def count(events: list[dict], kind: str) -> int:
    return sum(e["type"] == kind for e in events)


def item_events(events: list[dict]) -> dict[str, list[dict]]:
    """Each item's events, in arrival order."""
    items: dict[str, list[dict]] = {}
    for e in events:
        if "item_id" in e:
            items.setdefault(e["item_id"], []).append(e)
    return items


def test_manual_commit_at_16khz_bad_events_and_the_session_goes_on(keyed_server):
    clip = np.frombuffer(load_pcm(SHARED_AUDIO / "en_uberi_english.wav"), dtype="<i2")

    async def scenario() -> tuple[list[dict], list[dict]]:
        async with client(keyed_server).realtime.connect(extra_query=INTENT) as conn:
            await next_event(conn)
            await conn.session.update(session={"type": "transcription", "audio": {"input": {
                "format": {"type": "audio/pcm", "rate": 16000}, "turn_detection": None}},
                "include": ["item.input_audio_transcription.logprobs"]})
            updated = await next_event(conn)
            assert updated["session"]["audio"]["input"]["turn_detection"] is None
            await conn.input_audio_buffer.commit(event_id="evt_1")  # nothing appended yet
            await conn.send_raw("{not json")
            await conn.send({"type": "response.create"})
            errors = [await next_event(conn) for _ in range(3)]
            for i in range(0, clip.shape[0], 8000):  # unpaced: manual mode has no VAD to feed
                await conn.input_audio_buffer.append(audio=base64.b64encode(clip[i: i + 8000].tobytes()).decode())
            await conn.input_audio_buffer.commit()
            item = [await next_event(conn)]
            while item[-1]["type"] != "conversation.item.input_audio_transcription.completed":
                item.append(await next_event(conn))
            return errors, item

    errors, item = asyncio.run(scenario())
    assert [e["error"]["code"] for e in errors] == ["input_audio_buffer_commit_empty", "invalid_json",
                                                   "invalid_event"]
    assert errors[0]["error"]["event_id"] == "evt_1"
    assert item[0]["type"] == "input_audio_buffer.committed"
    assert item[-1]["usage"]["seconds"] == clip.shape[0] / 16000
    upload = http_body(keyed_server, clip.astype(np.float32) / 32768, **{"include[]": "logprobs"})
    assert item[-1]["transcript"] == upload["text"]
    assert upload["logprobs"] and item[-1]["logprobs"] == upload["logprobs"]  # the final step's numbers, as uploaded


def test_keys_by_bearer_or_browser_subprotocol_and_refusals(keyed_server):
    ws_url = keyed_server.url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"

    async def scenario() -> None:
        async with client(keyed_server, key="wrong-key").realtime.connect(extra_query=INTENT) as conn:
            error = await next_event(conn)
            assert error["type"] == "error" and error["error"]["code"] == "invalid_api_key"
            with pytest.raises(ConnectionClosed) as closed:
                await conn.recv_bytes()
            assert closed.value.rcvd.code == 1008
        async with connect(ws_url, subprotocols=["realtime", f"openai-insecure-api-key.{KEY}"]) as ws:
            assert ws.subprotocol == "realtime"
            assert json.loads(await ws.recv())["type"] == "session.created"
        async with connect(ws_url, subprotocols=["realtime", "openai-insecure-api-key.nope"]) as ws:
            assert json.loads(await ws.recv())["error"]["code"] == "invalid_api_key"
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1008

    asyncio.run(scenario())
