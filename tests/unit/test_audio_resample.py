"""Resampling raw mono PCM to 16 kHz, whole or in chunks (WebSocket streaming)."""

from __future__ import annotations

import numpy as np
import pytest

from app.audio.decode import SAMPLE_RATE, StreamResampler, resample_pcm
from app.audio.errors import InvalidSamplesError


def _sine(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def _peak_hz(samples: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / rate)[int(np.argmax(spectrum))])


def test_resample_pcm_passthrough_at_16k() -> None:
    x = _sine(440, 0.5, SAMPLE_RATE)
    np.testing.assert_array_equal(resample_pcm(x, SAMPLE_RATE), x)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resample_pcm_keeps_frequency_and_length(rate: int) -> None:
    out = resample_pcm(_sine(1000, 2.0, rate), rate)
    assert out.dtype == np.float32
    assert abs(out.size - 2 * SAMPLE_RATE) <= 2
    assert abs(_peak_hz(out) - 1000) < 1.5


def test_stream_resampler_chunking_does_not_change_output() -> None:
    x = _sine(440, 1.0, 44100) + _sine(3000, 1.0, 44100, amplitude=0.2)
    whole = resample_pcm(x, 44100)
    resampler = StreamResampler(44100)
    cuts = np.sort(np.random.default_rng(1).integers(0, x.size, 40))
    pieces = [resampler.push(chunk) for chunk in np.split(x, cuts)] + [resampler.flush()]
    np.testing.assert_allclose(np.concatenate(pieces), whole, atol=1e-6)
    # flush ends the stream; the same object then starts a new one.
    again = np.concatenate([resampler.push(x), resampler.flush()])
    np.testing.assert_allclose(again, whole, atol=1e-6)


def test_stream_resampler_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        StreamResampler(0)
    with pytest.raises(ValueError):
        StreamResampler(16000).push(np.zeros((2, 10), np.float32))
    with pytest.raises(InvalidSamplesError):
        StreamResampler(48000).push(np.array([0.0, np.nan], np.float32))
