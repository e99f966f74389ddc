"""Rendering a transcription as text, JSON, SRT or WebVTT (shared by the CLI and the HTTP API)."""

from __future__ import annotations

import json
from typing import Any

from app.model.transcript import Transcription

RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")


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


def to_json(result: Transcription, model: str) -> dict[str, Any]:
    """The `json` / `verbose_json` body of DESIGN.md §3."""
    body = result.to_dict()
    body["model"] = model
    return body


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
