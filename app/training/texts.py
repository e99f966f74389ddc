"""Random-sentence text sources for synthetic multilingual ASR training data.

Sentences are random word sequences drawn from wordfreq's offline frequency lists.
They are not grammatical, which is fine for teaching an acoustic model to map sounds
to spellings, and it keeps generation offline, licence-clean and fully reproducible.
"""

from __future__ import annotations

import random
import re
import unicodedata
import zlib
from functools import lru_cache

import wordfreq

from app.languages import SPACELESS_LANGUAGES

LANGS: tuple[str, ...] = ("en", "de", "fr", "es", "hi", "zh")
SPACELESS = SPACELESS_LANGUAGES

# Mandarin gets a smaller vocabulary: wordfreq's zh tail is full of rare characters
# and multi-character names, which would spread a small model's capacity too thinly.
DEFAULT_VOCAB: dict[str, int] = {"en": 3000, "de": 3000, "fr": 3000, "es": 3000, "hi": 3000, "zh": 800}
DEFAULT_MIN_WORDS = 3
DEFAULT_MAX_WORDS = 8

TEXT_SOURCE = f"wordfreq {getattr(wordfreq, '__version__', '3.x')} top_n_list, random word sequences"

_HANZI = re.compile(r"[\u4e00-\u9fff]+")
# Devanagari letters and signs only: excludes the danda (U+0964/5), Devanagari digits
# (U+0966-096F) and the abbreviation sign (U+0970), which espeak would read oddly.
_DEVANAGARI = re.compile(r"[\u0900-\u0963\u0971-\u097f]+")

# One-letter tokens in wordfreq's Latin-script lists are mostly clitic fragments
# (French "l'", "d'") or noise; keep only those that are real words when spoken alone.
_SINGLE_LETTER_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset({"a", "i"}),
    "de": frozenset(),
    "fr": frozenset({"a", "à", "y"}),
    "es": frozenset({"a", "y", "o", "e", "u"}),
}
# Elided French fragments that wordfreq splits off at the apostrophe.
_FRAGMENTS: dict[str, frozenset[str]] = {
    "fr": frozenset({"qu", "jusqu", "lorsqu", "puisqu", "quelqu", "aujourd", "presqu"}),
}


def _is_latin_word(token: str, lang: str) -> bool:
    """True for a purely alphabetic Latin-script token that is speakable on its own."""
    if not token.isalpha() or not all(unicodedata.name(ch, "").startswith("LATIN") for ch in token):
        return False
    if len(token) == 1 and token not in _SINGLE_LETTER_WORDS.get(lang, frozenset()):
        return False
    return token not in _FRAGMENTS.get(lang, frozenset())


def is_valid_word(token: str, lang: str) -> bool:
    """Whether a wordfreq token is a clean word for `lang` (script, no digits/punctuation)."""
    if lang == "zh":
        return _HANZI.fullmatch(token) is not None
    if lang == "hi":
        return _DEVANAGARI.fullmatch(token) is not None
    return _is_latin_word(token, lang)


@lru_cache(maxsize=32)
def vocabulary(lang: str, vocab_size: int | None = None) -> tuple[str, ...]:
    """The `vocab_size` most frequent clean words of `lang` (default per DEFAULT_VOCAB)."""
    if lang not in DEFAULT_VOCAB:
        raise ValueError(f"unsupported language {lang!r}; expected one of {LANGS}")
    size = vocab_size or DEFAULT_VOCAB[lang]
    # Over-fetch because filtering removes tokens; the raw lists hold far more than we need.
    raw = wordfreq.top_n_list(lang, size * 3)
    words = tuple(w for w in raw if is_valid_word(w, lang))[:size]
    if len(words) < size:
        raise ValueError(f"wordfreq has only {len(words)} clean {lang} words, asked for {size}")
    return words


def join_words(words: list[str], lang: str) -> str:
    """Join words the way the language writes them (no spaces between Mandarin words)."""
    return "".join(words) if lang in SPACELESS else " ".join(words)


def derive_seed(seed: int, *labels: str) -> int:
    """A stable 64-bit seed for a labelled sub-stream (Python's hash() is salted per run)."""
    key = ":".join((str(seed), *labels)).encode()
    return (zlib.crc32(key) << 32) | zlib.crc32(key[::-1])


def make_sentences(
    lang: str,
    n: int,
    seed: int,
    vocab_size: int | None = None,
    min_words: int = DEFAULT_MIN_WORDS,
    max_words: int = DEFAULT_MAX_WORDS,
    exclude: set[str] | None = None,
) -> list[str]:
    """`n` distinct random sentences in `lang`, deterministic for (lang, seed, vocab, lengths).

    Sentences in `exclude` are skipped. The stream is prefix-stable: asking for more
    sentences returns the smaller list extended, which the held-out split relies on.
    """
    if not 1 <= min_words <= max_words:
        raise ValueError("need 1 <= min_words <= max_words")
    words = vocabulary(lang, vocab_size)
    rng = random.Random(derive_seed(seed, "sentences", lang))
    blocked = exclude or set()
    seen: set[str] = set()
    out: list[str] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 100 * n + 1000:
            raise RuntimeError(f"cannot find {n} distinct {lang} sentences; vocabulary too small")
        sentence = join_words(rng.choices(words, k=rng.randint(min_words, max_words)), lang)
        if sentence in seen or sentence in blocked:
            continue
        seen.add(sentence)
        out.append(sentence)
    return out


def eval_sentences(lang: str, n_eval: int, seed: int) -> list[str]:
    """The held-out sentence stream for (lang, seed): its first `n_eval` sentences."""
    return make_sentences(lang, n_eval, derive_seed(seed, "eval"))


def train_eval_split(lang: str, n_train: int, n_eval: int, seed: int) -> tuple[list[str], list[str]]:
    """Disjoint (train, eval) sentence lists: no eval sentence ever appears in train.

    Eval comes from its own prefix-stable stream, and train is drawn from a different
    stream with every eval sentence excluded, so a smaller eval request is always a
    subset of what training was kept away from.
    """
    evals = eval_sentences(lang, n_eval, seed)
    train = make_sentences(lang, n_train, derive_seed(seed, "train"), exclude=set(evals))
    return train, evals
