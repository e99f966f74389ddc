"""What a transcription request asks for and what it gets back (torch-free, shared by every layer).

JSON shaping of these types lives in `app.formats`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.languages import SPACELESS_LANGUAGES, UNKNOWN_LANGUAGE


@dataclass(frozen=True)
class DecodeOptions:
    """Resolved per-request choices that change the result (`app.request_options` fills in the defaults)."""

    steps: int
    language: str | None = None
    prompt: str | None = None
    seed: int = 0
    word_timestamps: bool = False  # align the final text on the CTC head (`timestamp_granularities[]=word`)


@dataclass(frozen=True)
class StepStats:
    """One executed denoising step as one row saw it."""

    step: int
    ms: float
    accepted: int
    mean_entropy: float


@dataclass
class Timing:
    """Where the time of one segment (or, summed, one request) went."""

    queue_ms: float = 0.0
    audio_decode_ms: float = 0.0
    encoder_ms: float = 0.0
    prefill_ms: float = 0.0
    denoise_ms: float = 0.0
    total_ms: float = 0.0
    batch_size: int = 1
    steps: list[StepStats] = field(default_factory=list)

    @property
    def steps_used(self) -> int:
        """Denoising steps executed (summed over windows for a request)."""
        return len(self.steps)

    @classmethod
    def total(cls, parts: list["Timing"]) -> "Timing":
        """Sum of the segments' timings (steps concatenated, largest batch, longest queue wait)."""
        out = cls(batch_size=max((p.batch_size for p in parts), default=1))
        for p in parts:
            out.queue_ms = max(out.queue_ms, p.queue_ms)
            out.audio_decode_ms += p.audio_decode_ms
            out.encoder_ms += p.encoder_ms
            out.prefill_ms += p.prefill_ms
            out.denoise_ms += p.denoise_ms
            out.total_ms += p.total_ms
            out.steps.extend(p.steps)
        return out


@dataclass(frozen=True)
class TokenLogprob:
    """One token of a final transcript with its log-probability under the model's distribution at the final
    denoising step (OpenAI's `logprobs` entry)."""

    token: str
    logprob: float
    bytes: tuple[int, ...]


@dataclass(frozen=True)
class Word:
    """One word (one character for spaceless languages) with its time span on the input's clock."""

    word: str
    start: float
    end: float


@dataclass
class Segment:
    """One window of audio and its transcript, offsets in seconds on the input's clock."""

    id: int
    start: float
    end: float
    text: str
    language: str
    timing: Timing
    tokens: list[int] = field(default_factory=list)  # the transcript's token ids
    logprobs: list[TokenLogprob] = field(default_factory=list)  # one per entry of `tokens`
    words: list[Word] = field(default_factory=list)  # filled only when word timestamps were asked for
    speech: bool = True  # False: voice activity detection found no speech, the window was not denoised

    @property
    def avg_logprob(self) -> float:
        """Mean token log-probability (0.0 for a segment without tokens)."""
        return sum(t.logprob for t in self.logprobs) / len(self.logprobs) if self.logprobs else 0.0


@dataclass
class Transcription:
    """The whole result for one audio input."""

    text: str
    language: str
    duration: float
    segments: list[Segment]
    timing: Timing


def silent_segment(index: int, start: float, end: float, language_hint: str | None) -> Segment:
    """The segment of a window in which voice activity detection found no speech: not denoised, no text."""
    return Segment(index, start, end, "", language_hint or UNKNOWN_LANGUAGE, Timing(batch_size=0), speech=False)


def separator(before: Segment, after: Segment) -> str:
    """What goes between two consecutive spoken segments: nothing between two in a spaceless language, else a
    space. Decided by the pair alone, so a prefix of the joined text never changes as later windows finish."""
    spaceless = before.language in SPACELESS_LANGUAGES and after.language in SPACELESS_LANGUAGES
    return "" if spaceless else " "


def join_texts(segments: list[Segment]) -> str:
    """The transcript of consecutive segments (silent and empty ones skipped)."""
    spoken = [s for s in segments if s.text]
    return "".join((separator(a, b) if a is not None else "") + b.text for a, b in zip([None, *spoken], spoken))


class CommittedText:
    """The part of a request's transcript that can no longer change, grown as its windows finish.

    Windows finish in any order; a window's text is committed once it and every window before it are done.
    `add` returns what the committed text gained (its separator included), so the gains concatenate to the
    final `join_texts` of all windows.
    """

    def __init__(self) -> None:
        self._done: dict[int, Segment] = {}
        self._next = 0
        self._last_spoken: Segment | None = None

    def add(self, segment: Segment) -> list[tuple[str, Segment]]:
        """Record a finished window; returns the newly committed (text, segment) pieces, in order (a window
        already committed, as after a retry, adds nothing)."""
        if segment.id >= self._next:
            self._done[segment.id] = segment
        pieces = []
        while self._next in self._done:
            current = self._done.pop(self._next)
            self._next += 1
            if not current.text:
                continue
            lead = separator(self._last_spoken, current) if self._last_spoken is not None else ""
            pieces.append((lead + current.text, current))
            self._last_spoken = current
        return pieces


def join_segments(segments: list[Segment], duration: float, audio_decode_ms: float = 0.0) -> Transcription:
    """Combine window results: texts joined, the most common segment language, timings summed."""
    spoken = [s for s in segments if s.text]
    text = join_texts(segments)
    languages = [s.language for s in spoken if s.language != UNKNOWN_LANGUAGE]
    # Ties go to the language heard first (a set's order would change from one process to the next).
    language = max(dict.fromkeys(languages), key=languages.count) if languages else (
        segments[0].language if segments else UNKNOWN_LANGUAGE)
    timing = Timing.total([s.timing for s in segments])
    timing.audio_decode_ms = audio_decode_ms
    timing.total_ms += audio_decode_ms
    return Transcription(text=text, language=language, duration=duration, segments=segments, timing=timing)
