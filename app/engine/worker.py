"""The engine worker: one thread owns the model; the event loop hands it jobs and awaits futures.

Each turn of the thread (DESIGN.md §5): the scheduler admits queued windows as rows (up to the batch's row
limit), the model encodes and prefills the new rows, one denoising step runs for the whole batch, finished rows
become segments, and jobs whose caller left or whose deadline passed are dropped. The worker reaches the model
only through `app.engine.model.AsrModel`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time

import numpy as np

from app.audio.vad import AudioInput, AudioWindow
from app.config import EngineSettings
from app.engine.errors import DeadlineExceededError, JobCancelledError, JobFailedError, ShuttingDownError
from app.engine.jobs import DraftHandler, Job, SegmentHandler
from app.engine.model import AsrModel, DraftHook, Row
from app.engine.observer import EngineObserver, NullObserver
from app.engine.scheduler import Scheduler
from app.results import DecodeOptions, Segment, Transcription, silent_segment

log = logging.getLogger(__name__)

RowKey = tuple[int, int]  # (job id, window index)


def is_out_of_memory(error: BaseException) -> bool:
    """Out-of-memory on any device (`torch.OutOfMemoryError` and CPU allocators both say so in the message)."""
    return "out of memory" in str(error).lower()


class InjectedFault(RuntimeError):
    """Raised for a job whose prompt matches `fault_injection_prompt` (tests of failure isolation)."""


class EngineWorker:
    """Owns the model on its device; implements `EngineClient` for the API."""

    def __init__(self, model: AsrModel, settings: EngineSettings, observer: EngineObserver | None = None) -> None:
        self.model = model
        self.settings = settings
        self.observer = observer or NullObserver()
        self.model_name = model.name
        self.window_seconds = model.window_seconds
        self.languages = model.languages
        self.default_steps = model.default_steps
        self._scheduler = Scheduler(settings.max_queue, settings.max_batch_size, settings.max_wait_ms / 1000.0,
                                    settings.continuous_batching)
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._batch = model.new_batch()
        self._rows: dict[RowKey, Row] = {}
        self._started = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="asr-engine", daemon=True)

    # ---- event-loop side -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread and accept jobs."""
        self._started = True
        self._thread.start()

    def ready(self) -> bool:
        """True while the worker thread runs and accepts jobs."""
        return self._started and self._scheduler.accepting and self._thread.is_alive()

    def queue_depth(self) -> int:
        """Jobs waiting to be admitted."""
        return len(self._scheduler.queue)

    def warm_up(self) -> None:
        """Run every stage once on a second of silence before serving (first calls allocate and pick kernels).

        Called before `start()`, on the caller's thread.
        """
        window = AudioWindow(0.0, 1.0, np.zeros(16_000, dtype=np.float32), has_speech=True)
        [encoded] = self.model.encode([window.samples])
        row = self.model.start_row(encoded, 0, window, DecodeOptions(steps=2))
        batch = self.model.new_batch()
        batch.add("warm-up", row.job)
        while len(batch):
            batch.step()

    async def transcribe(
        self, audio: AudioInput, options: DecodeOptions, timeout_s: float, on_draft: DraftHandler | None = None,
        on_segment: SegmentHandler | None = None,
    ) -> Transcription:
        """Queue one request and await its transcription (see `EngineClient.transcribe`)."""
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        job = Job(next(self._ids), audio, options, now, now + timeout_s, loop, loop.create_future(), on_draft,
                  on_segment, wake=self._wake)
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
            try:
                self._scheduler.submit(job)
            except ShuttingDownError:
                self.observer.job_rejected("shutdown")
                raise
            except Exception:
                self.observer.job_rejected("queue_full")
                raise
            self.observer.queue_depth(len(self._scheduler.queue))
            self._cond.notify()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    async def drain(self, timeout_s: float) -> None:
        """Stop accepting, let queued and running jobs finish (up to `timeout_s`), then stop the thread."""
        with self._cond:
            self._scheduler.accepting = False
        deadline = time.monotonic() + timeout_s
        while self._scheduler.pending() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.stop()

    def stop(self) -> None:
        """Stop the thread; jobs still queued or running fail with ShuttingDownError."""
        with self._cond:
            self._scheduler.accepting = False
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    # ---- worker thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            admitted = self._wait_and_admit()
            if admitted is None:
                break
            if admitted:
                self._start_rows(admitted)
            self._step()
            self._reap()
            self._hold()
        with self._cond:
            jobs = self._scheduler.take_all()
        self._clear_batch()
        for job in jobs:
            self.observer.job_rejected("shutdown")
            job.fail(ShuttingDownError("the server is shutting down"))

    def _wait_and_admit(self) -> list[tuple[Job, int]] | None:
        """Block while idle; gather a batch (waiting up to max_wait_ms) or top up a running one."""
        with self._cond:
            while self._scheduler.idle(len(self._batch)) and not self._stopping:
                self._cond.wait()
            while not self._stopping and (wait := self._scheduler.gather_wait(time.monotonic(), len(self._batch))):
                self._cond.wait(timeout=wait)
            if self._stopping:
                return None
            now = time.monotonic()
            taken, dropped = self._scheduler.admit(now, len(self._batch))
            self.observer.queue_depth(len(self._scheduler.queue))
        for job in dropped:
            self._drop(job)
        return taken

    def _start_rows(self, windows: list[tuple[Job, int]]) -> None:
        """Encode the new windows together, prefill them together and add them to the batch; silent windows finish
        here."""
        speech = [(job, w) for job, w in windows if job.audio.windows[w].has_speech]
        for job, w in windows:
            if not job.audio.windows[w].has_speech:
                window = job.audio.windows[w]
                self._finish_window(job, w, silent_segment(w, window.start, window.end, job.options.language))
        if not speech:
            return
        try:
            started = time.perf_counter()
            encoded = self.model.encode([job.audio.windows[w].samples for job, w in speech])
            seconds = time.perf_counter() - started
            self.observer.encoded(len(speech), seconds)
        except Exception as error:  # noqa: BLE001 - any model failure must only fail these jobs
            self._batch_failed({job for job, _ in speech}, error)
            return
        self._add_rows([(job, w, window) for (job, w), window in zip(speech, encoded) if not job.cancelled],
                       seconds * 1000.0 / len(speech))

    def _add_rows(self, windows: list[tuple[Job, int, object]], encoder_ms: float) -> None:
        """Prefill the windows together and add their rows to the batch; a failure fails only these jobs (a job
        with the fault-injection prompt fails alone, before the others are prefilled)."""
        fault = self.settings.fault_injection_prompt
        injected = {job for job, _, _ in windows if fault and job.options.prompt == fault}
        for job in injected:
            self._batch_failed({job}, InjectedFault(f"injected failure for job {job.id}"))
        windows = [(job, w, e) for job, w, e in windows if job not in injected]
        if not windows:
            return
        specs = [(encoded, w, job.audio.windows[w], job.options, self._draft_hook(job, w))
                 for job, w, encoded in windows]
        try:
            rows = self.model.start_rows(specs, encoder_ms)
        except Exception as error:  # noqa: BLE001 - any model failure must only fail these jobs
            self._batch_failed({job for job, _, _ in windows}, error)
            return
        for (job, w, _), row in zip(windows, rows):
            self._batch.add((job.id, w), row.job)
            self._rows[(job.id, w)] = row
            job.segments.pop(w, None)
            job.drafts[w] = ""

    @staticmethod
    def _draft_hook(job: Job, w: int) -> DraftHook | None:
        if job.on_draft is None:
            return None
        return lambda step, of, text: job.draft(w, text)

    def _step(self) -> None:
        if not len(self._batch):
            return
        size = len(self._batch)
        try:
            started = time.perf_counter()
            finished = self._batch.step()
            self.observer.batch_step(size, time.perf_counter() - started)
        except Exception as error:  # noqa: BLE001
            jobs = {self._scheduler.running[job_id] for job_id, _ in self._batch.keys()
                    if job_id in self._scheduler.running}
            self._clear_batch()
            self._batch_failed(jobs, error)
            return
        for key, result in finished:
            row = self._rows.pop(key)
            job = self._scheduler.running.get(key[0])
            if job is not None:
                self._finish_window(job, key[1], self.model.finish_row(row, result, job.queue_ms))
        if not len(self._batch):
            self._scheduler.batch_emptied()

    def _finish_window(self, job: Job, w: int, segment: Segment) -> None:
        job.add_segment(w, segment)
        if job.complete() and job.id in self._scheduler.running:
            with self._cond:
                self._scheduler.finished(job)
            now = time.monotonic()
            result = job.result(now)
            compute = max(0.0, now - (job.admitted or job.enqueued))
            steps = max((s.timing.steps_used for s in result.segments), default=0)
            self.observer.job_finished(job.queue_ms / 1000.0, steps, job.audio.duration, compute)
            job.resolve(result)

    def _remove_rows(self, job: Job) -> None:
        for key in [k for k in self._batch.keys() if k[0] == job.id]:
            self._batch.remove(key)
            self._rows.pop(key, None)

    def _clear_batch(self) -> None:
        for key in self._batch.keys():
            self._batch.remove(key)
        self._rows.clear()

    def _batch_failed(self, jobs: set[Job], error: BaseException) -> None:
        """Fail (or, on a first out-of-memory, re-queue at half the batch size) only the jobs involved."""
        for job in jobs:
            self._remove_rows(job)
        out_of_memory = is_out_of_memory(error)
        with self._cond:
            failed = self._scheduler.failed(list(jobs), out_of_memory)
        if out_of_memory and not failed:
            log.warning("out of memory with %d jobs; retrying them at batch size %d", len(jobs),
                        self._scheduler.row_limit)
            self.model.release_memory()
            return
        log.error("batch failed for jobs %s: %s", sorted(j.id for j in failed), error)
        for job in failed:
            self.observer.job_rejected("error")
            job.fail(JobFailedError(f"transcription failed: {type(error).__name__}"))

    def _reap(self) -> None:
        """Drop running jobs whose caller went away or whose deadline passed."""
        with self._cond:
            jobs = self._scheduler.overdue(time.monotonic())
        for job in jobs:
            self._remove_rows(job)
            self._drop(job)

    def _hold(self) -> None:
        """Testing only (`hold_prompt`): while a held job has rows in the batch, stop at this step boundary until
        it is cancelled or its deadline passes; then it is dropped like any other."""
        prompt = self.settings.hold_prompt
        if not prompt:
            return
        with self._cond:
            while not self._stopping:
                in_batch = {job_id for job_id, _ in self._batch.keys()}
                held = [job for job in self._scheduler.running.values()
                        if job.id in in_batch and job.options.prompt == prompt]
                now = time.monotonic()
                if not held or any(job.cancelled or job.expired(now) for job in held):
                    break
                self._cond.wait(timeout=min(job.deadline for job in held) - now)
        self._reap()

    def _drop(self, job: Job) -> None:
        if job.cancelled and job.cancel_reason == "cancelled":
            self.observer.job_rejected("cancelled")
            job.fail(JobCancelledError("the client went away"))
        else:
            self.observer.job_rejected("deadline")
            job.fail(DeadlineExceededError("the request's deadline passed before its transcript was ready"))
