"""What the API layer sees of the engine: submit audio windows, await a transcription, get drafts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from app.audio.vad import AudioWindow
from app.model.pipeline import DecodeOptions
from app.model.transcript import Transcription

DraftHandler = Callable[[int, int, str], None]
"""Called on the event loop with (step, of, draft_text) after every denoising step of the job's first window."""


@dataclass(frozen=True)
class AudioInput:
    """Decoded audio already split into windows (`app.audio.vad.split_windows`); windows without speech are
    not denoised and give an empty segment."""

    windows: list[AudioWindow]
    duration: float
    decode_ms: float = 0.0


class EngineClient(Protocol):
    """The engine as the API uses it (no tensors cross this line)."""

    model_name: str
    window_seconds: float
    default_steps: int

    def ready(self) -> bool:
        """True while the worker runs and accepts jobs."""

    async def transcribe(
        self,
        audio: AudioInput,
        options: DecodeOptions,
        timeout_s: float,
        on_draft: DraftHandler | None = None,
    ) -> Transcription:
        """Queue one request and wait for it. Raises QueueFullError at once when the queue is full,
        DeadlineExceededError after `timeout_s`, ShuttingDownError while draining, JobFailedError when its batch
        failed; cancelling the awaiting task drops the job (queued or running)."""

    def queue_depth(self) -> int:
        """Jobs waiting to be admitted."""


Transcribe = Callable[..., Awaitable[Transcription]]
