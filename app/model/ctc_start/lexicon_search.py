"""CTC prefix beam search constrained by a word list with unigram probabilities.

The small default model's CTC head hears words well but spells them poorly ("wenevgeuo" for "whenever"): its
best path is a string of confident, wrong characters. Searching the per-frame distributions for the token
sequence that both the audio and a word list find likely turns most of those into the words they were, the way
wav2vec2 checkpoints "with LM" are decoded (a word list and an n-gram model over CTC; here a unigram model,
since nothing about word order is known to a speech model trained on random word sequences).

Tokens are characters (`build_tokenizer(characters=True, word_initial=True)`): a token whose text starts with a
space begins a new word; in a language written without spaces, a character that no listed word continues the
current word with does (longest match). Words outside the list stay possible at a fixed penalty, so names and rare words are
not forced into the nearest listed word when the audio is clear about them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NEG_INF = -math.inf


@dataclass(frozen=True)
class LexiconParams:
    """Search width and how much the word list weighs against the audio (log domain, natural log)."""

    beam_width: int = 32
    # Per frame, only tokens within `token_prune` of the frame's best and among its `token_top_k` best extend.
    token_prune: float = 16.0
    token_top_k: int = 12
    # Hypotheses further than this below the best are dropped even when the beam has room.
    score_prune: float = 25.0
    lm_weight: float = 0.7  # times log P(word) for a listed word
    word_bonus: float = 2.0  # per listed word, against the LM's pull toward fewer, longer words
    oov_penalty: float = -40.0  # per word outside the list (and for a partial word no listed word begins with)
    # Per emitted token: the CTC head drops letters it hears faintly (plural -s, silent -e) more often than it
    # invents them, so a reading is rewarded for its length as well as scored by its paths.
    token_bonus: float = 2.0


class Lexicon:
    """Words with unigram log-probabilities, and every prefix of them for partial words.

    `spaceless`: the language writes no spaces (Mandarin), so a word ends where the next character cannot
    continue it as a listed word (longest match) instead of at a space.
    """

    def __init__(self, counts: dict[str, float], spaceless: bool = False) -> None:
        self.spaceless = spaceless
        total = sum(counts.values())
        if not counts or total <= 0:
            raise ValueError("a lexicon needs at least one word with a positive count")
        self.log_prob = {word: math.log(count / total) for word, count in counts.items() if count > 0}
        self.prefixes = frozenset(word[:k] for word in self.log_prob for k in range(1, len(word) + 1))
        # The script of the language: no word, listed or not, is spelt with a character outside it.
        self.alphabet = frozenset("".join(self.log_prob))


def _logaddexp(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


class LexiconBeamSearch:
    """Decodes one window's CTC log-probabilities `[frames, V]` into token ids, word list in hand."""

    def __init__(self, token_texts: list[str], blank: int, text_ids: np.ndarray, params: LexiconParams) -> None:
        self.texts = token_texts
        self.blank = blank
        self.params = params
        # Ids that may be emitted: the tokenizer's text tokens (no specials, no language tags).
        self.text_ids = np.asarray(text_ids, dtype=np.int64)
        self._allowed: dict[Lexicon, np.ndarray] = {}

    def decode(self, logprobs: np.ndarray, lexicon: Lexicon) -> list[int]:
        """The best token sequence under acoustic score + word-list score (highest total at the last frame)."""
        return self.decode_scored(logprobs, lexicon)[0]

    def decode_scored(self, logprobs: np.ndarray, lexicon: Lexicon) -> tuple[list[int], float]:
        """`decode` and that reading's total score (log domain), comparable across lists of the same size."""
        p = self.params
        # Hypotheses are interned: id -> parent id, last token, score of its finished words, its current word,
        # its score beyond the audio while that word is open (`partial`: words and tokens so far), its tokens.
        parent, token, finished, word, partial, depth = [-1], [-1], [0.0], [""], [0.0], [0]
        children: dict[tuple[int, int], int] = {}
        beams: dict[int, list[float]] = {0: [0.0, NEG_INF]}  # id -> [log P(ends in blank), log P(ends in token)]

        def child(h: int, c: int) -> int:
            text = self.texts[c]
            if text.startswith(" ") or h == 0 or self._ends_word(word[h], text, lexicon):
                done = finished[h] + (self._word_score(word[h], lexicon) if word[h] else 0.0)
                current = text.strip()
            else:
                done, current = finished[h], word[h] + text
            q = children[(h, c)] = len(parent)
            parent.append(h), token.append(c), finished.append(done), word.append(current)
            depth.append(depth[h] + 1)
            partial.append(done + p.token_bonus * depth[q]
                           + (0.0 if not current or current in lexicon.prefixes else p.oov_penalty))
            return q

        masked = np.where(self._allowed_ids(lexicon, logprobs.shape[1]), logprobs, NEG_INF)
        for t in range(logprobs.shape[0]):
            row = logprobs[t]
            blank_lp = float(row[self.blank])
            candidates = self._candidates(masked[t])
            extended: dict[int, list[float]] = {}
            # The hot loop of decoding: path sums are inlined rather than calling `_add` per path.
            for h, (pb, pnb) in beams.items():
                total = _logaddexp(pb, pnb)
                last = token[h]
                held = pnb + float(row[last]) if last >= 0 else NEG_INF  # the last token held: same hypothesis
                slot = extended.get(h)
                if slot is None:
                    extended[h] = [total + blank_lp, held]
                else:
                    slot[0], slot[1] = _logaddexp(slot[0], total + blank_lp), _logaddexp(slot[1], held)
                for c, lp in candidates:
                    q = children.get((h, c))
                    if q is None:
                        q = child(h, c)
                    # A repeat of the last token is a new token only after a blank.
                    path = (pb if c == last else total) + lp
                    slot = extended.get(q)
                    if slot is None:
                        extended[q] = [NEG_INF, path]
                    else:
                        slot[1] = _logaddexp(slot[1], path)
            if not candidates:
                beams = extended  # no new hypothesis: the same ones, at most beam_width, nothing to rank
                continue
            scored = sorted(((_logaddexp(*paths) + partial[h], h) for h, paths in extended.items()), reverse=True)
            floor = scored[0][0] - p.score_prune
            beams = {h: extended[h] for score, h in scored[: p.beam_width] if score >= floor}

        def final(h: int) -> float:
            score = _logaddexp(*beams[h]) + finished[h] + p.token_bonus * depth[h]
            return score + (self._word_score(word[h], lexicon) if word[h] else 0.0)

        best = max(beams, key=final)
        score = final(best)
        ids = []
        while best > 0:
            ids.append(token[best])
            best = parent[best]
        return ids[::-1], score

    def _allowed_ids(self, lexicon: Lexicon, width: int) -> np.ndarray:
        """Blank and the text tokens spelt in the lexicon's alphabet, over the lm_head's `width` ids (which may
        exceed the tokenizer's: ids past it are never emitted). The blank is ranked with the rest, so a frame
        that is surely blank extends nothing."""
        if lexicon not in self._allowed:
            allowed = np.zeros(max(width, len(self.texts)), dtype=bool)
            ids = [i for i in self.text_ids if self.texts[i].strip() and set(self.texts[i].strip()) <= lexicon.alphabet]
            allowed[ids] = True
            allowed[self.blank] = True
            self._allowed[lexicon] = allowed
        return self._allowed[lexicon][:width]

    def _candidates(self, row: np.ndarray) -> list[tuple[int, float]]:
        k = min(self.params.token_top_k, row.shape[0] - 1)
        top = np.argpartition(-row, k)[:k]
        floor = float(row[top].max()) - self.params.token_prune
        return [(int(c), float(row[c])) for c in top if row[c] > floor and c != self.blank]

    @staticmethod
    def _ends_word(word: str, text: str, lexicon: Lexicon) -> bool:
        """Whether `text` starts a new word after `word` in a spaceless language: `word` is listed and no listed
        word continues it with `text`."""
        return lexicon.spaceless and word in lexicon.log_prob and (word + text) not in lexicon.prefixes

    def _word_score(self, word: str, lexicon: Lexicon) -> float:
        log_prob = lexicon.log_prob.get(word)
        if log_prob is None:
            return self.params.oov_penalty
        return self.params.lm_weight * log_prob + self.params.word_bonus
