"""CTC compression: one slot per emitted run, in order, averaged, left-aligned; the rest zero."""

from __future__ import annotations

import torch

from app.model.ctc_start.compression import ctc_canvas, ctc_compress, prompt_audio

BLANK = 0


def _logits(labels: list[list[int]], vocab: int = 5) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(labels), vocab).float() * 10


def test_runs_are_averaged_blanks_dropped_and_repeats_split_by_a_blank() -> None:
    # slots:    0  1  2  3  4  5  6  7
    labels = [[0, 3, 3, 0, 3, 2, 0, 0]]  # runs: {1,2} -> 3, {4} -> 3 (a blank separates them), {5} -> 2
    audio = torch.arange(8, dtype=torch.float32).reshape(1, 8, 1).repeat(1, 1, 2)
    out = ctc_compress(audio, _logits(labels), BLANK)
    assert out.shape == audio.shape
    torch.testing.assert_close(out[0, :, 0], torch.tensor([1.5, 4.0, 5.0, 0, 0, 0, 0, 0]))


def test_rows_are_independent_and_all_blank_rows_are_zero() -> None:
    labels = [[1, 1, 2, 2], [0, 0, 0, 0]]
    audio = torch.randn(2, 4, 3)
    out = ctc_compress(audio, _logits(labels), BLANK)
    torch.testing.assert_close(out[0, 0], audio[0, :2].mean(0))
    torch.testing.assert_close(out[0, 1], audio[0, 2:].mean(0))
    assert torch.count_nonzero(out[0, 2:]) == 0
    assert torch.count_nonzero(out[1]) == 0


def test_gradient_reaches_every_emitted_slot_and_no_blank_one() -> None:
    labels = [[2, 0, 4, 4]]
    audio = torch.randn(1, 4, 3, requires_grad=True)
    ctc_compress(audio, _logits(labels), BLANK).sum().backward()
    assert audio.grad is not None
    torch.testing.assert_close(audio.grad[0, :, 0], torch.tensor([1.0, 0.0, 0.5, 0.5]))


def test_prompt_audio_is_the_audio_merged_by_the_heads_own_ctc_runs() -> None:
    audio = torch.randn(1, 4, 5)
    head = torch.nn.Linear(5, 5, bias=False)
    with torch.no_grad():
        expected = ctc_compress(audio, head(audio), BLANK)
    torch.testing.assert_close(prompt_audio(audio, head, BLANK), expected)


def test_ctc_canvas_is_the_greedy_ctc_transcript_then_eos_and_pad() -> None:
    from app.training.losses import greedy_ctc

    vocab, pad, eos, slots, canvas = 7, 0, 1, 24, 20
    head = torch.nn.Linear(4, vocab, bias=False)
    audio = torch.randn(3, slots, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = head(audio)
        compressed = ctc_compress(audio, logits, pad)
    seeds = ctc_canvas(compressed, head, canvas, pad, eos)
    assert seeds.shape == (3, canvas - 1)
    transcripts = greedy_ctc(logits, torch.full((3,), slots), blank=pad)
    assert any(transcripts), "the random head should emit something"
    for seed, ids in zip(seeds.tolist(), transcripts):
        ids = ids[: canvas - 1]
        tail = [eos] + [pad] * (canvas - 2 - len(ids)) if len(ids) < canvas - 1 else []
        assert seed == ids + tail
