"""The adapter's prompt rendered to token ids, with `audio_slots` placeholder tokens for the projected audio."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from app.model.asr_config import AsrConfig


@dataclass(frozen=True)
class Prompt:
    """Token ids of one prompt and where its audio slots are; the canvas follows the prompt's last position."""

    ids: torch.Tensor  # [L] long
    audio_positions: torch.Tensor  # [audio_slots] long


class PromptBuilder:
    """Renders the adapter's prompt template to ids with `audio_slots` placeholder tokens."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: AsrConfig) -> None:
        self.tokenizer = tokenizer
        self.config = config
        self.audio_id = tokenizer.convert_tokens_to_ids(config.audio_token)
        if self.audio_id is None or self.audio_id == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no single token for the audio placeholder {config.audio_token!r}")

    def hint(self, language: str | None, prompt: str | None) -> str:
        """The optional language and context text appended to the instruction."""
        text = ""
        if language:
            text += self.config.language_hint.format(language=language)
        if prompt:
            text += self.config.context_hint.format(prompt=prompt)
        return text

    def build(self, language: str | None = None, prompt: str | None = None) -> Prompt:
        """Token ids for one request; the template's text is tokenized around the audio placeholder."""
        before, after = self.config.prompt_template.split("{audio}")
        hint = self.hint(language, prompt)
        head = self._encode(before.format(hint=hint))
        tail = self._encode(after.format(hint=hint))
        ids = torch.tensor(head + [self.audio_id] * self.config.audio_slots + tail, dtype=torch.long)
        return Prompt(ids=ids, audio_positions=torch.arange(len(head), len(head) + self.config.audio_slots))

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids
