"""Training examples and batches: tokenized targets, CTC slot counts, collation from the feature memmap."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedTokenizerFast

from app.checkpoint.presets import ModelDims
from app.checkpoint.tokenizer import LANGUAGE_TAG_FORMAT, build_tokenizer
from app.languages import SUPPORTED_LANGUAGES
from app.model.projector import audio_slots
from app.training import losses
from app.training.features import FeatureSet


@dataclass
class Example:
    index: int  # row in the FeatureSet
    lang: str
    text_ids: list[int]
    slots: int  # CTC input length: audio slots covering the real audio


def tokenizer_corpus(texts: list[str], langs: list[str]) -> list[str]:
    """The BPE training corpus: the training sentences, Mandarin split into single characters.

    A Mandarin sentence has no spaces, so byte-level BPE would see it as one pre-token and spend merges on
    whole sentences or multi-word runs. Giving each Hanzi as its own corpus entry (with its real frequency)
    makes the merges build whole characters (3 bytes each) for the common ones and nothing longer, so an
    encoded Mandarin sentence is about one token per character. Devanagari words are spaced like the Latin
    scripts and get their syllable and word merges from their frequency; Hindi sentences are given twice so
    its 3-byte characters and conjuncts compete for merges with the Latin-script languages.
    """
    corpus: list[str] = []
    for text, lang in zip(texts, langs):
        if lang == "zh":
            corpus.extend(ch for ch in text if not ch.isspace())
        elif lang == "hi":
            corpus.extend([text, text])
        else:
            corpus.append(text)
    return corpus


def train_tokenizer(
    texts: list[str], langs: list[str], vocab_size: int, characters: bool = False, word_initial: bool = False
) -> PreTrainedTokenizerFast:
    """The run's tokenizer: one token per (word-initial) character, or byte-level BPE on `tokenizer_corpus`."""
    if characters:
        return build_tokenizer(texts, vocab_size=vocab_size, characters=True, word_initial=word_initial)
    return build_tokenizer(tokenizer_corpus(texts, langs), vocab_size=vocab_size)


def make_examples(
    feats: FeatureSet, tokenizer: PreTrainedTokenizerFast, dims: ModelDims
) -> tuple[list[Example], dict[str, int]]:
    """Tokenize every clip; drop those whose target does not fit the canvas or the CTC slots."""
    encoded = tokenizer(list(feats.texts), add_special_tokens=False).input_ids
    examples, dropped = [], {"canvas": 0, "ctc": 0, "window": 0}
    for i, (ids, lang, n) in enumerate(zip(encoded, feats.langs, feats.num_samples)):
        slots = audio_slots(n, dims.subsample, dims.audio_slots)
        if n > dims.window_seconds * 16000:
            dropped["window"] += 1
            continue
        if len(ids) + 2 > dims.canvas_length:
            dropped["canvas"] += 1
            continue
        if losses.ctc_required_slots(ids) > slots:
            dropped["ctc"] += 1
            continue
        examples.append(Example(i, lang, ids, slots))
    return examples, dropped


@dataclass
class Batch:
    features: torch.Tensor  # [B, n_mels, frames]
    langs: list[str]
    hinted: bool
    targets: losses.Targets
    slots: torch.Tensor  # [B]

    def to(self, device: torch.device) -> Batch:
        return Batch(self.features.to(device), self.langs, self.hinted, self.targets.to(device),
                     self.slots.to(device))


def collate(feats: FeatureSet, examples: list[Example], tokenizer, canvas_length: int, hinted: bool) -> Batch:
    index = np.array([e.index for e in examples])
    order = np.argsort(index)  # memmap reads in increasing order
    rows = np.empty((len(index), *feats.features.shape[1:]), dtype=np.float32)
    rows[order] = feats.features[index[order]]
    tag_ids = [tokenizer.convert_tokens_to_ids(LANGUAGE_TAG_FORMAT.format(lang=e.lang)) for e in examples]
    targets = losses.build_targets(
        [e.text_ids for e in examples], tag_ids, tokenizer.eos_token_id, tokenizer.pad_token_id, canvas_length
    )
    slots = torch.tensor([e.slots for e in examples], dtype=torch.long)
    return Batch(torch.from_numpy(rows), [e.lang for e in examples], hinted, targets, slots)


def probe_batch(feats: FeatureSet, tokenizer, dims: ModelDims, per_lang: int = 8) -> Batch:
    """The first `per_lang` held-out clips of each language, as one batch."""
    examples, _ = make_examples(feats, tokenizer, dims)
    picked = [e for lang in SUPPORTED_LANGUAGES for e in [x for x in examples if x.lang == lang][:per_lang]]
    return collate(feats, picked, tokenizer, dims.canvas_length, hinted=False)


def next_batch(
    examples: list[Example], sampler: random.Random, batch_size: int, hint_prob: float, order: list[int],
    bucket_batches: int = 0,
) -> tuple[list[Example], bool]:
    """Draw a batch and whether its prompts carry the language hint.

    The epoch-wise shuffled order is kept in `order` (its randomness comes from the python RNG). With
    `bucket_batches`, each run of that many batches of the shuffled epoch is sorted by clip length before it
    is cut into batches, and the batches are shuffled again: clips of a batch have similar lengths (so a
    cropped encoder pass wastes little on padding) while batch order stays random.
    """
    if len(order) < batch_size:
        fresh = list(range(len(examples)))
        sampler.shuffle(fresh)
        if bucket_batches:
            fresh = fresh[: len(fresh) - len(fresh) % batch_size]  # whole batches keep the buckets aligned
            pool = batch_size * bucket_batches
            batches = []
            for start in range(0, len(fresh), pool):
                chunk = sorted(fresh[start:start + pool], key=lambda i: examples[i].slots)
                batches.extend(chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size))
            sampler.shuffle(batches)
            fresh = [i for batch in batches for i in batch]
        order.extend(fresh)
    picked = [examples[order.pop(0)] for _ in range(batch_size)]
    hinted = sampler.random() < hint_prob
    return picked, hinted
