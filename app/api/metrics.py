"""Prometheus metrics of DESIGN.md §6, on a registry owned by one app (several apps can share a process).

`Metrics` is also the engine's `EngineObserver`: the worker reports batches, steps and jobs through it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "ENGINE_REJECT_REASONS", "Metrics"]

ENGINE_REJECT_REASONS = ("queue_full", "deadline", "cancelled", "shutdown", "error")
"""Reasons the engine reports to `job_rejected`; pre-created so rate() queries see zeros, not gaps."""

# Buckets sized for speech requests: a few ms (cached/tiny models) up to minutes (long files, busy GPU).
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_STEPS_BUCKETS = (1, 2, 4, 8, 16, 32, 48, 64)
_RTF_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)


class Metrics:
    """Every service metric, registered on its own `CollectorRegistry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "asr_requests_total", "HTTP requests answered, by endpoint and status code.",
            ["endpoint", "status"], registry=r,
        )
        self.request_duration = Histogram(
            "asr_request_duration_seconds", "Wall time of an HTTP request in seconds, until its last byte.",
            ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.queue_wait = Histogram(
            "asr_queue_wait_seconds", "Seconds a job waited in the queue before the worker admitted it.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.queue_depth_gauge = Gauge(
            "asr_queue_depth", "Jobs waiting to be admitted by the worker.", registry=r,
        )
        self.batch_size = Histogram(
            "asr_batch_size", "Rows in a batch, one observation per denoising step of that batch.",
            buckets=_BATCH_BUCKETS, registry=r,
        )
        self.denoising_steps = Histogram(
            "asr_denoising_steps", "Denoising steps a request used (adaptive stopping can end it early).",
            buckets=_STEPS_BUCKETS, registry=r,
        )
        self.step_seconds = Histogram(
            "asr_denoising_step_seconds", "Seconds of one denoising step of a whole batch.",
            buckets=_STEP_BUCKETS, registry=r,
        )
        self.encoder_seconds = Histogram(
            "asr_encoder_seconds", "Seconds of one Whisper encoder + projector call over newly admitted windows.",
            buckets=_STEP_BUCKETS, registry=r,
        )
        self.audio_seconds = Counter(
            "asr_audio_seconds_total", "Seconds of audio transcribed.", registry=r,
        )
        self.realtime_factor = Histogram(
            "asr_realtime_factor", "Compute seconds per audio second of a job (below 1 is faster than real time).",
            buckets=_RTF_BUCKETS, registry=r,
        )
        self.active_streams = Gauge(
            "asr_active_streams", "Open WebSocket streaming sessions.", registry=r,
        )
        self.rejected = Counter(
            "asr_rejected_total", "Jobs refused or dropped, by reason.", ["reason"], registry=r,
        )
        self.cancelled_jobs = Counter(
            "asr_cancelled_jobs_total", "Jobs dropped because their client went away.", registry=r,
        )
        self.model_info = Info(
            "asr_model", "The served model: name, part directories, device and dtype.", registry=r,
        )
        for reason in ENGINE_REJECT_REASONS:
            self.rejected.labels(reason=reason)

    # --- HTTP side -------------------------------------------------------------------------------------------

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        """One HTTP request finished with `status` after `seconds`."""
        self.requests.labels(endpoint=endpoint, status=str(status)).inc()
        self.request_duration.labels(endpoint=endpoint).observe(seconds)

    def set_model_info(self, **labels: str) -> None:
        """Publish the served model's description (model, encoder, backbone, adapter, device, dtype)."""
        self.model_info.info({k: str(v) for k, v in labels.items()})

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)

    # --- EngineObserver --------------------------------------------------------------------------------------

    def batch_step(self, batch_size: int, seconds: float) -> None:
        """One denoising step of a batch of `batch_size` rows took `seconds`."""
        self.batch_size.observe(batch_size)
        self.step_seconds.observe(seconds)

    def encoded(self, windows: int, seconds: float) -> None:
        """The encoder + projector ran over `windows` new windows in `seconds`."""
        self.encoder_seconds.observe(seconds)

    def queue_depth(self, depth: int) -> None:
        """The number of queued jobs changed."""
        self.queue_depth_gauge.set(depth)

    def job_finished(self, queue_wait_s: float, steps_used: int, audio_s: float, compute_s: float) -> None:
        """A job completed."""
        self.queue_wait.observe(queue_wait_s)
        self.denoising_steps.observe(steps_used)
        self.audio_seconds.inc(max(audio_s, 0.0))
        if audio_s > 0:
            self.realtime_factor.observe(compute_s / audio_s)

    def job_rejected(self, reason: str) -> None:
        """A job was refused or dropped for `reason`."""
        self.rejected.labels(reason=reason).inc()
        if reason == "cancelled":
            self.cancelled_jobs.inc()
