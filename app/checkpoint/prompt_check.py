"""The adapter's prompt checked against the backbone's tokenizer, before any weight loads.

The tokenizer loads in seconds and the real backbone in minutes: a prompt marker the tokenizer lacks, or an
audio token whose id differs from the one the adapter was trained with, is found first.
"""

from __future__ import annotations

import re

from transformers import PreTrainedTokenizerBase

from app.checkpoint.errors import CheckpointError
from app.model.asr_config import AsrConfig
from app.model.prompt import Prompt, PromptBuilder, single_token_id

# Special-token markers written in a template: `<bos>`, `<start_of_turn>`, `<|turn>`, `<turn|>`, ...
_MARKER = re.compile(r"<\|?[A-Za-z_]+\|?>")


def check_prompt(tokenizer: PreTrainedTokenizerBase, config: AsrConfig, where: str) -> Prompt:
    """The prompt of a request without hints; `CheckpointError` (naming `where`) on any token problem."""
    try:
        for marker in _MARKER.findall(config.prompt_template):
            single_token_id(tokenizer, marker)
        for text, stated in (config.stated_token_ids or {}).items():
            found = single_token_id(tokenizer, text)
            if found != stated:
                raise ValueError(f"the adapter states id {stated} for {text!r} but the tokenizer has {found}: "
                                 "the backbone's tokenizer is not the one the adapter was trained with")
        return PromptBuilder(tokenizer, config).build()
    except ValueError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
