"""The batching worker: results reach their own callers, the queue bound, deadlines, cancellation, failure
isolation and out-of-memory retry on a fake model (held at a step boundary where a test needs a job to stay
running, so no verdict races the CPU); batch independence and the retry on the tiny random model."""

from __future__ import annotations

import asyncio

import numpy as np
import torch

from app.audio.vad import AudioInput, AudioWindow
from app.config import EngineSettings
from app.engine.errors import DeadlineExceededError, JobFailedError, QueueFullError
from app.engine.worker import EngineWorker
from app.results import DecodeOptions
from tests.unit.fake_model import FakeModel, expected_text

HOLD = "hold here"
WAIT_S = 30.0  # an upper bound for events that come within milliseconds; never reached unless the engine hangs


class Recorder:
    """Observer that keeps what it is told."""

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []
        self.rejected: list[str] = []

    def batch_step(self, batch_size, seconds): self.batch_sizes.append(batch_size)
    def encoded(self, windows, seconds): pass
    def queue_depth(self, depth): pass
    def job_finished(self, queue_wait_s, steps_used, audio_s, compute_s): pass
    def job_rejected(self, reason): self.rejected.append(reason)


def clip(seed: int, seconds: float = 1.0, windows: int = 1) -> AudioInput:
    samples = np.random.default_rng(seed).standard_normal(int(16000 * seconds)).astype(np.float32) * 0.1
    parts = [AudioWindow(i * seconds, (i + 1) * seconds, samples, has_speech=True) for i in range(windows)]
    return AudioInput(parts, seconds * windows)


def run_worker(model, coro_factory, queued: int = 0, **settings):
    """Run `coro_factory(worker)`; with `queued`, the worker starts only once that many jobs wait, so its first
    batch holds them all whatever the machine's speed."""
    worker = EngineWorker(model, EngineSettings(**settings), Recorder())
    if not queued:
        worker.start()
    try:
        return asyncio.run(coro_factory(worker)), worker
    finally:
        worker.stop()


async def started_when_queued(worker, jobs: int, *requests):
    """Await `requests` (coroutines of `worker.transcribe`), starting the worker once `jobs` of them wait."""
    tasks = [asyncio.ensure_future(r) for r in requests]
    await until(lambda: worker.queue_depth() == jobs)
    worker.start()
    return await asyncio.gather(*tasks, return_exceptions=True)


async def until(condition) -> None:
    """Wait for something the worker does next (an event, not a duration)."""
    for _ in range(int(WAIT_S / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the worker never got there")


def test_each_caller_gets_its_own_windows_results_in_one_batch():
    model = FakeModel()
    requests = [(clip(i, seconds=0.5 + 0.1 * i, windows=1 + i % 2), DecodeOptions(steps=1 + i % 3, seed=i))
                for i in range(5)]

    async def together(worker):
        return await started_when_queued(worker, 5, *(worker.transcribe(a, o, 60) for a, o in requests))

    results, worker = run_worker(model, together, queued=5, max_batch_size=7)
    assert model.batch_sizes[0] == 7
    assert model.prefill_groups[0] == 7  # the windows that joined together were prefilled together
    for (audio, options), result in zip(requests, results):
        texts = [expected_text(options.seed, w, len(window.samples)) for w, window in enumerate(audio.windows)]
        assert [s.text for s in result.segments] == texts
        assert result.timing.steps_used == options.steps * len(audio.windows)


def test_a_held_job_that_is_cancelled_is_dropped_and_the_worker_goes_on():
    async def cancel(worker):
        task = asyncio.ensure_future(worker.transcribe(clip(0), DecodeOptions(steps=8, prompt=HOLD), 60))
        await until(lambda: worker.observer.batch_sizes)  # its first step ran: it is held now
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await until(lambda: "cancelled" in worker.observer.rejected)
        return await worker.transcribe(clip(1), DecodeOptions(steps=2), 60)

    result, worker = run_worker(FakeModel(), cancel, max_batch_size=2, hold_prompt=HOLD)
    assert worker.observer.rejected == ["cancelled"]
    assert result.timing.steps_used == 2


def test_a_held_job_fails_with_its_deadline():
    async def slow(worker):
        return await asyncio.gather(worker.transcribe(clip(0), DecodeOptions(steps=8, prompt=HOLD), 0.3),
                                    return_exceptions=True)

    (outcome,), worker = run_worker(FakeModel(), slow, max_batch_size=1, hold_prompt=HOLD)
    assert isinstance(outcome, DeadlineExceededError)
    assert worker.observer.rejected == ["deadline"]


def test_a_queued_job_past_its_deadline_is_dropped_before_it_runs():
    model = FakeModel()

    async def blocked(worker):
        held = asyncio.ensure_future(worker.transcribe(clip(0), DecodeOptions(steps=8, prompt=HOLD), 1.0))
        await until(lambda: model.batch_sizes)
        waiting = await asyncio.gather(worker.transcribe(clip(1), DecodeOptions(steps=2), 0.2),
                                       return_exceptions=True)
        return waiting, await asyncio.gather(held, return_exceptions=True)

    ((waiting,), (held,)), worker = run_worker(model, blocked, max_batch_size=1, hold_prompt=HOLD)
    assert isinstance(waiting, DeadlineExceededError) and isinstance(held, DeadlineExceededError)
    assert model.batch_sizes == [1]  # the queued job never took a step


def test_beyond_the_queue_bound_requests_are_refused_at_once():
    async def flood(worker):
        held = asyncio.ensure_future(worker.transcribe(clip(0), DecodeOptions(steps=8, prompt=HOLD), 60))
        await until(lambda: worker.observer.batch_sizes)  # running and held: the one row is taken
        queued = asyncio.ensure_future(worker.transcribe(clip(1), DecodeOptions(steps=2), 60))
        await until(lambda: worker.queue_depth() == 1)
        refused = await asyncio.gather(*(worker.transcribe(clip(i), DecodeOptions(steps=2), 60) for i in (2, 3)),
                                       return_exceptions=True)
        depth = worker.queue_depth()
        held.cancel()
        return refused, depth, await queued

    (refused, depth, queued), worker = run_worker(FakeModel(), flood, max_batch_size=1, max_queue=1,
                                                   hold_prompt=HOLD)
    assert all(isinstance(r, QueueFullError) and r.retry_after >= 1 for r in refused)
    assert depth == 1  # refused while the queued job was still waiting: nothing was given up for them
    assert worker.observer.rejected.count("queue_full") == 2
    assert queued.timing.steps_used == 2


def test_an_injected_failure_fails_only_its_own_job():
    async def mixed(worker):
        bad = worker.transcribe(clip(0), DecodeOptions(steps=2, prompt="boom"), 60)
        good = worker.transcribe(clip(1), DecodeOptions(steps=2), 60)
        first = await started_when_queued(worker, 2, bad, good)
        return first, await worker.transcribe(clip(2), DecodeOptions(steps=2), 60)

    ((bad, good), after), worker = run_worker(FakeModel(), mixed, queued=2, max_batch_size=2,
                                              fault_injection_prompt="boom")
    assert isinstance(bad, JobFailedError)
    assert good.timing.steps_used == 2 and after.timing.steps_used == 2
    assert worker.observer.rejected == ["error"]


def test_out_of_memory_retries_once_at_half_the_batch_then_fails_only_on_a_second_one():
    model = FakeModel(failures=[RuntimeError("CUDA out of memory (simulated)")])
    requests = [(clip(i), DecodeOptions(steps=2, seed=i)) for i in range(4)]

    async def four(worker):
        return await started_when_queued(worker, 4, *(worker.transcribe(a, o, 60) for a, o in requests))

    results, worker = run_worker(model, four, queued=4, max_batch_size=4)
    assert [r.text for r in results] == [expected_text(o.seed, 0, 16_000) for _, o in requests]
    assert model.batch_sizes[0] == 4 and max(model.batch_sizes[1:]) == 2 and model.released == 1


def test_a_second_out_of_memory_fails_the_retried_job_and_the_worker_goes_on():
    model = FakeModel(failures=[RuntimeError("out of memory")] * 2)

    async def one_then_another(worker):
        failed = await asyncio.gather(worker.transcribe(clip(0), DecodeOptions(steps=2), 60), return_exceptions=True)
        return failed, await worker.transcribe(clip(5), DecodeOptions(steps=2, seed=5), 60)

    ((failed,), after), worker = run_worker(model, one_then_another, max_batch_size=1)
    assert isinstance(failed, JobFailedError) and model.batch_sizes[:2] == [1, 1]
    assert after.text == expected_text(5, 0, 16_000)
    assert worker.observer.rejected == ["error"]


def test_a_cancelled_queued_job_is_never_started():
    model = FakeModel()

    async def scenario(worker):
        held = asyncio.ensure_future(worker.transcribe(clip(0), DecodeOptions(steps=8, prompt=HOLD), 60))
        await until(lambda: model.batch_sizes)
        queued = asyncio.ensure_future(worker.transcribe(clip(1), DecodeOptions(steps=2), 60))
        await until(lambda: worker.queue_depth() == 1)
        queued.cancel()
        held.cancel()
        outcomes = await asyncio.gather(queued, held, return_exceptions=True)
        await until(lambda: len(worker.observer.rejected) == 2)
        return outcomes

    outcomes, worker = run_worker(model, scenario, max_batch_size=1, hold_prompt=HOLD)
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)
    assert model.batch_sizes == [1] and sorted(worker.observer.rejected) == ["cancelled", "cancelled"]


def test_concurrent_jobs_on_the_real_model_batch_and_match_solo_results(tiny_pipeline):
    options = [DecodeOptions(steps=2 + i % 3, seed=i) for i in range(6)]

    async def together(worker):
        return await started_when_queued(worker, 6, *(worker.transcribe(clip(i), options[i], 60) for i in range(6)))

    results, worker = run_worker(tiny_pipeline, together, queued=6, max_batch_size=6)
    assert worker.observer.batch_sizes[0] == 6
    for i, result in enumerate(results):
        solo = tiny_pipeline.transcribe_windows(clip(i).windows, options[i])[0]
        assert result.text == solo.text
        assert result.timing.steps_used == solo.timing.steps_used


def test_out_of_memory_on_the_real_model_retries_at_half_batch_with_the_same_results(tiny_pipeline, monkeypatch):
    worker = EngineWorker(tiny_pipeline, EngineSettings(max_batch_size=4), Recorder())
    real_step, calls = worker._batch.step, {"n": 0}

    def flaky_step():
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_step()

    monkeypatch.setattr(worker._batch, "step", flaky_step)
    try:
        async def four():
            return await started_when_queued(worker, 4, *(worker.transcribe(clip(i), DecodeOptions(steps=2, seed=i),
                                                                            60) for i in range(4)))
        results = asyncio.run(four())
    finally:
        worker.stop()
    assert [r.text for r in results] == [tiny_pipeline.transcribe_windows(clip(i).windows,
                                                                          DecodeOptions(steps=2, seed=i))[0].text
                                         for i in range(4)]
    assert calls["n"] > 1 and max(worker.observer.batch_sizes) <= 2


def test_each_window_reaches_on_segment_before_the_result_with_silent_windows_too():
    audio = clip(3, windows=3)
    audio.windows[1] = AudioWindow(1.0, 2.0, audio.windows[1].samples, has_speech=False)
    heard = []

    async def with_segments(worker):
        result = await worker.transcribe(audio, DecodeOptions(steps=2, seed=3), 60, on_segment=heard.append)
        return result, list(heard)

    (result, before), _ = run_worker(FakeModel(), with_segments, max_batch_size=4)
    assert sorted(s.id for s in before) == [0, 1, 2]
    assert {s.id: s.text for s in before} == {s.id: s.text for s in result.segments}
    assert [s.speech for s in sorted(before, key=lambda s: s.id)] == [True, False, True]
