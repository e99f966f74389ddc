"""Which count of emitted tokens training gives each audio slot under aligned positions.

Inference can only count the tokens the projector's greedy CTC path emits (`app.model.aligned_positions`).
Training also knows the transcript, so it can count along the forced alignment of that transcript through the
same CTC head instead: then canvas slot k + 1 and the audio that speaks reference token k always share a
position. With greedy counts, every insertion or deletion of the best path moves the reference's later tokens
off the audio they are trained to read, which teaches the decoder that the position is only a hint.
"""

from __future__ import annotations

import numpy as np
import torch

from app.model.aligned_positions.positions import emission_counts
from app.model.alignment import ctc_alignment


def forced_counts(logits: torch.Tensor, slots: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor,
                  blank: int, greedy_rows: torch.Tensor | None = None) -> torch.Tensor:
    """`[B, S]` reference tokens emitted up to each slot along the Viterbi path of the targets through the
    per-slot CTC `logits` `[B, S, V]`; `slots` `[B]` are the slots holding real audio, beyond which the count
    stays at the last token. A row whose targets do not fit its slots, or that `greedy_rows` `[B]` (bool) marks,
    keeps its greedy counts."""
    counts = emission_counts(logits, blank)
    logprobs = torch.log_softmax(logits.detach().float(), dim=-1).cpu().numpy()
    skip = greedy_rows.tolist() if greedy_rows is not None else [False] * counts.shape[0]
    for row, (length, used) in enumerate(zip(target_lengths.tolist(), slots.tolist())):
        if skip[row]:
            continue
        ids = targets[row, :length].tolist()
        path = ctc_alignment(logprobs[row, :used], ids, blank) if ids else None
        if path is None:
            continue
        # A token's count starts on the first frame of its run: the highest token index seen so far, plus one.
        emitted = np.maximum.accumulate(path) + 1
        row_counts = np.full(counts.shape[1], length, dtype=np.int64)
        row_counts[:used] = emitted
        counts[row] = torch.from_numpy(row_counts).to(counts.device)
    return counts
