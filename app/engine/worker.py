"""The engine worker: one thread owns the model; the event loop hands it jobs and awaits futures.

Scheduling (DESIGN.md §5): jobs wait in a bounded queue; the worker admits their windows as rows of a
`DenoiseBatch` (up to `max_batch_size` rows), encodes and prefills new rows, then runs one denoising step for
the whole batch. With continuous batching, queued windows join between steps and finished rows leave at
once; without it, a batch runs to its end before the next is formed (the sequential baseline).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque

import torch

from app.config import Settings
from app.engine.client import AudioInput, DraftHandler
from app.engine.errors import (
    DeadlineExceededError, JobCancelledError, JobFailedError, QueueFullError, ShuttingDownError,
)
from app.engine.jobs import Job
from app.engine.observer import EngineObserver, NullObserver
from app.model.denoiser import DenoiseBatch, DenoiseJob
from app.model.pipeline import AsrPipeline, DecodeOptions, EncodedWindow, window_generator
from app.model.transcript import Segment, Timing, Transcription, silent_segment

log = logging.getLogger(__name__)

RowKey = tuple[int, int]  # (job id, window index)


def is_out_of_memory(error: BaseException) -> bool:
    """Out-of-memory on any device (CUDA raises its own type; CPU allocators raise RuntimeError)."""
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


class InjectedFault(RuntimeError):
    """Raised for a job whose prompt matches `fault_injection_prompt` (tests of failure isolation)."""


class EngineWorker:
    """Owns the pipeline on its device; implements `EngineClient` for the API."""

    def __init__(self, pipeline: AsrPipeline, settings: Settings, observer: EngineObserver | None = None) -> None:
        self.pipeline = pipeline
        self.settings = settings
        self.observer = observer or NullObserver()
        self.model_name = pipeline.name
        self.window_seconds = pipeline.window_seconds
        self.default_steps = settings.denoising_steps
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._batch = DenoiseBatch(pipeline.backbone, pipeline.params, pipeline.sampler)
        self._running: dict[int, Job] = {}
        self._timings: dict[RowKey, tuple[float, float]] = {}  # (encoder_ms, prefill_ms) of rows in the batch
        self._row_limit = settings.max_batch_size
        self._accepting = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="asr-engine", daemon=True)

    # ---- event-loop side -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread and accept jobs."""
        self._accepting = True
        self._thread.start()

    def ready(self) -> bool:
        """True while the worker thread runs and accepts jobs."""
        return self._accepting and self._thread.is_alive()

    def queue_depth(self) -> int:
        """Jobs waiting to be admitted."""
        return len(self._queue)

    def warm_up(self) -> None:
        """Run every stage once on a second of silence before serving (first calls allocate and pick kernels).

        Called before `start()`, on the caller's thread.
        """
        import numpy as np

        encoded = self.pipeline.encode([np.zeros(16_000, dtype=np.float32)])
        prefill = self.pipeline.prefill(encoded[0], None, None)
        batch = DenoiseBatch(self.pipeline.backbone, self.pipeline.params, self.pipeline.sampler)
        batch.add("warm-up", DenoiseJob(prefill, 2, window_generator(0, 0, self.pipeline.device)))
        while len(batch):
            batch.step()

    async def transcribe(
        self, audio: AudioInput, options: DecodeOptions, timeout_s: float, on_draft: DraftHandler | None = None
    ) -> Transcription:
        """Queue one request and await its transcription (see `EngineClient.transcribe`)."""
        loop = asyncio.get_running_loop()
        steps = options.steps or self.default_steps
        job = Job(next(self._ids), audio, options, steps, time.monotonic() + timeout_s, loop, loop.create_future(),
                  on_draft)
        self._submit(job)
        try:
            # The worker enforces the deadline at step boundaries; the wait here is a backstop.
            return await asyncio.wait_for(asyncio.shield(job.future), timeout_s + 1.0)
        except TimeoutError:
            job.cancel("deadline")
            job.future.cancel()
            raise DeadlineExceededError(f"no result within the {timeout_s:g} s deadline") from None
        except asyncio.CancelledError:
            job.cancel("cancelled")
            job.future.cancel()  # nobody will read the worker's JobCancelledError: don't let asyncio log it
            raise

    def _submit(self, job: Job) -> None:
        with self._cond:
            if not self._accepting:
                self.observer.job_rejected("shutdown")
                raise ShuttingDownError("the server is shutting down")
            if len(self._queue) >= self.settings.max_queue:
                self.observer.job_rejected("queue_full")
                raise QueueFullError(len(self._queue))
            self._queue.append(job)
            self.observer.queue_depth(len(self._queue))
            self._cond.notify()

    async def drain(self, timeout_s: float) -> None:
        """Stop accepting, let queued and running jobs finish (up to `timeout_s`), then stop the thread."""
        self._accepting = False
        deadline = time.monotonic() + timeout_s
        while (self._queue or self._running) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.stop()

    def stop(self) -> None:
        """Stop the thread; jobs still queued or running fail with ShuttingDownError."""
        self._accepting = False
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    # ---- worker thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            admitted = self._wait_and_admit()
            if admitted is None:
                break
            if admitted:
                self._start_rows(admitted)
            self._step()
            self._reap()
        self._fail_everything(ShuttingDownError("the server is shutting down"), "shutdown")

    def _wait_and_admit(self) -> list[tuple[Job, int]] | None:
        """Block while idle; gather a batch (waiting up to max_wait_ms) or top up a running one."""
        with self._cond:
            while not self._queue and not len(self._batch) and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            if not len(self._batch) and self.settings.max_wait_ms > 0:
                until = time.monotonic() + self.settings.max_wait_ms / 1000.0
                while self._queued_windows() < self._row_limit and (left := until - time.monotonic()) > 0:
                    self._cond.wait(timeout=left)
                    if self._stopping:
                        return None
            if len(self._batch) and not self.settings.continuous_batching:
                return []
            return self._take_windows(self._row_limit - len(self._batch))

    def _queued_windows(self) -> int:
        return sum(job.windows - job.next_window for job in self._queue)

    def _take_windows(self, capacity: int) -> list[tuple[Job, int]]:
        taken: list[tuple[Job, int]] = []
        now = time.monotonic()
        while self._queue and len(taken) < capacity:
            job = self._queue[0]
            if job.cancelled or job.expired(now):
                self._queue.popleft()
                self._drop(job, now)
                continue
            if job.admitted is None:
                job.admitted = now
            self._running[job.id] = job
            while job.next_window < job.windows and len(taken) < capacity:
                taken.append((job, job.next_window))
                job.next_window += 1
            if job.next_window == job.windows:
                self._queue.popleft()
        self.observer.queue_depth(len(self._queue))
        return taken

    def _start_rows(self, rows: list[tuple[Job, int]]) -> None:
        """Encode the new windows together, prefill each and add it to the batch; silent windows finish here."""
        speech = [(job, w) for job, w in rows if job.audio.windows[w].has_speech]
        for job, w in rows:
            if not job.audio.windows[w].has_speech:
                self._finish_window(job, w, silent_segment(w, job.audio.windows[w], job.options.language))
        if not speech:
            return
        try:
            started = time.perf_counter()
            encoded = self.pipeline.encode([job.audio.windows[w].samples for job, w in speech])
            seconds = time.perf_counter() - started
            self.observer.encoded(len(speech), seconds)
        except Exception as error:  # noqa: BLE001 - any model failure must only fail these jobs
            self._batch_failed({job for job, _ in speech}, error)
            return
        for (job, w), window in zip(speech, encoded):
            if job.cancelled:
                continue
            try:
                self._add_row(job, w, window, seconds * 1000.0 / len(speech))
            except Exception as error:  # noqa: BLE001
                self._batch_failed({job}, error)

    def _add_row(self, job: Job, w: int, window: EncodedWindow, encoder_ms: float) -> None:
        started = time.perf_counter()
        if self.settings.fault_injection_prompt and job.options.prompt == self.settings.fault_injection_prompt:
            raise InjectedFault(f"injected failure for job {job.id}")
        prefill = self.pipeline.prefill(window, job.options.language, job.options.prompt)
        prefill_ms = (time.perf_counter() - started) * 1000.0
        on_step = None
        if job.on_draft is not None:
            decode = self.pipeline.transcripts.decode
            on_step = lambda step, of, tokens: job.draft(w, decode(tokens.tolist(), job.options.language)[0])  # noqa: E731
        generator = window_generator(job.options.seed, w, self.pipeline.device)
        self._batch.add((job.id, w), DenoiseJob(prefill, job.steps, generator, on_step))
        job.segments.pop(w, None)
        job.drafts[w] = ""
        self._timings[(job.id, w)] = (encoder_ms, prefill_ms)

    def _step(self) -> None:
        if not len(self._batch):
            return
        size = len(self._batch)
        try:
            started = time.perf_counter()
            finished = self._batch.step()
            self.observer.batch_step(size, time.perf_counter() - started)
        except Exception as error:  # noqa: BLE001
            jobs = {self._running[job_id] for job_id, _ in self._batch_keys()}
            self._clear_batch()
            self._batch_failed(jobs, error)
            return
        for (job_id, w), result in finished:
            job = self._running.get(job_id)
            encoder_ms, prefill_ms = self._timings.pop((job_id, w), (0.0, 0.0))
            if job is None:
                continue
            text, language = self.pipeline.transcripts.decode(result.tokens, job.options.language)
            timing = Timing(encoder_ms=encoder_ms, prefill_ms=prefill_ms, denoise_ms=result.denoise_ms,
                            batch_size=result.batch_size, steps=result.steps, queue_ms=job.queue_ms)
            timing.total_ms = encoder_ms + prefill_ms + result.denoise_ms
            window = job.audio.windows[w]
            self._finish_window(job, w, Segment(w, window.start, window.end, text, language, timing))
        if not len(self._batch):
            self._row_limit = self.settings.max_batch_size  # a halved limit after OOM lasts one batch

    def _finish_window(self, job: Job, w: int, segment: Segment) -> None:
        job.segments[w] = segment
        if job.complete() and job.id in self._running:
            del self._running[job.id]
            result = job.result()
            compute = max(0.0, time.monotonic() - (job.admitted or job.enqueued))
            steps = max((s.timing.steps_used for s in result.segments), default=0)
            self.observer.job_finished(job.queue_ms / 1000.0, steps, job.audio.duration, compute)
            job.resolve(result)

    def _batch_keys(self) -> list[RowKey]:
        return self._batch.keys()

    def _clear_batch(self) -> None:
        for key in self._batch_keys():
            self._batch.remove(key)
            self._timings.pop(key, None)

    def _batch_failed(self, jobs: set[Job], error: BaseException) -> None:
        """Fail (or, on a first out-of-memory, re-queue at half the batch size) only the jobs involved."""
        for job in jobs:
            for key in [k for k in self._batch_keys() if k[0] == job.id]:
                self._batch.remove(key)
                self._timings.pop(key, None)
        if is_out_of_memory(error) and not any(job.retried for job in jobs):
            self._row_limit = max(1, self._row_limit // 2)
            log.warning("out of memory with %d jobs; retrying them at batch size %d", len(jobs), self._row_limit)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            with self._cond:
                for job in sorted(jobs, key=lambda j: j.id, reverse=True):
                    job.retried = True
                    job.reset()
                    self._running.pop(job.id, None)
                    self._queue.appendleft(job)
            return
        log.error("batch failed for jobs %s: %s", sorted(j.id for j in jobs), error)
        for job in jobs:
            self._running.pop(job.id, None)
            self.observer.job_rejected("error")
            job.fail(JobFailedError(f"transcription failed: {type(error).__name__}"))

    def _reap(self) -> None:
        """Drop running jobs whose caller went away or whose deadline passed."""
        now = time.monotonic()
        for job in [j for j in self._running.values() if j.cancelled or j.expired(now)]:
            for key in [k for k in self._batch_keys() if k[0] == job.id]:
                self._batch.remove(key)
                self._timings.pop(key, None)
            del self._running[job.id]
            with self._cond:
                if job in self._queue:
                    self._queue.remove(job)
            self._drop(job, now)

    def _drop(self, job: Job, now: float) -> None:
        if job.cancelled and job.cancel_reason == "cancelled":
            self.observer.job_rejected("cancelled")
            job.fail(JobCancelledError("the client went away"))
        else:
            self.observer.job_rejected("deadline")
            job.fail(DeadlineExceededError("the request's deadline passed before its transcript was ready"))

    def _fail_everything(self, error: Exception, reason: str) -> None:
        with self._cond:
            jobs = list(self._queue) + [j for j in self._running.values() if j not in self._queue]
            self._queue.clear()
        self._running.clear()
        self._clear_batch()
        for job in jobs:
            self.observer.job_rejected(reason)
            job.fail(error)
