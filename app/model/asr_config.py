"""The adapter's decoding contract (`asr_config.json`): how audio enters the prompt and how the canvas is decoded.

Pure data: `app.checkpoint` reads and writes the file. Every field here is on the real model's path; the
embedded demo's CTC-start add-on keeps its own options in the nested `ctc_start` section, which only
`app.model.ctc_start` reads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from app.languages import SUPPORTED_LANGUAGES

# The fixed part of the `aligned_positions` section: audio slots counted along the projector's greedy CTC path.
ALIGNED_POSITIONS: dict[str, str] = {"counts": "greedy_ctc"}
# What those counts do past the window's audio, in its silent padding: "count" on ("greedy" training counted
# there), "hold" at the last audio slot's count ("forced" training held them). Absent: "count".
PAST_AUDIO = ("count", "hold")


@dataclass(frozen=True)
class AsrConfig:
    """Prompt format, canvas and sampling defaults of one trained adapter."""

    # The prompt; `{audio}` becomes `audio_slots` copies of `audio_token`, `{hint}` the language/context hints.
    prompt_template: str = "<bos><start_of_turn>user\n{audio}\nTranscribe the audio.{hint}<end_of_turn>\n<start_of_turn>model\n"
    audio_token: str = "<audio>"
    # Tokens around the audio slots (Gemma-4 writes `<|audio>` + slots + `<audio|>`); None: none.
    audio_start_token: str | None = None
    audio_end_token: str | None = None
    # Token ids the adapter itself states (e.g. its config's `audio_token_id`), by token text: each must be the
    # tokenizer's id for that text, or the adapter was trained with another tokenizer.
    stated_token_ids: dict[str, int] | None = None
    audio_slots: int = 188
    language_hint: str = " Language: {language}."
    context_hint: str = " Context: {prompt}"
    canvas_length: int = 256
    default_steps: int = 8
    languages: tuple[str, ...] = SUPPORTED_LANGUAGES
    # How the model writes its language tag at the start of the canvas (e.g. "<|{lang}|>"), or None if it does not.
    language_tag_format: str | None = None
    # Entropy-bound sampler and schedule (the stock DiffusionGemma defaults).
    entropy_bound: float = 0.1
    t_min: float = 0.4
    t_max: float = 0.8
    stability_threshold: int = 1
    confidence_threshold: float = 0.005
    # The backbone's final logit soft-capping for this adapter; None: the backbone config's own.
    final_logit_softcapping: float | None = None
    # The embedded demo's add-on (`app.model.ctc_start`), as written in the file; None on the stock path.
    ctc_start: dict[str, Any] | None = None
    # The embedded demo's aligned prompt positions (`app.model.aligned_positions`): {"counts": "greedy_ctc"} when
    # on; None on the stock path.
    aligned_positions: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.languages) - set(SUPPORTED_LANGUAGES))
        if unknown:
            raise ValueError(f"languages {unknown} are not among the supported {list(SUPPORTED_LANGUAGES)}")
        if self.default_steps < 1:
            raise ValueError(f"default_steps must be at least 1, got {self.default_steps}")
        if self.aligned_positions is not None:
            base = {k: v for k, v in self.aligned_positions.items() if k != "past_audio"}
            if base != ALIGNED_POSITIONS or self.past_audio not in PAST_AUDIO:
                raise ValueError(f"aligned_positions must be {ALIGNED_POSITIONS} with past_audio one of "
                                 f"{PAST_AUDIO} (or left out), or absent, got {self.aligned_positions}")
            if self.ctc_start is not None:
                raise ValueError("aligned_positions and ctc_start are two row starts: a checkpoint has one")

    @property
    def past_audio(self) -> str:
        """The aligned counts' rule past the window's audio (`PAST_AUDIO`)."""
        return (self.aligned_positions or {}).get("past_audio", PAST_AUDIO[0])

    def language_tag(self, lang: str) -> str | None:
        """The tag token text for `lang`, when the checkpoint's format defines one."""
        return self.language_tag_format.format(lang=lang) if self.language_tag_format else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of `asr_config.json` (the add-on's section only when it is on)."""
        data = asdict(self)
        data["languages"] = list(self.languages)
        for key in ("ctc_start", "aligned_positions", "audio_start_token", "audio_end_token", "stated_token_ids",
                    "final_logit_softcapping"):
            if data[key] is None:  # absent keys read back as None; files stay as they were
                del data[key]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AsrConfig":
        """From the JSON object; unknown keys are an error so a typo does not pass silently."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown keys {unknown}")
        values = dict(data)
        if "languages" in values:
            values["languages"] = tuple(values["languages"])
        return cls(**values)
