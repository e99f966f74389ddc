"""Resampling to the model's rate: 16 kHz mono float32, via FFmpeg's resampler.

`FrameResampler` serves file decoding (any format/layout/rate per frame);
`StreamResampler` serves raw mono PCM arriving in chunks (WebSocket streaming).
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from app.audio.errors import InvalidSamplesError

SAMPLE_RATE = 16000

# Float output skips libswresample's matrix normalisation, so stereo would be
# downmixed as 0.707 * (L + R) (up to 1.41x full scale, then clipped). Capping
# the matrix at 1.0 gives the channel mean, as `ffmpeg -ac 1` to s16 does.
_SWR_OPTIONS = {"rematrix_maxval": "1.0"}


def _new_resampler() -> av.AudioResampler:
    return av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE, options=_SWR_OPTIONS)


class FrameResampler:
    """PyAV resampler to 16 kHz mono float that survives mid-stream format changes."""

    def __init__(self) -> None:
        self._resampler: av.AudioResampler | None = None
        self._signature: tuple[str, str, int] | None = None

    def push(self, frame: av.AudioFrame) -> list[np.ndarray]:
        """Resample one decoded frame into 1-D float32 chunks (possibly none yet)."""
        out: list[np.ndarray] = []
        signature = (frame.format.name, frame.layout.name, frame.sample_rate)
        # av.AudioResampler rejects (or, in passthrough, silently mislabels)
        # frames whose format differs from the first one, as in chained Ogg.
        if signature != self._signature:
            out.extend(self.flush())
            self._resampler = _new_resampler()
            self._signature = signature
        assert self._resampler is not None
        out.extend(f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame))
        return out

    def flush(self) -> list[np.ndarray]:
        """Emit the samples the resampler's filter still holds and reset it."""
        if self._resampler is None:
            return []
        frames = self._resampler.resample(None)
        self._resampler, self._signature = None, None
        return [f.to_ndarray().reshape(-1) for f in frames if f is not None]


def _checked_pcm(samples: np.ndarray) -> np.ndarray:
    array = np.asarray(samples)
    if array.ndim != 1:
        raise ValueError("PCM samples must be a 1-D mono array")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise InvalidSamplesError("The audio contains invalid sample values (NaN or infinity).")
    return array


class StreamResampler:
    """Stateful resampler from mono float32 PCM at `rate` Hz to 16 kHz, fed in chunks.

    Chunk boundaries do not change the output: the filter keeps its history
    between pushes, so concatenated pushes + flush equal a one-shot resample.
    """

    def __init__(self, rate: int) -> None:
        if int(rate) != rate or rate <= 0:
            raise ValueError(f"sample rate must be a positive integer, got {rate!r}")
        self.rate = int(rate)
        self._resampler: av.AudioResampler | None = None
        self._pts = 0

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Resample one chunk; returns the 16 kHz samples available so far."""
        samples = _checked_pcm(chunk)
        if self.rate == SAMPLE_RATE:
            return np.clip(samples, -1.0, 1.0)
        if samples.size == 0:
            return np.zeros(0, dtype=np.float32)
        if self._resampler is None:
            self._resampler = _new_resampler()
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[None, :]), format="flt", layout="mono")
        frame.sample_rate = self.rate
        # Contiguous timestamps keep the filter graph from inserting or
        # dropping samples to "fix" what it would see as gaps.
        frame.time_base = Fraction(1, self.rate)
        frame.pts = self._pts
        self._pts += samples.size
        return _joined(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        """End the stream: return the samples still held back; the next push starts afresh."""
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32)
        tail = _joined(self._resampler.resample(None))
        self._resampler, self._pts = None, 0
        return tail


def _joined(frames: list[av.AudioFrame]) -> np.ndarray:
    parts = [f.to_ndarray().reshape(-1) for f in frames if f is not None]
    if not parts:
        return np.zeros(0, dtype=np.float32)
    out = np.concatenate(parts).astype(np.float32, copy=False)
    return np.clip(out, -1.0, 1.0, out=out)


def resample_pcm(samples: np.ndarray, rate: int) -> np.ndarray:
    """Resample a whole 1-D mono float PCM array at `rate` Hz to 16 kHz float32."""
    resampler = StreamResampler(rate)
    head = resampler.push(samples)
    return np.concatenate([head, resampler.flush()])
