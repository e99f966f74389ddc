"""Cutting a live 16 kHz stream into utterances, so that the cuts tile the stream exactly.

`StreamSegmenter` is pure bookkeeping: it judges whole VAD frames (512 samples) through an injected
`FrameVad` and returns `Cut`s. Every sample pushed belongs to exactly one cut: a cut always starts where the
previous one ended, and `flush()` closes the open segment at the last sample pushed.

How silence is covered (no sample is ever dropped):
- an utterance's final spans from the end of the previous cut to the moment its endpoint is detected, so it
  holds the silence before its speech (up to `max_silence_s`) and the `endpoint_silence_s` after it;
- a stretch without speech that reaches `max_silence_s` becomes its own cut (`has_speech` False; the API
  sends it as a final with empty text), keeping the last `preroll_s` for the next utterance so a word whose
  onset the VAD reports late is not split;
- an utterance that reaches the window is cut inside its longest late pause (else at the window).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from app.audio.resample import SAMPLE_RATE

FRAME_SAMPLES = 512
"""Samples per VAD decision: silero's fixed chunk at 16 kHz (32 ms)."""
EXIT_MARGIN = 0.15
"""Hysteresis: once in speech, a frame stays speech down to `threshold - EXIT_MARGIN` (as silero's iterator)."""


class FrameVad(Protocol):
    """A streaming voice activity detector that scores consecutive whole frames (it may keep state)."""

    def probabilities(self, frames: np.ndarray) -> Sequence[float]:
        """Speech probability of each row of `frames` ([n, FRAME_SAMPLES] float32), in stream order."""


@dataclass(frozen=True)
class Cut:
    """Samples [start, end) of the stream; `speech_start`/`speech_end` bound the speech frames inside
    (None when the VAD found none). `reason`: endpoint, window, silence or flush."""

    start: int
    end: int
    speech_start: int | None
    speech_end: int | None
    reason: str

    @property
    def has_speech(self) -> bool:
        """Whether the VAD found speech inside the cut."""
        return self.speech_start is not None


def _frames(seconds: float) -> int:
    return max(1, round(seconds * SAMPLE_RATE / FRAME_SAMPLES))


class StreamSegmenter:
    """Turns pushed samples into cuts at utterance ends, at the window limit, and on flush."""

    def __init__(
        self,
        vad: FrameVad,
        window_s: float,
        endpoint_silence_s: float,
        *,
        max_silence_s: float = 5.0,
        preroll_s: float = 0.3,
        threshold: float = 0.5,
        min_speech_s: float = 0.1,
    ) -> None:
        self.vad = vad
        self.max_frames = int(window_s * SAMPLE_RATE) // FRAME_SAMPLES
        if self.max_frames < 2:
            raise ValueError(f"window_s must hold at least two VAD frames, got {window_s!r}")
        self.endpoint_frames = _frames(endpoint_silence_s)
        self.preroll_frames = min(_frames(preroll_s), self.max_frames // 2)
        # A silent stretch longer than the window would overflow it, and one no longer than the preroll could
        # never be cut (its cut keeps the preroll back).
        self.silence_frames = min(max(_frames(max_silence_s), self.preroll_frames + 1), self.max_frames)
        self.threshold = threshold
        self.min_speech_frames = _frames(min_speech_s)
        self.origin = 0
        """First sample of the open segment (the end of the last cut)."""
        self.total = 0
        """Samples pushed so far."""
        self._pending = np.zeros(0, dtype=np.float32)
        self._flags: list[bool] = []  # one speech decision per whole frame of the open segment, from `origin`
        self._in_speech = False

    # ---- queries --------------------------------------------------------------------------------------------

    @property
    def has_speech(self) -> bool:
        """Whether the open segment holds enough speech frames to count as an utterance."""
        return sum(self._flags) >= self.min_speech_frames

    def speech_start(self) -> int | None:
        """First sample of the open segment's first speech frame, or None."""
        for i, flag in enumerate(self._flags):
            if flag:
                return self.origin + i * FRAME_SAMPLES
        return None

    # ---- feeding --------------------------------------------------------------------------------------------

    def push(self, samples: np.ndarray) -> list[Cut]:
        """Add 16 kHz samples; returns the segments they closed (possibly none)."""
        chunk = np.asarray(samples, dtype=np.float32).reshape(-1)
        buffered = np.concatenate([self._pending, chunk]) if self._pending.size else chunk
        whole = buffered.shape[0] // FRAME_SAMPLES
        self._pending = buffered[whole * FRAME_SAMPLES:].copy()
        self.total += chunk.shape[0]
        if whole == 0:
            return []
        probabilities = self.vad.probabilities(buffered[: whole * FRAME_SAMPLES].reshape(whole, FRAME_SAMPLES))
        cuts: list[Cut] = []
        for probability in probabilities:
            limit = self.threshold - EXIT_MARGIN if self._in_speech else self.threshold
            self._in_speech = float(probability) >= limit
            self._flags.append(self._in_speech)
            cuts.extend(self._cuts_due())
        return cuts

    def flush(self) -> list[Cut]:
        """Close the open segment at the last sample pushed (nothing when it is empty)."""
        if self.total == self.origin:
            return []
        cut = self._cut(len(self._flags), "flush", end=self.total)
        # The partial frame went out with the cut, so the frame grid restarts at the new origin.
        self._pending = np.zeros(0, dtype=np.float32)
        return [cut]

    # ---- rules ----------------------------------------------------------------------------------------------

    def _cuts_due(self) -> list[Cut]:
        cuts = []
        while True:
            cut = self._next_cut()
            if cut is None:
                return cuts
            cuts.append(cut)

    def _next_cut(self) -> Cut | None:
        n = len(self._flags)
        if self.has_speech:
            last = n - 1 - self._flags[::-1].index(True)
            if n - 1 - last >= self.endpoint_frames:
                return self._cut(n, "endpoint")
        elif n >= self.silence_frames:
            return self._cut(n - self.preroll_frames, "silence")
        if n >= self.max_frames:
            return self._cut(self._window_cut(), "window")
        return None

    def _window_cut(self) -> int:
        """Frame index to cut a full segment at: the middle of the longest pause in its second half (the later
        one on ties), else of its last pause, else the window's end."""
        runs, start = [], None
        for i, flag in enumerate(self._flags + [True]):
            if not flag and start is None:
                start = i
            elif flag and start is not None:
                runs.append((start, i))
                start = None
        runs = [(a, b) for a, b in runs if (a + b) // 2 >= 1]
        late = [(b - a, a, b) for a, b in runs if (a + b) // 2 >= len(self._flags) // 2]
        if late:
            _, a, b = max(late)
            return (a + b) // 2
        if runs:
            a, b = runs[-1]
            return (a + b) // 2
        return len(self._flags)

    def _cut(self, frames: int, reason: str, end: int | None = None) -> Cut:
        """Close the open segment after its first `frames` whole frames (or at `end`), keep the rest open."""
        head = self._flags[:frames]
        speech = [i for i, flag in enumerate(head) if flag]
        start = self.origin
        stop = end if end is not None else start + frames * FRAME_SAMPLES
        cut = Cut(
            start=start,
            end=stop,
            speech_start=start + speech[0] * FRAME_SAMPLES if speech else None,
            speech_end=start + (speech[-1] + 1) * FRAME_SAMPLES if speech else None,
            reason=reason,
        )
        self._flags = self._flags[frames:]
        self.origin = stop
        return cut
