"""How close word timestamps land to the truth: words synthesized one by one with espeak-ng and joined with known
gaps, so every word's true span is known; the model transcribes the clip with word timestamps and each
recognised word's start and end are compared with its true ones.

Run: `python -m app.training.word_timing [--langs en zh] [--sentences 10]` (the embedded default model).
"""

from __future__ import annotations

import argparse
import difflib
import statistics
from dataclasses import dataclass, field

import numpy as np

from app.results import DecodeOptions, Word
from app.training import synth, texts
from app.training.evaluate import normalize

GAP_S = (0.15, 0.5)  # silence between two words
EDGE_S = 0.3  # silence before the first word and after the last
NOISE_DBFS = -60.0  # a noise floor, so the gaps are not digital silence
VOICE_SPEED, VOICE_PITCH = 160, 50


@dataclass
class TimedClip:
    """A clip of separately spoken words and each word's true span (seconds)."""

    audio: np.ndarray
    words: list[Word]


@dataclass
class TimingReport:
    """Start and end errors (seconds) of the words a run recognised, and how many it recognised."""

    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    words: int = 0
    matched: int = 0

    @property
    def errors(self) -> list[float]:
        """Every boundary's absolute error."""
        return self.starts + self.ends

    @property
    def median(self) -> float:
        """Median absolute boundary error (starts and ends together)."""
        return _median(self.errors)

    def line(self) -> str:
        """One line for docs/api.md."""
        return (f"median boundary error {self.median * 1000:.0f} ms (starts {_median(self.starts) * 1000:.0f} ms, "
                f"ends {_median(self.ends) * 1000:.0f} ms) over {len(self.errors)} boundaries; "
                f"{self.matched}/{self.words} words recognised")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def timed_clip(sentence: str, lang: str, rng: np.random.Generator) -> TimedClip:
    """Speak each word of `sentence` alone (trimmed to its audible extent) and join them with random gaps."""
    voice = synth.BASE_VOICES[lang][0]
    parts, words, at = [np.zeros(int(EDGE_S * synth.SAMPLE_RATE))], [], EDGE_S
    for index, word in enumerate(sentence.split() if lang not in texts.SPACELESS else _spaceless_words(sentence)):
        pcm, rate = synth.run_espeak(word, voice, VOICE_SPEED, VOICE_PITCH)
        speech = synth.trim_silence(synth.resample(pcm, rate, synth.SAMPLE_RATE))
        speech = speech * (0.5 / max(float(np.abs(speech).max()), 1e-9))
        if index:
            gap = rng.uniform(*GAP_S)
            parts.append(np.zeros(int(gap * synth.SAMPLE_RATE)))
            at += int(gap * synth.SAMPLE_RATE) / synth.SAMPLE_RATE
        parts.append(speech)
        words.append(Word(word, at, at + len(speech) / synth.SAMPLE_RATE))
        at += len(speech) / synth.SAMPLE_RATE
    parts.append(np.zeros(int(EDGE_S * synth.SAMPLE_RATE)))
    audio = np.concatenate(parts)
    audio = audio + rng.standard_normal(audio.size) * 10 ** (NOISE_DBFS / 20)
    return TimedClip(audio.astype(np.float32), words)


def _spaceless_words(sentence: str) -> list[str]:
    """The vocabulary words a spaceless sentence was built from (longest match against the word list)."""
    vocabulary = set(texts.vocabulary("zh"))
    longest = max(map(len, vocabulary))
    words, at = [], 0
    while at < len(sentence):
        size = next(n for n in range(min(longest, len(sentence) - at), 0, -1)
                    if n == 1 or sentence[at:at + n] in vocabulary)
        words.append(sentence[at:at + size])
        at += size
    return words


def units(words: list[Word], spaceless: bool) -> list[tuple[str, int, float, float]]:
    """(unit, word index, start, end): characters of spaceless words (one span shared), else whole words."""
    out = []
    for index, word in enumerate(words):
        text = normalize(word.word)
        for unit in (list(text.replace(" ", "")) if spaceless else [text]):
            out.append((unit, index, word.start, word.end))
    return out


def boundary_errors(truth: list[Word], found: list[Word], spaceless: bool
                    ) -> tuple[list[float], list[float], int]:
    """|start error| of every true word whose first unit the transcript recognised, |end error| of every one
    whose last unit it recognised, and the number of true words with at least one recognised unit."""
    ref, hyp = units(truth, spaceless), units(found, spaceless)
    pairs = []
    for block in difflib.SequenceMatcher(None, [u[0] for u in ref], [u[0] for u in hyp], autojunk=False) \
            .get_matching_blocks():
        pairs.extend((block.a + k, block.b + k) for k in range(block.size))
    by_word: dict[int, list[tuple[int, int]]] = {}
    for r, h in pairs:
        by_word.setdefault(ref[r][1], []).append((r, h))
    starts, ends = [], []
    for index, matched in by_word.items():
        first = min(r for r, _ in matched)
        last = max(r for r, _ in matched)
        positions = [r for r, (_, i, _, _) in enumerate(ref) if i == index]
        hyp_of = dict(matched)
        if first == positions[0]:
            starts.append(abs(hyp[hyp_of[first]][2] - truth[index].start))
        if last == positions[-1]:
            ends.append(abs(hyp[hyp_of[last]][3] - truth[index].end))
    return starts, ends, len(by_word)


def measure(pipeline, lang: str, sentences: list[str], seed: int = 0, steps: int = 8) -> TimingReport:
    """Word-timestamp boundary errors of `pipeline` on separately spoken `sentences`."""
    report = TimingReport()
    for index, sentence in enumerate(sentences):
        clip = timed_clip(sentence, lang, np.random.default_rng([seed, index]))
        result = pipeline.transcribe(clip.audio, DecodeOptions(steps=steps, language=lang, word_timestamps=True))
        found = [w for s in result.segments for w in s.words]
        starts, ends, matched = boundary_errors(clip.words, found, lang in texts.SPACELESS)
        report.starts.extend(starts)
        report.ends.extend(ends)
        report.words += len(clip.words)
        report.matched += matched
    return report


def main(argv: list[str] | None = None) -> None:
    """Print the median boundary error per language on the embedded default model."""
    import tempfile
    from pathlib import Path

    import torch

    from app.checkpoint import embedded
    from app.checkpoint.loading import load_model_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--langs", nargs="+", default=list(texts.LANGS))
    parser.add_argument("--sentences", type=int, default=10)
    parser.add_argument("--first", type=int, default=400, help="first held-out sentence (eval streams 0-305 "
                                                                "are read elsewhere)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    pipeline = load_model_dir(embedded.embedded_model_dir(Path(tempfile.mkdtemp())), device=torch.device("cpu"))
    for lang in args.langs:
        sentences = texts.eval_sentences(lang, args.first + args.sentences, seed=0)[args.first:]
        report = measure(pipeline, lang, sentences)
        print(f"{lang}: {report.line()}")


if __name__ == "__main__":
    main()
