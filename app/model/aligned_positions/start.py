"""`AlignedStart`: the row start of checkpoints with an `aligned_positions` section. The projected audio fills the
prompt as under the stock start and the canvas starts from uniform noise; only the prompt's rotary positions
differ (`positions`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DiffusionGemmaForBlockDiffusion

from app.model.aligned_positions.positions import aligned_positions, canvas_start, emission_counts, hold_past_audio
from app.model.backbone import Prefill, prefill_many, prompt_embeddings
from app.model.projector import audio_slots
from app.model.prompt import Prompt
from app.model.row_start import EncodedWindow


@dataclass
class AlignedWindow(EncodedWindow):
    """A window with the greedy CTC path's emission count at each audio slot."""

    counts: torch.Tensor | None = None  # [audio_slots] long


class AlignedStart:
    """The `RowStart` that places the prompt's audio slots at the canvas positions of the tokens they speak."""

    def __init__(self, backbone: DiffusionGemmaForBlockDiffusion, blank: int, subsample: int, *,
                 hold_padding: bool = False) -> None:
        """`subsample`, the projector's, tells which slots cover a window's audio; `hold_padding`: the checkpoint's
        `past_audio` is "hold"."""
        self.backbone = backbone
        self.blank = blank
        self.subsample = subsample
        self.hold_padding = hold_padding

    @torch.no_grad()
    def encode(self, projected: torch.Tensor, num_samples: list[int]) -> list[EncodedWindow]:
        # Every slot of the window is counted, padding included, as greedy-count training counts them (the prompt
        # holds them all); a checkpoint trained on forced counts held them past the audio, and so does this.
        counts = emission_counts(self.backbone.lm_head(projected), self.blank)
        if self.hold_padding:
            counts = hold_past_audio(counts, [audio_slots(n, self.subsample, projected.shape[1]) for n in num_samples])
        return [AlignedWindow(row, counts=count) for row, count in zip(projected, counts)]

    def prefill(self, encoded: EncodedWindow, prompt: Prompt, language: str | None) -> Prefill:
        return self.prefill_many([encoded], [prompt], [language])[0]

    def prefill_many(self, encoded: list[EncodedWindow], prompts: list[Prompt],
                     languages: list[str | None]) -> list[Prefill]:
        embeds = [prompt_embeddings(self.backbone, p, e.audio) for e, p in zip(encoded, prompts)]
        starts = [int(p.audio_positions[0]) for p in prompts]
        positions = [self._positions(e, start, len(p.ids)) for e, p, start in zip(encoded, prompts, starts)]
        states = prefill_many(self.backbone, embeds, positions)
        for state, start in zip(states, starts):
            state.canvas_position = canvas_start(start)
        return states

    @staticmethod
    def _positions(encoded: EncodedWindow, audio_start: int, prompt_length: int) -> torch.Tensor:
        if not isinstance(encoded, AlignedWindow) or encoded.counts is None:
            raise TypeError("AlignedStart prefills only the windows its own encode() returned")
        return aligned_positions(encoded.counts[None], audio_start, prompt_length).to(torch.int32)
