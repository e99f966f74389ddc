"""The HTTP API against a fake engine: request validation, response formats, SSE, error shapes, limits."""

from __future__ import annotations

import asyncio
import io
import json
import wave

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.api.app import LoadedModel, create_app, mark_draining
from app.config import Settings
from app.engine.errors import DeadlineExceededError, JobFailedError, QueueFullError
from app.results import Segment, StepStats, Timing, TokenLogprob, Transcription, Word, join_segments

URL = "/v1/audio/transcriptions"


class FakeVad:
    """Every sample is speech."""

    def speech_spans(self, audio: np.ndarray) -> list[tuple[float, float]]:
        return [(0.0, audio.shape[0] / 16000)]


class FakeEngine:
    """An engine whose behaviour is chosen by the request's prompt."""

    model_name = "fake-model"
    window_seconds = 30.0
    default_steps = 4
    languages = ("en", "de", "fr", "es", "hi", "zh")

    def __init__(self) -> None:
        self.depth = 0
        self.running = False
        self.drained: float | None = None
        self.options = []

    def start(self) -> None:
        self.running = True

    async def drain(self, timeout_s: float) -> None:
        self.drained = timeout_s

    def stop(self) -> None:
        self.running = False

    def ready(self) -> bool:
        return self.running

    def queue_depth(self) -> int:
        return self.depth

    async def transcribe(self, audio, options, timeout_s, on_draft=None, on_segment=None) -> Transcription:
        self.options.append(options)
        if options.prompt == "windows":
            return await self._windows(audio, on_segment)
        if options.prompt == "queue_full":
            raise QueueFullError(3, retry_after=2)
        if options.prompt == "deadline":
            raise DeadlineExceededError("too slow")
        if options.prompt == "fail":
            raise JobFailedError("boom")
        steps = []
        for step in range(1, options.steps + 1):
            if on_draft is not None:
                on_draft(step, options.steps, f"draft {step}")
            if options.prompt == "fail_after_draft":
                await asyncio.sleep(0.01)
                raise JobFailedError("boom")
            steps.append(StepStats(step=step, ms=1.0, accepted=1, mean_entropy=0.5))
            await asyncio.sleep(0)
        text = f"seed {options.seed} steps {options.steps}"
        timing = Timing(queue_ms=1.5, denoise_ms=float(len(steps)), batch_size=1, steps=steps)
        language = options.language or "en"
        segment = Segment(0, 0.0, audio.duration, text, language, timing)
        return Transcription(text, language, audio.duration, [segment], timing)

    @staticmethod
    async def _windows(audio, on_segment) -> Transcription:
        """Three windows finishing out of order (2, 0, then 1), the last one silent."""
        def window(index, text, speech=True):
            logprobs = [TokenLogprob(w, -0.5 * (i + 1), tuple(w.encode())) for i, w in enumerate(text.split())]
            words = [Word(w, index + 0.1 * i, index + 0.1 * i + 0.05) for i, w in enumerate(text.split())]
            return Segment(index, float(index), index + 1.0, text, "en", Timing(), [7] * len(logprobs), logprobs,
                           words, speech)
        segments = [window(0, "alpha one"), window(1, "beta"), window(2, "", speech=False)]
        for index in (2, 0, 1):
            if on_segment is not None:
                on_segment(segments[index])
            await asyncio.sleep(0)
        return join_segments(segments, duration=3.0)


def wav_bytes(seconds: float = 0.5, rate: int = 16000) -> bytes:
    """A mono 16-bit sine tone."""
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype(np.int16)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return out.getvalue()


def make_client(**settings) -> tuple[TestClient, FakeEngine]:
    engine = FakeEngine()
    loader = lambda s, observer: LoadedModel(engine=engine, vad=FakeVad(), info={"model": "fake-model"})  # noqa: E731
    app = create_app(Settings.flat(**settings), loader=loader)
    return TestClient(app, raise_server_exceptions=False), engine


@pytest.fixture(scope="module")
def served():
    client, engine = make_client(default_seed=7, max_upload_mb=1, max_audio_seconds=5)
    with client:
        yield client, engine


@pytest.fixture()
def client(served) -> TestClient:
    return served[0]


def post(client: TestClient, data: dict | None = None, audio: bytes | None = None, **kwargs):
    files = {"file": ("a.wav", wav_bytes() if audio is None else audio, "audio/wav")}
    return client.post(URL, files=files, data=data or {}, **kwargs)


def assert_error(response, status: int, code: str | None, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    assert error["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    return error


def test_json_response_has_every_field(client):
    body = post(client, {"language": "de"}).json()
    assert set(body) >= {"text", "language", "duration", "model", "segments", "timing"}
    assert body["model"] == "fake-model" and body["language"] == "de"
    assert body["duration"] == pytest.approx(0.5)
    assert body["timing"]["steps_used"] == 4 and len(body["timing"]["steps"]) == 4
    assert set(body["segments"][0]) >= {"id", "start", "end", "text", "language"}


def test_default_and_explicit_seed_and_steps(served):
    client, engine = served
    assert post(client).json()["text"] == "seed 7 steps 4"
    assert post(client, {"seed": "3", "denoising_steps": "2", "temperature": "0.2"}).json()["text"] == "seed 3 steps 2"
    assert engine.options[-1].steps == 2


@pytest.mark.parametrize(("fmt", "media"), [("text", "text/plain"), ("srt", "text/plain"), ("vtt", "text/vtt")])
def test_text_formats(client, fmt, media):
    response = post(client, {"response_format": fmt})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media)
    assert "seed 7 steps 4" in response.text
    if fmt == "vtt":
        assert response.text.startswith("WEBVTT")


def test_verbose_json_and_timestamp_granularities(client):
    response = post(client, {"response_format": "verbose_json", "timestamp_granularities[]": "segment"})
    assert response.status_code == 200 and response.json()["segments"]
    assert "words" not in response.json()


def sse_events(client, data: dict) -> list[dict]:
    with client.stream("POST", URL, files={"file": ("a.wav", wav_bytes())}, data=data) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    events = [line.removeprefix("data: ") for line in lines]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_sse_stream_is_deltas_then_done(client):
    events = sse_events(client, {"stream": "true"})
    assert [e["type"] for e in events] == ["transcript.text.delta", "transcript.text.done"]
    assert events[0]["delta"] == events[1]["text"] == post(client).json()["text"]
    assert "logprobs" not in events[0] and "logprobs" not in events[1]


def test_sse_deltas_commit_windows_in_order_with_their_logprobs(client):
    events = sse_events(client, {"stream": "true", "prompt": "windows", "include[]": "logprobs"})
    deltas = [e for e in events if e["type"] == "transcript.text.delta"]
    done = events[-1]
    assert [d["delta"] for d in deltas] == ["alpha one", " beta"]
    assert "".join(d["delta"] for d in deltas) == done["text"] == "alpha one beta"
    assert [p["token"] for p in deltas[0]["logprobs"]] == ["alpha", "one"]
    assert [p["logprob"] for p in done["logprobs"]] == [-0.5, -1.0, -0.5]
    assert done["logprobs"][0]["bytes"] == list(b"alpha")


def test_sse_drafts_are_opt_in_with_their_own_type(client):
    assert not [e for e in sse_events(client, {"stream": "true"}) if e["type"] == "transcript.text.draft"]
    events = sse_events(client, {"stream": "true", "stream_drafts": "true"})
    drafts = [e for e in events if e["type"] == "transcript.text.draft"]
    done = events[-1]
    assert [d["step"] for d in drafts] == [1, 2, 3, 4] and drafts[0]["of"] == 4
    assert done["type"] == "transcript.text.done" and len(drafts) == done["timing"]["steps_used"]


def test_sse_failure_after_the_first_draft_is_an_error_event(client):
    response = post(client, {"stream": "true", "stream_drafts": "true", "prompt": "fail_after_draft"})
    assert response.status_code == 200
    events = [line.removeprefix("data: ") for line in response.text.splitlines() if line]
    assert json.loads(events[0])["type"] == "transcript.text.draft" and events[-1] == "[DONE]"
    error = json.loads(events[-2])
    assert error["type"] == "error" and error["error"]["code"] == "job_failed"


def test_verbose_json_has_openai_segments_words_and_logprobs(client):
    body = post(client, {"response_format": "verbose_json", "prompt": "windows", "include[]": "logprobs",
                         "timestamp_granularities[]": ["segment", "word"]}).json()
    assert body["text"] == "alpha one beta" and body["duration"] == 3.0
    first, _, silent = body["segments"]
    assert first["avg_logprob"] == pytest.approx(-0.75) and first["tokens"] == [7, 7]
    assert first["seek"] == 0 and body["segments"][1]["seek"] == 100
    assert first["no_speech_prob"] == 0.0 and silent["no_speech_prob"] == 1.0
    assert first["compression_ratio"] > 0 and silent["compression_ratio"] == 0.0
    assert [w["word"] for w in body["words"]] == ["alpha", "one", "beta"]
    assert body["words"][2] == {"word": "beta", "start": 1.0, "end": 1.05}
    assert len(body["logprobs"]) == 3


def test_words_and_logprobs_only_when_asked(client):
    body = post(client, {"response_format": "verbose_json", "prompt": "windows"}).json()
    assert "words" not in body and "logprobs" not in body
    assert engine_options(client)[-1].word_timestamps is False
    post(client, {"prompt": "windows", "timestamp_granularities": "word"})
    assert engine_options(client)[-1].word_timestamps is True


def engine_options(client):
    return client.app.state.runtime.engine.options


def test_translations_answer_openai_error_shape(client):
    response = client.post("/v1/audio/translations", files={"file": ("a.wav", wav_bytes())}, data={"model": "x"})
    error = assert_error(response, 400, "translation_not_supported", "model")
    assert "transcribes only" in error["message"]


def test_openapi_documents_the_upload_form(client):
    spec = client.get("/openapi.json").json()
    form = spec["paths"][URL]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"file", "denoising_steps", "stream", "stream_drafts", "seed", "include[]",
            "timestamp_granularities[]"} <= set(form["properties"])
    assert form["properties"]["include[]"]["items"]["const"] == "logprobs"


def test_sse_engine_error_before_first_event_is_plain_error(client):
    response = post(client, {"stream": "true", "prompt": "queue_full"})
    assert_error(response, 503, "queue_full")


@pytest.mark.parametrize(
    ("data", "param", "fragment"),
    [
        ({"denoising_steps": "100"}, "denoising_steps", "denoising_steps must be between 1 and 64, got 100"),
        ({"denoising_steps": "0"}, "denoising_steps", "got 0"),
        ({"denoising_steps": "abc"}, "denoising_steps", "got 'abc'"),
        ({"seed": "-1"}, "seed", "got -1"),
        ({"response_format": "xml"}, "response_format", "got 'xml'"),
        ({"language": "ja"}, "language", "got 'ja'"),
        ({"timestamp_granularities[]": "char"}, "timestamp_granularities[]", "got 'char'"),
        ({"include[]": "scores"}, "include[]", "must be one of logprobs, got 'scores'"),
        ({"stream": "maybe"}, "stream", "got 'maybe'"),
        ({"prompt": "x" * 300}, "prompt", "at most 224 characters, got 300"),
    ],
)
def test_bad_parameters_are_400_naming_param_limit_and_value(client, data, param, fragment):
    code = "unsupported_language" if param == "language" else "invalid_value"
    error = assert_error(post(client, data), 400, code, param)
    assert fragment in error["message"]


def test_unsupported_language_code(client):
    assert_error(post(client, {"language": "ja"}), 400, "unsupported_language", "language")


def test_unknown_model_is_404(client):
    assert_error(post(client, {"model": "whisper-9"}), 404, "model_not_found", "model")
    assert post(client, {"model": "fake-model"}).status_code == 200


def test_missing_file_is_400(client):
    response = client.post(URL, data={"model": "fake-model"}, files={"other": ("x", b"1")})
    assert_error(response, 400, "missing_required_parameter", "file")


@pytest.mark.parametrize(
    ("audio", "status"),
    [(b"", 422), (np.random.default_rng(0).bytes(4000), 415), (wav_bytes()[:200], 422)],
)
def test_bad_audio(client, audio, status):
    assert_error(post(client, audio=audio), status, "invalid_audio", "file")
    assert post(client).status_code == 200


def test_too_long_audio_is_413(client):
    assert_error(post(client, audio=wav_bytes(seconds=6)), 413, "audio_too_long", "file")


def test_upload_too_large_declared_and_streamed(client):
    big = b"\0" * (2 * 1024 * 1024)
    assert_error(post(client, audio=big), 413, "audio_too_large")

    def chunks():
        for _ in range(40):
            yield b"x" * 65536

    response = client.post(URL, content=chunks(), headers={"content-type": "multipart/form-data; boundary=zz"})
    assert_error(response, 413, "audio_too_large")
    assert post(client).status_code == 200


def test_malformed_multipart_is_400(client):
    response = client.post(URL, content=b"--zz\r\ngarbage", headers={"content-type": "multipart/form-data"})
    assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    ("prompt", "status", "code"),
    [("queue_full", 503, "queue_full"), ("deadline", 504, "deadline_exceeded"), ("fail", 500, "job_failed")],
)
def test_engine_errors(client, prompt, status, code):
    response = post(client, {"prompt": prompt})
    assert_error(response, status, code)
    if status == 503:
        assert response.headers["retry-after"] == "2"
    assert post(client).status_code == 200


def test_unknown_route_and_method(client):
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get(URL), 405, "method_not_allowed")


def test_models_health_and_request_id(client):
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == "fake-model"
    assert client.get("/healthz").json() == {"status": "ok"}
    response = client.get("/readyz", headers={"X-Request-ID": "abc-123"})
    assert response.status_code == 200 and response.headers["x-request-id"] == "abc-123"
    assert len(client.get("/healthz").headers["x-request-id"]) == 32


def test_readiness_and_drain_on_shutdown():
    client, engine = make_client(drain_timeout_s=4)
    with client:
        assert client.get("/readyz").status_code == 200
        mark_draining(client.app)
        assert client.get("/readyz").status_code == 503
        assert post(client).status_code == 200  # work is taken until the engine itself stops accepting
    assert engine.drained == 4 and not engine.running


def test_cors_headers_when_configured():
    client, _ = make_client(cors_origins="https://a.example")
    with client:
        response = client.get("/healthz", headers={"Origin": "https://a.example"})
    assert response.headers["access-control-allow-origin"] == "https://a.example"


def test_full_queue_refuses_before_reading_the_upload():
    client, engine = make_client(max_queue=2)
    with client:
        engine.depth = 2
        response = client.post(URL, content=b"not even multipart", headers={"content-type": "multipart/form-data"})
        assert_error(response, 503, "queue_full")
        assert response.headers["retry-after"] == "1"
        assert 'asr_rejected_total{reason="queue_full"} 1.0' in client.get("/metrics").text
        engine.depth = 1
        assert post(client).status_code == 200
