"""Evaluation metrics and their text normalisation."""

from __future__ import annotations

import math

import numpy as np

from app.results import StepStats, Timing, Transcription
from app.training.evaluate import cer, cer_units, filler_share, measure_latency, normalize, wer


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


def test_filler_counts_runs_of_one_mark_the_reference_lacks() -> None:
    refs = ["ask not what your country", "wait... what?", "so it ends.", "你好。"]
    hyps = ["ask not.......... what your country", "wait... what?", "so it ends?!", "你好。。。"]
    # The first and last hypotheses carry runs their references lack; the second's ellipsis is the reference's,
    # the third's two different marks are not a run. CER sees none of it.
    assert filler_share(refs, hyps) == 0.5
    assert cer(refs[:1], hyps[:1]) == 0.0
    assert math.isnan(filler_share([], []))


class _StopsEarly:
    """A pipeline stand-in whose rows stop after a fixed number of denoising steps."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.calls = 0

    def transcribe(self, audio, options) -> Transcription:
        self.calls += 1
        timing = Timing(steps=[StepStats(i + 1, 1.0, 1, 0.0) for i in range(self.steps)])
        return Transcription("", "en", len(audio) / 16_000, [], timing)


def test_latency_records_the_denoising_steps_each_case_ran() -> None:
    long, short = _StopsEarly(8), _StopsEarly(3)
    audio = np.zeros(16_000, dtype=np.float32)
    timed = measure_latency({"long": (long, audio), "short": (short, audio)}, steps=8, repeats=2)
    assert timed["long"]["steps_used"] == 8 and timed["short"]["steps_used"] == 3
    assert long.calls == short.calls == 3  # a warm-up round, then the timed ones
    assert timed["short"]["seconds"] == 1.0
