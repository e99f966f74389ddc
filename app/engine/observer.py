"""Hooks the worker calls as it runs, so metrics live outside the engine (the API implements them)."""

from __future__ import annotations

from typing import Protocol


class EngineObserver(Protocol):
    """Receives engine events; every method must be cheap and must not raise."""

    def batch_step(self, batch_size: int, seconds: float) -> None:
        """One denoising step of a batch of `batch_size` rows took `seconds`."""

    def encoded(self, windows: int, seconds: float) -> None:
        """Whisper encoder + projector ran over `windows` new windows."""

    def queue_depth(self, depth: int) -> None:
        """The number of queued (not yet admitted) jobs changed."""

    def job_finished(self, queue_wait_s: float, steps_used: int, audio_s: float, compute_s: float) -> None:
        """A job completed: its wait before admission, denoising steps (max over windows), audio length, and
        time from admission to result."""

    def job_rejected(self, reason: str) -> None:
        """A job was refused or dropped: `queue_full`, `deadline`, `cancelled`, `shutdown` or `error`."""


class NullObserver:
    """Observer that ignores everything (CLI use, tests of the engine alone)."""

    def batch_step(self, batch_size: int, seconds: float) -> None: ...
    def encoded(self, windows: int, seconds: float) -> None: ...
    def queue_depth(self, depth: int) -> None: ...
    def job_finished(self, queue_wait_s: float, steps_used: int, audio_s: float, compute_s: float) -> None: ...
    def job_rejected(self, reason: str) -> None: ...
