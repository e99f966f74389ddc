"""Small byte-level BPE tokenizers for checkpoints the project builds itself."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from app.languages import SUPPORTED_LANGUAGES

# Order fixes the ids: pad=0, eos=1, bos=2 match DiffusionGemma's config defaults.
BASE_SPECIALS: tuple[str, ...] = (
    "<pad>", "<eos>", "<bos>", "<unk>", "<audio>", "<image>", "<boi>", "<eoi>",
    "<start_of_turn>", "<end_of_turn>",
)
LANGUAGE_TAG_FORMAT = "<|{lang}|>"

# A few sentences per script so even a tiny random tokenizer has merges for all six languages.
SEED_CORPUS: tuple[str, ...] = (
    "transcribe the audio language context user model",
    "and so my fellow americans ask not what your country can do for you",
    "der schnelle braune fuchs springt über den faulen hund",
    "le vif renard brun saute par dessus le chien paresseux",
    "el veloz zorro marrón salta sobre el perro perezoso",
    "तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है",
    "敏捷的棕色狐狸跳过了懒狗",
)


def special_tokens(languages: Iterable[str] = SUPPORTED_LANGUAGES) -> list[str]:
    """Special tokens in id order, language tags last."""
    return [*BASE_SPECIALS, *(LANGUAGE_TAG_FORMAT.format(lang=lang) for lang in languages)]


def build_tokenizer(
    corpus: Iterable[str], vocab_size: int, characters: bool = False, word_initial: bool = False
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer; byte-level covers every script, so nothing maps to <unk>.

    With `characters`, every character is its own pre-token, so merges can only rebuild whole characters
    from their UTF-8 bytes: one token per character (space included) for every character of the corpus, and
    bytes for characters it never saw. A model trained from scratch with CTC learns such a small, frequent
    alphabet in a fraction of the steps whole-word tokens need.
    With `word_initial` as well, a space joins the character after it ("Ġt", as SentencePiece's "▁t"): one
    token per non-space character, so a CTC head that misses or invents a word boundary emits the wrong token
    in the right place instead of one token too few or too many, which would shift every later character
    against the canvas slot meant for it.
    BPE training in `tokenizers` is deterministic for the same corpus and settings.
    """
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    if characters:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(" ?." if word_initial else "."), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens(),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
    )


def special_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    """Ids the backbone config needs, read from the tokenizer."""
    names = {"pad": "<pad>", "eos": "<eos>", "bos": "<bos>", "image": "<image>", "boi": "<boi>", "eoi": "<eoi>"}
    return {key: tokenizer.convert_tokens_to_ids(tok) for key, tok in names.items()}
