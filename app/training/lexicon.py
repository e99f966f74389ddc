"""Word lists for lexicon-constrained CTC decoding (`app.model.ctc_lexicon`), written into a checkpoint.

A list is the training text source's own vocabulary: the words the model was taught to spell. Each word is
weighted as the training sentences draw it (equally, the default), or as the language uses it (wordfreq's
frequencies, for text that follows the language rather than the synthetic sentences).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import wordfreq

from app.model.asr_config import LEXICON_PRIORS, AsrConfig
from app.model.checkpoint import LEXICON_DIR, CheckpointPaths
from app.training import texts


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
    """Write `adapter/lexicon/<lang>.tsv` for each language and switch the checkpoint's `ctc_decoding`
    to "lexicon"; returns the files written. The checkpoint must start decoding from the CTC canvas."""
    paths = CheckpointPaths.from_model_dir(model)
    config_path = paths.adapter / "asr_config.json"
    config = AsrConfig.load(config_path)
    if config.canvas_init != "ctc":
        raise ValueError(f"{model}: canvas_init is {config.canvas_init!r}; word lists steer the 'ctc' start only")
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
    replace(config, ctc_decoding="lexicon").save(config_path)
    return written
