"""The loop's vocabulary-sized work of one step: temperature, softmax, entropy, sampling, argmax and the
self-conditioning copy over the `[B, C, V]` logits.

`fused_vocab_pass` does all of it in one pass: the temperature is applied in place, then canvas slots are
taken a few at a time, each slot's whole vocabulary row (1 MiB at 262,144 ids) at once, and every per-slot result
is made while that chunk is still in cache. The full-size temporaries of `separate_vocab_pass` (probabilities,
products, cumulative sums: 256 MiB each per row at canvas 256) become chunk-sized.

The chunks run along the slots, not inside a slot's vocabulary row, on purpose: each slot's reductions (softmax
sum, logsumexp, cumulative sum) then see exactly the values and order they see over the whole tensor, so the
tokens, entropies and acceptances are bit for bit those of the separate pass on CPU (tests/unit/test_vocab_pass.py).
Splitting a row's vocabulary would change the sums' rounding and, now and then, a drawn token. (GPU reduction
kernels may split a row differently by the number of rows, as they already do across batch sizes: untested.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.models.diffusion_gemma.generation_diffusion_gemma import LinearTemperatureScheduleLogitsProcessor

from app.model.sampling import InverseCdfSampler, TokenSampler, token_entropy

# Bytes of one chunk's fp32 temporaries. On CPU the smallest chunks were fastest (2 slots at 262,144 ids: 3.6x the
# separate pass, against 2.2x with 16; docs/performance.md): each temporary stays in a core's cache. A GPU needs many
# slots per kernel to keep its cores busy; there the bound only caps the temporaries (not yet timed on a GPU).
CPU_CHUNK_BYTES = 2 << 20
CUDA_CHUNK_BYTES = 512 << 20


@dataclass
class VocabPass:
    """What one step keeps from its logits."""

    proposal: torch.Tensor  # [B, C] ids drawn from the tempered distribution
    argmax: torch.Tensor  # [B, C] the tempered logits' argmax
    entropy: torch.Tensor  # [B, C] fp32 entropy of the tempered distribution
    self_cond: torch.Tensor  # [B, C, V] the tempered logits in the embedding dtype (next step's self-conditioning)
    tempered: torch.Tensor  # [B, C, V] fp32 tempered logits (a finishing row's log-probabilities come from them)


def step_temperature(t_min: float, t_max: float, budgets: torch.Tensor, remaining: torch.Tensor) -> torch.Tensor:
    """`[B, 1, 1]` temperatures: the stock linear schedule's formula, each row at its own place in its own budget
    (`LinearTemperatureScheduleLogitsProcessor` divides by exactly this)."""
    return t_min + ((t_max - t_min) * (remaining / budgets))


def separate_vocab_pass(
    logits: torch.Tensor, budgets: torch.Tensor, remaining: torch.Tensor, t_min: float, t_max: float,
    sampler: TokenSampler, generators: list[torch.Generator], out_dtype: torch.dtype,
) -> VocabPass:
    """One full-size operation after another, through the stock temperature processor (the reference, and the
    only way for samplers that need whole rows, such as `MultinomialSampler`)."""
    schedule = LinearTemperatureScheduleLogitsProcessor(t_min, t_max, budgets)
    scaled = schedule(None, logits, cur_step=remaining)
    probs = torch.softmax(scaled, dim=-1, dtype=torch.float32)
    entropy = token_entropy(scaled, probs)
    proposal = sampler.sample(probs, generators)
    del probs
    return VocabPass(proposal, scaled.argmax(dim=-1), entropy, scaled.to(out_dtype), scaled)


def chunk_slots(vocab: int, device: torch.device) -> int:
    """Canvas slots per chunk: the device's chunk bytes (on CPU, per intra-op thread, since each operation splits
    its slots across the threads) over one slot's fp32 row, at least 2 (a reduction with a single output may split
    its row across threads and round differently)."""
    if device.type == "cuda":
        return max(2, CUDA_CHUNK_BYTES // (vocab * 4))
    return max(2, CPU_CHUNK_BYTES // (vocab * 4)) * torch.get_num_threads()


@torch.no_grad()
def fused_vocab_pass(
    logits: torch.Tensor, temperature: torch.Tensor, sampler: InverseCdfSampler,
    generators: list[torch.Generator], out_dtype: torch.dtype, slots: int | None = None,
) -> VocabPass:
    """The same results as `separate_vocab_pass` in one pass over `logits` (which it overwrites with the tempered
    logits). `temperature` is `[B, 1, 1]` (`step_temperature`); `slots` overrides the chunk size."""
    batch, canvas, vocab = logits.shape
    total = batch * canvas
    slots = slots or chunk_slots(vocab, logits.device)
    scaled = logits.div_(temperature)
    self_cond = scaled if out_dtype == scaled.dtype else torch.empty_like(scaled, dtype=out_dtype)
    uniforms = sampler.uniforms(generators, canvas, logits.device, torch.float32).view(total, 1)
    flat, out = scaled.view(total, vocab), self_cond.view(total, vocab)
    proposal = torch.empty(total, dtype=torch.long, device=logits.device)
    argmax = torch.empty(total, dtype=torch.long, device=logits.device)
    entropy = torch.empty(total, dtype=torch.float32, device=logits.device)
    for start, end in _chunks(total, slots):
        z = flat[start:end]
        probs = torch.softmax(z, dim=-1, dtype=torch.float32)
        entropy[start:end] = token_entropy(z, probs)
        proposal[start:end] = sampler.invert(probs, uniforms[start:end])
        argmax[start:end] = z.argmax(dim=-1)
        if out is not flat:
            out[start:end].copy_(z)
    return VocabPass(proposal.view(batch, canvas), argmax.view(batch, canvas), entropy.view(batch, canvas), self_cond,
                     scaled)


def _chunks(total: int, slots: int) -> list[tuple[int, int]]:
    """`(start, end)` of each chunk; a one-slot tail joins the chunk before it."""
    bounds = [*range(0, total, slots), total]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < 2:
        bounds.pop(-2)
    return list(zip(bounds[:-1], bounds[1:]))
