"""What the API layer sees of the engine: submit audio windows, await a transcription, get drafts."""

from __future__ import annotations

from typing import Protocol

from app.audio.vad import AudioInput
from app.engine.jobs import DraftHandler, SegmentHandler
from app.results import DecodeOptions, Transcription


class EngineClient(Protocol):
    """The engine as the API uses it (no tensors cross this line)."""

    model_name: str
    window_seconds: float
    languages: tuple[str, ...]
    default_steps: int
    """The model's own step budget (requests and `ASR_DENOISING_STEPS` override it)."""

    def ready(self) -> bool:
        """True while the worker runs and accepts jobs."""

    async def transcribe(
        self,
        audio: AudioInput,
        options: DecodeOptions,
        timeout_s: float,
        on_draft: DraftHandler | None = None,
        on_segment: SegmentHandler | None = None,
    ) -> Transcription:
        """Queue one request and wait for it; `on_draft` hears every denoising step's draft, `on_segment` every
        window's segment as it finishes. Raises QueueFullError at once when the queue is full,
        DeadlineExceededError after `timeout_s`, ShuttingDownError while draining, JobFailedError when its batch
        failed; cancelling the awaiting task drops the job (queued or running)."""

    def queue_depth(self) -> int:
        """Jobs waiting to be admitted."""
