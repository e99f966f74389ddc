"""Benchmark: the real engine (worker, scheduler, encoder, batched prefill, denoiser) end to end on N concurrent
synthetic clips, against the same clips sent one at a time through the same engine, in the same run.

The model is a preset's shape with random weights built in memory (`app.bench.random_model`). Every window is
treated as speech (no voice activity detection), and no row stops before its step budget, so the work per clip is
fixed: windows x steps denoising steps over the whole canvas. The stock `generate()` one clip at a time, from
the prompt's token ids, is timed beside them.
"""

from __future__ import annotations

import asyncio
import platform
import resource
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from app.audio.vad import AudioInput, AudioWindow
from app.bench.random_model import random_pipeline
from app.bench.timing import synchronize
from app.checkpoint.loading import default_device, default_dtype
from app.config import EngineSettings
from app.engine.worker import EngineWorker
from app.model.pipeline import AsrPipeline
from app.results import DecodeOptions, Transcription

TIMEOUT_S = 3600.0


@dataclass
class StepRecorder:
    """Engine observer that keeps the batch size of every denoising step."""

    batch_sizes: list[int] = field(default_factory=list)

    def batch_step(self, batch_size: int, seconds: float) -> None:
        self.batch_sizes.append(batch_size)

    def encoded(self, windows: int, seconds: float) -> None: ...
    def queue_depth(self, depth: int) -> None: ...
    def job_finished(self, queue_wait_s: float, steps_used: int, audio_s: float, compute_s: float) -> None: ...
    def job_rejected(self, reason: str) -> None: ...


@dataclass
class Phase:
    """One way of sending the clips: what each took and what came back."""

    latencies_s: list[float]
    wall_s: float
    largest_batch: int
    texts: list[str]


def synthetic_clip(seed: int, seconds: float, window_seconds: float) -> AudioInput:
    """`seconds` of low-level noise cut into encoder windows, every window marked as speech."""
    samples = np.random.default_rng(seed).standard_normal(int(16_000 * seconds)).astype(np.float32) * 0.1
    step = int(16_000 * window_seconds)
    windows = [AudioWindow(start / 16_000, min(start + step, len(samples)) / 16_000, samples[start:start + step],
                           has_speech=True) for start in range(0, len(samples), step)]
    return AudioInput(windows, seconds)


async def _timed(worker: EngineWorker, clip: AudioInput, options: DecodeOptions) -> tuple[float, Transcription]:
    started = time.perf_counter()
    result = await worker.transcribe(clip, options, TIMEOUT_S)
    return time.perf_counter() - started, result


async def _together(worker: EngineWorker, clips: list[AudioInput], options: list[DecodeOptions]) -> list:
    return await asyncio.gather(*(_timed(worker, c, o) for c, o in zip(clips, options)))


async def _one_by_one(worker: EngineWorker, clips: list[AudioInput], options: list[DecodeOptions]) -> list:
    return [await _timed(worker, c, o) for c, o in zip(clips, options)]


def _phase(worker: EngineWorker, recorder: StepRecorder, run, clips, options) -> Phase:
    recorder.batch_sizes.clear()
    started = time.perf_counter()
    timed = asyncio.run(run(worker, clips, options))
    wall = time.perf_counter() - started
    return Phase([t for t, _ in timed], wall, max(recorder.batch_sizes, default=0), [r.text for _, r in timed])


def _stock_generate(pipeline: AsrPipeline, clips: list[AudioInput], steps: int) -> Phase:
    """Each clip's windows one after another through the stock `DiffusionGemmaForBlockDiffusion.generate()`, from
    the prompt's token ids: the same prompt length, canvas and steps, without the audio path (`generate()` reads
    token ids only, so the audio slots keep their placeholder tokens)."""
    ids = pipeline.prompts.build(None, None).ids[None].to(pipeline.device)
    canvas = pipeline.backbone.config.canvas_length
    latencies = []
    started = time.perf_counter()
    for seed, clip in enumerate(clips):
        clip_started = time.perf_counter()
        for _ in clip.windows:
            torch.manual_seed(seed)
            # A threshold no random model reaches (it must be > 0): no early stop, as in the engine's runs.
            pipeline.backbone.generate(ids, max_new_tokens=canvas, max_denoising_steps=steps,
                                       confidence_threshold=1e-12)
        synchronize(pipeline.device)
        latencies.append(time.perf_counter() - clip_started)
    return Phase(latencies, time.perf_counter() - started, 1, [])


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float:
    """GPU: peak allocated since the last reset. CPU: the process's peak resident set so far (it never resets)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _summary(phase: Phase, audio_s: float) -> dict:
    latencies = sorted(phase.latencies_s)
    p95 = latencies[min(len(latencies) - 1, int(round(0.95 * (len(latencies) - 1))))]
    return {"p50_s": round(statistics.median(latencies), 3), "p95_s": round(p95, 3),
            "clips_per_s": round(len(latencies) / phase.wall_s, 3), "rtf": round(phase.wall_s / audio_s, 4),
            "x_real_time": round(audio_s / phase.wall_s, 1), "wall_s": round(phase.wall_s, 2),
            "largest_batch": phase.largest_batch}


def _line(name: str, s: dict) -> str:
    return (f"{name:<18} p50 {s['p50_s']:8.3f} s  p95 {s['p95_s']:8.3f} s  {s['clips_per_s']:8.3f} clips/s  "
            f"RTF {s['rtf']:.4f} ({s['x_real_time']:g}x real time)  largest batch {s['largest_batch']}")


@contextmanager
def _engine(pipeline: AsrPipeline, max_rows: int, clips: int) -> Iterator[tuple[EngineWorker, StepRecorder]]:
    """A started engine worker over `pipeline` whose batch holds up to `max_rows` rows."""
    recorder = StepRecorder()
    settings = EngineSettings(max_batch_size=min(256, max_rows), max_queue=max(64, clips), max_wait_ms=50.0,
                              request_timeout_s=TIMEOUT_S)
    worker = EngineWorker(pipeline, settings, recorder)
    worker.warm_up()
    worker.start()
    try:
        yield worker, recorder
    finally:
        worker.stop()


def bench_concurrency(pipeline: AsrPipeline, device: torch.device, clips: int, seconds: float, steps: int) -> dict:
    """`clips` clips sent together through an engine whose batch holds them all, then the same clips one at a time
    through an engine whose batch holds one clip."""
    audio = [synthetic_clip(i, seconds, pipeline.window_seconds) for i in range(clips)]
    options = [DecodeOptions(steps=steps, seed=i) for i in range(clips)]
    rows = sum(len(a.windows) for a in audio)
    # The baseline engine's batch holds one clip, so it never waits to fill a batch (the other waits up to 50 ms
    # for all the clips, which are submitted at once).
    per_clip = max(len(a.windows) for a in audio)
    with _engine(pipeline, rows, clips) as (worker, recorder):
        # One untimed pass at the same batch shapes (one step each): the first call at a new shape is several
        # times slower (kernel and allocator set-up).
        _phase(worker, recorder, _together, audio, [replace(o, steps=1) for o in options])
        _reset_peak(device)
        together = _phase(worker, recorder, _together, audio, options)
        peak = _peak_gib(device)
    with _engine(pipeline, per_clip, clips) as (worker, recorder):
        _phase(worker, recorder, _one_by_one, audio[:1], [replace(options[0], steps=1)])
        alone = _phase(worker, recorder, _one_by_one, audio, options)
    _stock_generate(pipeline, audio[:1], 1)  # untimed: first call
    stock = _summary(_stock_generate(pipeline, audio, steps), clips * seconds)
    audio_s = clips * seconds
    concurrent, baseline = _summary(together, audio_s), _summary(alone, audio_s)
    same = together.texts == alone.texts
    speedup = baseline["wall_s"] / concurrent["wall_s"]
    lines = [f"concurrency {clips} ({rows} windows of {pipeline.window_seconds:g} s, {steps} steps each)",
             _line("  together", concurrent), _line("  one at a time", baseline),
             _line("  stock generate()", stock),
             f"  throughput {speedup:.2f}x one at a time; memory peak {peak:.2f} GiB"
             f" ({'GPU allocated' if device.type == 'cuda' else 'process resident set'}); same texts: {same}"]
    return {"concurrency": clips, "windows": rows, "seconds": seconds, "steps": steps, "together": concurrent,
            "one_at_a_time": baseline, "stock_generate": stock, "speedup": round(speedup, 2),
            "memory_peak_gib": round(peak, 3), "identical": same, "texts": together.texts, "line": "\n".join(lines)}


def run_engine_benchmark(preset: str, device_name: str, concurrency: list[int], seconds: float, steps: int,
                         seed: int = 0, buckets: tuple[int, ...] = ()) -> list[dict]:
    """`bench_concurrency` for each level on one random-weight model of `preset` (bf16 on CUDA, fp32 on CPU)."""
    device = default_device() if device_name == "auto" else torch.device(device_name)
    dtype = default_dtype(device)
    started = time.perf_counter()
    pipeline = random_pipeline(preset, device, dtype, seed)
    # A stopping threshold no entropy is below: every row runs its whole budget, so every run does the same work.
    pipeline.params = replace(pipeline.params, confidence_threshold=0.0)
    pipeline.batch_buckets = buckets
    built_s = time.perf_counter() - started
    header = {"preset": preset, "device": str(device), "dtype": str(dtype).removeprefix("torch."),
              "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "build_s": round(built_s, 1),
              "line": f"{preset} on {device} ({str(dtype).removeprefix('torch.')}, {torch.get_num_threads()} "
                      f"threads), built in {built_s:.1f} s"}
    return [header] + [bench_concurrency(pipeline, device, n, seconds, steps) for n in concurrency]
