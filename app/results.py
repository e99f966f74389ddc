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


@dataclass
class Segment:
    """One window of audio and its transcript, offsets in seconds on the input's clock."""

    id: int
    start: float
    end: float
    text: str
    language: str
    timing: Timing


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
    return Segment(index, start, end, "", language_hint or UNKNOWN_LANGUAGE, Timing(batch_size=0))


def join_segments(segments: list[Segment], duration: float, audio_decode_ms: float = 0.0) -> Transcription:
    """Combine window results: texts joined, the most common segment language, timings summed."""
    spoken = [s for s in segments if s.text]
    separator = "" if spoken and all(s.language in SPACELESS_LANGUAGES for s in spoken) else " "
    text = separator.join(s.text for s in spoken)
    languages = [s.language for s in spoken if s.language != UNKNOWN_LANGUAGE]
    # Ties go to the language heard first (a set's order would change from one process to the next).
    language = max(dict.fromkeys(languages), key=languages.count) if languages else (
        segments[0].language if segments else UNKNOWN_LANGUAGE)
    timing = Timing.total([s.timing for s in segments])
    timing.audio_decode_ms = audio_decode_ms
    timing.total_ms += audio_decode_ms
    return Transcription(text=text, language=language, duration=duration, segments=segments, timing=timing)
