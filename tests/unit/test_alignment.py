"""Word timestamps from a CTC forced alignment, exact token bytes, and the committed text behind streamed deltas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from app.model.alignment import WordAligner, ctc_alignment, spread_words, token_frames, word_ranges
from app.results import CommittedText, Segment, Timing, Word, join_texts

SLOT = 0.16


def peaky(frames: int, vocab: int, emissions: dict[int, int], blank: int = 0) -> np.ndarray:
    """Log-probabilities where frame t says `emissions[t]` with 0.9 and blank otherwise."""
    probs = np.full((frames, vocab), 0.1 / (vocab - 1))
    for t in range(frames):
        probs[t, emissions.get(t, blank)] = 0.9
    return np.log(probs)


def test_viterbi_recovers_the_frames_that_spoke_each_token():
    logprobs = peaky(12, 6, {2: 3, 3: 3, 7: 4, 10: 3})
    path = ctc_alignment(logprobs, [3, 4, 3], blank=0)
    assert token_frames(path, 3) == [(2, 3), (7, 7), (10, 10)]


def test_viterbi_returns_none_when_the_tokens_cannot_fit():
    # Two equal tokens need a blank between them: three frames at least.
    assert ctc_alignment(peaky(2, 4, {0: 2, 1: 2}), [2, 2], blank=0) is None


def test_word_ranges_spaced_and_one_per_han_character():
    assert word_ranges("ask not,  what?") == [(0, 3), (4, 8), (10, 15)]
    text = "我用Python写，好。 ok"
    words = [text[a:b] for a, b in word_ranges(text)]
    assert words == ["我", "用", "Python", "写，", "好。", "ok"]


def test_spread_words_cover_the_span_in_order():
    words = spread_words("ab cdef", [(0, 2), (3, 7)], 1.0, 4.0)
    assert words == [Word("ab", 1.0, 2.0), Word("cdef", 2.0, 4.0)]


class OneHotHead(torch.nn.Module):
    """A CTC head whose slot s holds the one-hot logits written into `slots` (the test's fake projector output)."""

    def forward(self, slots: torch.Tensor) -> torch.Tensor:
        return slots * 20.0


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir / "backbone")


def test_aligner_times_words_from_the_slots_that_spoke_them(tokenizer):
    text = "ask not what"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    # Each token spoken on its own slot, two blank slots after every word, starting at slot 3.
    per_word = [tokenizer(w if i == 0 else " " + w, add_special_tokens=False)["input_ids"]
                for i, w in enumerate(text.split())]
    assert sum(per_word, []) == ids
    vocab = len(tokenizer)
    slots, at, expected = [], 3, []
    slots += [tokenizer.pad_token_id] * 3
    for word, tokens in zip(text.split(), per_word):
        expected.append(Word(word, 10.0 + at * SLOT, 10.0 + (at + len(tokens)) * SLOT))
        slots += tokens + [tokenizer.pad_token_id] * 2
        at += len(tokens) + 2
    projected = torch.nn.functional.one_hot(torch.tensor(slots), vocab).float()
    aligner = WordAligner(OneHotHead(), None, tokenizer, tokenizer.pad_token_id, SLOT)
    words = aligner.align(projected, text, 10.0, 20.0)
    assert [w.word for w in words] == [w.word for w in expected]
    for got, want in zip(words, expected):
        assert got.start == pytest.approx(want.start) and got.end == pytest.approx(want.end)


def segment(index: int, text: str, language: str = "en") -> Segment:
    return Segment(index, float(index), index + 1.0, text, language, Timing())


def test_committed_text_grows_in_window_order_and_matches_the_join():
    segments = [segment(0, "hello"), segment(1, ""), segment(2, "world"), segment(3, "你好", "zh"),
                segment(4, "世界", "zh")]
    committed = CommittedText()
    pieces = []
    for index in (2, 4, 0, 0, 1, 3):  # out of order, with a repeat (a retried window)
        pieces.append([text for text, _ in committed.add(segments[index])])
    assert pieces == [[], [], ["hello"], [], [" world"], [" 你好", "世界"]]
    assert "".join(sum(pieces, [])) == join_texts(segments) == "hello world 你好世界"


def test_token_bytes_are_exact_even_for_part_of_a_character(tokenizer):
    from app.model.asr_config import AsrConfig
    from app.model.transcript import TranscriptDecoder

    decoder = TranscriptDecoder(tokenizer, AsrConfig())
    text = " 敏捷的棕色狐狸 über"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces = [decoder.token_bytes(i) for i in ids]
    assert b"".join(pieces) == text.encode("utf-8")
    assert any(len(p) < 3 and p[0] >= 0x80 for p in pieces)  # some token holds only part of a character
