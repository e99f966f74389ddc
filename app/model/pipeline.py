"""The whole model path on loaded parts: audio windows -> encoder -> projector -> prompt prefill -> denoising -> text.

One window's way through it is written once: `encode` (batched), `start_rows` (batched prefill, each row's generator and
draft hook), a `DenoiseBatch` from `new_batch` that steps any mix of rows, and `finish_row` (text, language,
timing). The engine's worker schedules those calls across requests; `transcribe` runs them for one input.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from transformers import DiffusionGemmaForBlockDiffusion, PreTrainedTokenizerBase
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from app.audio.vad import AudioWindow, VoiceActivityDetector, split_windows
from app.model import encoder as whisper
from app.model.alignment import WordAligner
from app.model.asr_config import AsrConfig
from app.model.backbone import Prefill
from app.model.denoiser import DenoiseBatch, DenoiseJob, DenoiseResult, SamplingParams
from app.model.projector import AnyProjector, audio_slots, slot_samples
from app.model.prompt import PromptBuilder
from app.model.row_start import EncodedWindow, RowStart
from app.model.sampling import TokenSampler
from app.model.transcript import TranscriptDecoder
from app.results import DecodeOptions, Segment, Timing, Transcription, join_segments, silent_segment

DraftHook = Callable[[int, int, str], None]
"""Called after every denoising step of a row with (step, step budget, the canvas's text)."""

RowSpec = tuple[EncodedWindow, int, AudioWindow, DecodeOptions, DraftHook | None]
"""A window to start: (encoded window, its index in its request, the window, the request's options, draft hook)."""


@dataclass
class AsrParts:
    """The loaded modules of one model (`app.checkpoint` reads them)."""

    encoder: WhisperEncoder
    projector: AnyProjector
    backbone: DiffusionGemmaForBlockDiffusion  # with the adapter's LoRA injected
    tokenizer: PreTrainedTokenizerBase


@dataclass
class Row:
    """One window on its way through the denoiser: what the batch runs and what its segment will say."""

    index: int  # the window's index within its request
    start: float
    end: float
    options: DecodeOptions
    job: DenoiseJob
    encoder_ms: float
    prefill_ms: float
    slots: torch.Tensor | None = None  # the CTC head's input, kept only when word timestamps are asked for


def window_generator(seed: int, window_index: int, device: torch.device) -> torch.Generator:
    """The random generator of one window of one request: a function of the request's seed only."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + window_index)


def sampling_params(config: AsrConfig) -> SamplingParams:
    """The adapter's sampler settings."""
    return SamplingParams(entropy_bound=config.entropy_bound, t_min=config.t_min, t_max=config.t_max,
                          stability_threshold=config.stability_threshold,
                          confidence_threshold=config.confidence_threshold)


class AsrPipeline:
    """Loaded encoder, projector, backbone (with LoRA) and tokenizer, and the stages of one window."""

    def __init__(self, name: str, parts: AsrParts, config: AsrConfig, start: RowStart,
                 sampler: TokenSampler | None = None) -> None:
        self.name = name
        self.encoder = parts.encoder
        self.projector = parts.projector
        self.backbone = parts.backbone
        self.tokenizer = parts.tokenizer
        self.config = config
        self.start = start
        self.sampler = sampler
        self.device = self.backbone.lm_head.weight.device
        self.dtype = self.backbone.lm_head.weight.dtype
        self.frames = whisper.window_frames(self.encoder)
        self.extractor = whisper.feature_extractor_for(self.encoder)
        self.prompts = PromptBuilder(self.tokenizer, config)
        self.transcripts = TranscriptDecoder(self.tokenizer, config)
        self.params = sampling_params(config)
        self.aligner = WordAligner(self.backbone.lm_head, self.backbone.final_logit_softcapping, self.tokenizer,
                                   self.tokenizer.pad_token_id, slot_samples(self.projector.subsample)
                                   / whisper.SAMPLE_RATE)

        # Batch sizes the decoder's forward is padded to (`DenoiseBatch`); none: every batch at its own size.
        self.batch_buckets: tuple[int, ...] = ()
        self._vad: VoiceActivityDetector | None = None

    @property
    def window_seconds(self) -> float:
        """Seconds of audio per encoder window (from the encoder's config)."""
        return whisper.window_seconds(self.encoder)

    @property
    def languages(self) -> tuple[str, ...]:
        """The languages the adapter transcribes."""
        return self.config.languages

    @property
    def default_steps(self) -> int:
        """The adapter's own denoising step budget."""
        return self.config.default_steps

    @property
    def vad(self) -> VoiceActivityDetector:
        """The voice activity detector that splits long inputs (built on first use)."""
        if self._vad is None:
            self._vad = VoiceActivityDetector()
        return self._vad

    @torch.no_grad()
    def project(self, windows: list[np.ndarray]) -> torch.Tensor:
        """Projector output `[B, audio_slots, hidden]` for up to one window each (what CTC was trained on)."""
        features = whisper.log_mel(self.extractor, windows, self.frames)
        return self.projector(whisper.encode(self.encoder, features))

    def encode(self, windows: list[np.ndarray]) -> list[EncodedWindow]:
        """The audio path for up to one window each, batched."""
        projected = self.project(windows)
        encoded = self.start.encode(projected, [len(w) for w in windows])
        for item, row, window in zip(encoded, projected, windows):
            item.slots = row[: audio_slots(len(window), self.projector.subsample, projected.shape[1])]
        return encoded

    def prefill(self, encoded: EncodedWindow, language: str | None, prompt: str | None) -> Prefill:
        """The backbone's KV cache for one window's prompt with its audio embeddings."""
        return self.start.prefill(encoded, self.prompts.build(language, prompt), language)

    def start_row(self, encoded: EncodedWindow, index: int, window: AudioWindow, options: DecodeOptions,
                  encoder_ms: float = 0.0, on_draft: DraftHook | None = None) -> Row:
        """Prefill one window and make its row; window `index` always draws from generator (seed, index)."""
        return self.start_rows([(encoded, index, window, options, on_draft)], encoder_ms)[0]

    def start_rows(self, windows: list[RowSpec], encoder_ms: float = 0.0) -> list[Row]:
        """Prefill windows that join the batch together (prompts of one length in one encoder pass; `prefill_many`)
        and make their rows, in order; each row is charged an equal share of the prefill time."""
        started = time.perf_counter()
        prompts = [self.prompts.build(options.language, options.prompt) for _, _, _, options, _ in windows]
        languages = [options.language for _, _, _, options, _ in windows]
        states = self.start.prefill_many([encoded for encoded, *_ in windows], prompts, languages)
        self._synchronize()
        prefill_ms = (time.perf_counter() - started) * 1000.0 / max(1, len(windows))
        return [self._row(state, encoded, index, window, options, encoder_ms, prefill_ms, on_draft)
                for state, (encoded, index, window, options, on_draft) in zip(states, windows)]

    def _row(self, state: Prefill, encoded: EncodedWindow, index: int, window: AudioWindow, options: DecodeOptions,
             encoder_ms: float, prefill_ms: float, on_draft: DraftHook | None) -> Row:
        on_step = None
        if on_draft is not None:
            decode = self.transcripts.decode
            def on_step(step: int, of: int, tokens: torch.Tensor) -> None:
                on_draft(step, of, decode(tokens.tolist(), options.language)[0])
        job = DenoiseJob(state, options.steps, window_generator(options.seed, index, self.device), on_step)
        slots = encoded.slots if options.word_timestamps else None
        return Row(index, window.start, window.end, options, job, encoder_ms, prefill_ms, slots)

    def finish_row(self, row: Row, result: DenoiseResult, queue_ms: float = 0.0) -> Segment:
        """The window's segment from its final canvas: text, language, tokens with their log-probabilities and,
        when asked for, word timestamps."""
        text, language = self.transcripts.decode(result.tokens, row.options.language)
        tokens, logprobs = self.transcripts.token_logprobs(result.tokens, result.logprobs)
        words = []
        if row.slots is not None and text:
            words = self.aligner.align(row.slots, text, row.start, row.end)
        timing = Timing(queue_ms=queue_ms, encoder_ms=row.encoder_ms, prefill_ms=row.prefill_ms,
                        denoise_ms=result.denoise_ms, batch_size=result.batch_size, steps=result.steps)
        timing.total_ms = row.encoder_ms + row.prefill_ms + result.denoise_ms
        return Segment(row.index, row.start, row.end, text, language, timing, tokens, logprobs, words)

    def new_batch(self) -> DenoiseBatch:
        """An empty batch that rows join and leave between steps."""
        return DenoiseBatch(self.backbone, self.params, self.sampler, self.batch_buckets)

    def release_memory(self) -> None:
        """Return cached device memory after an out-of-memory failure."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def transcribe(self, audio: np.ndarray, options: DecodeOptions) -> Transcription:
        """Transcribe one input; audio longer than the window is split at pauses and denoised as one batch."""
        started = time.perf_counter()
        windows = split_windows(audio, self.window_seconds, self.vad)
        result = join_segments(self.transcribe_windows(windows, options), duration=len(audio) / whisper.SAMPLE_RATE)
        result.timing.total_ms = (time.perf_counter() - started) * 1000.0
        return result

    def transcribe_windows(self, windows: list[AudioWindow], options: DecodeOptions) -> list[Segment]:
        """One segment per window; windows with speech are denoised together, silent ones give empty text."""
        segments = {i: silent_segment(i, w.start, w.end, options.language)
                    for i, w in enumerate(windows) if not w.has_speech}
        speech = [i for i, w in enumerate(windows) if w.has_speech]
        if not speech:
            return [segments[i] for i in range(len(windows))]
        started = time.perf_counter()
        encoded = self.encode([windows[i].samples for i in speech])
        self._synchronize()
        encoder_ms = (time.perf_counter() - started) * 1000.0 / len(speech)
        started_rows = self.start_rows([(e, i, windows[i], options, None) for i, e in zip(speech, encoded)], encoder_ms)
        rows = dict(zip(speech, started_rows))
        batch = self.new_batch()
        for index, row in rows.items():
            batch.add(index, row.job)
        while len(batch):
            for index, result in batch.step():
                segments[index] = self.finish_row(rows[index], result)
        return [segments[i] for i in range(len(windows))]

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
