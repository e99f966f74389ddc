"""`diffusion-asr bench-train-step`: where one training step's time goes, part by part.

The trainer labels the parts of `Loop.step` with `torch.profiler.record_function` (a no-op when nothing
profiles). The whole step's time comes from steps run without the profiler, so its overhead does not inflate the
headline; the parts' shares come from as many steps run under it, where the labelled ranges are recorded.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass

import torch
from torch.profiler import ProfilerActivity, profile

from app.training.trainer import Loop

# The labels the trainer sets, in the order a step runs them; those described with "- " are parts of "train.losses".
PARTS: tuple[tuple[str, str], ...] = (
    ("train.batch", "draw and collate the batch"),
    ("train.losses", "forward, all three losses"),
    ("train.project", "- projector"),
    ("train.positions", "- the audio slots' rotary positions (aligned positions; forced counts: a Viterbi pass)"),
    ("train.prefill", "- causal encoder over the prompt"),
    ("train.self_cond_pass", "- decoder pass without gradients (self-conditioning logits)"),
    ("train.decoder_pass", "- decoder pass with gradients, diffusion loss"),
    ("train.ar_pass", "- autoregressive pass over the target"),
    ("train.ctc", "- CTC loss through the lm_head"),
    ("train.backward", "backward (all losses)"),
    ("train.optimizer", "gradient clip and optimizer step"),
)
WHOLE_STEP = "train.step"


@dataclass(frozen=True)
class StepTiming:
    """Median wall time of an unprofiled step, and each labelled part's mean time and share under the profiler."""

    steps: int
    step_ms: float
    profiled_step_ms: float
    parts: tuple[tuple[str, str, float], ...]  # label, description, ms per profiled step

    def table(self) -> list[str]:
        """Markdown rows: each part's milliseconds per step, scaled to the unprofiled step, and its share."""
        scale = self.step_ms / self.profiled_step_ms
        rows = ["| part | ms per step | share |", "|---|---:|---:|"]
        for _, description, ms in self.parts:
            rows.append(f"| {description} | {ms * scale:,.0f} | {ms / self.profiled_step_ms:.0%} |")
        rows.append(f"| whole step (median of {self.steps}, unprofiled) | {self.step_ms:,.0f} | |")
        return rows


def check_timing_request(steps: int, warmup: int, device: torch.device) -> None:
    """Refuse what `time_training_steps` cannot time, before a caller spends time building the loop."""
    if steps < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1 and warmup >= 0, got {steps} and {warmup}")
    if device.type != "cpu":  # CUDA kernels run asynchronously: host-side ranges would not time them
        raise ValueError(f"the step timing runs on the CPU only, not on {device}")


def time_training_steps(loop: Loop, steps: int, warmup: int) -> StepTiming:
    """Run `warmup` steps, then `steps` timed steps, then `steps` profiled ones, on the loop's own batches."""
    check_timing_request(steps, warmup, loop.trainer.device)
    for _ in range(warmup):
        loop.step()
    walls = []
    for _ in range(steps):
        started = time.perf_counter()
        loop.step()
        walls.append(time.perf_counter() - started)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            loop.step()
    # A user range's cpu_time_total is the summed wall time of its occurrences on the CPU thread, in microseconds.
    totals = {event.key: event.cpu_time_total / 1000.0 / steps for event in prof.key_averages()
              if event.key.startswith("train.")}
    parts = tuple((label, description, totals.get(label, 0.0)) for label, description in PARTS)
    return StepTiming(steps, statistics.median(walls) * 1000.0, totals[WHOLE_STEP], parts)


def machine_line() -> str:
    """What the timing ran on, for the line above its table."""
    return (f"{platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}")
