"""The admission policy on its own, with a fake clock: queue bound, batch capacity, the first batch's gathering
wait, deadlines, cancellation, out-of-memory retry and continuous batching."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from app.audio.vad import AudioInput, AudioWindow
from app.engine.errors import QueueFullError, ShuttingDownError
from app.engine.jobs import Job
from app.engine.scheduler import Scheduler
from app.results import DecodeOptions

LOOP = asyncio.new_event_loop()


def job(job_id: int, windows: int = 1, enqueued: float = 0.0, timeout: float = 10.0) -> Job:
    audio = AudioInput([AudioWindow(float(i), i + 1.0, np.zeros(16_000, np.float32), True) for i in range(windows)],
                       float(windows))
    return Job(job_id, audio, DecodeOptions(steps=2), enqueued, enqueued + timeout, LOOP, LOOP.create_future())


def scheduler(max_queue: int = 4, max_rows: int = 2, max_wait_s: float = 0.0, continuous: bool = True) -> Scheduler:
    return Scheduler(max_queue, max_rows, max_wait_s, continuous)


def test_a_full_queue_refuses_at_once_and_a_draining_one_refuses_everything():
    policy = scheduler(max_queue=2)
    policy.submit(job(1))
    policy.submit(job(2))
    with pytest.raises(QueueFullError) as info:
        policy.submit(job(3))
    assert info.value.retry_after >= 1 and len(policy.queue) == 2
    policy.accepting = False
    policy.queue.clear()
    with pytest.raises(ShuttingDownError):
        policy.submit(job(4))


def test_admission_fills_free_rows_in_queue_order_across_jobs_and_windows():
    policy = scheduler(max_rows=3)
    first, second = job(1, windows=2), job(2, windows=2)
    policy.submit(first)
    policy.submit(second)
    taken, dropped = policy.admit(now=1.0, rows=0)
    assert [(j.id, w) for j, w in taken] == [(1, 0), (1, 1), (2, 0)] and dropped == []
    assert list(policy.queue) == [second] and set(policy.running) == {1, 2}
    assert first.admitted == second.admitted == 1.0
    taken, _ = policy.admit(now=2.0, rows=3)  # no free row
    assert taken == []
    taken, _ = policy.admit(now=3.0, rows=2)
    assert [(j.id, w) for j, w in taken] == [(2, 1)] and not policy.queue
    assert second.admitted == 1.0  # admitted when its first window was


def test_without_continuous_batching_nothing_joins_a_running_batch():
    policy = scheduler(max_rows=4, continuous=False)
    policy.submit(job(1))
    assert policy.admit(now=0.0, rows=1) == ([], [])
    assert [j.id for j, _ in policy.admit(now=0.0, rows=0)[0]] == [1]


def test_an_idle_worker_waits_for_a_fuller_first_batch_but_not_past_the_limit():
    policy = scheduler(max_rows=3, max_wait_s=0.2)
    policy.submit(job(1))
    assert policy.gather_wait(now=10.0, rows=0) == pytest.approx(0.2)
    assert policy.gather_wait(now=10.15, rows=0) == pytest.approx(0.05)
    assert policy.gather_wait(now=10.3, rows=0) == 0.0  # waited long enough
    assert policy.gather_wait(now=10.0, rows=1) == 0.0  # a running batch never waits
    policy.admit(now=10.3, rows=0)
    policy.submit(job(2, windows=3))
    assert policy.gather_wait(now=20.0, rows=0) == 0.0  # enough windows for a full batch already


def test_queued_jobs_past_their_deadline_or_cancelled_are_dropped_at_admission():
    policy = scheduler(max_rows=4)
    late, gone, fine = job(1, timeout=1.0), job(2), job(3)
    for j in (late, gone, fine):
        policy.submit(j)
    gone.cancel()
    taken, dropped = policy.admit(now=1.0, rows=0)
    assert [j.id for j, _ in taken] == [3] and dropped == [late, gone]


def test_running_jobs_are_overdue_once_cancelled_or_past_their_deadline():
    policy = scheduler(max_rows=4)
    short, other = job(1, timeout=5.0), job(2, windows=6, timeout=100.0)
    policy.submit(short)
    policy.submit(other)
    policy.admit(now=0.0, rows=0)
    assert policy.overdue(now=4.9) == []
    assert policy.overdue(now=5.0) == [short]
    other.cancel()
    assert policy.overdue(now=5.0) == [other]
    assert not policy.running and not policy.queue  # its unadmitted windows leave the queue too


def test_a_first_out_of_memory_requeues_the_jobs_first_at_half_the_rows_then_fails_them():
    policy = scheduler(max_rows=4)
    a, b, waiting = job(1), job(2), job(3)
    for j in (a, b):
        policy.submit(j)
    policy.admit(now=0.0, rows=0)
    policy.submit(waiting)
    a.next_window = 1
    assert policy.failed([a, b], out_of_memory=True) == []
    assert policy.row_limit == 2 and list(policy.queue) == [a, b, waiting]
    assert a.retried and a.next_window == 0 and not policy.running
    policy.admit(now=1.0, rows=0)
    assert policy.failed([a, b], out_of_memory=True) == [a, b]  # no second retry
    policy.batch_emptied()
    assert policy.row_limit == 4


def test_other_failures_fail_at_once_and_shutdown_takes_everything():
    policy = scheduler(max_rows=1)
    a, b = job(1, windows=2), job(2)
    policy.submit(a)
    policy.submit(b)
    policy.admit(now=0.0, rows=0)
    assert policy.failed([a], out_of_memory=False) == [a]
    assert list(policy.queue) == [b]  # a's second window is not admitted later
    assert policy.take_all() == [b] and not policy.pending()
