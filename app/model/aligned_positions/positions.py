"""Rotary positions that put each audio slot beside the canvas slot of the token it speaks.

A small backbone trained from scratch learns to read the audio in order only slowly: to write canvas slot k it
must find the k-th spoken token among the audio slots, a count no attention head holds (the transcripts of
such a decoder drift from the audio along the canvas). Here the count is given. The greedy CTC path of the
projector's output through the tied lm_head (the head the CTC loss trains) numbers the tokens it emits; an
audio slot takes the rotary position of the canvas slot that holds the last token emitted up to it, so the
slot emitting the k-th text token and canvas slot k + 1 (slot 0 holds the language tag) share one position,
and a head that attends at relative distance 0 reads the token's own audio. The canvas still starts from
uniform noise and the decoder still writes every token: the positions only say where to listen, the way a
duration model places a non-autoregressive decoder's queries.
"""

from __future__ import annotations

import torch

from app.model.ctc_path import greedy_emissions


def emission_counts(logits: torch.Tensor, blank: int) -> torch.Tensor:
    """`[B, S]` tokens the greedy CTC path of per-slot `logits` `[B, S, V]` has emitted up to each slot (inclusive).

    The soft-capping the lm_head's logits get is monotonic, so it does not change the path and is not applied.
    """
    return greedy_emissions(logits.argmax(dim=-1), blank).long().cumsum(dim=1)


def hold_past_audio(counts: torch.Tensor, slots: list[int]) -> torch.Tensor:
    """`counts` `[B, S]` with every slot past a row's first `slots[row]` (those covering its audio) holding the
    count of its last audio slot: whatever the head emits in the window's silent padding is not speech. Training
    with forced counts holds them the same way (`app.training.aligned_counts`)."""
    held = counts.clone()
    for row, used in enumerate(slots):
        if 0 < used < counts.shape[1]:
            held[row, used:] = counts[row, used - 1]
    return held


def aligned_positions(counts: torch.Tensor, audio_start: int, prompt_length: int) -> torch.Tensor:
    """`[B, L]` rotary positions of prompts whose `S` audio slots start at index `audio_start`.

    The tokens before the audio keep their indices; audio slot j sits at `audio_start + counts[j]`; the tokens
    after the audio follow the last count, one apart. The canvas's slot 0 sits at `audio_start`
    (`canvas_start`): before any emission, audio slots share the language tag's position.
    """
    batch, slots = counts.shape
    device = counts.device
    head = torch.arange(audio_start, device=device).expand(batch, -1)
    audio = audio_start + counts
    tail_length = prompt_length - audio_start - slots
    tail = audio[:, -1:] + 1 + torch.arange(tail_length, device=device)
    return torch.cat([head, audio, tail], dim=1)


def canvas_start(audio_start: int) -> int:
    """The rotary position of canvas slot 0 under aligned positions."""
    return audio_start
