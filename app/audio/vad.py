"""Voice activity detection (silero-vad) and splitting long audio into model windows.

The model reads at most a 30 s window, so longer audio is cut into windows
that tile it exactly, cutting inside pauses so no word is split in two.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from app.audio.resample import SAMPLE_RATE

# Importing silero_vad runs torch.set_num_threads(1) for the whole process
# (silero_vad/model.py), which would silently slow every other torch model in
# the server; put the caller's setting back.
_torch_threads = torch.get_num_threads()
import silero_vad  # noqa: E402

torch.set_num_threads(_torch_threads)

# Short-time energy frames for the no-pause fallback: 20 ms frames, 10 ms hop.
_ENERGY_FRAME = SAMPLE_RATE // 50
_ENERGY_HOP = SAMPLE_RATE // 100
# The fallback cut is searched in this last fraction of the window, so windows
# stay close to the maximum length.
_FALLBACK_FRACTION = 0.25


@dataclass(frozen=True)
class AudioWindow:
    """A slice of 16 kHz audio: `samples == audio[int(start*16000):int(end*16000)]`.

    `start` is inclusive, `end` exclusive, both in seconds on the input's clock.
    """

    start: float
    end: float
    samples: np.ndarray = field(repr=False, compare=False)
    has_speech: bool = False

    @property
    def duration(self) -> float:
        """Length of the window in seconds."""
        return self.samples.shape[0] / SAMPLE_RATE


@dataclass(frozen=True)
class AudioInput:
    """Decoded audio split into windows (`split_audio`): what one transcription request hands the engine.
    Windows without speech are not denoised and give an empty segment."""

    windows: list[AudioWindow]
    duration: float
    decode_ms: float = 0.0


class SpeechSpanSource(Protocol):
    """Anything that finds speech spans (seconds) in 16 kHz mono audio."""

    def speech_spans(self, audio: np.ndarray) -> list[tuple[float, float]]: ...


class VoiceActivityDetector:
    """Silero VAD over whole 16 kHz mono arrays; safe to share between threads."""

    def __init__(
        self,
        threshold: float = 0.5,
        min_silence_ms: int = 100,
        min_speech_ms: int = 250,
        speech_pad_ms: int = 30,
    ) -> None:
        # The weights ship inside the silero-vad wheel (silero_vad/data), so
        # this never touches the network.
        self._model = silero_vad.load_silero_vad()
        # The model carries recurrent state between 512-sample chunks and
        # get_speech_timestamps resets it on entry: two concurrent calls
        # would corrupt each other's state.
        self._lock = threading.Lock()
        self.threshold = threshold
        self.min_silence_ms = min_silence_ms
        self.min_speech_ms = min_speech_ms
        self.speech_pad_ms = speech_pad_ms

    def speech_spans(self, audio: np.ndarray) -> list[tuple[float, float]]:
        """Return (start, end) seconds of each speech region in 16 kHz mono `audio`."""
        samples = _as_mono(audio)
        if samples.size == 0:
            return []
        tensor = torch.from_numpy(samples)
        with self._lock, single_torch_thread(), torch.inference_mode():
            stamps = silero_vad.get_speech_timestamps(
                tensor,
                self._model,
                threshold=self.threshold,
                sampling_rate=SAMPLE_RATE,
                min_speech_duration_ms=self.min_speech_ms,
                min_silence_duration_ms=self.min_silence_ms,
                speech_pad_ms=self.speech_pad_ms,
            )
        return [(int(s["start"]) / SAMPLE_RATE, int(s["end"]) / SAMPLE_RATE) for s in stamps]


@contextmanager
def single_torch_thread() -> Iterator[None]:
    """Run torch ops on this thread with one intra-op thread, then restore.

    Silero feeds 512-sample chunks one at a time; splitting such tiny ops
    across OpenMP threads made calls 10-50x slower and erratic on a busy
    2-core machine. The setting is per calling thread (OpenMP/MKL thread-local
    state), so other threads' models keep their thread count.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _as_mono(audio: np.ndarray) -> np.ndarray:
    samples = np.ascontiguousarray(audio, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError("audio must be a 1-D array of 16 kHz mono samples")
    return samples


def _seconds(index: int) -> float:
    """Sample index -> seconds, such that int(seconds * 16000) == index."""
    seconds = index / SAMPLE_RATE
    # index / 16000 * 16000 can land one ulp below index (e.g. 1001), and
    # int() would then slice one sample short; step up by ulps until exact.
    while int(seconds * SAMPLE_RATE) < index:
        seconds = math.nextafter(seconds, math.inf)
    return seconds


def _round_trips(index: int) -> bool:
    return int(index / SAMPLE_RATE * SAMPLE_RATE) == index


def _snap(index: int, low: int, high: int) -> int:
    """Nearest index in [low, high] whose seconds value round-trips without nudging."""
    for step in range(8):
        for candidate in (index - step, index + step):
            if low <= candidate <= high and _round_trips(candidate):
                return candidate
    return index


def _speech_samples(spans: list[tuple[float, float]], total: int) -> list[tuple[int, int]]:
    out = []
    for start, end in sorted(spans):
        a, b = max(0, round(start * SAMPLE_RATE)), min(total, round(end * SAMPLE_RATE))
        if b > a:
            out.append((a, b))
    return out


def _gaps(speech: list[tuple[int, int]], total: int) -> list[tuple[int, int]]:
    """Non-speech stretches [a, b) between and around the speech spans."""
    gaps, cursor = [], 0
    for start, end in speech:
        if start > cursor:
            gaps.append((cursor, start))
        cursor = max(cursor, end)
    if total > cursor:
        gaps.append((cursor, total))
    return gaps


def _cut_in_pause(
    gaps: list[tuple[int, int]], start: int, limit: int, max_len: int
) -> tuple[int, int, int] | None:
    """(cut, low, high) for the best pause within (start, limit], or None if there is none.

    The cut is the middle of the pause, clipped to the window. Pauses in the
    second half of the window win, so windows stay long; among them the
    longest pause (the likeliest sentence boundary) wins, ties going to the
    later one. A pause the window starts inside is cut at its end instead:
    cutting its middle again would only halve it, window after window.
    """
    for low in (start + max_len // 2, start):
        best: tuple[int, int, int, int] | None = None  # (full length, cut, low, high)
        for a, b in gaps:
            lo, hi = max(a, low + 1), min(b, limit)
            if hi <= lo:
                continue
            cut = hi if a <= start else (lo + hi) // 2
            if best is None or (b - a, cut) >= best[:2]:
                best = (b - a, cut, lo, hi)
        if best is not None:
            return best[1], best[2], best[3]
    return None


def _cut_at_low_energy(audio: np.ndarray, start: int, limit: int, max_len: int) -> int:
    """Centre of the quietest 20 ms frame in the last part of the window."""
    lo = max(start + 1, limit - int(max_len * _FALLBACK_FRACTION))
    segment = audio[lo:limit].astype(np.float64)
    if segment.size < _ENERGY_FRAME:
        return limit
    cumulative = np.concatenate(([0.0], np.cumsum(segment * segment)))
    offsets = np.arange(0, segment.size - _ENERGY_FRAME + 1, _ENERGY_HOP)
    energy = cumulative[offsets + _ENERGY_FRAME] - cumulative[offsets]
    # Reversed argmin picks the latest of equally quiet frames: a longer window.
    quietest = offsets[len(offsets) - 1 - int(np.argmin(energy[::-1]))]
    return lo + int(quietest) + _ENERGY_FRAME // 2


def _has_speech(speech: list[tuple[int, int]], a: int, b: int) -> bool:
    return any(s < b and e > a for s, e in speech)


def split_windows(audio: np.ndarray, max_seconds: float, vad: SpeechSpanSource) -> list[AudioWindow]:
    """Split 16 kHz mono audio into consecutive windows of at most `max_seconds`.

    Windows tile the audio exactly. Cuts fall inside pauses found by `vad`;
    only where a window holds no pause at all is it cut at its quietest
    moment near the end. Silent windows are kept, marked `has_speech=False`.
    """
    samples = _as_mono(audio)
    max_len = int(max_seconds * SAMPLE_RATE)
    if max_len < 1:
        raise ValueError(f"max_seconds must cover at least one sample, got {max_seconds!r}")
    total = samples.shape[0]
    speech = _speech_samples(vad.speech_spans(samples), total)
    gaps = _gaps(speech, total)

    cuts = [0]
    while total - cuts[-1] > max_len:
        start = cuts[-1]
        limit = start + max_len
        pause = _cut_in_pause(gaps, start, limit, max_len)
        if pause is not None:
            cut = _snap(*pause)  # stays inside the pause
        else:
            cut = _snap(_cut_at_low_energy(samples, start, limit, max_len), start + 1, limit)
        cuts.append(cut)
    cuts.append(total)

    return [
        AudioWindow(
            start=_seconds(a),
            end=_seconds(b),
            samples=samples[a:b],
            has_speech=_has_speech(speech, a, b),
        )
        for a, b in zip(cuts[:-1], cuts[1:])
    ]


def split_audio(samples: np.ndarray, window_seconds: float, vad: SpeechSpanSource, decode_ms: float = 0.0
                ) -> AudioInput:
    """16 kHz samples cut into model windows at pauses (`split_windows`), with their duration."""
    return AudioInput(windows=split_windows(samples, window_seconds, vad), duration=samples.shape[0] / SAMPLE_RATE,
                      decode_ms=decode_ms)
