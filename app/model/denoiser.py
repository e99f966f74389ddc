"""Stage 4: the batched denoising loop over fixed-length canvases, with per-step timing.

Built from transformers' DiffusionGemma pieces (the decoder forward, the linear temperature schedule, the
entropy-bound acceptance rule and the stable-and-confident stopping rule), rearranged so that every row
keeps its own state: rows join between steps, stop on their own and leave the batch at once, and draw
random numbers only from their own generator, so a row's result does not depend on its neighbours.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F
from transformers import DiffusionGemmaForBlockDiffusion, DynamicCache

from app.model.backbone import Prefill
from app.model.sampling import InverseCdfSampler, TokenSampler, entropy_bound_mask
from app.model.vocab_pass import VocabPass, fused_vocab_pass, separate_vocab_pass, step_temperature
from app.results import StepStats

DraftCallback = Callable[[int, int, torch.Tensor], None]


@dataclass(frozen=True)
class SamplingParams:
    """The denoising schedule shared by all rows of a batch (per-row: only the step budget)."""

    entropy_bound: float = 0.1
    t_min: float = 0.4
    t_max: float = 0.8
    stability_threshold: int = 1
    confidence_threshold: float = 0.005


@dataclass
class DenoiseJob:
    """What one row needs: its prefilled prompt, step budget, own generator and an optional draft hook."""

    prefill: Prefill
    steps: int
    generator: torch.Generator
    on_step: DraftCallback | None = None


@dataclass
class DenoiseResult:
    """The final argmax canvas of a row and how it got there."""

    tokens: list[int]
    steps: list[StepStats]
    denoise_ms: float
    batch_size: int  # the largest batch this row was denoised in
    # Log-probability of each canvas token under the model's distribution at the final step (before the
    # sampler's temperature).
    logprobs: list[float] = field(default_factory=list)

    @property
    def steps_used(self) -> int:
        return len(self.steps)


@dataclass
class _Row:
    job: DenoiseJob
    remaining: int
    history: deque
    started: float
    stats: list[StepStats] = field(default_factory=list)
    max_batch: int = 0


def bucket_size(rows: int, buckets: tuple[int, ...]) -> int:
    """The smallest of the sorted `buckets` that holds `rows` rows; `rows` itself past the largest or without any."""
    return next((b for b in buckets if b >= rows), rows)


def pad_rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """`tensor` with its first row repeated up to `rows` rows (itself when it has that many)."""
    extra = rows - tensor.shape[0]
    return tensor if extra <= 0 else torch.cat([tensor, tensor[:1].expand(extra, *tensor.shape[1:])])


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class DenoiseBatch:
    """A set of rows denoised together; call `step()` until it is empty.

    Rows are added with `add()` and removed with `remove()` only between steps. The shared KV cache is
    rebuilt (rows left-padded to the longest prompt) only when the set of rows changes.

    With `buckets`, the decoder's forward always runs on a bucket's number of rows (the smallest bucket that holds
    the batch; filler rows repeat the first row and their outputs are dropped), so a captured CUDA graph or a
    compiled decoder meets a few fixed shapes instead of every batch size. Rows never see the filler: each row's
    attention, routing and outputs are its own.
    """

    def __init__(
        self,
        model: DiffusionGemmaForBlockDiffusion,
        params: SamplingParams,
        sampler: TokenSampler | None = None,
        buckets: tuple[int, ...] = (),
    ) -> None:
        self.model = model
        self.params = params
        self.sampler = sampler or InverseCdfSampler()
        self.buckets = tuple(sorted(buckets))
        self.canvas_length = model.config.canvas_length
        self.vocab_size = model.config.text_config.vocab_size
        self.device = model.lm_head.weight.device
        self.embed_dtype = model.model.decoder.embed_tokens.weight.dtype
        self._keys: list[Hashable] = []
        self._rows: dict[Hashable, _Row] = {}
        self._canvas = torch.empty((0, self.canvas_length), dtype=torch.long, device=self.device)
        self._self_cond: torch.Tensor | None = None  # [B, C, V] processed logits of the previous step
        self._has_self_cond = torch.empty(0, dtype=torch.bool, device=self.device)
        self._cache: DynamicCache | None = None
        self._mask: dict | None = None
        self._positions: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self._keys)

    def keys(self) -> list[Hashable]:
        """The rows' keys, in batch order."""
        return list(self._keys)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._rows

    def add(self, key: Hashable, job: DenoiseJob) -> None:
        """Join a row; its canvas starts as uniform random ids from its own generator (slot 0 replaced by the
        prefill's tag, kept there at every step, and slots 1.. by its start canvas when it has them)."""
        if key in self._rows:
            raise KeyError(f"row {key!r} is already in the batch")
        if job.steps < 1:
            raise ValueError(f"steps must be at least 1, got {job.steps}")
        canvas = torch.randint(
            0, self.vocab_size, (1, self.canvas_length), generator=job.generator, device=self.device
        )
        if job.prefill.start is not None:
            # Drawn all the same, so the row's generator stream does not depend on the start canvas.
            canvas[0, 1:] = job.prefill.start.to(self.device)
        if job.prefill.tag is not None:
            canvas[0, 0] = job.prefill.tag
        history = deque(maxlen=self.params.stability_threshold)
        self._rows[key] = _Row(job=job, remaining=job.steps, history=history, started=time.perf_counter())
        self._keys.append(key)
        self._canvas = torch.cat([self._canvas, canvas])
        # A new row has no previous step to condition on (`self_conditioning_mask` False for it).
        self._has_self_cond = torch.cat([self._has_self_cond, torch.zeros(1, dtype=torch.bool, device=self.device)])
        if self._self_cond is not None:
            self._self_cond = torch.cat([self._self_cond, self._self_cond.new_zeros((1, *self._self_cond.shape[1:]))])
        self._cache = None

    def remove(self, key: Hashable) -> None:
        """Drop a row (finished or cancelled)."""
        index = self._keys.index(key)
        keep = [i for i in range(len(self._keys)) if i != index]
        self._keys.pop(index)
        del self._rows[key]
        self._canvas = self._canvas[keep]
        self._has_self_cond = self._has_self_cond[keep]
        if self._self_cond is not None:
            self._self_cond = self._self_cond[keep] if keep else None
        self._cache = None

    def forward_rows(self) -> int:
        """Rows the decoder's forward runs on: the batch's, or its bucket's."""
        return bucket_size(len(self._keys), self.buckets)

    def _rebuild(self) -> None:
        """Left-pad every row's prompt cache to the longest and stack them into one batch cache (with the bucket's
        filler rows)."""
        prefills = [self._rows[k].job.prefill for k in self._keys]
        prefills += prefills[:1] * (self.forward_rows() - len(prefills))
        longest = max(p.length for p in prefills)
        cache = DynamicCache(config=self.model.config.get_text_config(decoder=True))
        for index, layer in enumerate(cache.layers):
            keys = torch.cat([F.pad(p.layers[index][0], (0, 0, longest - p.length, 0)) for p in prefills])
            values = torch.cat([F.pad(p.layers[index][1], (0, 0, longest - p.length, 0)) for p in prefills])
            layer.update(keys, values)
        mask = torch.ones((len(prefills), longest + self.canvas_length), dtype=torch.bool, device=self.device)
        for row, p in enumerate(prefills):
            mask[row, : longest - p.length] = False
        starts = torch.tensor([p.canvas_start for p in prefills], device=self.device)
        # Each row's canvas sits at its own prompt's positions, whatever the padding in front of it (the cached
        # keys already carry their rotary positions).
        self._positions = (starts[:, None] + torch.arange(self.canvas_length, device=self.device)).int()
        self._mask = self.model.model.decoder.create_diffusion_decoder_attention_mask(
            config=self.model.config, inputs_embeds=pad_rows(self._canvas, len(prefills)).unsqueeze(-1),
            cache=cache,
            decoder_attention_mask=mask,
        )
        self._cache = cache

    def _vocab_pass(self, logits: torch.Tensor, rows: list[_Row]) -> VocabPass:
        """Temperature (the stock linear schedule, each row at its own place in its own step budget), softmax,
        entropy, sampling, argmax and the self-conditioning copy: fused for the inverse-CDF sampler, one
        full-size operation after another for samplers that need whole rows."""
        budgets = torch.tensor([r.job.steps for r in rows], device=self.device)[:, None, None]
        remaining = torch.tensor([r.remaining for r in rows], device=self.device)[:, None, None]
        generators = [r.job.generator for r in rows]
        if isinstance(self.sampler, InverseCdfSampler):
            temperature = step_temperature(self.params.t_min, self.params.t_max, budgets, remaining)
            return fused_vocab_pass(logits, temperature, self.sampler, generators, self.embed_dtype)
        return separate_vocab_pass(logits, budgets, remaining, self.params.t_min, self.params.t_max, self.sampler,
                                   generators, self.embed_dtype)

    def _temperature(self, row: _Row, remaining: int) -> float:
        """The schedule's temperature for `row` at the step it ran with `remaining` steps left (the stock
        schedule's formula, as the vocabulary pass applies it)."""
        return float(step_temperature(self.params.t_min, self.params.t_max, row.job.steps, remaining))

    @torch.no_grad()
    def step(self) -> list[tuple[Hashable, DenoiseResult]]:
        """Run one denoising step for every row; return (and remove) the rows that finished."""
        if not self._keys:
            return []
        if self._cache is None:
            self._rebuild()
        rows = [self._rows[k] for k in self._keys]
        generators = [r.job.generator for r in rows]
        _synchronize(self.device)
        start = time.perf_counter()

        any_self_cond = bool(self._has_self_cond.any())
        n = self.forward_rows()
        logits = self.model(
            decoder_input_ids=pad_rows(self._canvas, n),
            cache=self._cache,
            self_conditioning_logits=pad_rows(self._self_cond, n) if any_self_cond else None,
            self_conditioning_mask=pad_rows(self._has_self_cond, n) if any_self_cond else None,
            decoder_attention_mask=self._mask,
            decoder_position_ids=self._positions,
        ).logits[: len(rows)]
        work = self._vocab_pass(logits, rows)
        del logits  # the fused pass tempered them in place: `work.tempered`
        accepted = entropy_bound_mask(work.entropy, self.params.entropy_bound)
        kept = torch.where(accepted, work.proposal, self._canvas)
        argmax, entropy = work.argmax, work.entropy
        noise = torch.cat(
            [torch.randint(0, self.vocab_size, (1, self.canvas_length), generator=g, device=self.device)
             for g in generators]
        )
        self._canvas = torch.where(accepted, kept, noise)
        for index, row in enumerate(rows):
            if row.job.prefill.tag is not None:
                # A tag read before denoising stays: handed a misspelt transcript, the decoder would re-read the
                # language from its text (English 76-78% right against 94-98% from the audio; `app.model.ctc_start`).
                argmax[index, 0] = self._canvas[index, 0] = row.job.prefill.tag
        self._self_cond = work.self_cond
        self._has_self_cond = torch.ones(len(rows), dtype=torch.bool, device=self.device)
        mean_entropy = entropy.mean(dim=-1)
        confident = (mean_entropy < self.params.confidence_threshold).tolist()
        accepted_counts = accepted.sum(dim=-1).tolist()
        _synchronize(self.device)
        ms = (time.perf_counter() - start) * 1000.0

        finished: list[tuple[Hashable, DenoiseResult]] = []
        argmax_cpu = argmax.cpu()
        for index, (key, row) in enumerate(zip(list(self._keys), rows)):
            tokens = argmax_cpu[index]
            stable = len(row.history) == row.history.maxlen and all(torch.equal(h, tokens) for h in row.history)
            row.history.append(tokens)
            step_number = row.job.steps - row.remaining + 1
            row.remaining -= 1
            row.max_batch = max(row.max_batch, len(rows))
            row.stats.append(StepStats(step_number, ms, int(accepted_counts[index]), float(mean_entropy[index])))
            if row.job.on_step is not None:
                row.job.on_step(step_number, row.job.steps, tokens)
            if (stable and confident[index]) or row.remaining == 0:
                elapsed = (time.perf_counter() - row.started) * 1000.0
                temperature = self._temperature(row, row.remaining + 1)  # `remaining` counted this step already
                logprobs = _chosen_logprobs(work.tempered[index] * temperature, argmax[index])
                finished.append((key, DenoiseResult(tokens.tolist(), row.stats, elapsed, row.max_batch, logprobs)))
        for key, _ in finished:
            self.remove(key)
        return finished


def _chosen_logprobs(logits: torch.Tensor, chosen: torch.Tensor) -> list[float]:
    """`[C]` log-probabilities of the `chosen` ids under `[C, V]` logits (only for rows that finish, so the
    vocabulary-sized normalisation is paid once per row, not per step)."""
    return (logits.gather(-1, chosen[:, None])[:, 0].float() - logits.float().logsumexp(dim=-1)).tolist()


def denoise_all(
    model: DiffusionGemmaForBlockDiffusion,
    jobs: list[DenoiseJob],
    params: SamplingParams,
    sampler: TokenSampler | None = None,
) -> list[DenoiseResult]:
    """Denoise a fixed set of rows together until each has stopped; results in input order."""
    batch = DenoiseBatch(model, params, sampler)
    for index, job in enumerate(jobs):
        batch.add(index, job)
    results: dict[int, DenoiseResult] = {}
    while len(batch):
        results.update(batch.step())
    return [results[i] for i in range(len(jobs))]
