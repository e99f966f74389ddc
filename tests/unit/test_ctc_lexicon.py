"""Word-list CTC search and forced alignment on hand-made frame distributions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.model.alignment import ctc_alignment
from app.model.ctc_start.compression import compress_runs
from app.model.ctc_start.lexicon_search import Lexicon, LexiconBeamSearch, LexiconParams

# id 0 is the blank; letters alone continue a word, letters after a space start one.
TEXTS = ["<pad>", "c", "a", "t", "k", "o", " c", " a", " t", " k", " o", "女"]
ID = {text: i for i, text in enumerate(TEXTS)}
TEXT_IDS = np.arange(1, len(TEXTS))


def _frames(*rows: dict[str, float], width: int = len(TEXTS)) -> np.ndarray:
    """Log-probabilities, one row per frame from {token: probability}; the rest shares what is left."""
    out = np.full((len(rows), width), 0.0)
    for t, row in enumerate(rows):
        rest = (1.0 - sum(row.values())) / (width - len(row))
        out[t] = rest
        for text, p in row.items():
            out[t, ID[text]] = p
    return np.log(out)


def _decode(frames: np.ndarray, words: dict[str, float], **params) -> str:
    search = LexiconBeamSearch(TEXTS, 0, TEXT_IDS, LexiconParams(**params))
    return "".join(TEXTS[i] for i in search.decode(frames, Lexicon(words)))


def _greedy(frames: np.ndarray) -> str:
    best = frames.argmax(axis=1)
    return "".join(TEXTS[b] for i, b in enumerate(best) if b != 0 and (i == 0 or b != best[i - 1]))


def test_a_listed_word_beats_the_best_paths_misspelling() -> None:
    frames = _frames({"k": 0.55, "c": 0.4}, {"a": 0.9}, {"t": 0.9}, {"<pad>": 0.9})
    assert _greedy(frames) == "kat"
    assert _decode(frames, {"cat": 1.0, "act": 1.0}) == "cat"


def test_a_word_the_audio_is_sure_of_stays_when_it_is_not_listed() -> None:
    sure = 1 - 1e-12
    frames = _frames({"t": sure}, {"a": sure}, {"c": sure}, {"<pad>": sure})
    assert _decode(frames, {"cat": 1.0}) == "tac"


def test_word_boundaries_follow_the_space_tokens_and_each_word_is_scored() -> None:
    # "cat" then a word-initial "a" and "ct": the list turns the unsure second word into "act", not "akt".
    frames = _frames({"c": 0.9}, {"a": 0.9}, {"t": 0.9}, {" a": 0.9}, {"k": 0.5, "c": 0.45}, {"t": 0.9})
    assert _greedy(frames) == "cat akt"
    assert _decode(frames, {"cat": 1.0, "act": 1.0}) == "cat act"


def test_the_token_bonus_keeps_a_faint_letter_that_tells_two_listed_words_apart() -> None:
    # A trailing "o" heard at 0.3 (blank 0.6): the paths alone prefer dropping it, as the CTC head drops a
    # plural -s; each emitted token's bonus outweighs that (ln(0.65 / 0.3) < 2).
    frames = _frames({"c": 0.9}, {"a": 0.9}, {"t": 0.9}, {"o": 0.3, "<pad>": 0.6})
    words = {"cat": 1.0, "cato": 1.0}
    assert _decode(frames, words, token_bonus=0.0) == "cat"
    assert _decode(frames, words) == "cato"
    assert _decode(_frames({"c": 0.9}, {"a": 0.9}, {"t": 0.9}, {"o": 0.01, "<pad>": 0.9}), words) == "cat"


def test_repeats_need_a_blank_between_them_as_in_ctc() -> None:
    held = _frames({"t": 0.9}, {"o": 0.9}, {"o": 0.9})
    split = _frames({"t": 0.9}, {"o": 0.9}, {"<pad>": 0.9}, {"o": 0.9})
    words = {"to": 1.0, "too": 1.0}
    assert _decode(held, words) == "to"
    assert _decode(split, words) == "too"


def test_characters_outside_the_lists_alphabet_and_ids_past_the_tokenizer_are_never_emitted() -> None:
    frames = _frames({"c": 0.9}, {"女": 0.6, "a": 0.35}, {"t": 0.9}, width=len(TEXTS) + 3)
    frames[1, len(TEXTS) + 1] = np.log(0.9)  # an lm_head id the tokenizer does not have, most likely of all
    assert _decode(frames, {"cat": 1.0}, oov_penalty=0.0) == "cat"


def test_more_frequent_of_two_equally_heard_words_wins() -> None:
    frames = _frames({"c": 0.45, "k": 0.45}, {"a": 0.9}, {"t": 0.9})
    assert _decode(frames, {"cat": 9.0, "kat": 1.0}) == "cat"
    assert _decode(frames, {"cat": 1.0, "kat": 9.0}) == "kat"


def test_without_spaces_a_word_ends_where_no_listed_word_continues_it() -> None:
    # "catco" spoken with no space: "cat" is listed and no listed word goes on with "c", so "co" starts a word.
    frames = _frames({"c": 0.9}, {"a": 0.9}, {"t": 0.9}, {"c": 0.9}, {"a": 0.4, "o": 0.5})
    frames[:, ID[" c"]] = frames[:, ID[" a"]] = frames[:, ID[" o"]] = -100.0  # no space is heard
    assert _greedy(frames) == "catco"
    search = LexiconBeamSearch(TEXTS, 0, TEXT_IDS, LexiconParams())
    spaced, spaceless = Lexicon({"cat": 1.0, "ca": 1.0}), Lexicon({"cat": 1.0, "ca": 1.0}, spaceless=True)
    assert "".join(TEXTS[i] for i in search.decode(frames, spaceless)) == "catca"  # "cat" + "ca", both listed
    # Read as a spaced language, "catc..." is one unlisted word: dropping its tail to blanks costs less.
    assert "".join(TEXTS[i] for i in search.decode(frames, spaced)) == "cat"


def test_an_empty_lexicon_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one word"):
        Lexicon({})


def test_alignment_follows_the_frames_that_spoke_each_token() -> None:
    frames = _frames({"c": 0.8}, {"<pad>": 0.8}, {"c": 0.8}, {"a": 0.8}, {"<pad>": 0.8})
    assert ctc_alignment(frames, [ID["c"], ID["c"], ID["a"]], 0).tolist() == [0, -1, 1, 2, -1]
    assert ctc_alignment(frames, [], 0).tolist() == [-1] * 5


def test_alignment_is_the_most_likely_of_all_paths_of_its_tokens() -> None:
    import itertools

    rng = np.random.default_rng(1)
    for _ in range(10):
        frames = np.log(rng.dirichlet(np.ones(4), size=6))  # blank and three tokens: 4**6 paths to compare
        ids = rng.integers(1, 4, size=int(rng.integers(1, 4))).tolist()
        best = -np.inf
        for path in itertools.product(range(4), repeat=6):
            collapsed = [p for i, p in enumerate(path) if p != 0 and (i == 0 or p != path[i - 1])]
            if collapsed == ids:
                best = max(best, sum(frames[t, p] for t, p in enumerate(path)))
        found = ctc_alignment(frames, ids, 0)
        labels = [0 if k < 0 else ids[k] for k in found]
        assert sum(frames[t, p] for t, p in enumerate(labels)) == pytest.approx(best)


def test_alignment_of_a_long_reading_spans_more_states_than_a_byte_counts() -> None:
    rng = np.random.default_rng(2)
    ids = rng.integers(1, len(TEXTS), size=90).tolist()  # 181 states
    frames = np.log(rng.dirichlet(np.ones(len(TEXTS)), size=200))
    path = ctc_alignment(frames, ids, 0)
    runs = [k for i, k in enumerate(path) if k >= 0 and (i == 0 or k != path[i - 1])]
    assert runs == list(range(len(ids)))


def test_alignment_is_none_when_the_tokens_do_not_fit_the_frames() -> None:
    frames = _frames({"c": 0.8}, {"c": 0.8})
    assert ctc_alignment(frames, [ID["c"], ID["c"]], 0) is None  # two equal tokens need a blank between
    assert ctc_alignment(frames, [ID["c"], ID["a"], ID["t"]], 0) is None


def test_alignment_collapses_back_to_its_tokens() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        frames = np.log(rng.dirichlet(np.ones(len(TEXTS)), size=30))
        ids = rng.integers(1, len(TEXTS), size=int(rng.integers(0, 12))).tolist()
        path = ctc_alignment(frames, ids, 0)
        runs = [k for i, k in enumerate(path) if k >= 0 and (i == 0 or k != path[i - 1])]
        assert runs == list(range(len(ids)))


def test_compress_runs_averages_each_tokens_frames_into_its_slot() -> None:
    audio = torch.arange(6, dtype=torch.float32).reshape(1, 6, 1)
    out = compress_runs(audio, torch.tensor([[0, -1, 1, 1, 2, -1]]))
    torch.testing.assert_close(out[0, :, 0], torch.tensor([0.0, 2.5, 4.0, 0.0, 0.0, 0.0]))
