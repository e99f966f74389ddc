"""The languages the service knows, by ISO-639-1 code (torch-free: the API validates against it)."""

from __future__ import annotations

SUPPORTED_LANGUAGES: tuple[str, ...] = ("en", "de", "fr", "es", "hi", "zh")

# Written without spaces between words: segments join without a separator, word lists end words by longest match.
SPACELESS_LANGUAGES: tuple[str, ...] = ("zh",)

UNKNOWN_LANGUAGE = "unknown"
"""What a segment's language is when neither a hint, the model's tag nor the text tells it."""
