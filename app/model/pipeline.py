"""The whole model path: audio windows -> encoder -> projector -> prompt prefill -> denoising -> text.

`AsrPipeline` holds the loaded parts and exposes each stage separately, so the engine's worker can run
encoding, prefill and denoising steps on its own schedule; `transcribe()` chains them for one input.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from app.audio.vad import AudioWindow, VoiceActivityDetector, split_windows
from app.model import encoder as whisper
from app.model.asr_config import SPACELESS_LANGUAGES, AsrConfig
from app.model.backbone import (
    Prefill, PromptBuilder, load_lora, next_tokens_among, prefill, prompt_embeddings, softcap,
)
from app.model.checkpoint import (
    CheckpointError, CheckpointPaths, default_device, default_dtype, load_lexicons, load_projector, load_tokenizer,
)
from app.model.compression import compress_runs, ctc_alignment, ctc_canvas_prior, ctc_compress, prompt_audio
from app.model.ctc_lexicon import Lexicon, LexiconBeamSearch, LexiconParams
from app.model.denoiser import DenoiseJob, SamplingParams, denoise_all
from app.model.projector import audio_slots
from app.model.sampling import TokenSampler
from app.model.transcript import (
    Segment, Timing, TranscriptDecoder, Transcription, join_segments, silent_segment,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodeOptions:
    """Per-request choices that change the result."""

    language: str | None = None
    prompt: str | None = None
    steps: int | None = None
    seed: int = 0


@dataclass
class EncodedWindow:
    """One window after the audio path: what the prompt receives, and what a word-list search reads."""

    audio: torch.Tensor  # [audio_slots, hidden] the prompt's audio embeddings
    # `ctc_decoding` "lexicon" only: the CTC head's log-probabilities over the window's real frames [frames, V],
    # and the projector's output [audio_slots, hidden] to compress again along the search's reading.
    ctc_logprobs: torch.Tensor | None = None
    projected: torch.Tensor | None = None


def window_generator(seed: int, window_index: int, device: torch.device) -> torch.Generator:
    """The random generator of one window of one request: a function of the request's seed only."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + window_index)


class AsrPipeline:
    """Loaded encoder, projector, backbone (with LoRA) and tokenizer, plus the stage functions."""

    def __init__(
        self,
        paths: CheckpointPaths,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        canvas_length: int | None = None,
        sampler: TokenSampler | None = None,
    ) -> None:
        from transformers import DiffusionGemmaForBlockDiffusion

        paths.validate()
        self.paths = paths
        self.device = device or default_device()
        self.dtype = dtype or default_dtype(self.device)
        self.config = AsrConfig.load(paths.adapter / "asr_config.json")
        if canvas_length is not None:
            self.config = replace(self.config, canvas_length=canvas_length)
        self.encoder = whisper.load_encoder(str(paths.encoder), self.device, self.dtype)
        self.frames = whisper.window_frames(self.encoder)
        self.extractor = whisper.feature_extractor_for(self.encoder)
        self.projector = load_projector(paths.adapter, self.device, self.dtype)
        backbone = DiffusionGemmaForBlockDiffusion.from_pretrained(
            str(paths.backbone), local_files_only=True, dtype=self.dtype
        )
        backbone.config.canvas_length = self.config.canvas_length
        self.backbone = load_lora(backbone.to(self.device), str(paths.adapter / "lora"))
        self.backbone.eval().requires_grad_(False)
        self.tokenizer = load_tokenizer(paths.backbone)
        self.prompts = PromptBuilder(self.tokenizer, self.config)
        self.transcripts = TranscriptDecoder(self.tokenizer, self.config)
        self.sampler = sampler
        self.params = SamplingParams(
            entropy_bound=self.config.entropy_bound,
            t_min=self.config.t_min,
            t_max=self.config.t_max,
            stability_threshold=self.config.stability_threshold,
            confidence_threshold=self.config.confidence_threshold,
        )
        self.lexicons = {lang: Lexicon(counts, spaceless=lang in SPACELESS_LANGUAGES)
                         for lang, counts in load_lexicons(paths.adapter).items()}
        self.lexicon_search = self._lexicon_search() if self.config.ctc_decoding == "lexicon" else None
        self._tag_of = {lang: tag for tag, lang in self.transcripts.tag_ids.items()}
        self._check_shapes()
        self._vad: VoiceActivityDetector | None = None

    def _check_shapes(self) -> None:
        slots = self.projector.slots(self.encoder.config.max_source_positions)
        if slots != self.config.audio_slots:
            raise CheckpointError(
                f"{self.paths.adapter}: asr_config.json has audio_slots={self.config.audio_slots} but the "
                f"projector gives {slots} for {self.encoder.config.max_source_positions} encoder frames"
            )
        hidden = self.backbone.config.text_config.hidden_size
        if self.projector.proj.out_features != hidden:
            raise CheckpointError(
                f"{self.paths.adapter}: projector outputs {self.projector.proj.out_features} but the backbone's "
                f"hidden size is {hidden}"
            )
        longest = len(self.prompts.build("en", "x" * 64).ids)
        window = self.backbone.config.text_config.sliding_window
        if longest >= window:
            raise CheckpointError(f"prompt of {longest} tokens does not fit the backbone's sliding window {window}")

    def _lexicon_search(self) -> LexiconBeamSearch:
        if not self.lexicons:
            raise CheckpointError(f"{self.paths.adapter}: ctc_decoding is 'lexicon' but there is no lexicon/*.tsv")
        c = self.config
        params = LexiconParams(beam_width=c.lexicon_beam_width, lm_weight=c.lexicon_lm_weight,
                               word_bonus=c.lexicon_word_bonus, oov_penalty=c.lexicon_oov_penalty,
                               token_bonus=c.lexicon_token_bonus)
        texts = [self.tokenizer.decode([i]) for i in range(len(self.tokenizer))]
        specials = set(self.tokenizer.all_special_ids) | set(self.transcripts.tag_ids)
        text_ids = np.array([i for i in range(len(texts)) if i not in specials], dtype=np.int64)
        return LexiconBeamSearch(texts, self.tokenizer.pad_token_id, text_ids, params)

    @property
    def window_seconds(self) -> float:
        """Seconds of audio per encoder window (from the encoder's config)."""
        return whisper.window_seconds(self.encoder)

    @property
    def name(self) -> str:
        """A display name: the adapter directory's parent for the standard layout, else the adapter's name."""
        adapter = self.paths.adapter
        return adapter.parent.name if adapter.name == "adapter" else adapter.name

    @property
    def vad(self) -> VoiceActivityDetector:
        if self._vad is None:
            self._vad = VoiceActivityDetector()
        return self._vad

    @torch.no_grad()
    def project(self, windows: list[np.ndarray]) -> torch.Tensor:
        """Projector output `[B, audio_slots, hidden]` for up to one window each (what CTC was trained on)."""
        features = whisper.log_mel(self.extractor, windows, self.frames)
        return self.projector(whisper.encode(self.encoder, features))

    @torch.no_grad()
    def compress(self, projected: torch.Tensor) -> torch.Tensor:
        """The prompt's audio embeddings from projector output, per the checkpoint's `audio_compression`."""
        return prompt_audio(projected, self.backbone.lm_head, self.tokenizer.pad_token_id,
                            self.config.audio_compression)

    def encode(self, windows: list[np.ndarray]) -> list[EncodedWindow]:
        """The audio path for up to one window each, batched: prompt embeddings (and CTC log-probabilities)."""
        return self.encode_projected(self.project(windows), [len(w) for w in windows])

    @torch.no_grad()
    def encode_projected(self, projected: torch.Tensor, num_samples: list[int]) -> list[EncodedWindow]:
        """`encode` from the projector's output `[B, audio_slots, hidden]` and each window's length in samples."""
        if self.lexicon_search is None:
            return [EncodedWindow(row) for row in self.compress(projected)]
        # One lm_head pass serves both: its argmax merges the prompt's audio (`audio_compression` is "ctc" for
        # any checkpoint that reads its CTC start with word lists), its soft-capped log-probabilities, which
        # CTC was trained on, feed the search.
        logits = softcap(self.backbone.lm_head(projected), self.backbone.final_logit_softcapping)
        audio = ctc_compress(projected, logits, self.tokenizer.pad_token_id)
        logprobs = logits.log_softmax(dim=-1).cpu()
        frames = [audio_slots(n, self.projector.subsample, audio.shape[1]) for n in num_samples]
        return [EncodedWindow(row, lp[:n], p) for row, lp, n, p in zip(audio, logprobs, frames, projected)]

    @torch.no_grad()
    def prefill(self, encoded: EncodedWindow, language: str | None, prompt: str | None) -> Prefill:
        """Backbone encoder KV cache for one window's prompt with its audio embeddings."""
        built = self.prompts.build(language, prompt)
        audio = encoded.audio
        state = prefill(self.backbone, prompt_embeddings(self.backbone, built, audio), built.canvas_start)
        ranked: list[tuple[int, float]] = []
        if self.config.canvas_init == "ctc" and self.transcripts.tag_ids:
            # Handed a transcript, the decoder reads the language from its (misspelt) text more than from
            # the audio; the autoregressive head at the prompt's end reads it from the audio alone.
            ranked = next_tokens_among(self.backbone, state, list(self.transcripts.tag_ids))
        tag = ranked[0][0] if ranked else None
        # The head's runners-up the audio leaves in doubt are searched too (each search costs 20-80 ms).
        doubtful = [self.transcripts.tag_ids[t] for i, (t, prob) in enumerate(ranked)
                    if i == 0 or prob >= self.config.lexicon_language_doubt]
        candidates = [language] if language else doubtful[: self.config.lexicon_languages]
        reading = self._lexicon_reading(encoded, candidates)
        ids = None
        if reading is not None:
            # The prompt's audio again, merged by the frames that spoke each token of the new reading: canvas
            # slot k and audio slot k must hold the same token, as under greedy compression.
            ids, audio, read_as = reading
            if not language:
                tag = self._tag_of[read_as]
            state = prefill(self.backbone, prompt_embeddings(self.backbone, built, audio), built.canvas_start)
        if "ctc" in (self.config.canvas_prior, self.config.canvas_init):
            # One lm_head pass serves both: the CTC canvas is the prior's argmax (`ctc_canvas`).
            prior = ctc_canvas_prior(audio[None], self.backbone.lm_head, self.config.canvas_length,
                                     self.tokenizer.pad_token_id, self.tokenizer.eos_token_id)[0]
        if self.config.canvas_prior == "ctc":
            state.prior = prior
        if self.config.canvas_init == "ctc":
            state.start = self._canvas(ids) if ids is not None else prior[1:].argmax(dim=-1)
            state.tag = tag
        return state

    def _lexicon_reading(self, encoded: EncodedWindow, languages: list[str]
                         ) -> tuple[list[int], torch.Tensor, str] | None:
        """The word-list search's token ids for one window, the prompt audio compressed along them and their
        language, or None where the checkpoint, the first language or the window has no word-list reading.

        Each of `languages` (likeliest first) that has a list is searched and the best-scoring reading wins: on
        a short clip the autoregressive head can be sure of a wrong language whose list the audio fits badly."""
        if self.lexicon_search is None or encoded.ctc_logprobs is None or not languages:
            return None
        if languages[0] not in self.lexicons:
            return None
        logprobs = encoded.ctc_logprobs.numpy()
        readings = [(self.lexicon_search.decode_scored(logprobs, self.lexicons[lang]), lang)
                    for lang in languages if lang in self.lexicons]
        (ids, _), language = max(readings, key=lambda reading: reading[0][1])
        ids = ids[: self.config.canvas_length - 2]
        token_of_frame = ctc_alignment(logprobs, ids, self.tokenizer.pad_token_id)
        if token_of_frame is None:
            return None
        runs = torch.full((1, encoded.projected.shape[0]), -1, dtype=torch.long, device=self.device)
        runs[0, : len(token_of_frame)] = torch.from_numpy(token_of_frame).to(self.device)
        return ids, compress_runs(encoded.projected[None], runs)[0], language

    def _canvas(self, ids: list[int]) -> torch.Tensor:
        """Canvas slots 1.. for a transcript's ids: the ids (cut to fit), `<eos>`, then `<pad>`."""
        slots = self.config.canvas_length - 1
        ids = ids[: slots - 1] + [self.tokenizer.eos_token_id]
        return torch.tensor(ids + [self.tokenizer.pad_token_id] * (slots - len(ids)), device=self.device)

    def steps_for(self, options: DecodeOptions) -> int:
        """The step budget: the request's, else the checkpoint's default."""
        return options.steps or self.config.default_steps

    def transcribe(self, audio: np.ndarray, options: DecodeOptions = DecodeOptions()) -> Transcription:
        """Transcribe one input; audio longer than the window is split at pauses and denoised as one batch."""
        started = time.perf_counter()
        windows = split_windows(audio, self.window_seconds, self.vad)
        result = join_segments(self.transcribe_windows(windows, options), duration=len(audio) / whisper.SAMPLE_RATE)
        result.timing.total_ms = (time.perf_counter() - started) * 1000.0
        return result

    def transcribe_windows(self, windows: list[AudioWindow], options: DecodeOptions) -> list[Segment]:
        """One segment per window; windows with speech are denoised together, silent ones give empty text.

        Window i always draws from generator (seed, i), as in the engine, so both give the same text.
        """
        sync = (lambda: torch.cuda.synchronize(self.device)) if self.device.type == "cuda" else (lambda: None)
        speech = [i for i, w in enumerate(windows) if w.has_speech]
        segments = {i: silent_segment(i, w, options.language) for i, w in enumerate(windows) if not w.has_speech}
        if speech:
            t0 = time.perf_counter()
            audio = self.encode([windows[i].samples for i in speech])
            sync()
            encoder_ms = (time.perf_counter() - t0) * 1000.0 / len(speech)
            jobs, prefill_ms = [], []
            for index, encoded in zip(speech, audio):
                t1 = time.perf_counter()
                jobs.append(DenoiseJob(
                    prefill=self.prefill(encoded, options.language, options.prompt),
                    steps=self.steps_for(options),
                    generator=window_generator(options.seed, index, self.device),
                ))
                sync()
                prefill_ms.append((time.perf_counter() - t1) * 1000.0)
            results = denoise_all(self.backbone, jobs, self.params, self.sampler)
            for index, result, pf_ms in zip(speech, results, prefill_ms):
                text, language = self.transcripts.decode(result.tokens, options.language)
                timing = Timing(encoder_ms=encoder_ms, prefill_ms=pf_ms, denoise_ms=result.denoise_ms,
                                batch_size=result.batch_size, steps=result.steps)
                timing.total_ms = timing.encoder_ms + timing.prefill_ms + timing.denoise_ms
                window = windows[index]
                segments[index] = Segment(index, window.start, window.end, text, language, timing)
        return [segments[i] for i in range(len(windows))]


def load_pipeline(model: Path | None = None, **overrides) -> AsrPipeline:
    """Load from one model directory (standard layout) or from the three parts given separately."""
    parts = {k: overrides.pop(k, None) for k in ("encoder", "backbone", "adapter")}
    paths = CheckpointPaths.resolve(model, **parts)
    return AsrPipeline(paths, **overrides)
