"""`CtcStart`: the embedded demo's row start. The projected audio is merged by its own CTC prediction before it
enters the prompt; with `canvas` "ctc", the canvas starts from the CTC head's reading (greedy, or searched
against the adapter's word lists) under the language tag the autoregressive head reads from the audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import DiffusionGemmaForBlockDiffusion, PreTrainedTokenizerBase

from app.languages import SPACELESS_LANGUAGES
from app.model.backbone import Prefill, prefill, prompt_embeddings, softcap
from app.model.alignment import ctc_alignment
from app.model.ctc_start.compression import compress_runs, ctc_canvas, ctc_compress, prompt_audio
from app.model.ctc_start.config import CtcStartConfig
from app.model.ctc_start.lexicon_search import Lexicon, LexiconBeamSearch
from app.model.projector import audio_slots
from app.model.prompt import Prompt
from app.model.row_start import EncodedWindow


@dataclass
class CtcWindow(EncodedWindow):
    """A window as the word-list search reads it, beside the compressed audio the prompt receives."""

    # The CTC head's log-probabilities over the window's real frames [frames, V], and the projector's output
    # [audio_slots, hidden] to compress again along the search's reading.
    ctc_logprobs: torch.Tensor | None = None
    projected: torch.Tensor | None = None


@torch.no_grad()
def next_tokens_among(model: DiffusionGemmaForBlockDiffusion, state: Prefill,
                      allowed: list[int]) -> list[tuple[int, float]]:
    """`allowed` with the autoregressive head's probability for each as the token after the prompt (renormalised
    over `allowed`), most likely first.

    Training's autoregressive loss reads the tag from exactly this position (the lm_head over the prompt's last
    hidden state, soft-capped as in training).
    """
    logits = softcap(model.lm_head(state.last_hidden), model.final_logit_softcapping)
    probs = logits[allowed].softmax(dim=-1)  # `softcap` returns fp32
    return [(allowed[int(i)], float(probs[i])) for i in probs.argsort(descending=True)]


class CtcStart:
    """The `RowStart` of checkpoints with a `ctc_start` section."""

    def __init__(self, backbone: DiffusionGemmaForBlockDiffusion, tokenizer: PreTrainedTokenizerBase,
                 tag_ids: dict[int, str], canvas_length: int, subsample: int, config: CtcStartConfig,
                 lexicons: dict[str, dict[str, float]]) -> None:
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.tag_ids = tag_ids
        self.tag_of = {lang: tag for tag, lang in tag_ids.items()}
        self.canvas_length = canvas_length
        self.subsample = subsample
        self.config = config
        self.lexicons = {lang: Lexicon(counts, spaceless=lang in SPACELESS_LANGUAGES)
                         for lang, counts in lexicons.items()}
        self.search = self._search() if config.decoding == "lexicon" else None

    def _search(self) -> LexiconBeamSearch:
        if not self.lexicons:
            raise ValueError("ctc_start.decoding is 'lexicon' but there is no lexicon/*.tsv")
        texts = [self.tokenizer.decode([i]) for i in range(len(self.tokenizer))]
        specials = set(self.tokenizer.all_special_ids) | set(self.tag_ids)
        text_ids = np.array([i for i in range(len(texts)) if i not in specials], dtype=np.int64)
        return LexiconBeamSearch(texts, self.tokenizer.pad_token_id, text_ids, self.config.search_params)

    @torch.no_grad()
    def encode(self, projected: torch.Tensor, num_samples: list[int]) -> list[EncodedWindow]:
        """The prompt's audio merged by CTC runs (and, for the search, the CTC log-probabilities)."""
        blank = self.tokenizer.pad_token_id
        if self.search is None:
            return [CtcWindow(row) for row in prompt_audio(projected, self.backbone.lm_head, blank)]
        # One lm_head pass serves both: its argmax merges the prompt's audio, its soft-capped log-probabilities,
        # which CTC was trained on, feed the search.
        logits = softcap(self.backbone.lm_head(projected), self.backbone.final_logit_softcapping)
        audio = ctc_compress(projected, logits, blank)
        logprobs = logits.log_softmax(dim=-1).cpu()
        frames = [audio_slots(n, self.subsample, audio.shape[1]) for n in num_samples]
        return [CtcWindow(row, lp[:n], p) for row, lp, n, p in zip(audio, logprobs, frames, projected)]

    @torch.no_grad()
    def prefill(self, encoded: EncodedWindow, prompt: Prompt, language: str | None) -> Prefill:
        """The prompt's KV cache; with the CTC canvas, also the start canvas and the tag kept in slot 0."""
        audio = encoded.audio
        state = prefill(self.backbone, prompt_embeddings(self.backbone, prompt, audio))
        if self.config.canvas != "ctc":
            return state
        ranked: list[tuple[int, float]] = []
        if self.tag_ids:
            # Handed a transcript, the decoder reads the language from its (misspelt) text more than from
            # the audio; the autoregressive head at the prompt's end reads it from the audio alone.
            ranked = next_tokens_among(self.backbone, state, list(self.tag_ids))
        tag = ranked[0][0] if ranked else None
        # The head's runners-up the audio leaves in doubt are searched too (each search costs 20-80 ms).
        doubt = self.config.language_doubt
        doubtful = [self.tag_ids[t] for i, (t, prob) in enumerate(ranked) if i == 0 or prob >= doubt]
        candidates = [language] if language else doubtful[: self.config.languages]
        reading = self._reading(encoded, candidates)
        if reading is None:
            state.start = ctc_canvas(audio[None], self.backbone.lm_head, self.canvas_length,
                                     self.tokenizer.pad_token_id, self.tokenizer.eos_token_id)[0]
        else:
            # The prompt's audio again, merged by the frames that spoke each token of the new reading: canvas
            # slot k and audio slot k must hold the same token, as under greedy compression.
            ids, audio, read_as = reading
            if not language:
                tag = self.tag_of[read_as]
            state = prefill(self.backbone, prompt_embeddings(self.backbone, prompt, audio))
            state.start = self._canvas(ids, audio.device)
        state.tag = tag
        return state

    def prefill_many(self, encoded: list[EncodedWindow], prompts: list[Prompt],
                     languages: list[str | None]) -> list[Prefill]:
        """One window at a time: each window's search decides the prompt audio its final prefill reads."""
        return [self.prefill(e, p, lang) for e, p, lang in zip(encoded, prompts, languages)]

    def _reading(self, encoded: EncodedWindow, languages: list[str]) -> tuple[list[int], torch.Tensor, str] | None:
        """The word-list search's token ids for one window, the prompt audio compressed along them and their
        language, or None where the checkpoint, the first language or the window has no word-list reading.

        Each of `languages` (likeliest first) that has a list is searched and the best-scoring reading wins: on
        a short clip the autoregressive head can be sure of a wrong language whose list the audio fits badly."""
        if self.search is None or not isinstance(encoded, CtcWindow) or encoded.ctc_logprobs is None:
            return None
        if not languages or languages[0] not in self.lexicons:
            return None
        logprobs = encoded.ctc_logprobs.numpy()
        readings = [(self.search.decode_scored(logprobs, self.lexicons[lang]), lang)
                    for lang in languages if lang in self.lexicons]
        (ids, _), language = max(readings, key=lambda reading: reading[0][1])
        ids = ids[: self.canvas_length - 2]
        token_of_frame = ctc_alignment(logprobs, ids, self.tokenizer.pad_token_id)
        if token_of_frame is None:
            return None
        runs = torch.full((1, encoded.projected.shape[0]), -1, dtype=torch.long, device=encoded.projected.device)
        runs[0, : len(token_of_frame)] = torch.from_numpy(token_of_frame).to(runs.device)
        return ids, compress_runs(encoded.projected[None], runs)[0], language

    def _canvas(self, ids: list[int], device: torch.device) -> torch.Tensor:
        """Canvas slots 1.. for a transcript's ids: the ids (cut to fit), `<eos>`, then `<pad>`."""
        slots = self.canvas_length - 1
        ids = ids[: slots - 1] + [self.tokenizer.eos_token_id]
        return torch.tensor(ids + [self.tokenizer.pad_token_id] * (slots - len(ids)), device=device)
