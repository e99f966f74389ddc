"""The service started as the README starts it, with no model configured, serves the embedded default."""

from __future__ import annotations

import io
import wave

import httpx
import numpy as np

from app.training import synth
from app.training.data import clip_rng


def wav_bytes(audio: np.ndarray, rate: int = synth.SAMPLE_RATE) -> bytes:
    """16-bit PCM WAV, as a client would upload it."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def test_unconfigured_server_serves_the_embedded_model(default_server):
    audio = synth.synthesize("the weather is nice today", "en", clip_rng(0, "server-test", "en", 0))
    response = httpx.post(
        f"{default_server.url}/v1/audio/transcriptions",
        files={"file": ("sentence.wav", wav_bytes(audio), "audio/wav")},
        data={"response_format": "verbose_json"}, timeout=60,
    )
    assert response.status_code == 200, response.text
    assert set(response.json()) >= {"text", "language", "duration", "segments"}
    models = httpx.get(f"{default_server.url}/v1/models", timeout=10).json()["data"]
    assert len(models) == 1
    # No trained checkpoint ships yet (docs/training.md): the random fallback must say so in the log.
    assert "NO TRAINED MODEL" in default_server.log_text()
