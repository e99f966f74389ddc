"""Training's forced counts for aligned positions (`app.training.aligned_counts`): the transcript's best CTC
alignment, checked against every path of small cases enumerated by hand."""

from __future__ import annotations

import itertools

import pytest
import torch

from app.model.aligned_positions.positions import emission_counts
from app.training.aligned_counts import forced_counts
from app.training.config import TrainConfig

BLANK = 0


def _collapse(path: tuple[int, ...]) -> list[int]:
    out, previous = [], BLANK
    for label in path:
        if label not in (BLANK, previous):
            out.append(label)
        previous = label
    return out


def _brute_force_counts(logprobs: torch.Tensor, target: list[int]) -> list[int]:
    """Counts along the most likely of all paths over the frames that collapse to `target`."""
    frames, vocab = logprobs.shape
    best, best_path = -float("inf"), None
    for path in itertools.product(range(vocab), repeat=frames):
        if _collapse(path) == target:
            score = float(sum(logprobs[t, label] for t, label in enumerate(path)))
            if score > best:
                best, best_path = score, path
    counts, emitted = [], 0
    for t, label in enumerate(best_path):
        emitted += label not in (BLANK, best_path[t - 1] if t else BLANK)
        counts.append(emitted)
    return counts


@pytest.mark.parametrize("seed", range(6))
def test_counts_follow_the_transcripts_most_likely_path(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    frames, vocab = 6, 4
    logits = 3.0 * torch.randn(1, frames, vocab, generator=generator)
    target = [[1, 2, 2], [3, 1], [2, 3, 1, 2]][seed % 3]
    counts = forced_counts(logits, torch.tensor([frames]), torch.tensor([target]), torch.tensor([len(target)]), BLANK)
    assert counts[0].tolist() == _brute_force_counts(torch.log_softmax(logits[0], -1), target)


def test_a_token_the_best_path_drops_still_gets_its_count() -> None:
    # The best path reads 2, 3, 4; the transcript is 2, 3, 5, 4 and 5 is second likeliest at slot 5.
    logits = torch.full((1, 10, 6), -5.0)
    for t, label in enumerate([BLANK, 2, 2, BLANK, 3, BLANK, BLANK, 4, BLANK, BLANK]):
        logits[0, t, label] = 5.0
    logits[0, 5, 5] = 4.0
    assert emission_counts(logits, BLANK).tolist() == [[0, 1, 1, 1, 2, 2, 2, 3, 3, 3]]
    forced = forced_counts(logits, torch.tensor([8]), torch.tensor([[2, 3, 5, 4]]), torch.tensor([4]), BLANK)
    # Slots past the clip's 8 hold the last count.
    assert forced.tolist() == [[0, 1, 1, 1, 2, 3, 3, 4, 4, 4]]


def test_a_row_whose_transcript_cannot_fit_keeps_its_greedy_counts() -> None:
    logits = torch.full((2, 4, 5), -5.0)
    for t, label in enumerate([1, BLANK, 2, BLANK]):
        logits[:, t, label] = 5.0
    targets = torch.tensor([[1, 1, 1, 2], [1, 2, 0, 0]])  # row 0 needs 6 slots (blanks between repeats)
    forced = forced_counts(logits, torch.tensor([4, 4]), targets, torch.tensor([4, 2]), BLANK)
    assert forced[0].tolist() == emission_counts(logits, BLANK)[0].tolist() == [1, 1, 2, 2]
    assert forced[1].tolist() == [1, 1, 2, 2]


def test_a_row_marked_greedy_keeps_the_best_paths_counts_and_the_others_are_forced() -> None:
    # Both rows: the best path reads 2, 3, 4 and the transcript 2, 3, 5, 4 (as in the dropped-token case above).
    logits = torch.full((2, 10, 6), -5.0)
    for t, label in enumerate([BLANK, 2, 2, BLANK, 3, BLANK, BLANK, 4, BLANK, BLANK]):
        logits[:, t, label] = 5.0
    logits[:, 5, 5] = 4.0
    targets = torch.tensor([[2, 3, 5, 4], [2, 3, 5, 4]])
    counts = forced_counts(logits, torch.tensor([8, 8]), targets, torch.tensor([4, 4]), BLANK,
                           greedy_rows=torch.tensor([True, False]))
    assert counts[0].tolist() == [0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert counts[1].tolist() == [0, 1, 1, 1, 2, 3, 3, 4, 4, 4]


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_training_refuses_a_greedy_share_outside_0_to_1(share: float) -> None:
    with pytest.raises(ValueError, match="greedy_count_share"):
        TrainConfig(aligned_positions=True, audio_compression=None, canvas_init="noise", aligned_counts="forced",
                    greedy_count_share=share).ctc_start()


def test_training_refuses_an_unknown_count() -> None:
    with pytest.raises(ValueError, match="aligned_counts"):
        TrainConfig(aligned_positions=True, audio_compression=None, canvas_init="noise",
                    aligned_counts="soft").ctc_start()
