"""Admission at arrival (DESIGN.md §5): a request holds a place in the queue from the moment it arrives, and its
deadline runs from then too.

The engine's queue only counts jobs already decoded and submitted; without reservations a burst of uploads all
pass the check while the queue is still empty, spend the decode threads, and are refused only at submit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

from app.engine.errors import DeadlineExceededError, QueueFullError

Clock = Callable[[], float]


class Admission:
    """Counts requests that arrived but are not yet in the engine's queue."""

    def __init__(self, max_queue: int) -> None:
        self.max_queue = max_queue
        self.reserved = 0

    def reserve(self, queued: int, now: float) -> Reservation:
        """A place for one request arriving at `now` while `queued` jobs wait in the engine; `QueueFullError`
        when the reserved and queued requests already fill `max_queue`. No await happens in here, so
        concurrent arrivals on the event loop cannot overshoot."""
        if self.reserved + queued >= self.max_queue:
            raise QueueFullError(self.reserved + queued)
        self.reserved += 1
        return Reservation(self, now)


class Reservation:
    """One request's place, held until it is handed to the engine (or the request ends)."""

    def __init__(self, admission: Admission, arrived: float) -> None:
        self.admission = admission
        self.arrived = arrived
        self._held = True

    def release(self) -> None:
        """Give the place back (idempotent); from then on the engine's own queue counts the request."""
        if self._held:
            self._held = False
            self.admission.reserved -= 1

    def remaining(self, timeout_s: float, now: float) -> float:
        """Seconds left of the request's deadline at `now`; `DeadlineExceededError` when none are."""
        left = timeout_s - (now - self.arrived)
        if left <= 0:
            raise DeadlineExceededError(f"the {timeout_s:g} s deadline passed while the upload was prepared")
        return left

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()


def monotonic() -> float:
    """The clock requests are timed with (tests replace `Runtime.clock`)."""
    return time.monotonic()
