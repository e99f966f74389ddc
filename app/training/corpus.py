"""Natural sentences for training and evaluation, extracted from text that Debian packages install.

`diffusion-asr corpus` reads the sources below (installed by `make training-deps`), cleans each sentence,
drops duplicates and writes `<out>/<lang>/{train,dev,eval}.txt` plus `manifest.json` (counts, sources, licences,
package versions). Licences and choices are in docs/training-data.md.

The split is a pure function of the sentence's normalised form (`sentence_key`): a keyed hash puts it in
train, dev or eval. So a sentence is in the same split whichever sources, order or options built the corpus,
two spellings that differ only in case or punctuation share one split, and an eval sentence cannot reach train.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import subprocess
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from app.languages import SUPPORTED_LANGUAGES

SPLIT_NAMES: tuple[str, ...] = ("train", "dev", "eval")
DEFAULT_DEV_FRACTION = 0.05
DEFAULT_EVAL_FRACTION = 0.05
# Changing this re-deals every sentence between the splits: only with a new corpus version and a new model.
_SPLIT_KEY = b"diffusion-asr corpus split v1"
MANIFEST = "manifest.json"

# Sentence length bounds: long enough to be a sentence, short enough to fit a 10 s window when spoken.
MIN_WORDS, MAX_WORDS, MAX_CHARS = 3, 20, 120
ZH_MIN_CHARS, ZH_MAX_CHARS = 5, 36

# Letters each language may use. Digits, symbols and other scripts are rejected rather than cleaned: espeak-ng
# would read "3" or "%" as words that are not in the transcript, and a Latin name inside Hindi or Chinese text is
# read with the wrong phonology.
_LATIN_EXTRA = {
    "en": "",
    "de": "äöüßÄÖÜ",
    "fr": "àâæçéèêëîïôœùûüÿÀÂÆÇÉÈÊËÎÏÔŒÙÛÜŸ",
    "es": "áéíóúñüÁÉÍÓÚÑÜ",
}
_PUNCT_LATIN = " ,.;:!?'-"
_LETTERS: dict[str, re.Pattern[str]] = {
    **{lang: re.compile(f"[A-Za-z{extra}{re.escape(_PUNCT_LATIN)}¿¡]+") for lang, extra in _LATIN_EXTRA.items()},
    "hi": re.compile(r"[\u0900-\u0963\u0971-\u097f ,.?!।-]+"),
    "zh": re.compile(r"[\u4e00-\u9fff，。？！、；：]+"),
}
# Marks that are dropped (not a reason to reject): quotes of every kind, and typographic dashes/apostrophes mapped.
_DROP = str.maketrans({c: None for c in "\"“”„«»‹›「」『』《》‘"})
_MAP = str.maketrans({"’": "'", "–": "-", "—": "-", "…": ".", "\u00a0": " ", "\u3000": ""})
_FINAL_MARKS = ".!?।。！？"
_SENTENCE_END = re.compile(r"(?<=[.!?।。！？])\s*")


@dataclass(frozen=True)
class Source:
    """One text source: where its package installs it, how to read it, and its licence."""

    name: str
    lang: str
    package: str
    licence: str
    path: str  # relative to the file-system root, so tests can point at a tree they write
    reader: Callable[[Path, str], Iterator[str]]


def read_fortunes(path: Path, lang: str) -> Iterator[str]:
    """Sentences of every fortune file under `path` (entries separated by lines of `%`, attributions dropped)."""
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix not in (".dat", ".u8")) \
        if path.is_dir() else [path]
    for file in files:
        text = file.read_text(encoding="utf-8", errors="replace")
        for entry in re.split(r"^%\s*$", text, flags=re.M):
            # Attribution lines ("-- Mark Twain", "\t\t-- ...") and dialogue labels ("A: ...") are not speech.
            lines = [ln.strip() for ln in entry.splitlines() if ln.strip() and not ln.strip().startswith("--")]
            yield from split_sentences(" ".join(lines))


_FILLETS_EN = re.compile(r'dialogId\("[^"]*",\s*"[^"]*",\s*"((?:[^"\\]|\\.)*)"\)')
_FILLETS_STR = re.compile(r'dialogStr\("((?:[^"\\]|\\.)*)"\)')


def read_fillets(path: Path, lang: str) -> Iterator[str]:
    """Sentences of Fish Fillets' level dialogues in `lang` (English is the id line, others `dialogStr`)."""
    pattern = _FILLETS_EN if lang == "en" else _FILLETS_STR
    for file in sorted(path.glob(f"*/dialogs_{lang}.lua")):
        for line in pattern.findall(file.read_text(encoding="utf-8", errors="replace")):
            yield from split_sentences(line.replace('\\"', '"'))


_PARAGRAPH = re.compile(r"<p[^>]*>(.*?)</p>", re.S)
_TAG = re.compile(r"<[^>]+>")


def read_help_pages(path: Path, lang: str) -> Iterator[str]:
    """Sentences of the paragraphs of LibreOffice's help pages under `path`."""
    for file in sorted(path.rglob("*.html")):
        for para in _PARAGRAPH.findall(file.read_text(encoding="utf-8", errors="replace")):
            # Headings ("Title is: ...") and captions are not sentences; a sentence ends with its mark.
            yield from (s for s in split_sentences(html.unescape(_TAG.sub(" ", para)))
                        if s[-1] in _FINAL_MARKS and not s.startswith("Title is:"))


_HELP = "usr/share/libreoffice/help/{}/text"
SOURCES: tuple[Source, ...] = (
    Source("fortunes", "en", "fortunes", "BSD-4-Clause (UC Berkeley)", "usr/share/games/fortunes", read_fortunes),
    Source("fortunes-de", "de", "fortunes-de", "GPL-2+", "usr/share/games/fortunes/de", read_fortunes),
    Source("fortunes-es", "es", "fortunes-es", "GPL-2+ (texts presumed public domain)",
           "usr/share/games/fortunes/es", read_fortunes),
    *(Source(f"fillets-{lang}", lang, "fillets-ng-data", "GPL-2", "usr/share/games/fillets-ng/script", read_fillets)
      for lang in ("en", "de", "fr", "es")),
    *(Source(f"libreoffice-help-{lang}", lang, f"libreoffice-help-{pkg}", "MPL-2.0", _HELP.format(folder),
             read_help_pages)
      for lang, pkg, folder in (("de", "de", "de"), ("fr", "fr", "fr"), ("es", "es", "es"), ("hi", "hi", "hi"),
                                ("zh", "zh-cn", "zh-CN"))),
)
PACKAGES: tuple[str, ...] = tuple(sorted({s.package for s in SOURCES}))


def split_sentences(text: str) -> list[str]:
    """Text cut after each sentence-final mark, whitespace collapsed."""
    text = re.sub(r"\s+", " ", text).strip()
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def clean_sentence(text: str, lang: str, min_words: int = MIN_WORDS) -> str | None:
    """The sentence normalised for synthesis and as a transcript, or None when it is not usable in `lang`.

    `min_words` is lower for recorded prompts, where a one-word utterance is still real speech."""
    text = unicodedata.normalize("NFC", text).translate(_MAP).translate(_DROP)
    text = re.sub(r"\s+", " ", text).strip(" -,;:")
    if lang == "zh":
        text = text.replace(" ", "")
        ok = ZH_MIN_CHARS <= len(text) <= ZH_MAX_CHARS
    else:
        words = [w for w in text.split(" ") if any(ch.isalpha() for ch in w)]
        ok = min_words <= len(words) <= MAX_WORDS and len(text) <= MAX_CHARS
    if not ok or _LETTERS[lang].fullmatch(text) is None:
        return None
    if lang in _LATIN_EXTRA and (text.isupper() or "--" in text or "''" in text):
        return None  # shouted headings and ASCII-art remains
    if re.search(r"\s[.,]|[.,]\s*[.,]", text):
        return None  # " ." or ". ." is where a removed element (a number, a menu path, an image) stood
    return text


def sentence_key(text: str) -> str:
    """What makes two sentences the same: their letters, case-folded (punctuation and spacing ignored)."""
    # Letters, digits and combining marks (Devanagari vowel signs are marks, not letters).
    return "".join(ch for ch in unicodedata.normalize("NFC", text).casefold() if unicodedata.category(ch)[0] in "LMN")


def assign_split(key: str, dev_fraction: float = DEFAULT_DEV_FRACTION,
                 eval_fraction: float = DEFAULT_EVAL_FRACTION) -> str:
    """'eval', 'dev' or 'train' for a sentence key: a keyed hash, so the same key always lands in the same split."""
    digest = hashlib.blake2b(key.encode(), key=_SPLIT_KEY, digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    if u < eval_fraction:
        return "eval"
    return "dev" if u < eval_fraction + dev_fraction else "train"


def collect(sentences: Iterable[str], lang: str) -> list[str]:
    """Cleaned, de-duplicated sentences (first spelling of each key kept), in a canonical order (by hash)."""
    kept: dict[str, str] = {}
    for raw in sentences:
        text = clean_sentence(raw, lang)
        if text is not None:
            kept.setdefault(sentence_key(text), text)
    # Sorted by a hash of the key, not by source order: a shuffled but reproducible order, so taking the first N
    # sentences of a split mixes every source.
    return [kept[k] for k in sorted(kept, key=lambda k: hashlib.blake2b(k.encode(), digest_size=8).digest())]


def package_version(package: str) -> str | None:
    """The installed Debian version of `package`, or None when dpkg does not know it."""
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True,
                         check=False)
    return out.stdout.strip() or None if out.returncode == 0 else None


def build_corpus(out_dir: Path, langs: Iterable[str] = SUPPORTED_LANGUAGES, root: Path = Path("/"),
                 dev_fraction: float = DEFAULT_DEV_FRACTION,
                 eval_fraction: float = DEFAULT_EVAL_FRACTION) -> dict:
    """Extract, clean, de-duplicate and split every source of `langs`; writes the files, returns the manifest.

    Raises FileNotFoundError naming the packages to install when a source is missing.
    """
    langs = list(langs)
    chosen = [s for s in SOURCES if s.lang in langs]
    missing = sorted({s.package for s in chosen if not (root / s.path).exists()})
    if missing:
        raise FileNotFoundError(f"text sources missing: install the Debian packages {' '.join(missing)} "
                                f"(make training-deps)")
    out_dir = Path(out_dir)
    manifest: dict = {"version": 1, "dev_fraction": dev_fraction, "eval_fraction": eval_fraction,
                      "counts": {}, "sources": {}}
    for lang in langs:
        per_source: dict[str, int] = {}
        raw: list[str] = []
        for source in (s for s in chosen if s.lang == lang):
            found = list(source.reader(root / source.path, lang))
            per_source[source.name] = len(found)
            raw += found
        sentences = collect(raw, lang)
        split: dict[str, list[str]] = {name: [] for name in SPLIT_NAMES}
        for text in sentences:
            split[assign_split(sentence_key(text), dev_fraction, eval_fraction)].append(text)
        (out_dir / lang).mkdir(parents=True, exist_ok=True)
        for name, lines in split.items():
            (out_dir / lang / f"{name}.txt").write_text("".join(f"{t}\n" for t in lines), encoding="utf-8")
        manifest["counts"][lang] = {name: len(lines) for name, lines in split.items()}
        manifest["counts"][lang]["raw_sentences"] = per_source
    for source in chosen:
        manifest["sources"][source.name] = {"lang": source.lang, "package": source.package,
                                            "version": package_version(source.package), "licence": source.licence}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
    return manifest


def load_split(corpus_dir: Path, lang: str, split: str) -> list[str]:
    """The sentences of one language's split, in the corpus's order."""
    if split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {SPLIT_NAMES}, got {split!r}")
    path = Path(corpus_dir) / lang / f"{split}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: build the corpus first (diffusion-asr corpus --out {corpus_dir})")
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line]
