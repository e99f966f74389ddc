"""The `ctc_start` section of `asr_config.json`: the embedded demo's CTC-start add-on and its word-list search."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from app.model.ctc_start.lexicon_search import LexiconParams

CANVASES: tuple[str, ...] = ("noise", "ctc")
DECODINGS: tuple[str, ...] = ("greedy", "lexicon")


@dataclass(frozen=True)
class CtcStartConfig:
    """With the section present, the projected audio is merged by the projector's own CTC prediction through the
    lm_head before it enters the prompt (`compression.ctc_compress`)."""

    # The canvas the first step sees: "noise", uniform random ids (the stock start); "ctc", the CTC transcript of
    # the compressed audio (`compression.ctc_canvas`) under the language tag the autoregressive head predicts
    # after the prompt (kept at every step), for the decoder to keep or correct, as Mask-CTC (Higuchi et al.,
    # 2020) refines a CTC hypothesis.
    canvas: str = "ctc"
    # How that CTC start canvas is read: "greedy", the best path; "lexicon", a beam search that weighs the
    # adapter's word list of the tagged language (`lexicon/<lang>.tsv`, word and frequency) against the audio
    # (`lexicon_search`). A language without a list is read greedily. Needs canvas "ctc".
    decoding: str = "greedy"
    # The search's weights (`LexiconParams`, whose defaults they take).
    beam_width: int = LexiconParams.beam_width
    lm_weight: float = LexiconParams.lm_weight  # times the natural log of a listed word's probability
    word_bonus: float = LexiconParams.word_bonus  # per listed word
    oov_penalty: float = LexiconParams.oov_penalty  # per word the list does not have
    token_bonus: float = LexiconParams.token_bonus  # per token of the reading
    # Without a hint, up to this many of the autoregressive head's likeliest languages are each searched in their
    # own list and the best-scoring reading names the language (1: the head's choice alone); a runner-up is
    # searched only when the head gives it at least `language_doubt`.
    languages: int = 2
    language_doubt: float = 0.01

    def __post_init__(self) -> None:
        for name, allowed in (("canvas", CANVASES), ("decoding", DECODINGS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"ctc_start.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.decoding == "lexicon" and self.canvas != "ctc":
            raise ValueError("ctc_start.decoding 'lexicon' reads the CTC start canvas: it needs canvas 'ctc'")
        if self.languages < 1:
            raise ValueError(f"ctc_start.languages must be at least 1, got {self.languages}")
        if not 0.0 <= self.language_doubt <= 1.0:
            raise ValueError(f"ctc_start.language_doubt is a probability in [0, 1], got {self.language_doubt}")

    @property
    def search_params(self) -> LexiconParams:
        """The word-list search's weights."""
        return LexiconParams(beam_width=self.beam_width, lm_weight=self.lm_weight, word_bonus=self.word_bonus,
                             oov_penalty=self.oov_penalty, token_bonus=self.token_bonus)

    def to_dict(self) -> dict[str, Any]:
        """The section as written in `asr_config.json`."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CtcStartConfig":
        """From the section; unknown keys are an error so a typo does not pass silently."""
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"ctc_start: unknown keys {unknown}")
        return cls(**data)
