"""A queued request as the worker thread sees it, and the hand-off of its result to the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from app.audio.vad import AudioInput
from app.results import DecodeOptions, Segment, Transcription, join_segments

DraftHandler = Callable[[int, int, str], None]
"""Called on the event loop with (step, of, draft_text) after every denoising step of the job's windows."""

SegmentHandler = Callable[[Segment], None]
"""Called on the event loop with each window's segment as soon as that window is finished (any order)."""


@dataclass(eq=False)
class Job:
    """One request: its windows, options, deadline and the future its caller awaits. Times are
    `time.monotonic()` seconds, set by whoever holds the clock (the scheduler's caller)."""

    id: int
    audio: AudioInput
    options: DecodeOptions
    enqueued: float
    deadline: float
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    on_draft: DraftHandler | None = None
    on_segment: SegmentHandler | None = None
    admitted: float | None = None
    next_window: int = 0
    retried: bool = False
    segments: dict[int, Segment] = field(default_factory=dict)
    drafts: dict[int, str] = field(default_factory=dict)
    draft_count: int = 0
    cancel_reason: str = "cancelled"
    wake: Callable[[], None] | None = None  # told when the job is cancelled, so a waiting worker looks again
    _cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def windows(self) -> int:
        """Windows of the request."""
        return len(self.audio.windows)

    @property
    def queue_ms(self) -> float:
        """How long the job waited before its first window was admitted (0 while it waits)."""
        return ((self.admitted if self.admitted is not None else self.enqueued) - self.enqueued) * 1000.0

    def cancel(self, reason: str = "cancelled") -> None:
        """Ask the worker to drop this job at its next step boundary (thread-safe)."""
        self.cancel_reason = reason
        self._cancel.set()
        if self.wake is not None:
            self.wake()

    @property
    def cancelled(self) -> bool:
        """Whether the caller asked to drop it."""
        return self._cancel.is_set()

    def expired(self, now: float) -> bool:
        """Whether its deadline has passed at `now`."""
        return now >= self.deadline

    def reset(self) -> None:
        """Forget partial progress so the job can be run again from scratch (same seed, same result)."""
        self.next_window = 0
        self.segments.clear()
        self.drafts.clear()

    def add_segment(self, window: int, segment: Segment) -> None:
        """Record a finished window and pass its segment to the caller."""
        self.segments[window] = segment
        if self.on_segment is not None:
            self._call(self.on_segment, segment)

    def complete(self) -> bool:
        """Whether every window has its segment."""
        return len(self.segments) == self.windows

    def result(self, now: float) -> Transcription:
        """Join the finished windows into the request's transcription."""
        ordered = [self.segments[i] for i in range(self.windows)]
        result = join_segments(ordered, duration=self.audio.duration, audio_decode_ms=self.audio.decode_ms)
        result.timing.queue_ms = self.queue_ms
        result.timing.total_ms = self.audio.decode_ms + (now - self.enqueued) * 1000.0
        return result

    def draft(self, window: int, text: str) -> None:
        """Record a window's draft and pass the request's joined draft text to its caller."""
        if self.on_draft is None:
            return
        self.drafts[window] = text
        self.draft_count += 1
        parts = [self.segments[i].text if i in self.segments else self.drafts.get(i, "") for i in range(self.windows)]
        joined = " ".join(p for p in parts if p)
        self._call(self.on_draft, self.draft_count, self.windows * self.options.steps, joined)

    def resolve(self, result: Transcription) -> None:
        """Hand the result to the awaiting caller."""
        self._call(self._set, result, None)

    def fail(self, error: BaseException) -> None:
        """Hand an error to the awaiting caller."""
        self._call(self._set, None, error)

    def _set(self, result: Transcription | None, error: BaseException | None) -> None:
        if self.future.done():  # the caller gave up (timeout or disconnect) first
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(result)

    def _call(self, fn, *args) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the event loop is closed: nobody is waiting any more
            pass
