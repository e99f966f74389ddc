"""The admission policy (DESIGN.md §5): a bounded queue, the batch's row capacity, deadlines and cancellation.

Plain logic, no threads and no clock: every method that needs the time is handed it, so the policy is tested
with a fake clock. The worker calls it under its own lock.
"""

from __future__ import annotations

from collections import deque

from app.engine.errors import QueueFullError, ShuttingDownError
from app.engine.jobs import Job


class Scheduler:
    """Which windows of which jobs join the batch, and which jobs are dropped."""

    def __init__(self, max_queue: int, max_rows: int, max_wait_s: float, continuous: bool) -> None:
        self.max_queue = max_queue
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self.continuous = continuous
        self.queue: deque[Job] = deque()
        self.running: dict[int, Job] = {}
        self.row_limit = max_rows  # halved for the rest of a batch after an out-of-memory failure
        self.accepting = True
        self._gathering_since: float | None = None

    def submit(self, job: Job) -> None:
        """Queue a job, or refuse it at once: `ShuttingDownError` while draining, `QueueFullError` when full."""
        if not self.accepting:
            raise ShuttingDownError("the server is shutting down")
        if len(self.queue) >= self.max_queue:
            raise QueueFullError(len(self.queue))
        self.queue.append(job)

    def idle(self, rows: int) -> bool:
        """Nothing queued and no row in the batch (`rows` rows are)."""
        return not self.queue and rows == 0

    def pending(self) -> bool:
        """Any job queued or running."""
        return bool(self.queue or self.running)

    def queued_windows(self) -> int:
        """Windows of queued jobs not yet admitted."""
        return sum(job.windows - job.next_window for job in self.queue)

    def gather_wait(self, now: float, rows: int) -> float:
        """Seconds to go on waiting before admitting, so that an idle worker starts with a fuller batch (0: admit
        now). The wait starts the first time it is asked with an empty batch and work queued."""
        if rows or self.max_wait_s <= 0 or not self.queue:
            return 0.0
        if self._gathering_since is None:
            self._gathering_since = now
        if self.queued_windows() >= self.row_limit:
            return 0.0
        return max(0.0, self._gathering_since + self.max_wait_s - now)

    def admit(self, now: float, rows: int) -> tuple[list[tuple[Job, int]], list[Job]]:
        """The windows (job, window index) to start now, up to the batch's free rows, in queue order; and the
        queued jobs dropped on the way because they were cancelled or expired. Without continuous batching,
        nothing joins a running batch."""
        self._gathering_since = None
        if rows and not self.continuous:
            return [], []
        capacity = self.row_limit - rows
        taken: list[tuple[Job, int]] = []
        dropped: list[Job] = []
        while self.queue and len(taken) < capacity:
            job = self.queue[0]
            if job.cancelled or job.expired(now):
                dropped.append(self.queue.popleft())
                continue
            if job.admitted is None:
                job.admitted = now
            self.running[job.id] = job
            while job.next_window < job.windows and len(taken) < capacity:
                taken.append((job, job.next_window))
                job.next_window += 1
            if job.next_window == job.windows:
                self.queue.popleft()
        return taken, dropped

    def overdue(self, now: float) -> list[Job]:
        """Running jobs whose caller went away or whose deadline passed, removed from the schedule."""
        jobs = [job for job in self.running.values() if job.cancelled or job.expired(now)]
        for job in jobs:
            del self.running[job.id]
            if job in self.queue:
                self.queue.remove(job)
        return jobs

    def finished(self, job: Job) -> None:
        """A job whose every window has its segment leaves the schedule."""
        self.running.pop(job.id, None)

    def failed(self, jobs: list[Job], out_of_memory: bool) -> list[Job]:
        """Jobs whose batch failed: on a first out-of-memory they are queued again, first, at half the row
        limit (returns none); otherwise they leave the schedule and are returned, to be failed."""
        for job in jobs:
            self.running.pop(job.id, None)
        if out_of_memory and not any(job.retried for job in jobs):
            self.row_limit = max(1, self.row_limit // 2)
            for job in sorted(jobs, key=lambda j: j.id, reverse=True):
                job.retried = True
                job.reset()
                if job in self.queue:
                    self.queue.remove(job)
                self.queue.appendleft(job)
            return []
        for job in jobs:
            if job in self.queue:
                self.queue.remove(job)
        return list(jobs)

    def batch_emptied(self) -> None:
        """The batch ran empty: a halved row limit lasts one batch."""
        self.row_limit = self.max_rows

    def take_all(self) -> list[Job]:
        """Every queued and running job, removed (shutdown)."""
        jobs = list(self.queue) + [job for job in self.running.values() if job not in self.queue]
        self.queue.clear()
        self.running.clear()
        return jobs
