"""The service started as the README starts it, with no model configured, serves the embedded default."""

from __future__ import annotations

import io
import wave

import httpx
import numpy as np
import pytest

from app.training import synth
from app.training.data import clip_rng
from app.training.evaluate import cer


def wav_bytes(audio: np.ndarray, rate: int = synth.SAMPLE_RATE) -> bytes:
    """16-bit PCM WAV, as a client would upload it."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


# Sentences of everyday words, not from the training streams. Bounds: about twice the shipped model's CER on them
# (en 10%, es 11%); the random fallback scores 90-100%.
SENTENCES = [("en", "the weather is nice today", 0.2), ("es", "el tiempo es bueno hoy", 0.2)]


@pytest.mark.parametrize(("lang", "sentence", "max_cer"), SENTENCES)
def test_unconfigured_server_transcribes_with_the_shipped_model(default_server, lang, sentence, max_cer):
    audio = synth.synthesize(sentence, lang, clip_rng(0, "server-test", lang, 0))
    response = httpx.post(
        f"{default_server.url}/v1/audio/transcriptions",
        files={"file": ("sentence.wav", wav_bytes(audio), "audio/wav")},
        data={"response_format": "verbose_json"}, timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) >= {"text", "language", "duration", "segments"}
    assert body["language"] == lang  # no hint was sent: the model named it
    assert cer([sentence], [body["text"]]) <= max_cer, body["text"]
    models = httpx.get(f"{default_server.url}/v1/models", timeout=10).json()["data"]
    assert len(models) == 1
    assert "NO TRAINED MODEL" not in default_server.log_text()
