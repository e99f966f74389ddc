"""How a window's projected audio enters the prompt and what a row's canvas starts from: one strategy object,
chosen once when the model is loaded, so the pipeline has no branches for it.

`NoiseStart` is the real model's way (the projected audio as is, a canvas of uniform noise); the embedded demo's
CTC-start add-on (`app.model.ctc_start.CtcStart`) is the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
from transformers import DiffusionGemmaForBlockDiffusion

from app.model.backbone import Prefill, prefill, prefill_many, prompt_embeddings
from app.model.prompt import Prompt


@dataclass
class EncodedWindow:
    """One window after the audio path, as a row start hands it to its own `prefill` (a start that needs more
    of the window, such as the add-on, returns a subclass)."""

    audio: torch.Tensor  # [audio_slots, hidden] the prompt's audio embeddings
    # The projector output over the window's real slots (the CTC head's input; the pipeline sets it).
    slots: torch.Tensor | None = field(default=None, kw_only=True)


class RowStart(Protocol):
    """The audio's way into the prompt and the canvas's starting point."""

    def encode(self, projected: torch.Tensor, num_samples: list[int]) -> list[EncodedWindow]:
        """Projector output `[B, audio_slots, hidden]` of windows of `num_samples` samples -> one per window."""

    def prefill(self, encoded: EncodedWindow, prompt: Prompt, language: str | None) -> Prefill:
        """The backbone's KV cache for one window's prompt (and the canvas start, where the strategy has one)."""

    def prefill_many(self, encoded: list[EncodedWindow], prompts: list[Prompt],
                     languages: list[str | None]) -> list[Prefill]:
        """`prefill` for several windows at once (rows that join the batch at the same step boundary)."""


class NoiseStart:
    """The stock start: the projected audio fills the prompt's audio slots, the canvas starts as uniform noise."""

    def __init__(self, backbone: DiffusionGemmaForBlockDiffusion) -> None:
        self.backbone = backbone

    def encode(self, projected: torch.Tensor, num_samples: list[int]) -> list[EncodedWindow]:
        return [EncodedWindow(row) for row in projected]

    def prefill(self, encoded: EncodedWindow, prompt: Prompt, language: str | None) -> Prefill:
        return prefill(self.backbone, prompt_embeddings(self.backbone, prompt, encoded.audio))

    def prefill_many(self, encoded: list[EncodedWindow], prompts: list[Prompt],
                     languages: list[str | None]) -> list[Prefill]:
        embeds = [prompt_embeddings(self.backbone, p, e.audio) for e, p in zip(encoded, prompts)]
        return prefill_many(self.backbone, embeds)
