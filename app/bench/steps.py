"""Benchmark: wall time of one denoising step for a preset's backbone at several batch sizes and canvases."""

from __future__ import annotations

import platform
import statistics
import time

import torch

from app.bench.random_model import random_backbone
from app.bench.timing import synchronize, time_interleaved
from app.checkpoint.loading import default_device, default_dtype
from app.checkpoint.presets import PRESETS
from app.model.backbone import Prefill, prefill, prefill_many
from app.model.denoiser import DenoiseBatch, DenoiseJob, SamplingParams, bucket_size

PROMPT_TOKENS = 200  # about the real prompt: 188 audio slots and a short instruction


def _full_batch(model, cached: Prefill, params: SamplingParams, rows: int, steps: int,
                buckets: tuple[int, ...]) -> DenoiseBatch:
    batch = DenoiseBatch(model, params, buckets=buckets)
    for row in range(rows):
        batch.add(row, DenoiseJob(cached, steps, torch.Generator(device=cached.layers[0][0].device).manual_seed(row)))
    return batch


def _step_times(batch: DenoiseBatch, device: torch.device) -> list[float]:
    """Milliseconds of each step until the batch is empty."""
    stats = []
    while len(batch):
        synchronize(device)
        started = time.perf_counter()
        batch.step()
        synchronize(device)
        stats.append((time.perf_counter() - started) * 1000.0)
    return stats


def _profile(batch: DenoiseBatch, device: torch.device, top: int) -> str:
    """The torch profiler's top `top` kernels (by self time on the device that ran them) over the batch's steps
    after its first (which also builds the batch's cache)."""
    from torch.profiler import ProfilerActivity, profile

    batch.step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        _step_times(batch, device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=top)


def run_step_benchmark(
    preset: str, batches: list[int], canvases: list[int], steps: int, repeats: int, device_name: str = "auto",
    buckets: tuple[int, ...] = (), profile_top: int = 0,
) -> list[dict]:
    """Median step time per (batch, canvas); every row runs its full budget (no early stop). With `buckets`, each
    step's forward is padded to a bucket; with `profile_top`, one more pass runs under the torch profiler."""
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
                stats = _step_times(_full_batch(model, cached, params, batch_size, steps, buckets), device)
                if repeat:  # the first pass warms up allocators and kernels
                    times.extend(stats[1:])  # the first step of each pass also rebuilds the batch cache
            median = statistics.median(times)
            forward = bucket_size(batch_size, tuple(sorted(buckets)))
            line = (f"{preset} batch={batch_size:<3} canvas={canvas:<4} step={median:8.2f} ms "
                    f"({median / batch_size:7.2f} ms/row)" + (f" forward rows={forward}" if buckets else ""))
            if profile_top:
                line += "\n" + _profile(_full_batch(model, cached, params, batch_size, steps, buckets), device,
                                        profile_top)
            rows.append({
                "preset": preset, "device": str(device), "cpu": platform.processor() or platform.machine(),
                "threads": torch.get_num_threads(), "batch": batch_size, "canvas": canvas, "vocab": vocab,
                "forward_rows": forward, "step_ms_median": round(median, 2),
                "per_row_ms": round(median / batch_size, 2), "line": line,
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
            synchronize(device)
            started = time.perf_counter()
            fn()
            synchronize(device)
            times.append((time.perf_counter() - started) * 1000.0)
        median = statistics.median(times)
        rows.append({"case": name, "device": str(device), "vocab": vocab, "canvas": canvas,
                     "threads": torch.get_num_threads(),
                     "ms_median": round(median, 1), "line": f"{name:<34} {median:9.1f} ms"})
    return rows


def run_prefill_benchmark(preset: str, rows: int, repeats: int, device_name: str = "auto",
                          prompt_tokens: int = PROMPT_TOKENS) -> list[dict]:
    """Prefill of `rows` prompts of one length: one encoder pass each (the baseline) against one pass for all,
    and the largest difference between a row's two caches."""
    device = default_device() if device_name == "auto" else torch.device(device_name)
    model = random_backbone(preset, PRESETS[preset].canvas_length, device, default_dtype(device))
    vocab = model.config.text_config.vocab_size
    embed = model.model.encoder.get_input_embeddings()
    with torch.no_grad():
        embeds = [embed(torch.randint(8, vocab, (1, prompt_tokens), device=device)) for _ in range(rows)]
    cases = {"one at a time (baseline)": lambda: [prefill(model, e) for e in embeds],
             "together": lambda: prefill_many(model, embeds)}
    medians, results = time_interleaved(cases, repeats, device)
    alone, together = results.values()
    differ = max(max((a - b).abs().max().item() for la, lb in zip(x.layers, y.layers) for a, b in zip(la, lb))
                 for x, y in zip(alone, together))
    out = []
    for name, median in medians.items():
        out.append({"case": name, "preset": preset, "device": str(device), "threads": torch.get_num_threads(),
                    "rows": rows, "prompt_tokens": prompt_tokens, "ms_median": round(median, 1),
                    "max_cache_difference": differ,
                    "line": f"{preset} {rows} prompts of {prompt_tokens} tokens, {name:<24} {median:9.1f} ms "
                            f"({median / rows:7.1f} ms/row)"})
    out.append({"case": "speed-up", "max_cache_difference": differ,
                "line": f"speed-up {out[0]['ms_median'] / out[1]['ms_median']:.2f}x; largest difference between a "
                        f"row's caches: {differ:.3g}"})
    return out
