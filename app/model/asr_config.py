"""The adapter's `asr_config.json`: how audio enters the prompt and how the canvas is decoded."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from app.model.ctc_lexicon import LexiconParams

SUPPORTED_LANGUAGES: tuple[str, ...] = ("en", "de", "fr", "es", "hi", "zh")

# Languages written without spaces between words.
SPACELESS_LANGUAGES: tuple[str, ...] = ("zh",)

LANGUAGE_NAMES: dict[str, str] = {
    "en": "English",
    "de": "German",
    "fr": "French",
    "es": "Spanish",
    "hi": "Hindi",
    "zh": "Mandarin",
}

AUDIO_COMPRESSIONS: tuple[str | None, ...] = (None, "ctc")
CANVAS_POSITIONS: tuple[str, ...] = ("after_prompt", "on_audio")
CANVAS_PRIORS: tuple[str | None, ...] = (None, "ctc")
CANVAS_INITS: tuple[str, ...] = ("noise", "ctc")
CTC_DECODINGS: tuple[str, ...] = ("greedy", "lexicon")
# How `diffusion-asr lexicon` weighs a list's words: as the training sentences draw them, or as the language uses them.
LEXICON_PRIORS: tuple[str, ...] = ("training", "wordfreq")


@dataclass(frozen=True)
class AsrConfig:
    """Prompt format, canvas and sampling defaults of one trained adapter."""

    # The prompt; `{audio}` becomes `audio_slots` copies of `audio_token`, `{hint}` the language/context hints.
    prompt_template: str = "<bos><start_of_turn>user\n{audio}\nTranscribe the audio.{hint}<end_of_turn>\n<start_of_turn>model\n"
    audio_token: str = "<audio>"
    audio_slots: int = 188
    language_hint: str = " Language: {language}."
    context_hint: str = " Context: {prompt}"
    canvas_length: int = 256
    default_steps: int = 8
    languages: tuple[str, ...] = SUPPORTED_LANGUAGES
    # How the model writes its language tag at the start of the canvas (e.g. "<|{lang}|>"), or None if it does not.
    language_tag_format: str | None = None
    # "ctc": the projected audio is merged by the projector's own CTC prediction through the lm_head before it
    # enters the prompt (`app.model.compression`); None: the slots go in as projected.
    audio_compression: str | None = None
    # Rotary positions of the canvas: "after_prompt" continues the prompt (the stock layout); "on_audio" puts
    # canvas slot k at the position of audio slot k - 1, so that with compressed audio the k-th character and
    # the slot that should receive it share a position (slot 0, the language tag, sits just before the audio).
    canvas_positions: str = "after_prompt"
    # "ctc": the first denoising step is self-conditioned on the CTC head's reading of the compressed audio, slot
    # by slot (`app.model.compression.ctc_canvas_prior`); needs audio_compression "ctc". None: it starts unconditioned.
    canvas_prior: str | None = None
    # The canvas the first step sees: "noise", uniform random ids (the stock start); "ctc", the greedy-CTC
    # transcript of the compressed audio (`app.model.compression.ctc_canvas`) under the language tag the
    # autoregressive head predicts after the prompt (kept at every step), for the decoder to keep or correct, as
    # Mask-CTC (Higuchi et al., 2020) refines a CTC hypothesis. Needs audio_compression "ctc".
    canvas_init: str = "noise"
    # How that CTC start canvas is read: "greedy", the best path; "lexicon", a beam search that weighs the
    # adapter's word list of the tagged language (`lexicon/<lang>.tsv`, word and frequency) against the audio
    # (`app.model.ctc_lexicon`). A language without a list is read greedily. Needs canvas_init "ctc".
    # The search's weights (`LexiconParams`, whose defaults they take).
    ctc_decoding: str = "greedy"
    lexicon_beam_width: int = LexiconParams.beam_width
    lexicon_lm_weight: float = LexiconParams.lm_weight  # times the natural log of a listed word's probability
    lexicon_word_bonus: float = LexiconParams.word_bonus  # per listed word
    lexicon_oov_penalty: float = LexiconParams.oov_penalty  # per word the list does not have
    lexicon_token_bonus: float = LexiconParams.token_bonus  # per token of the reading
    # Without a hint, up to this many of the autoregressive head's likeliest languages are each searched in their
    # own list and the best-scoring reading names the language (1: the head's choice alone); a runner-up is
    # searched only when the head gives it at least `lexicon_language_doubt`.
    lexicon_languages: int = 2
    lexicon_language_doubt: float = 0.01
    # Entropy-bound sampler and schedule (the stock DiffusionGemma defaults).
    entropy_bound: float = 0.1
    t_min: float = 0.4
    t_max: float = 0.8
    stability_threshold: int = 1
    confidence_threshold: float = 0.005

    def __post_init__(self) -> None:
        choices = {"audio_compression": AUDIO_COMPRESSIONS, "canvas_positions": CANVAS_POSITIONS,
                   "canvas_prior": CANVAS_PRIORS, "canvas_init": CANVAS_INITS, "ctc_decoding": CTC_DECODINGS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("canvas_prior", "canvas_init"):
            if getattr(self, name) == "ctc" and self.audio_compression != "ctc":
                raise ValueError(f"{name} 'ctc' reads CTC-compressed audio: it needs audio_compression 'ctc'")
        if self.ctc_decoding == "lexicon" and self.canvas_init != "ctc":
            raise ValueError("ctc_decoding 'lexicon' reads the CTC start canvas: it needs canvas_init 'ctc'")
        if self.lexicon_languages < 1:
            raise ValueError(f"lexicon_languages must be at least 1, got {self.lexicon_languages}")
        if not 0.0 <= self.lexicon_language_doubt <= 1.0:
            raise ValueError(f"lexicon_language_doubt is a probability in [0, 1], got {self.lexicon_language_doubt}")

    def language_tag(self, lang: str) -> str | None:
        """The tag token text for `lang`, when the checkpoint's format defines one."""
        return self.language_tag_format.format(lang=lang) if self.language_tag_format else None

    def save(self, path: Path) -> None:
        """Write as JSON."""
        data = asdict(self)
        data["languages"] = list(self.languages)
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: Path) -> "AsrConfig":
        """Read from JSON; unknown keys are an error so a typo does not pass silently."""
        data = json.loads(path.read_text())
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown keys {unknown}")
        if "languages" in data:
            data["languages"] = tuple(data["languages"])
        return cls(**data)
