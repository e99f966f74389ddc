"""One streaming session's audio: raw PCM bytes in, 16 kHz samples kept until their segment is cut.

`StreamBuffer` is synchronous and not thread-safe: a session calls it from one thread at a time (the API runs
each call in a worker thread, one after the other). The 16 kHz clock starts at the session's first sample.
"""

from __future__ import annotations

import copy
import queue
import threading
from dataclasses import dataclass, field

import numpy as np
import torch

from app.audio.resample import SAMPLE_RATE, StreamResampler
from app.audio.segmenter import FRAME_SAMPLES, Cut, FrameVad, StreamSegmenter
from app.audio.vad import AudioInput, SpeechSpanSource, VoiceActivityDetector, single_torch_thread, split_audio

# app.audio.vad (above) imports silero_vad and undoes its process-wide torch.set_num_threads(1).
import silero_vad  # noqa: E402  isort: skip

ENCODINGS = {"pcm_s16le": (np.dtype("<i2"), 32768.0), "f32le": (np.dtype("<f4"), 1.0)}
"""Wire encodings: sample dtype and the scale that maps it to [-1, 1]."""


class PcmDecoder:
    """Little-endian PCM bytes to float32; a sample split across two frames is joined, not dropped."""

    def __init__(self, encoding: str) -> None:
        self.dtype, self.scale = ENCODINGS[encoding]
        self._carry = b""

    def decode(self, data: bytes) -> np.ndarray:
        """The whole samples in `self._carry + data`, as float32; the odd bytes wait for the next call."""
        data = self._carry + data
        usable = len(data) - len(data) % self.dtype.itemsize
        self._carry = data[usable:]
        samples = np.frombuffer(data[:usable], dtype=self.dtype).astype(np.float32)
        if self.scale != 1.0:
            samples *= np.float32(1.0 / self.scale)
        return samples


@dataclass(frozen=True)
class Segment:
    """A closed cut with its audio."""

    cut: Cut
    samples: np.ndarray = field(repr=False)


class SampleStore:
    """The 16 kHz samples from `base` on; everything before `base` has been handed out and forgotten."""

    def __init__(self) -> None:
        self.base = 0
        self._data = np.zeros(SAMPLE_RATE, dtype=np.float32)
        self._size = 0

    @property
    def end(self) -> int:
        """Index one past the last stored sample."""
        return self.base + self._size

    def append(self, samples: np.ndarray) -> None:
        """Add samples at the end (amortised doubling)."""
        needed = self._size + samples.shape[0]
        if needed > self._data.shape[0]:
            grown = np.zeros(max(needed, 2 * self._data.shape[0]), dtype=np.float32)
            grown[: self._size] = self._data[: self._size]
            self._data = grown
        self._data[self._size:needed] = samples
        self._size = needed

    def slice(self, start: int, end: int) -> np.ndarray:
        """A copy of samples [start, end); both must lie within [base, end]."""
        if not self.base <= start <= end <= self.end:
            raise IndexError(f"samples [{start}, {end}) are outside the store [{self.base}, {self.end})")
        return self._data[start - self.base: end - self.base].copy()

    def forget_before(self, index: int) -> None:
        """Drop samples before `index` (they belong to segments already cut)."""
        drop = min(max(index - self.base, 0), self._size)
        if drop:
            self._data[: self._size - drop] = self._data[drop: self._size]
            self._size -= drop
            self.base += drop


class StreamBuffer:
    """Bytes -> 16 kHz samples -> segmenter, keeping the open segment's audio."""

    def __init__(self, encoding: str, sample_rate: int, segmenter: StreamSegmenter) -> None:
        self.decoder = PcmDecoder(encoding)
        self.resampler = StreamResampler(sample_rate)
        self.segmenter = segmenter
        self.store = SampleStore()

    @property
    def total(self) -> int:
        """16 kHz samples received so far (the stream clock, in samples)."""
        return self.store.end

    def push(self, data: bytes) -> list[Segment]:
        """Add one binary frame; returns the segments it closed. Raises InvalidSamplesError for NaN/inf."""
        return self._feed(self.resampler.push(self.decoder.decode(data)))

    def flush(self, end_of_stream: bool = False) -> list[Segment]:
        """Close the open segment. At the end of the stream the resampler's held-back tail is included too;
        mid-stream that tail (a few ms, only when resampling) stays for the next segment."""
        segments = self._feed(self.resampler.flush()) if end_of_stream else []
        segments += self._segments(self.segmenter.flush())
        return segments

    def open_audio(self) -> tuple[int, np.ndarray]:
        """(first sample, audio) of the segment still open."""
        return self.segmenter.origin, self.store.slice(self.segmenter.origin, self.store.end)

    def _feed(self, samples: np.ndarray) -> list[Segment]:
        if samples.size == 0:
            return []
        self.store.append(samples)
        return self._segments(self.segmenter.push(samples))

    def _segments(self, cuts: list[Cut]) -> list[Segment]:
        segments = [Segment(cut, self.store.slice(cut.start, cut.end)) for cut in cuts]
        self.store.forget_before(self.segmenter.origin)
        return segments


class SileroFrameVad:
    """Silero VAD scoring consecutive 512-sample frames; the model's recurrent state makes it one-per-stream."""

    def __init__(self, model: torch.jit.ScriptModule) -> None:
        self._model = model
        self._model.reset_states()

    @staticmethod
    def load_template() -> torch.jit.ScriptModule:
        """A fresh silero model from the wheel (no network); sessions copy it (~40 ms) instead of loading it
        (~300 ms)."""
        return silero_vad.load_silero_vad()

    @classmethod
    def from_template(cls, template: torch.jit.ScriptModule) -> SileroFrameVad:
        """A detector with its own copy of `template` (the template itself is never run, so never changes)."""
        return cls(copy.deepcopy(template))

    def probabilities(self, frames: np.ndarray) -> list[float]:
        """Speech probability of each consecutive frame."""
        if frames.shape[-1] != FRAME_SAMPLES:
            raise ValueError(f"frames must have {FRAME_SAMPLES} samples, got {frames.shape[-1]}")
        with single_torch_thread(), torch.inference_mode():
            return [float(self._model(torch.from_numpy(np.ascontiguousarray(f)), SAMPLE_RATE)) for f in frames]


def new_stream_buffer(
    encoding: str, sample_rate: int, vad: FrameVad, window_s: float, endpoint_silence_s: float, max_silence_s: float
) -> StreamBuffer:
    """A session's buffer with its segmenter."""
    segmenter = StreamSegmenter(vad, window_s, endpoint_silence_s, max_silence_s=max_silence_s)
    return StreamBuffer(encoding, sample_rate, segmenter)


class SpanSplitter:
    """Splits a final's span into model windows exactly as an upload is split (`split_windows` with the same
    VAD settings), for several sessions at once.

    Silero resets its state on every whole-span call, so any detector with the same settings gives the upload
    path's result; one shared detector (one lock) would queue every session's finals behind each other.
    """

    def __init__(self, vad: SpeechSpanSource, size: int) -> None:
        self._vad = vad
        self._size = max(1, size) if isinstance(vad, VoiceActivityDetector) else 0  # 0: always use `vad` itself
        self._free: queue.SimpleQueue[SpeechSpanSource] = queue.SimpleQueue()
        self._made = 0
        self._lock = threading.Lock()

    def split(self, samples: np.ndarray, window_s: float) -> AudioInput:
        """Blocking (run it in the decode pool): the span's windows, as `split_audio` makes them."""
        vad = self._borrow()
        try:
            return split_audio(samples, window_s, vad)
        finally:
            if vad is not self._vad:
                self._free.put(vad)

    def _borrow(self) -> SpeechSpanSource:
        if self._size == 0:
            return self._vad
        with self._lock:
            build = self._free.empty() and self._made < self._size
            if build:
                self._made += 1
        if not build:
            return self._free.get()  # at most `size` callers run at once (the decode pool's width)
        like = self._vad
        try:
            return VoiceActivityDetector(like.threshold, like.min_silence_ms, like.min_speech_ms, like.speech_pad_ms)
        except BaseException:
            with self._lock:
                self._made -= 1
            raise
