"""Stage 5: canvas tokens to text and language."""

from __future__ import annotations

import re

from tokenizers import decoders
from transformers import PreTrainedTokenizerBase
from transformers.convert_slow_tokenizer import bytes_to_unicode

from app.languages import SUPPORTED_LANGUAGES, UNKNOWN_LANGUAGE
from app.model.asr_config import AsrConfig
from app.results import TokenLogprob

_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # SentencePiece's byte tokens (Gemma's vocabulary has them)


def byte_level_decoder(tokenizer: PreTrainedTokenizerBase) -> dict[str, int] | None:
    """Character -> byte of a byte-level BPE vocabulary (GPT-2's mapping), or None for other tokenizers."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not isinstance(backend.decoder, decoders.ByteLevel):
        return None
    return {char: byte for byte, char in bytes_to_unicode().items()}


class LanguageIdentifier:
    """Text language identification among the six supported languages (lingua), built on first use."""

    def __init__(self) -> None:
        self._detector = None

    def _build(self):
        from lingua import Language, LanguageDetectorBuilder

        languages = [Language.ENGLISH, Language.GERMAN, Language.FRENCH, Language.SPANISH, Language.HINDI,
                     Language.CHINESE]
        return LanguageDetectorBuilder.from_languages(*languages).with_preloaded_language_models().build()

    def identify(self, text: str) -> str:
        """ISO-639-1 code of `text`, or "unknown" when there are no letters or lingua is unsure."""
        if not any(ch.isalpha() for ch in text):
            return UNKNOWN_LANGUAGE
        if self._detector is None:
            self._detector = self._build()
        found = self._detector.detect_language_of(text)
        if found is None:
            return UNKNOWN_LANGUAGE
        code = found.iso_code_639_1.name.lower()
        return code if code in SUPPORTED_LANGUAGES else UNKNOWN_LANGUAGE


class TranscriptDecoder:
    """Strips special and pad tokens from a final canvas and settles the segment's language."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: AsrConfig) -> None:
        self.tokenizer = tokenizer
        self.eos_id = tokenizer.eos_token_id
        self.special_ids = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
        self.vocab_limit = len(tokenizer)
        self.tag_ids: dict[int, str] = {}
        for lang in config.languages:
            tag = config.language_tag(lang)
            if tag is not None:
                tag_id = tokenizer.convert_tokens_to_ids(tag)
                if tag_id is not None and tag_id != tokenizer.unk_token_id:
                    self.tag_ids[tag_id] = lang
        self.identifier = LanguageIdentifier()
        self._bytes_of = byte_level_decoder(tokenizer)

    def token_bytes(self, token: int) -> bytes:
        """The exact bytes a token stands for (a byte-level token may hold part of a UTF-8 character)."""
        piece = self.tokenizer.convert_ids_to_tokens(token)
        if self._bytes_of is not None and all(char in self._bytes_of for char in piece):
            return bytes(self._bytes_of[char] for char in piece)
        fallback = _BYTE_FALLBACK.fullmatch(piece)
        if fallback is not None:
            return bytes([int(fallback.group(1), 16)])
        return piece.replace("\u2581", " ").encode("utf-8")  # SentencePiece writes a space as U+2581

    def text_positions(self, tokens: list[int]) -> list[int]:
        """Canvas positions of the text: before the first end-of-sequence, without special, pad or
        out-of-vocabulary ids."""
        end = tokens.index(self.eos_id) if self.eos_id in tokens else len(tokens)
        return [i for i in range(end) if tokens[i] not in self.special_ids and tokens[i] < self.vocab_limit]

    def text_tokens(self, tokens: list[int]) -> list[int]:
        """Tokens up to the first end-of-sequence, without special, pad or out-of-vocabulary ids."""
        return [tokens[i] for i in self.text_positions(tokens)]

    def token_logprobs(self, tokens: list[int], logprobs: list[float]) -> tuple[list[int], list[TokenLogprob]]:
        """The text's token ids and, per token, its text, log-probability and exact bytes (the text of a token
        that holds only part of a UTF-8 character shows U+FFFD; its bytes are exact)."""
        positions = self.text_positions(tokens)
        ids = [tokens[i] for i in positions]
        entries = []
        for i, token in zip(positions, ids):
            piece = self.tokenizer.decode([token], skip_special_tokens=True, clean_up_tokenization_spaces=False)
            logprob = logprobs[i] if i < len(logprobs) else 0.0
            entries.append(TokenLogprob(piece, logprob, tuple(self.token_bytes(token))))
        return ids, entries

    def model_language(self, tokens: list[int]) -> str | None:
        """The language tag the model wrote first, when the checkpoint's format defines tags."""
        for token in tokens:
            if token == self.eos_id:
                break
            if token in self.tag_ids:
                return self.tag_ids[token]
        return None

    def decode(self, tokens: list[int], language_hint: str | None) -> tuple[str, str]:
        """(text, language): the hint wins, then the model's tag, then text language identification."""
        text = self.tokenizer.decode(self.text_tokens(tokens), skip_special_tokens=True).strip()
        if language_hint:
            return text, language_hint
        tagged = self.model_language(tokens)
        if tagged is not None:
            return text, tagged
        return text, self.identifier.identify(text)
