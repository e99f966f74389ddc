"""The greedy CTC path over per-slot logits: where it emits a token. One rule for every reader of the CTC head's
best path (the demo's compressed prompt audio, its aligned prompt positions, training's greedy decoding)."""

from __future__ import annotations

import torch


def greedy_emissions(labels: torch.Tensor, blank: int) -> torch.Tensor:
    """`[B, S]` bool: the slots where the best path, its per-slot argmax `labels` `[B, S]`, emits a token.

    A slot emits when its argmax is not `blank` and differs from the previous slot's; a blank between two equal
    labels starts a new emission (CTC's collapse rule; `app.training.losses.greedy_ctc` decodes with it).
    """
    previous = torch.nn.functional.pad(labels[:, :-1], (1, 0), value=blank)
    return (labels != blank) & (labels != previous)
