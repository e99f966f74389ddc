"""The batching worker on a tiny random model: batch independence, queue bound, deadlines, cancellation,
failure isolation and out-of-memory retry."""

from __future__ import annotations

import asyncio

import numpy as np
import torch

from app.audio.vad import AudioWindow
from app.config import Settings
from app.engine.client import AudioInput
from app.engine.errors import DeadlineExceededError, JobFailedError, QueueFullError
from app.engine.worker import EngineWorker
from app.model.pipeline import DecodeOptions


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


def clip(seed: int, seconds: float = 1.0) -> AudioInput:
    samples = np.random.default_rng(seed).standard_normal(int(16000 * seconds)).astype(np.float32) * 0.1
    return AudioInput([AudioWindow(0.0, seconds, samples, has_speech=True)], seconds)


def run_worker(pipeline, coro_factory, **settings):
    worker = EngineWorker(pipeline, Settings(**settings), Recorder())
    worker.start()
    try:
        return asyncio.run(coro_factory(worker)), worker
    finally:
        worker.stop()


def test_concurrent_jobs_batch_and_match_solo_results(tiny_pipeline):
    options = [DecodeOptions(steps=2 + i % 3, seed=i) for i in range(6)]

    async def together(worker):
        return await asyncio.gather(*(worker.transcribe(clip(i), options[i], 60) for i in range(6)))

    results, worker = run_worker(tiny_pipeline, together, max_batch_size=8, max_wait_ms=200)
    assert max(worker.observer.batch_sizes) > 1
    for i, result in enumerate(results):
        solo = tiny_pipeline.transcribe_windows(clip(i).windows, options[i])[0]
        assert result.text == solo.text
        assert result.timing.steps_used == solo.timing.steps_used


def test_queue_full_is_refused_at_once(tiny_pipeline):
    async def flood(worker):
        tasks = [asyncio.ensure_future(worker.transcribe(clip(i, 3.0), DecodeOptions(steps=8), 60)) for i in range(6)]
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        return outcomes

    outcomes, worker = run_worker(tiny_pipeline, flood, max_batch_size=1, max_queue=1, max_wait_ms=0)
    refused = [o for o in outcomes if isinstance(o, QueueFullError)]
    assert refused and all(o.retry_after >= 1 for o in refused)
    assert "queue_full" in worker.observer.rejected


def test_deadline_fails_with_deadline_error(tiny_pipeline):
    async def slow(worker):
        return await asyncio.gather(worker.transcribe(clip(0), DecodeOptions(steps=64), 0.05), return_exceptions=True)

    (outcome,), worker = run_worker(tiny_pipeline, slow, max_batch_size=1)
    assert isinstance(outcome, DeadlineExceededError)


def test_cancelled_caller_drops_the_job(tiny_pipeline):
    async def cancel(worker):
        task = asyncio.ensure_future(worker.transcribe(clip(0, 5.0), DecodeOptions(steps=64), 60))
        await asyncio.sleep(0.3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for _ in range(100):  # the worker drops it at its next step boundary
            if "cancelled" in worker.observer.rejected:
                break
            await asyncio.sleep(0.05)
        return await worker.transcribe(clip(1), DecodeOptions(steps=2), 60)

    result, worker = run_worker(tiny_pipeline, cancel, max_batch_size=2)
    assert "cancelled" in worker.observer.rejected
    assert result.timing.steps_used == 2


def test_injected_failure_fails_only_its_own_job(tiny_pipeline):
    async def mixed(worker):
        bad = worker.transcribe(clip(0), DecodeOptions(steps=2, prompt="boom"), 60)
        good = worker.transcribe(clip(1), DecodeOptions(steps=2), 60)
        first = await asyncio.gather(bad, good, return_exceptions=True)
        return first, await worker.transcribe(clip(2), DecodeOptions(steps=2), 60)

    ((bad, good), after), worker = run_worker(tiny_pipeline, mixed, max_batch_size=4, max_wait_ms=100,
                                              fault_injection_prompt="boom")
    assert isinstance(bad, JobFailedError)
    assert good.timing.steps_used == 2 and after.timing.steps_used == 2


def test_out_of_memory_retries_once_at_half_batch(tiny_pipeline, monkeypatch):
    worker = EngineWorker(tiny_pipeline, Settings(max_batch_size=4, max_wait_ms=200), Recorder())
    real_step, calls = worker._batch.step, {"n": 0}

    def flaky_step():
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_step()

    monkeypatch.setattr(worker._batch, "step", flaky_step)
    worker.start()
    try:
        async def pair():
            return await asyncio.gather(*(worker.transcribe(clip(i), DecodeOptions(steps=2, seed=i), 60)
                                          for i in range(4)))
        results = asyncio.run(pair())
    finally:
        worker.stop()
    assert [r.text for r in results] == [tiny_pipeline.transcribe_windows(clip(i).windows,
                                                                          DecodeOptions(steps=2, seed=i))[0].text
                                         for i in range(4)]
    assert calls["n"] > 1 and max(worker.observer.batch_sizes) <= 2
