"""Optimizer, learning-rate schedule and the resumable state of a training run."""

from __future__ import annotations

import math
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from app.training.config import TrainConfig
from app.training.forward import AsrTrainer


def _warm_cosine(config: TrainConfig, steps_in: int, progress: float) -> float:
    """Linear warm-up over `warmup_steps`, then cosine decay to `min_lr_ratio` as `progress` goes 0 -> 1."""
    if steps_in < config.warmup_steps:
        return (steps_in + 1) / config.warmup_steps
    progress = min(max(progress, 0.0), 1.0)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def lr_factor(config: TrainConfig, step: int, elapsed_s: float, full_stage_step: int | None = None) -> float:
    """The learning-rate multiplier: warm-up then cosine decay, by steps when `max_steps` is set, else by time.

    With `lr_per_stage` on a time budget with a CTC stage, each stage has its own warm-up and decay: the CTC
    stage anneals by its end (the audio path it leaves is frozen from then on), and the full stage, whose
    backbone has not been trained yet, starts again from the peak. `full_stage_step` is the step the full
    stage began at (None while in the CTC stage).
    """
    if config.max_steps:
        return _warm_cosine(config, step, step / config.max_steps)
    split = config.ctc_only_until_minutes * 60.0
    budget = config.max_minutes * 60.0
    if not (config.lr_per_stage and 0 < split < budget):
        return _warm_cosine(config, step, elapsed_s / budget)
    if elapsed_s < split:
        return _warm_cosine(config, step, elapsed_s / split)
    start = step if full_stage_step is None else full_stage_step
    return _warm_cosine(config, step - start, (elapsed_s - split) / (budget - split))


@dataclass
class RunState:
    step: int = 0
    elapsed_s: float = 0.0
    examples_seen: int = 0
    history: list = field(default_factory=list)
    full_stage_step: int | None = None  # the step the full stage began at (per-stage learning rates)


def _rng_state(generator: torch.Generator, sampler: random.Random) -> dict:
    return {"torch": torch.get_rng_state(), "generator": generator.get_state(), "python": sampler.getstate(),
            "numpy": np.random.get_state()}


def _set_rng_state(state: dict, generator: torch.Generator, sampler: random.Random) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    sampler.setstate(state["python"])
    np.random.set_state(state["numpy"])


def save_state(path: Path, trainer: AsrTrainer, optimizer, run: RunState, generator, sampler) -> None:
    """Model, optimizer, step, elapsed time and every RNG, written atomically."""
    state = {
        "whisper": trainer.parts.whisper.state_dict() if trainer.parts.whisper is not None else None,
        "projector": trainer.parts.projector.state_dict(),
        "backbone": trainer.parts.backbone.state_dict(),
        "optimizer": optimizer.state_dict(),
        "run": asdict(run),
        "rng": _rng_state(generator, sampler),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_state(path: Path, trainer: AsrTrainer, optimizer, generator, sampler) -> RunState:
    # On the CPU first: load_state_dict (modules and optimizer) copies each tensor onto its parameter's device.
    state = torch.load(path, weights_only=False, map_location="cpu")
    if trainer.parts.whisper is not None:
        trainer.parts.whisper.load_state_dict(state["whisper"])
    trainer.parts.projector.load_state_dict(state["projector"])
    trainer.parts.backbone.load_state_dict(state["backbone"])
    optimizer.load_state_dict(state["optimizer"])
    _set_rng_state(state["rng"], generator, sampler)
    return RunState(**state["run"])


def make_optimizer(trainer: AsrTrainer, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only; the Whisper convolutions learn at `conv_lr_scale` x the rate.

    Each group's `lr_scale` multiplies the scheduled rate (`Loop.step`). The convolutions feed the encoder's
    residual stream with no normalisation in between: at the full rate Adam grows them ~100x within a few
    hundred steps, their time-constant part swamps the stream, and the final LayerNorm then leaves an encoder
    output that hardly changes over time (measured: per-frame variation 0.09 against 57 at the convolution).
    """
    encoder = trainer.encoder
    convs = (encoder.conv1, encoder.conv2) if encoder is not None else ()
    conv = {id(p) for module in convs for p in module.parameters()}
    groups: dict[tuple[bool, bool], list] = {}
    for p in trainer.parameters():
        groups.setdefault((p.ndim >= 2, id(p) in conv), []).append(p)
    return torch.optim.AdamW(
        [{"params": params, "weight_decay": config.weight_decay if matrix else 0.0,
          "lr_scale": config.conv_lr_scale if is_conv else 1.0}
         for (matrix, is_conv), params in sorted(groups.items())],
        lr=config.lr, betas=(0.9, 0.98), eps=1e-8,
    )
