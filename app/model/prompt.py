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


def single_token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int:
    """The id of `token` as one vocabulary entry; ValueError when the tokenizer has no such single token."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or (token_id == tokenizer.unk_token_id and token != tokenizer.unk_token):
        raise ValueError(f"tokenizer has no single token {token!r}")
    return token_id


class PromptBuilder:
    """Renders the adapter's prompt template to ids with `audio_slots` placeholder tokens."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: AsrConfig) -> None:
        self.tokenizer = tokenizer
        self.config = config
        self.audio_id = single_token_id(tokenizer, config.audio_token)
        self.audio_start = [single_token_id(tokenizer, config.audio_start_token)] if config.audio_start_token else []
        self.audio_end = [single_token_id(tokenizer, config.audio_end_token)] if config.audio_end_token else []

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
        head = self._encode(before.format(hint=hint)) + self.audio_start
        tail = self.audio_end + self._encode(after.format(hint=hint))
        ids = torch.tensor(head + [self.audio_id] * self.config.audio_slots + tail, dtype=torch.long)
        return Prompt(ids=ids, audio_positions=torch.arange(len(head), len(head) + self.config.audio_slots))

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids
