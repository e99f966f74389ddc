"""A model for engine tests: the worker's `AsrModel` protocol in plain Python, no torch, every row's text a
function of (seed, window index, window length), so each caller can be checked to get its own result."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.results import Segment, StepStats, Timing


def expected_text(seed: int, index: int, samples: int) -> str:
    """The text the fake gives window `index` of a request with `seed` whose window holds `samples` samples."""
    return f"seed{seed}-window{index}-samples{samples}"


@dataclass
class FakeJob:
    steps: int
    text: str
    on_draft: object = None
    done: int = 0


@dataclass
class FakeRow:
    index: int
    start: float
    end: float
    language: str
    job: FakeJob


class FakeBatch:
    """Rows advance one step per `step()`; a row finishes after its step budget."""

    def __init__(self, model: "FakeModel") -> None:
        self.model = model
        self.rows: dict = {}

    def __len__(self) -> int:
        return len(self.rows)

    def keys(self) -> list:
        return list(self.rows)

    def add(self, key, job: FakeJob) -> None:
        self.rows[key] = job

    def remove(self, key) -> None:
        del self.rows[key]

    def step(self) -> list:
        self.model.batch_sizes.append(len(self.rows))
        if self.model.failures:
            raise self.model.failures.pop(0)
        finished = []
        for key, job in list(self.rows.items()):
            job.done += 1
            if job.on_draft is not None:
                job.on_draft(job.done, job.steps, job.text[: job.done])
            if job.done == job.steps:
                finished.append((key, job.steps))
                del self.rows[key]
        return finished


@dataclass
class FakeModel:
    name: str = "fake"
    window_seconds: float = 30.0
    languages: tuple[str, ...] = ("en", "de")
    default_steps: int = 4
    batch_sizes: list[int] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)  # raised by the next steps, in order
    released: int = 0
    prefill_groups: list[int] = field(default_factory=list)  # windows per `start_rows` call

    def encode(self, windows):
        return [len(w) for w in windows]

    def start_row(self, encoded, index, window, options, encoder_ms=0.0, on_draft=None):
        text = expected_text(options.seed, index, encoded)
        return FakeRow(index, window.start, window.end, options.language or "en",
                       FakeJob(options.steps, text, on_draft))

    def start_rows(self, windows, encoder_ms=0.0):
        self.prefill_groups.append(len(windows))
        return [self.start_row(encoded, index, window, options, encoder_ms, on_draft)
                for encoded, index, window, options, on_draft in windows]

    def finish_row(self, row, result, queue_ms=0.0):
        steps = [StepStats(step=s, ms=1.0, accepted=1, mean_entropy=0.0) for s in range(1, result + 1)]
        return Segment(row.index, row.start, row.end, row.job.text, row.language,
                       Timing(queue_ms=queue_ms, steps=steps))

    def new_batch(self):
        return FakeBatch(self)

    def release_memory(self):
        self.released += 1
