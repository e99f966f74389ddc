"""Reading and writing `asr_config.json`, including files written before the CTC-start options moved into their
own `ctc_start` section (their flat keys are translated, so older checkpoints keep loading)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from app.checkpoint.errors import CheckpointError
from app.checkpoint.layout import ASR_CONFIG_FILE
from app.model.asr_config import AsrConfig

# Flat keys of the earlier format and their names inside `ctc_start`.
_LEGACY_CTC_KEYS = {
    "canvas_init": "canvas", "ctc_decoding": "decoding", "lexicon_beam_width": "beam_width",
    "lexicon_lm_weight": "lm_weight", "lexicon_word_bonus": "word_bonus", "lexicon_oov_penalty": "oov_penalty",
    "lexicon_token_bonus": "token_bonus", "lexicon_languages": "languages", "lexicon_language_doubt": "language_doubt",
}
# Removed options, and the only value each may still carry.
_REMOVED = {"canvas_positions": "after_prompt", "canvas_prior": None}


def read_asr_config(adapter: Path) -> AsrConfig:
    """The adapter's `asr_config.json`; a bad value or unknown key raises `CheckpointError` naming the file."""
    path = adapter / ASR_CONFIG_FILE
    try:
        data = json.loads(path.read_text())
        return AsrConfig.from_dict(_upgrade(data))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def write_asr_config(config: AsrConfig, adapter: Path) -> None:
    """Write `asr_config.json` into the adapter directory."""
    (adapter / ASR_CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2, ensure_ascii=False) + "\n")


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """The earlier flat format in the current one; the current format passes unchanged."""
    if "audio_compression" not in data and not (set(data) & (set(_LEGACY_CTC_KEYS) | set(_REMOVED))):
        return data
    data = dict(data)
    for key, kept in _REMOVED.items():
        value = data.pop(key, kept)
        if value != kept:
            raise ValueError(f"{key} {value!r} is no longer supported (measured no better than {kept!r})")
    compression = data.pop("audio_compression", None)
    legacy = {new: data.pop(old) for old, new in _LEGACY_CTC_KEYS.items() if old in data}
    if compression == "ctc":
        data["ctc_start"] = {"canvas": "noise", **legacy}
    elif compression is not None:
        raise ValueError(f"audio_compression must be 'ctc' or null, got {compression!r}")
    elif legacy.get("canvas", "noise") != "noise" or legacy.get("decoding", "greedy") != "greedy":
        raise ValueError("a CTC start (canvas_init 'ctc', ctc_decoding 'lexicon') needs audio_compression 'ctc'")
    return data
