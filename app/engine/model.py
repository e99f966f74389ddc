"""The model as the engine's worker uses it: one Protocol, so the worker never reaches into a model's internals
and its tests run on a fake. `app.model.pipeline.AsrPipeline` implements it."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Protocol

import numpy as np

from app.audio.vad import AudioWindow
from app.results import DecodeOptions, Segment

DraftHook = Callable[[int, int, str], None]
"""Called after every denoising step of a row with (step, step budget, the canvas's text)."""

RowSpec = tuple[Any, int, AudioWindow, DecodeOptions, DraftHook | None]
"""A window to start: (its item from `encode`, its index in its request, the window, the request's options, draft
hook)."""


class Row(Protocol):
    """One started window; the engine passes its `job` to the batch and the row back to `finish_row`."""

    job: Any


class Batch(Protocol):
    """Rows denoised together; rows join and leave only between steps."""

    def __len__(self) -> int: ...

    def keys(self) -> list[Hashable]:
        """The rows' keys, in batch order."""

    def add(self, key: Hashable, job: Any) -> None:
        """Join a row (`Row.job`)."""

    def remove(self, key: Hashable) -> None:
        """Drop a row."""

    def step(self) -> list[tuple[Hashable, Any]]:
        """One denoising step of every row; returns (and removes) the finished rows with their results."""


class AsrModel(Protocol):
    """What the worker needs of a loaded model."""

    name: str

    @property
    def window_seconds(self) -> float:
        """Seconds of audio per window."""

    @property
    def languages(self) -> tuple[str, ...]:
        """The languages the model transcribes."""

    @property
    def default_steps(self) -> int:
        """The model's own denoising step budget."""

    def encode(self, windows: list[np.ndarray]) -> list[Any]:
        """The audio path for several windows at once; one opaque item per window."""

    def start_row(self, encoded: Any, index: int, window: AudioWindow, options: DecodeOptions,
                  encoder_ms: float = 0.0, on_draft: DraftHook | None = None) -> Row:
        """Prefill window `index` of a request and make its row."""

    def start_rows(self, windows: list[RowSpec], encoder_ms: float = 0.0) -> list[Row]:
        """Prefill windows that join the batch at the same step boundary together; one row each, in order."""

    def finish_row(self, row: Row, result: Any, queue_ms: float = 0.0) -> Segment:
        """The window's segment from the batch's result for its row."""

    def new_batch(self) -> Batch:
        """An empty batch."""

    def release_memory(self) -> None:
        """Return cached device memory after an out-of-memory failure."""
