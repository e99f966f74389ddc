"""Errors the engine reports to its callers. Recoverable ones fail one request; the engine keeps serving."""

from __future__ import annotations


class EngineError(Exception):
    """Base: a request could not be completed by the engine."""


class QueueFullError(EngineError):
    """The bounded queue is full; the caller should retry after `retry_after` seconds."""

    def __init__(self, depth: int, retry_after: int = 1) -> None:
        super().__init__(f"the server is at capacity ({depth} requests queued); retry shortly")
        self.retry_after = retry_after


class DeadlineExceededError(EngineError):
    """The request's deadline passed before its transcript was ready."""


class JobCancelledError(EngineError):
    """The caller went away and the job was dropped."""


class ShuttingDownError(EngineError):
    """The engine is draining or stopped and takes no new work."""


class JobFailedError(EngineError):
    """The model failed on this job's batch (e.g. out of memory twice); other jobs are unaffected."""
