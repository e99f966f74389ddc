"""Evaluation metrics and their text normalisation."""

from __future__ import annotations

import math

from app.training.evaluate import cer, cer_units, normalize, wer


def test_normalize_lowercases_and_strips_punctuation() -> None:
    assert normalize("And so, my fellow Americans!  Ask-not.") == "and so my fellow americans ask not"
    assert normalize("c'est la dictée numéro un") == "c est la dictée numéro un"
    assert normalize("你好，世界。") == "你好 世界"


def test_cer_ignores_spaces_and_case() -> None:
    assert cer(["Hello World"], ["helloworld"]) == 0.0
    assert cer_units("a b") == "a b"
    assert math.isclose(cer(["abcd"], ["abxd"]), 0.25)


def test_wer_words_and_mandarin_characters() -> None:
    assert math.isclose(wer(["the cat sat"], ["the cat sit"], "en"), 1 / 3)
    # Mandarin has no spaces: WER is on characters, equal to CER.
    assert math.isclose(wer(["我们是"], ["我门是"], "zh"), cer(["我们是"], ["我门是"]))
    assert math.isclose(wer(["नमस्ते दुनिया"], ["नमस्ते"], "hi"), 0.5)


def test_empty_hypothesis_counts_all_deletions() -> None:
    assert wer(["one two three"], [""], "en") == 1.0
    assert cer(["abc"], ["  "]) == 1.0
    assert math.isnan(cer([""], ["x"]))
