"""The real server over real HTTP: the openai client in every format, every error case, /metrics."""

from __future__ import annotations

import io

import av
import httpx
import numpy as np
import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SHARED_AUDIO

pytestmark = pytest.mark.integration

SHORT = SHARED_AUDIO / "en_fsdd_0_george_0.wav"
LONG = SHARED_AUDIO / "und_silero_test.wav"  # 60 s: past the main server's 30 s limit
DESIGN_METRICS = {
    "asr_requests_total", "asr_request_duration_seconds", "asr_queue_wait_seconds", "asr_queue_depth",
    "asr_batch_size", "asr_denoising_steps", "asr_denoising_step_seconds", "asr_encoder_seconds",
    "asr_audio_seconds_total", "asr_realtime_factor", "asr_active_streams", "asr_rejected_total",
    "asr_model_info", "asr_cancelled_jobs_total",
}


def transcribe(url: str, audio: bytes, timeout: float = 60.0, **fields) -> httpx.Response:
    """One upload with `fields` as form fields."""
    data = {"language": "en", "denoising_steps": "2", **{k: str(v) for k, v in fields.items()}}
    return httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("clip", audio)}, data=data, timeout=timeout)


def assert_error(response: httpx.Response, status: int, code: str | None, param: str | None = None) -> dict:
    """Status and OpenAI's error shape."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"} and error["message"]
    assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


def video_only_mp4() -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 40, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["json", "verbose_json", "text", "srt", "vtt"])
def test_openai_client_every_format(server, served_model, fmt):
    client = OpenAI(base_url=f"{server.url}/v1", api_key="sk-unused", max_retries=0, timeout=60)
    with SHORT.open("rb") as f:
        result = client.audio.transcriptions.create(
            model=served_model, file=f, response_format=fmt, language="en", extra_body={"denoising_steps": 2},
        )
    if fmt in ("json", "verbose_json"):
        assert isinstance(result.text, str) and result.text
        extra = result.model_dump()
        assert extra["timing"]["steps_used"] == 2 and extra["model"] == served_model
        assert extra["duration"] == pytest.approx(0.3, abs=0.05)
    else:
        assert isinstance(result, str) and result.strip()
        if fmt == "vtt":
            assert result.startswith("WEBVTT")
        if fmt == "srt":
            assert result.startswith("1\n00:00:00,000 --> ")


def test_models_and_probes(server, served_model):
    models = httpx.get(f"{server.url}/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == [served_model]
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert httpx.get(f"{server.url}/readyz").status_code == 200


BAD_AUDIO = {
    "empty": (b"", 422),
    "random_bytes": (np.random.default_rng(1).bytes(8000), 415),
    "no_audio_stream": (video_only_mp4(), 422),
    "truncated": (SHORT.read_bytes()[:1500], 422),
}


@pytest.mark.parametrize("case", sorted(BAD_AUDIO))
def test_bad_audio_then_next_request_works(server, case):
    audio, status = BAD_AUDIO[case]
    assert_error(transcribe(server.url, audio), status, "invalid_audio", "file")
    assert transcribe(server.url, SHORT.read_bytes()).status_code == 200


@pytest.mark.parametrize(
    ("fields", "status", "code", "param", "fragment"),
    [
        ({"language": "ja"}, 400, "unsupported_language", "language", "got 'ja'"),
        ({"response_format": "docx"}, 400, "invalid_value", "response_format", "got 'docx'"),
        ({"denoising_steps": "100"}, 400, "invalid_value", "denoising_steps",
         "denoising_steps must be between 1 and 64, got 100"),
        ({"denoising_steps": "0"}, 400, "invalid_value", "denoising_steps", "got 0"),
        ({"model": "whisper-9"}, 404, "model_not_found", "model", "whisper-9"),
    ],
)
def test_bad_parameters_then_next_request_works(server, fields, status, code, param, fragment):
    error = assert_error(transcribe(server.url, SHORT.read_bytes(), **fields), status, code, param)
    assert fragment in error["message"]
    assert transcribe(server.url, SHORT.read_bytes()).status_code == 200


def test_too_long_audio_is_413(server):
    assert_error(transcribe(server.url, LONG.read_bytes()), 413, "audio_too_long", "file")
    assert transcribe(server.url, SHORT.read_bytes()).status_code == 200


def test_malformed_multipart_is_400(server):
    response = httpx.post(
        f"{server.url}/v1/audio/transcriptions", content=b"--b0undary\r\nContent-Disposition: garbage\r\n\r\nx",
        headers={"Content-Type": "multipart/form-data; boundary=b0undary"}, timeout=30,
    )
    assert_error(response, 400, "invalid_request")
    no_boundary = httpx.post(f"{server.url}/v1/audio/transcriptions", content=b"abc",
                             headers={"Content-Type": "multipart/form-data"}, timeout=30)
    assert_error(no_boundary, 400, "invalid_request")
    assert transcribe(server.url, SHORT.read_bytes()).status_code == 200


def test_unknown_route_and_method_use_error_shape(server):
    assert_error(httpx.get(f"{server.url}/v1/nothing"), 404, "not_found")
    assert_error(httpx.get(f"{server.url}/v1/audio/transcriptions"), 405, "method_not_allowed")


def test_request_id_is_echoed_and_logged(server):
    response = transcribe(server.url, SHORT.read_bytes())
    request_id = response.headers["x-request-id"]
    own = httpx.get(f"{server.url}/healthz", headers={"X-Request-ID": "trace-42"})
    assert own.headers["x-request-id"] == "trace-42"
    log = server.log_with(f"request_id={request_id}")
    line = next(line for line in log.splitlines() if f"request_id={request_id}" in line)
    for key in ("method=POST", "path=/v1/audio/transcriptions", "status=200", "audio_s=0.298", "queue_ms=",
                "total_ms="):
        assert key in line


def test_metrics_parse_and_hold_every_design_name(server):
    assert transcribe(server.url, SHORT.read_bytes()).status_code == 200
    text = httpx.get(f"{server.url}/metrics").text
    families = list(text_string_to_metric_families(text))
    names = {f.name for f in families} | {s.name for f in families for s in f.samples}
    assert DESIGN_METRICS <= names
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}
    ok = samples[("asr_requests_total", (("endpoint", "/v1/audio/transcriptions"), ("status", "200")))]
    assert ok >= 1
    assert samples[("asr_audio_seconds_total", ())] > 0
    info = next(s for f in families for s in f.samples if s.name == "asr_model_info")
    assert set(info.labels) == {"model", "encoder", "backbone", "adapter", "device", "dtype"}
