"""Word lists for lexicon-constrained CTC decoding (`app.model.ctc_start.lexicon_search`), written into a
checkpoint.

A list is the training text source's own vocabulary: the words the model was taught to spell. Each word is
weighted as the training sentences draw it (equally, the default), or as the language uses it (wordfreq's
frequencies, for text that follows the language rather than the synthetic sentences).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import wordfreq

from app.checkpoint.asr_config_file import read_asr_config, write_asr_config
from app.checkpoint.layout import LEXICON_DIR, CheckpointPaths
from app.model.ctc_start.config import CtcStartConfig
from app.training import texts

# How `diffusion-asr lexicon` weighs a list's words: as the training sentences draw them, or as the language uses them.
LEXICON_PRIORS: tuple[str, ...] = ("training", "wordfreq")


def lexicon_counts(lang: str, size: int | None = None, prior: str = "training") -> dict[str, float]:
    """The `size` most frequent clean words of `lang` (default: the training vocabulary) with their weight
    under `prior`: "training" (all equal) or "wordfreq" (the language's word frequencies)."""
    words = texts.vocabulary(lang, size)
    if prior == "training":
        # `texts.make_sentences` draws every word of a sentence uniformly from this vocabulary, so equal weights
        # are the training text's own unigram model; wordfreq's weights favour common words, which the
        # sentences draw no more often than rare ones.
        return dict.fromkeys(words, 1.0)
    if prior != "wordfreq":
        raise ValueError(f"prior must be one of {LEXICON_PRIORS}, got {prior!r}")
    # wordfreq's own table: `word_frequency` would re-tokenize each word (Mandarin needs jieba for that).
    frequency = wordfreq.get_frequency_dict(lang)
    return {word: frequency[word] for word in words}


def write_lexicons(model: Path, langs: list[str], size: int | None = None, prior: str = "training") -> list[Path]:
    """Write `adapter/lexicon/<lang>.tsv` for each language and switch the checkpoint's `ctc_start.decoding`
    to "lexicon"; returns the files written. The checkpoint must start decoding from the CTC canvas."""
    paths = CheckpointPaths.from_model_dir(model)
    config = read_asr_config(paths.adapter)
    section = CtcStartConfig.from_dict(config.ctc_start) if config.ctc_start is not None else None
    if section is None or section.canvas != "ctc":
        raise ValueError(f"{model}: ctc_start.canvas is not 'ctc'; word lists steer the CTC start canvas only")
    # Every list is built before any is written, so a bad `prior` leaves the checkpoint untouched.
    lists = {lang: lexicon_counts(lang, size, prior) for lang in langs}
    folder = paths.adapter / LEXICON_DIR
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for lang, counts in lists.items():
        path = folder / f"{lang}.tsv"
        # repr of the float keeps every digit wordfreq gives, so a reload is exact.
        path.write_text("".join(f"{word}\t{count!r}\n" for word, count in counts.items()), encoding="utf-8")
        written.append(path)
    write_asr_config(replace(config, ctc_start=replace(section, decoding="lexicon").to_dict()), paths.adapter)
    return written
