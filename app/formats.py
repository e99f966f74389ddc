"""A transcription as the API and the CLI answer it: json / verbose_json bodies, text, SRT and WebVTT."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

from app.results import Segment, Timing, TokenLogprob, Transcription, Word

RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")


def timing_dict(timing: Timing) -> dict[str, Any]:
    """The `timing` object of the API (DESIGN.md §3)."""
    return {
        "queue_ms": round(timing.queue_ms, 3),
        "audio_decode_ms": round(timing.audio_decode_ms, 3),
        "encoder_ms": round(timing.encoder_ms, 3),
        "prefill_ms": round(timing.prefill_ms, 3),
        "denoise_ms": round(timing.denoise_ms, 3),
        "total_ms": round(timing.total_ms, 3),
        "batch_size": timing.batch_size,
        "steps_used": timing.steps_used,
        "steps": [
            {"step": s.step, "ms": round(s.ms, 3), "accepted": s.accepted, "mean_entropy": round(s.mean_entropy, 6)}
            for s in timing.steps
        ],
    }


def segment_dict(segment: Segment) -> dict[str, Any]:
    """One entry of `segments`."""
    return {
        "id": segment.id,
        "start": round(segment.start, 3),
        "end": round(segment.end, 3),
        "text": segment.text,
        "language": segment.language,
        "timing": timing_dict(segment.timing),
    }


@dataclass(frozen=True)
class Extras:
    """What a request asked for beyond the text: `include[]=logprobs`, `timestamp_granularities[]=word`."""

    logprobs: bool = False
    words: bool = False


def logprobs_list(entries: list[TokenLogprob]) -> list[dict[str, Any]]:
    """OpenAI's `logprobs`: `[{token, logprob, bytes}]`."""
    return [{"token": e.token, "logprob": round(e.logprob, 6), "bytes": list(e.bytes)} for e in entries]


def all_logprobs(result: Transcription) -> list[TokenLogprob]:
    """Every token's entry of the transcript, window by window."""
    return [entry for segment in result.segments for entry in segment.logprobs]


def words_list(words: list[Word]) -> list[dict[str, Any]]:
    """OpenAI's `words`: `[{word, start, end}]`."""
    return [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3)} for w in words]


def _add_extras(body: dict[str, Any], result: Transcription, extras: Extras) -> dict[str, Any]:
    if extras.logprobs:
        body["logprobs"] = logprobs_list(all_logprobs(result))
    if extras.words:
        body["words"] = words_list([w for s in result.segments for w in s.words])
    return body


def to_json(result: Transcription, model: str, extras: Extras = Extras()) -> dict[str, Any]:
    """The `json` body of DESIGN.md §3 (OpenAI's `text`, `logprobs` when asked, and this project's extensions)."""
    body = {
        "text": result.text,
        "language": result.language,
        "duration": round(result.duration, 3),
        "segments": [segment_dict(s) for s in result.segments],
        "timing": timing_dict(result.timing),
        "model": model,
    }
    return _add_extras(body, result, extras)


def compression_ratio(text: str) -> float:
    """Whisper's repetition check: UTF-8 length over zlib-compressed length (0.0 for no text)."""
    data = text.encode("utf-8")
    return round(len(data) / len(zlib.compress(data)), 6) if data else 0.0


def verbose_segment_dict(segment: Segment) -> dict[str, Any]:
    """One segment of `verbose_json` in OpenAI's shape, plus `language` and `timing`.

    `seek` is the window's start in 10 ms mel frames; `temperature` is 0.0 because the final canvas is the
    final step's argmax; `no_speech_prob` is voice activity detection's verdict on the window (1.0: no speech
    found, not denoised; 0.0: speech)."""
    return {
        "id": segment.id,
        "seek": int(round(segment.start * 100)),
        "start": round(segment.start, 3),
        "end": round(segment.end, 3),
        "text": segment.text,
        "tokens": list(segment.tokens),
        "temperature": 0.0,
        "avg_logprob": round(segment.avg_logprob, 6),
        "compression_ratio": compression_ratio(segment.text),
        "no_speech_prob": 0.0 if segment.speech else 1.0,
        "language": segment.language,
        "timing": timing_dict(segment.timing),
    }


def to_verbose_json(result: Transcription, model: str, extras: Extras = Extras()) -> dict[str, Any]:
    """The `verbose_json` body: OpenAI's shape (`task, language, duration, text, segments, words, usage`) plus
    `timing`, `model` and, when asked, `logprobs`."""
    body = {
        "task": "transcribe",
        "language": result.language,
        "duration": round(result.duration, 3),
        "text": result.text,
        "segments": [verbose_segment_dict(s) for s in result.segments],
        "usage": {"type": "duration", "seconds": round(result.duration, 3)},
        "timing": timing_dict(result.timing),
        "model": model,
    }
    return _add_extras(body, result, extras)


def json_body(result: Transcription, fmt: str, model: str, extras: Extras = Extras()) -> dict[str, Any]:
    """The body of `json` or `verbose_json`."""
    return (to_verbose_json if fmt == "verbose_json" else to_json)(result, model, extras)


def _clock(seconds: float, separator: str) -> str:
    millis = int(round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_srt(result: Transcription) -> str:
    """SubRip cues, one per segment with text."""
    cues = [
        f"{n}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text}\n"
        for n, s in enumerate((s for s in result.segments if s.text), start=1)
    ]
    return "\n".join(cues)


def to_vtt(result: Transcription) -> str:
    """WebVTT cues, one per segment with text."""
    cues = [f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text}\n" for s in result.segments if s.text]
    return "WEBVTT\n\n" + "\n".join(cues)


def render(result: Transcription, fmt: str, model: str, extras: Extras = Extras()) -> str:
    """The response body for `fmt` as a string."""
    if fmt == "text":
        return result.text + "\n"
    if fmt == "srt":
        return to_srt(result)
    if fmt == "vtt":
        return to_vtt(result)
    if fmt in ("json", "verbose_json"):
        return json.dumps(json_body(result, fmt, model, extras), ensure_ascii=False)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(RESPONSE_FORMATS)}")
