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


def ctc_compress(audio: torch.Tensor, logits: torch.Tensor, blank: int) -> torch.Tensor:
    """`[B, S, H]` audio, `[B, S, V]` CTC logits -> `[B, S, H]`: the mean of each emitted run, left-aligned.

    A run is a maximal stretch of slots whose argmax is one non-blank label (a blank between two equal labels
    starts a new run, as in CTC decoding). Slots past the last run are zero. Differentiable in `audio`.
    """
    batch, slots, hidden = audio.shape
    labels = logits.argmax(dim=-1)
    emitted = labels != blank
    previous = torch.nn.functional.pad(labels[:, :-1], (1, 0), value=blank)
    starts = emitted & (labels != previous)
    run = torch.cumsum(starts.long(), dim=1) - 1
    # Blank slots go to an extra bucket at index `slots`, which is cut off below.
    index = torch.where(emitted, run, torch.full_like(run, slots))
    sums = audio.new_zeros(batch, slots + 1, hidden).scatter_add(1, index[..., None].expand(-1, -1, hidden), audio)
    counts = audio.new_zeros(batch, slots + 1).scatter_add(1, index, emitted.to(audio.dtype))
    return sums[:, :slots] / counts[:, :slots, None].clamp(min=1)


def prompt_audio(
    projected: torch.Tensor, lm_head: torch.nn.Module, blank: int, compression: str | None
) -> torch.Tensor:
    """What the prompt's audio slots receive under a checkpoint's `audio_compression`: the one rule for
    training (`AsrTrainer`) and inference (`AsrPipeline`), so both feed the backbone the same thing."""
    if compression != "ctc":
        return projected
    with torch.no_grad():
        logits = lm_head(projected)  # only its argmax is used: no gradient to the head
    return ctc_compress(projected, logits, blank)
