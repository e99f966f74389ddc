"""CTC compression of the projected audio: one audio slot per emitted character, in order.

The backbone's canvas holds text, one token per slot, while the projector gives a fixed number of audio slots
per second, mostly blank. Merging the slots by the projector's own CTC prediction (drop blank slots, average each
run of one repeated label) leaves the k-th audio slot holding the k-th emitted token, so canvas slot k and audio
slot k sit a constant distance apart in the prompt: the decoder copies and corrects instead of having to count
emissions to find where token k was spoken. (Averaging runs of one CTC label is the "CTC compression" of Gaido
et al., 2021, used for speech translation; here the number of slots is kept and the tail filled with zeros, so
the prompt layout does not change.)
"""

from __future__ import annotations

import torch

from app.model.ctc_path import greedy_emissions


def ctc_compress(audio: torch.Tensor, logits: torch.Tensor, blank: int) -> torch.Tensor:
    """`[B, S, H]` audio, `[B, S, V]` CTC logits -> `[B, S, H]`: the mean of each emitted run, left-aligned.

    A run is a maximal stretch of slots whose argmax is one non-blank label (a blank between two equal labels
    starts a new run, as in CTC decoding). Slots past the last run are zero. Differentiable in `audio`.
    """
    labels = logits.argmax(dim=-1)
    emitted = labels != blank
    run = torch.cumsum(greedy_emissions(labels, blank).long(), dim=1) - 1
    return compress_runs(audio, torch.where(emitted, run, torch.full_like(run, -1)))


def compress_runs(audio: torch.Tensor, run: torch.Tensor) -> torch.Tensor:
    """`[B, S, H]` audio, `[B, S]` run index per slot (-1: blank) -> `[B, S, H]`, slot k the mean of run k."""
    batch, slots, hidden = audio.shape
    emitted = run >= 0
    # Blank slots go to an extra bucket at index `slots`, which is cut off below.
    index = torch.where(emitted, run, torch.full_like(run, slots))
    sums = audio.new_zeros(batch, slots + 1, hidden).scatter_add(1, index[..., None].expand(-1, -1, hidden), audio)
    counts = audio.new_zeros(batch, slots + 1).scatter_add(1, index, emitted.to(audio.dtype))
    return sums[:, :slots] / counts[:, :slots, None].clamp(min=1)


def prompt_audio(projected: torch.Tensor, lm_head: torch.nn.Module, blank: int) -> torch.Tensor:
    """What the prompt's audio slots receive with the add-on on: the projected audio merged by its own CTC
    prediction. The one rule for training (`AsrTrainer`) and inference (`CtcStart`), so both feed the backbone
    the same thing."""
    with torch.no_grad():
        logits = lm_head(projected)  # only its argmax is used: no gradient to the head
    return ctc_compress(projected, logits, blank)


def ctc_canvas(
    audio: torch.Tensor, lm_head: torch.nn.Module, canvas_length: int, pad: int, eos: int
) -> torch.Tensor:
    """The greedy-CTC transcript of compressed audio `[B, S, H]` laid out as a canvas after its tag slot: ids
    `[B, C - 1]` for slots 1..C-1.

    Compressed slot k holds the k-th emitted character, so its argmax is the k-th token of greedy CTC decoding
    (the mean of a run of logits that all peak at one label peaks there too); then `<eos>`, then `<pad>`.
    """
    with torch.no_grad():
        slots = audio[:, : canvas_length - 1]
        emitted = slots.abs().sum(dim=-1) > 0  # compression leaves exact zeros past the last run
        count = emitted.sum(dim=1, keepdim=True)
        index = torch.arange(slots.shape[1], device=audio.device)[None]
        ends = torch.where(index == count, torch.full_like(index, eos), torch.full_like(index, pad))
        return torch.where(emitted, lm_head(slots).argmax(dim=-1), ends)
