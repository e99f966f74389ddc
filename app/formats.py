"""A transcription as the API and the CLI answer it: json / verbose_json bodies, text, SRT and WebVTT."""

from __future__ import annotations

import json
from typing import Any

from app.results import Segment, Timing, Transcription

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


def to_json(result: Transcription, model: str) -> dict[str, Any]:
    """The `json` / `verbose_json` body of DESIGN.md §3."""
    return {
        "text": result.text,
        "language": result.language,
        "duration": round(result.duration, 3),
        "segments": [segment_dict(s) for s in result.segments],
        "timing": timing_dict(result.timing),
        "model": model,
    }


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


def render(result: Transcription, fmt: str, model: str) -> str:
    """The response body for `fmt` as a string."""
    if fmt == "text":
        return result.text + "\n"
    if fmt == "srt":
        return to_srt(result)
    if fmt == "vtt":
        return to_vtt(result)
    if fmt in ("json", "verbose_json"):
        return json.dumps(to_json(result, model), ensure_ascii=False)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(RESPONSE_FORMATS)}")
