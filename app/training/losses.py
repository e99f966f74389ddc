"""The three training losses (DESIGN.md §1) and the target layouts they share.

- Uniform-diffusion loss: a random fraction t ~ U(0, 1) of each clean canvas is replaced by uniformly random
  vocabulary ids; the decoder predicts the clean canvas at every position. Content positions (language tag,
  text, <eos>) weigh 1, the <pad> tail weighs `pad_weight` (it is easy and would otherwise dominate the mean).
- Autoregressive auxiliary loss: the backbone's causal encoder continues after the prompt over the target
  (teacher forcing); next-token cross-entropy on [tag, text..., <eos>].
- CTC loss on the projector output through the backbone's lm_head (blank = <pad> = 0); targets are the text
  tokens without the language tag; input lengths are the audio slots covering the real audio.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch.nn import functional as F

from app.model.ctc_path import greedy_emissions

IGNORE = -100


@dataclass
class Targets:
    """Token targets of one batch."""

    canvas: torch.Tensor  # [B, C] long: tag, text, eos, pad...
    content: torch.Tensor  # [B, C] bool: tag/text/eos positions
    ar_inputs: torch.Tensor  # [B, T] long: tag, text (pad-filled), fed to the causal encoder after the prompt
    ar_labels: torch.Tensor  # [B, T + 1] long: tag, text, eos, IGNORE... (first predicted from the prompt's end)
    ctc: torch.Tensor  # [B, S] long: text tokens, pad-filled
    ctc_lengths: torch.Tensor  # [B] long

    def to(self, device: torch.device) -> Targets:
        return Targets(*(getattr(self, f.name).to(device) for f in fields(self)))


def build_targets(
    text_ids: list[list[int]], tag_ids: list[int], eos_id: int, pad_id: int, canvas_length: int
) -> Targets:
    """Targets for each row's text tokens (without specials) and language tag id."""
    batch = len(text_ids)
    longest = max(len(t) for t in text_ids)
    if longest + 2 > canvas_length:
        raise ValueError(f"a target of {longest} text tokens does not fit the canvas of {canvas_length}")
    canvas = torch.full((batch, canvas_length), pad_id, dtype=torch.long)
    content = torch.zeros((batch, canvas_length), dtype=torch.bool)
    ar_inputs = torch.full((batch, longest + 1), pad_id, dtype=torch.long)
    ar_labels = torch.full((batch, longest + 2), IGNORE, dtype=torch.long)
    ctc = torch.full((batch, max(longest, 1)), pad_id, dtype=torch.long)
    for row, (ids, tag) in enumerate(zip(text_ids, tag_ids)):
        seq = [tag, *ids, eos_id]
        canvas[row, : len(seq)] = torch.tensor(seq)
        content[row, : len(seq)] = True
        ar_inputs[row, : len(ids) + 1] = torch.tensor([tag, *ids])
        ar_labels[row, : len(seq)] = torch.tensor(seq)
        if ids:
            ctc[row, : len(ids)] = torch.tensor(ids)
    lengths = torch.tensor([len(t) for t in text_ids], dtype=torch.long)
    return Targets(canvas, content, ar_inputs, ar_labels, ctc, lengths)


def noise_levels(batch: int, exponent: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-row corrupted fractions `t = u ** exponent`, u ~ U(0, 1) (exponent 1: uniform; below 1: noisier)."""
    return torch.rand(batch, generator=generator) ** exponent


def corrupt(
    canvas: torch.Tensor, vocab_size: int, generator: torch.Generator | None = None,
    t: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Replace a fraction t ~ U(0, 1) per row of the canvas by uniform random ids.

    Returns (noisy canvas, corrupted mask [B, C], t [B]), on the canvas's device. The draws come from the
    (CPU) generator, so a seed gives the same corruption on any device.
    """
    batch, length = canvas.shape
    if t is None:
        t = torch.rand(batch, generator=generator)
    t = t.cpu()
    chosen = torch.rand((batch, length), generator=generator) < t[:, None]
    noise = torch.randint(0, vocab_size, (batch, length), generator=generator)
    chosen, noise = chosen.to(canvas.device), noise.to(canvas.device)
    return torch.where(chosen, noise, canvas), chosen, t.to(canvas.device)


def diffusion_loss(
    logits: torch.Tensor, canvas: torch.Tensor, content: torch.Tensor, pad_weight: float = 0.25
) -> torch.Tensor:
    """Weighted cross-entropy of the decoder's logits `[B, C, V]` to the clean canvas, over all positions."""
    ce = F.cross_entropy(logits.float().transpose(1, 2), canvas, reduction="none")  # [B, C]
    weights = torch.where(content, 1.0, pad_weight)
    return (ce * weights).sum() / weights.sum()


def ar_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy; `logits[:, i]` predicts `labels[:, i]` (already shifted by the caller)."""
    return F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE)


def ctc_loss(
    logits: torch.Tensor, input_lengths: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor,
    blank: int = 0,
) -> torch.Tensor:
    """CTC of per-slot logits `[B, S, V]` to token targets, mean over rows of the per-target-token loss."""
    log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # [S, B, V]
    return F.ctc_loss(
        log_probs, targets, input_lengths, target_lengths, blank=blank, reduction="mean", zero_infinity=True
    )


def ctc_fits(num_tokens: list[int] | torch.Tensor, slots: int) -> bool:
    """Whether a CTC alignment exists: tokens (plus blanks between repeats, bounded by tokens) fit the slots."""
    return int(torch.as_tensor(num_tokens).max()) <= slots


def ctc_required_slots(ids: list[int]) -> int:
    """Minimum CTC input length for a target: one slot per token plus one blank between equal neighbours."""
    return len(ids) + sum(1 for a, b in zip(ids, ids[1:]) if a == b)


def greedy_ctc(logits: torch.Tensor, lengths: torch.Tensor, blank: int = 0) -> list[list[int]]:
    """Best-path CTC decoding: argmax, collapse repeats, drop blanks (`app.model.ctc_path`'s emission rule)."""
    best = logits.argmax(dim=-1)
    emitted = greedy_emissions(best, blank)
    return [labels[:length][emits[:length]].tolist() for labels, emits, length in zip(best, emitted, lengths.tolist())]
