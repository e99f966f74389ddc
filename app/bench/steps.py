"""Benchmark: wall time of one denoising step for a preset's backbone at several batch sizes and canvases."""

from __future__ import annotations

import platform
import statistics
import time

import torch

from app.bench.random_model import random_backbone
from app.checkpoint.loading import default_device, default_dtype
from app.model.backbone import prefill
from app.model.denoiser import DenoiseBatch, DenoiseJob, SamplingParams

PROMPT_TOKENS = 200  # about the real prompt: 188 audio slots and a short instruction


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so wall time measures it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_step_benchmark(
    preset: str, batches: list[int], canvases: list[int], steps: int, repeats: int, device_name: str = "auto"
) -> list[dict]:
    """Median step time per (batch, canvas); every row runs its full budget (no early stop)."""
    device = default_device() if device_name == "auto" else torch.device(device_name)
    rows = []
    for canvas in canvases:
        model = random_backbone(preset, canvas, device, default_dtype(device))
        vocab = model.config.text_config.vocab_size
        # A stopping threshold no random model reaches: every row runs exactly `steps` steps.
        params = SamplingParams(confidence_threshold=1e-12)
        with torch.no_grad():
            ids = torch.randint(8, vocab, (1, PROMPT_TOKENS), device=device)
            cached = prefill(model, model.model.encoder.get_input_embeddings()(ids))
        for batch_size in batches:
            times: list[float] = []
            for repeat in range(repeats + 1):
                batch = DenoiseBatch(model, params)
                for row in range(batch_size):
                    gen = torch.Generator(device=device).manual_seed(row)
                    batch.add(row, DenoiseJob(cached, steps, gen))
                stats = []
                while len(batch):
                    _synchronize(device)
                    started = time.perf_counter()
                    batch.step()
                    _synchronize(device)
                    stats.append((time.perf_counter() - started) * 1000.0)
                if repeat:  # the first pass warms up allocators and kernels
                    times.extend(stats[1:])  # the first step of each pass also rebuilds the batch cache
            median = statistics.median(times)
            rows.append({
                "preset": preset, "device": str(device), "cpu": platform.processor() or platform.machine(),
                "threads": torch.get_num_threads(), "batch": batch_size, "canvas": canvas, "vocab": vocab,
                "step_ms_median": round(median, 2), "per_row_ms": round(median / batch_size, 2),
                "line": f"{preset} batch={batch_size:<3} canvas={canvas:<4} step={median:8.2f} ms "
                        f"({median / batch_size:7.2f} ms/row)",
            })
    return rows


def run_sampling_benchmark(vocab: int, canvas: int, repeats: int, device_name: str = "cpu") -> list[dict]:
    """Per-step cost of the vocabulary-sized work at a real vocabulary: multinomial (the stock loop's sampler,
    the baseline) against inverse-CDF sampling, and the stock two `Categorical` entropies against one shared."""
    from app.model.sampling import InverseCdfSampler, MultinomialSampler, token_entropy

    device = default_device() if device_name == "auto" else torch.device(device_name)
    logits = (torch.randn(1, canvas, vocab, generator=torch.Generator().manual_seed(0)) * 3).to(device)
    probs = torch.softmax(logits, dim=-1)

    def gen() -> torch.Generator:
        return torch.Generator(device=device).manual_seed(1)

    cases = {
        "multinomial (stock generate)": lambda: MultinomialSampler().sample(probs, [gen()]),
        "inverse-cdf": lambda: InverseCdfSampler().sample(probs, [gen()]),
        "entropy: 2x Categorical (stock)": lambda: [torch.distributions.Categorical(logits=logits).entropy()
                                                    for _ in range(2)],
        "entropy: once, shared": lambda: token_entropy(logits, probs),
    }
    rows = []
    for name, fn in cases.items():
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            _synchronize(device)
            started = time.perf_counter()
            fn()
            _synchronize(device)
            times.append((time.perf_counter() - started) * 1000.0)
        median = statistics.median(times)
        rows.append({"case": name, "device": str(device), "vocab": vocab, "canvas": canvas,
                     "threads": torch.get_num_threads(),
                     "ms_median": round(median, 1), "line": f"{name:<34} {median:9.1f} ms"})
    return rows
