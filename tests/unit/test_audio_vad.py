"""Voice activity detection and splitting long audio into windows that tile it."""

from __future__ import annotations

import importlib
import socket
import sys
import threading

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from app.audio.decode import SAMPLE_RATE, AudioLimits, decode_audio
from app.audio.vad import AudioWindow, VoiceActivityDetector, split_windows

from tests.conftest import SHARED_AUDIO

AUDIO_DIR = SHARED_AUDIO
LIMITS = AudioLimits(max_bytes=50 * 1024 * 1024, max_seconds=600)


def _clip(name: str) -> np.ndarray:
    path = AUDIO_DIR / name
    return decode_audio(path.read_bytes(), LIMITS)


class FakeVad:
    """Fixed speech spans, so the splitting logic is tested without the model."""

    def __init__(self, spans: list[tuple[float, float]]) -> None:
        self.spans = spans

    def speech_spans(self, audio: np.ndarray) -> list[tuple[float, float]]:
        return list(self.spans)


def assert_tiles(windows: list[AudioWindow], audio: np.ndarray, max_seconds: float) -> None:
    assert windows, "at least one window"
    assert windows[0].start == 0.0
    assert int(windows[-1].end * SAMPLE_RATE) == audio.size
    assert windows[-1].end == pytest.approx(audio.size / SAMPLE_RATE, abs=1e-9)
    for left, right in zip(windows, windows[1:]):
        assert left.end == right.start
    for w in windows:
        assert w.samples.size <= int(max_seconds * SAMPLE_RATE)
        assert w.end - w.start <= max_seconds + 1e-9
        np.testing.assert_array_equal(w.samples, audio[int(w.start * SAMPLE_RATE) : int(w.end * SAMPLE_RATE)])
    np.testing.assert_array_equal(np.concatenate([w.samples for w in windows]), audio)


def cut_points(windows: list[AudioWindow]) -> list[float]:
    return [w.start for w in windows[1:]]


@pytest.fixture(scope="module")
def vad() -> VoiceActivityDetector:
    return VoiceActivityDetector()


class RecordingVad:
    """Delegates to the real detector and keeps the spans it returned."""

    def __init__(self, inner: VoiceActivityDetector) -> None:
        self.inner, self.spans = inner, None

    def speech_spans(self, audio: np.ndarray) -> list[tuple[float, float]]:
        self.spans = self.inner.speech_spans(audio)
        return self.spans


@pytest.fixture(scope="module")
def long_clip(vad: VoiceActivityDetector) -> tuple[np.ndarray, list[tuple[float, float]], list[AudioWindow]]:
    audio = _clip("und_silero_test.wav")
    recorder = RecordingVad(vad)
    windows = split_windows(audio, 30.0, recorder)
    return audio, recorder.spans, windows


def test_model_loads_from_the_package_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("VAD tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    detector = VoiceActivityDetector()
    assert detector.speech_spans(np.zeros(SAMPLE_RATE, np.float32)) == []


def test_import_and_calls_keep_torch_thread_count(
    vad: VoiceActivityDetector, monkeypatch: pytest.MonkeyPatch
) -> None:
    # silero_vad's own import calls torch.set_num_threads(1); import it afresh
    # (monkeypatch puts the original modules back afterwards).
    for name in [m for m in sys.modules if m == "silero_vad" or m.startswith("silero_vad.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delitem(sys.modules, "app.audio.vad")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        importlib.import_module("app.audio.vad")
        assert torch.get_num_threads() == 2
        vad.speech_spans(np.zeros(SAMPLE_RATE, np.float32))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_long_clip_splits_into_windows_that_tile(long_clip) -> None:
    audio, _, windows = long_clip
    assert len(windows) >= 2
    assert_tiles(windows, audio, 30.0)
    assert all(w.has_speech for w in windows)


def test_long_clip_cuts_fall_in_pauses(long_clip) -> None:
    _, spans, windows = long_clip
    assert spans
    for cut in cut_points(windows):
        assert not any(start < cut < end for start, end in spans), cut


def test_short_clip_is_one_window(vad: VoiceActivityDetector) -> None:
    audio = _clip("en_uberi_english.wav")
    [window] = split_windows(audio, 30.0, vad)
    assert window.start == 0.0 and window.has_speech
    assert_tiles([window], audio, 30.0)


def test_silent_clip_is_one_window_without_speech(vad: VoiceActivityDetector) -> None:
    audio = _clip("none_leopard_empty.wav")
    [window] = split_windows(audio, 30.0, vad)
    assert not window.has_speech


def test_long_tone_is_split_and_tiles(vad: VoiceActivityDetector) -> None:
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(70 * SAMPLE_RATE) / SAMPLE_RATE)).astype(np.float32)
    windows = split_windows(tone, 30.0, vad)
    assert len(windows) == 3
    assert_tiles(windows, tone, 30.0)


def test_speech_without_pause_is_cut_at_the_quietest_point() -> None:
    rng = np.random.default_rng(0)
    audio = (0.2 * rng.standard_normal(70 * SAMPLE_RATE)).astype(np.float32)
    dip = slice(int(27.0 * SAMPLE_RATE), int(27.05 * SAMPLE_RATE))
    audio[dip] *= 0.01
    windows = split_windows(audio, 30.0, FakeVad([(0.0, 70.0)]))
    assert_tiles(windows, audio, 30.0)
    assert 27.0 <= windows[1].start <= 27.05
    assert all(w.has_speech for w in windows)


def test_pause_in_second_half_and_longest_pause_win() -> None:
    audio = np.zeros(50 * SAMPLE_RATE, np.float32)
    spans = [(0.0, 9.5), (10.5, 19.0), (21.0, 27.8), (28.0, 50.0)]
    windows = split_windows(audio, 30.0, FakeVad(spans))
    assert_tiles(windows, audio, 30.0)
    # Pauses: 9.5-10.5 (first half), 19-21 (longest), 27.8-28.0 (latest).
    assert cut_points(windows)[0] == pytest.approx(20.0)


def test_window_starting_in_a_pause_is_not_halved_again() -> None:
    audio = np.zeros(40 * SAMPLE_RATE, np.float32)
    # Pause 4-8 s, then 32 s of speech with no pause: max 6 s windows.
    windows = split_windows(audio, 6.0, FakeVad([(0.0, 4.0), (8.0, 40.0)]))
    assert_tiles(windows, audio, 6.0)
    cuts = cut_points(windows)
    assert cuts[:2] == [pytest.approx(5.0), pytest.approx(8.0)]
    assert min(w.end - w.start for w in windows[:-1]) >= 3.0
    assert not windows[1].has_speech and windows[2].has_speech


def test_lengths_whose_seconds_do_not_round_trip() -> None:
    # 1001 / 16000 * 16000 == 1000.9999999999999 in floating point.
    audio = np.arange(1001, dtype=np.float32) / 1001
    [window] = split_windows(audio, 30.0, FakeVad([]))
    assert int(window.end * SAMPLE_RATE) == 1001
    assert_tiles([window], audio, 30.0)


@settings(max_examples=60, deadline=None)
@given(
    total=st.integers(min_value=1, max_value=40 * SAMPLE_RATE),
    max_seconds=st.floats(min_value=0.5, max_value=12.0),
    bounds=st.lists(st.floats(min_value=0.0, max_value=40.0), max_size=12),
)
def test_any_speech_layout_tiles(total: int, max_seconds: float, bounds: list[float]) -> None:
    audio = np.linspace(-0.5, 0.5, total, dtype=np.float32)
    edges = sorted(bounds)
    spans = list(zip(edges[::2], edges[1::2]))
    windows = split_windows(audio, max_seconds, FakeVad(spans))
    assert_tiles(windows, audio, max_seconds)


def test_concurrent_calls_match_sequential(vad: VoiceActivityDetector) -> None:
    audio = _clip("en_uberi_english.wav")
    expected = vad.speech_spans(audio)
    results: list[list[tuple[float, float]]] = []

    def run() -> None:
        results.append(vad.speech_spans(audio))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [expected] * 3


def test_invalid_arguments(vad: VoiceActivityDetector) -> None:
    with pytest.raises(ValueError):
        split_windows(np.zeros(10, np.float32), 0.0, vad)
    with pytest.raises(ValueError):
        vad.speech_spans(np.zeros((2, 10), np.float32))


def test_empty_audio_is_one_empty_window(vad: VoiceActivityDetector) -> None:
    [window] = split_windows(np.zeros(0, np.float32), 30.0, vad)
    assert window.start == window.end == 0.0 and not window.has_speech
