"""Stage 5: canvas tokens to text and language, and the result types every caller shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedTokenizerBase

from app.model.asr_config import SUPPORTED_LANGUAGES, AsrConfig
from app.model.denoiser import StepStats

UNKNOWN_LANGUAGE = "unknown"


class LanguageIdentifier:
    """Text language identification among the six supported languages (lingua), built on first use."""

    def __init__(self) -> None:
        self._detector = None

    def _build(self):
        from lingua import Language, LanguageDetectorBuilder

        languages = [Language.ENGLISH, Language.GERMAN, Language.FRENCH, Language.SPANISH, Language.HINDI,
                     Language.CHINESE]
        return LanguageDetectorBuilder.from_languages(*languages).with_preloaded_language_models().build()

    def identify(self, text: str) -> str:
        """ISO-639-1 code of `text`, or "unknown" when there are no letters or lingua is unsure."""
        if not any(ch.isalpha() for ch in text):
            return UNKNOWN_LANGUAGE
        if self._detector is None:
            self._detector = self._build()
        found = self._detector.detect_language_of(text)
        if found is None:
            return UNKNOWN_LANGUAGE
        code = found.iso_code_639_1.name.lower()
        return code if code in SUPPORTED_LANGUAGES else UNKNOWN_LANGUAGE


class TranscriptDecoder:
    """Strips special and pad tokens from a final canvas and settles the segment's language."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: AsrConfig) -> None:
        self.tokenizer = tokenizer
        self.eos_id = tokenizer.eos_token_id
        self.special_ids = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
        self.vocab_limit = len(tokenizer)
        self.tag_ids: dict[int, str] = {}
        for lang in config.languages:
            tag = config.language_tag(lang)
            if tag is not None:
                tag_id = tokenizer.convert_tokens_to_ids(tag)
                if tag_id is not None and tag_id != tokenizer.unk_token_id:
                    self.tag_ids[tag_id] = lang
        self.identifier = LanguageIdentifier()

    def text_tokens(self, tokens: list[int]) -> list[int]:
        """Tokens up to the first end-of-sequence, without special, pad or out-of-vocabulary ids."""
        if self.eos_id in tokens:
            tokens = tokens[: tokens.index(self.eos_id)]
        return [t for t in tokens if t not in self.special_ids and t < self.vocab_limit]

    def model_language(self, tokens: list[int]) -> str | None:
        """The language tag the model wrote first, when the checkpoint's format defines tags."""
        for token in tokens:
            if token == self.eos_id:
                break
            if token in self.tag_ids:
                return self.tag_ids[token]
        return None

    def decode(self, tokens: list[int], language_hint: str | None) -> tuple[str, str]:
        """(text, language): the hint wins, then the model's tag, then text language identification."""
        text = self.tokenizer.decode(self.text_tokens(tokens), skip_special_tokens=True).strip()
        if language_hint:
            return text, language_hint
        tagged = self.model_language(tokens)
        if tagged is not None:
            return text, tagged
        return text, self.identifier.identify(text)


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
        return len(self.steps)

    def to_dict(self) -> dict[str, Any]:
        """The `timing` object of the API (DESIGN.md §3)."""
        return {
            "queue_ms": round(self.queue_ms, 3),
            "audio_decode_ms": round(self.audio_decode_ms, 3),
            "encoder_ms": round(self.encoder_ms, 3),
            "prefill_ms": round(self.prefill_ms, 3),
            "denoise_ms": round(self.denoise_ms, 3),
            "total_ms": round(self.total_ms, 3),
            "batch_size": self.batch_size,
            "steps_used": self.steps_used,
            "steps": [
                {"step": s.step, "ms": round(s.ms, 3), "accepted": s.accepted, "mean_entropy": round(s.mean_entropy, 6)}
                for s in self.steps
            ],
        }

    @classmethod
    def total(cls, parts: list["Timing"]) -> "Timing":
        """Sum of the segments' timings (steps concatenated, largest batch)."""
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "text": self.text,
            "language": self.language,
            "timing": self.timing.to_dict(),
        }


@dataclass
class Transcription:
    """The whole result for one audio input."""

    text: str
    language: str
    duration: float
    segments: list[Segment]
    timing: Timing

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "language": self.language,
            "duration": round(self.duration, 3),
            "segments": [s.to_dict() for s in self.segments],
            "timing": self.timing.to_dict(),
        }


def silent_segment(index: int, window, language_hint: str | None) -> Segment:
    """The segment of a window in which voice activity detection found no speech: not denoised, no text."""
    return Segment(index, window.start, window.end, "", language_hint or UNKNOWN_LANGUAGE, Timing(batch_size=0))


def join_segments(segments: list[Segment], duration: float, audio_decode_ms: float = 0.0) -> Transcription:
    """Combine window results: texts joined, the most common segment language, timings summed."""
    spoken = [s for s in segments if s.text]
    separator = "" if spoken and all(s.language == "zh" for s in spoken) else " "
    text = separator.join(s.text for s in spoken)
    languages = [s.language for s in spoken if s.language != UNKNOWN_LANGUAGE]
    language = max(set(languages), key=languages.count) if languages else (
        segments[0].language if segments else UNKNOWN_LANGUAGE)
    timing = Timing.total([s.timing for s in segments])
    timing.audio_decode_ms = audio_decode_ms
    timing.total_ms += audio_decode_ms
    return Transcription(text=text, language=language, duration=duration, segments=segments, timing=timing)
