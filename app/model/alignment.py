"""Word timestamps: a forced alignment of a final transcript on the projector's CTC head.

Every adapter of this architecture has the head: training puts a CTC loss on the projector output through the
backbone's frozen lm_head (blank = `<pad>`). Given the transcript the denoiser settled on, the most likely CTC
path of its tokens through that head's per-slot log-probabilities (Viterbi) says which audio slots spoke each
token; a word spans its tokens' slots. One slot is 8 Whisper encoder frames (0.16 s at subsample 8), which
bounds the resolution.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from app.model.backbone import softcap
from app.results import Word

# Han characters (Mandarin writes no spaces) are one entry each; anything else is a whitespace-separated run.
_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD = re.compile(f"[{_HAN}]|[^\\s{_HAN}]+")


def ctc_alignment(logprobs: np.ndarray, ids: list[int], blank: int) -> np.ndarray | None:
    """The most likely CTC path of the token sequence `ids` through `[T, V]` log-probabilities (Viterbi).

    Returns the index into `ids` each frame emits (-1 for blank), or None when no path fits the frames.
    """
    frames = logprobs.shape[0]
    labels = np.full(2 * len(ids) + 1, blank, dtype=np.int64)
    labels[1::2] = ids
    states = len(labels)
    # A state may skip the blank before it when its label differs from the one two states back.
    skip = np.zeros(states, dtype=bool)
    skip[3::2] = labels[3::2] != labels[1:-2:2]
    score = np.full(states, -np.inf)
    score[:2] = logprobs[0, labels[:2]]
    back = np.zeros((frames, states), dtype=np.int8)  # 0: stay, 1: from s-1, 2: from s-2
    for t in range(1, frames):
        options = np.full((3, states), -np.inf)
        options[0] = score
        options[1, 1:] = score[:-1]
        options[2, 2:] = np.where(skip[2:], score[:-2], -np.inf)
        back[t] = options.argmax(axis=0)
        score = options.max(axis=0) + logprobs[t, labels]
    end = states - 1 if states == 1 or score[-1] >= score[-2] else states - 2
    if not np.isfinite(score[end]):
        return None
    path = np.empty(frames, dtype=np.int64)
    for t in range(frames - 1, -1, -1):
        path[t] = end
        end -= int(back[t, end])  # a Python int: int8 arithmetic would wrap past 127 states
    return np.where(path % 2 == 1, path // 2, -1)


def word_ranges(text: str) -> list[tuple[int, int]]:
    """Character ranges of the words of `text`: whitespace-separated runs, except that every Han character is a
    word of its own (Mandarin: one entry per character); punctuation right after a word joins it."""
    ranges: list[tuple[int, int]] = []
    for m in _WORD.finditer(text):
        if ranges and not any(ch.isalnum() for ch in m.group()) and ranges[-1][1] == m.start():
            ranges[-1] = (ranges[-1][0], m.end())
        else:
            ranges.append(m.span())
    return ranges


def token_frames(path: np.ndarray, count: int) -> list[tuple[int, int]]:
    """(first, last) frame each of `count` tokens is emitted on along a CTC path."""
    spans = [(-1, -1)] * count
    for frame, token in enumerate(path.tolist()):
        if token >= 0:
            first = spans[token][0]
            spans[token] = (frame if first < 0 else first, frame)
    return spans


def words_from_frames(text: str, ranges: list[tuple[int, int]], offsets: list[tuple[int, int]],
                      frames: list[tuple[int, int]], slot_seconds: float, origin: float) -> list[Word]:
    """Each word from the first frame of its first token to the end of the last frame of its last token."""
    words = []
    for start, end in ranges:
        spoken = [f for (a, b), f in zip(offsets, frames) if a < end and b > start and f[0] >= 0]
        if not spoken:
            continue
        first = min(f[0] for f in spoken)
        last = max(f[1] for f in spoken)
        words.append(Word(text[start:end], origin + first * slot_seconds, origin + (last + 1) * slot_seconds))
    return words


def spread_words(text: str, ranges: list[tuple[int, int]], start: float, end: float) -> list[Word]:
    """Words laid over [start, end] in proportion to their length (when no CTC path fits the frames)."""
    total = sum(b - a for a, b in ranges) or 1
    words, at = [], start
    for a, b in ranges:
        length = (end - start) * (b - a) / total
        words.append(Word(text[a:b], at, at + length))
        at += length
    return words


@dataclass
class WordAligner:
    """Forced alignment of transcripts on a model's CTC head (its lm_head over the projector output)."""

    lm_head: torch.nn.Module
    softcapping: float | None
    tokenizer: PreTrainedTokenizerBase
    blank: int
    slot_seconds: float

    @torch.no_grad()
    def slot_logprobs(self, projected: torch.Tensor, ids: list[int]) -> np.ndarray:
        """`[slots, len(labels)]` CTC log-probabilities of `labels = [blank, *unique ids]` (normalised over the
        whole vocabulary; only these columns leave the device)."""
        logits = softcap(self.lm_head(projected), self.softcapping)
        columns = torch.tensor([self.blank, *ids], device=logits.device)
        chosen = logits.index_select(-1, columns) - logits.logsumexp(dim=-1, keepdim=True)
        return chosen.cpu().numpy()

    def align(self, projected: torch.Tensor, text: str, start: float, end: float) -> list[Word]:
        """Words of `text` with times on the input's clock; `projected` `[slots, hidden]` are the window's real
        slots, starting at `start` seconds; [start, end] is the window, used only when no path fits."""
        ranges = word_ranges(text)
        if not ranges:
            return []
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(encoding["input_ids"]), [tuple(o) for o in encoding["offset_mapping"]]
        unique = list(dict.fromkeys(ids))
        column = {token: i + 1 for i, token in enumerate(unique)}
        logprobs = self.slot_logprobs(projected, unique)
        path = ctc_alignment(logprobs, [column[t] for t in ids], 0) if ids else None
        if path is None:
            return spread_words(text, ranges, start, end)
        return words_from_frames(text, ranges, offsets, token_frames(path, len(ids)), self.slot_seconds, start)
