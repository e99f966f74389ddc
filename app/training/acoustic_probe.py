"""`diffusion-asr probe-acoustics`: how far the audio path alone gets on cached encoder outputs.

A run on the frozen whisper-base scores the whole model; when its CTC head and its denoiser read alike
(docs/training-v2.md), the question is whether the acoustic side is what limits both. This trains only a
projector of the embedded recipe's shape (`app.model.projector.Projector`), with or without its transformer
layers over the slots (`SlotContext`), and a character CTC head, then reads the held-out caches by greedy CTC.
A step costs a fraction of a full training step, so projector shapes and data mixes can be compared in minutes
on the CPU. Nothing here is shipped: the head predicts characters, not the backbone's tokens.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from app.checkpoint.presets import PRESETS
from app.model.ctc_path import greedy_emissions
from app.model.projector import Projector, SlotContext
from app.training.config import SHIPPED_DIMS
from app.training.encoder_cache import EncoderCache
from app.training.evaluate import cer

BLANK = 0


@dataclass(frozen=True)
class ProbeOptions:
    """One probe run: its shape, and its budget (whichever of `steps` and `minutes` ends first)."""

    context_layers: int = 0
    # The projector and backbone width of the recipe on the frozen whisper-base.
    subsample: int = SHIPPED_DIMS["subsample"]
    width: int = SHIPPED_DIMS["projector_width"]
    hidden: int = PRESETS["default"].hidden
    heads: int = SlotContext.heads
    ffn: int = SlotContext.ffn
    dropout: float = SlotContext.dropout
    steps: int = 2000
    minutes: float | None = None
    batch_size: int = 32
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    eval_every: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.context_layers < 0 or self.subsample < 1 or self.steps < 1 or self.batch_size < 1:
            raise ValueError("context_layers >= 0, subsample >= 1, steps >= 1 and batch_size >= 1 are required")
        self.context().check(self.hidden)  # refused here, before any cache is read

    def context(self) -> SlotContext:
        """The projector's context layers these options ask for."""
        return SlotContext(self.context_layers, self.heads, self.ffn, self.dropout)


class CharVocab:
    """The characters of the training texts; id 0 is the CTC blank."""

    def __init__(self, texts: list[str]) -> None:
        self.chars = sorted({ch for text in texts for ch in text})
        self.ids = {ch: i + 1 for i, ch in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> list[int]:
        return [self.ids[ch] for ch in text]

    def greedy(self, ids: list[int]) -> str:
        """The text of a best path of per-slot argmax ids (CTC's collapse rule, `greedy_emissions`)."""
        labels = torch.tensor([ids], dtype=torch.long)
        kept = labels[greedy_emissions(labels, BLANK)].tolist()
        return "".join(self.chars[t - 1] for t in kept).strip()


class AcousticProbe(nn.Module):
    """Projector (+ context layers) and a CTC head: `[B, positions, encoder_width]` -> `[B, slots, vocab]`."""

    def __init__(self, encoder_width: int, vocab: int, options: ProbeOptions) -> None:
        super().__init__()
        self.projector = Projector(encoder_width, options.width, options.hidden, options.subsample,
                                   options.context())
        self.subsample = options.subsample
        self.norm = nn.LayerNorm(options.hidden) if options.context_layers else nn.Identity()
        self.head = nn.Linear(options.hidden, vocab)

    def forward(self, frames: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.projector(frames, slots)))


@dataclass
class ProbeResult:
    """What a probe run measured: CER % per eval set and language, after `steps` steps."""

    steps: int
    seconds: float
    parameters: int
    cer: dict[str, dict[str, float]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        langs = sorted({lang for per in self.cer.values() for lang in per})
        out = [f"{'set':<16}" + "".join(f"{lang:>7}" for lang in langs)]
        for name, per in self.cer.items():
            out.append(f"{name:<16}" + "".join(f"{per.get(lang, float('nan')):>7.1f}" for lang in langs))
        return out


def _batch(cache: EncoderCache, rows: np.ndarray, subsample: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows' encoder outputs cut to the longest clip's positions, and each clip's slot count."""
    positions = cache.audio_positions[rows]
    span = int(positions.max())
    order = np.argsort(rows)  # memory-mapped reads in increasing order
    frames = np.empty((len(rows), span, cache.outputs.shape[2]), dtype=np.float32)
    frames[order] = cache.outputs[rows[order]][:, :span]
    return torch.from_numpy(frames), torch.from_numpy(-(-positions // subsample))


def read(model: AcousticProbe, vocab: CharVocab, cache: EncoderCache, batch_size: int = 32) -> list[str]:
    """Greedy CTC transcripts of every clip of `cache`."""
    model.eval()
    texts = []
    with torch.no_grad():
        for start in range(0, len(cache), batch_size):
            rows = np.arange(start, min(start + batch_size, len(cache)))
            frames, slots = _batch(cache, rows, model.subsample)
            best = model(frames, slots).argmax(-1)
            texts += [vocab.greedy(row[:n].tolist()) for row, n in zip(best, slots.tolist())]
    model.train()
    return texts


def score(model: AcousticProbe, vocab: CharVocab, evals: dict[str, EncoderCache]) -> dict[str, dict[str, float]]:
    """CER % per eval set and language (the normalisation of `diffusion-asr eval`)."""
    result = {}
    for name, cache in evals.items():
        hyps = read(model, vocab, cache)
        result[name] = {lang: round(100 * cer([t for t, g in zip(cache.texts, cache.langs) if g == lang],
                                              [h for h, g in zip(hyps, cache.langs) if g == lang]), 1)
                        for lang in sorted(set(cache.langs))}
    return result


def train_probe(train: EncoderCache, evals: dict[str, EncoderCache], options: ProbeOptions,
                clock: Callable[[], float] = time.monotonic,
                report: Callable[[str], None] = print) -> tuple[AcousticProbe, CharVocab, ProbeResult]:
    """Train the probe on `train` for its budget, then score it on every eval cache."""
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    vocab = CharVocab(train.texts)
    targets = [torch.tensor(vocab.encode(text), dtype=torch.long) for text in train.texts]
    model = AcousticProbe(train.outputs.shape[2], len(vocab), options)
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.learning_rate, weight_decay=0.01)
    budget = math.inf if options.minutes is None else options.minutes * 60
    started = clock()
    step = 0
    while step < options.steps and clock() - started < budget:
        # Cosine decay over whichever budget is the nearer, down to 5% of the peak.
        done = max(step / options.steps, (clock() - started) / budget)
        warm = min(1.0, (step + 1) / options.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = options.learning_rate * warm * (0.05 + 0.475 * (1 + math.cos(math.pi * done)))
        rows = rng.integers(0, len(train), options.batch_size)
        frames, slots = _batch(train, rows, options.subsample)
        wanted = [targets[r] for r in rows]
        log_probs = model(frames, slots).log_softmax(-1).transpose(0, 1)
        # zero_infinity: a clip whose text cannot fit its slots adds nothing rather than an infinite loss.
        loss = F.ctc_loss(log_probs, torch.cat(wanted), slots, torch.tensor([len(t) for t in wanted]),
                          blank=BLANK, zero_infinity=True)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        if options.eval_every and step % options.eval_every == 0:
            report(f"step {step}: loss {loss.item():.3f}, CER {score(model, vocab, evals)}")
    result = ProbeResult(step, clock() - started, sum(p.numel() for p in model.parameters()),
                         score(model, vocab, evals))
    return model, vocab, result
