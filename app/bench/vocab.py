"""Benchmark: one step's vocabulary-sized work, the separate full-size operations (the baseline) against the
fused pass, on the same logits in the same run, with a check that both give the same results."""

from __future__ import annotations

import torch

from app.bench.timing import time_interleaved
from app.checkpoint.loading import default_device
from app.model.sampling import InverseCdfSampler
from app.model.vocab_pass import VocabPass, chunk_slots, fused_vocab_pass, separate_vocab_pass, step_temperature

T_MIN, T_MAX = 0.4, 0.8  # the stock schedule


def run_vocab_benchmark(vocab: int, canvas: int, batch: int, repeats: int, device_name: str = "cpu",
                        out_dtype: str = "bfloat16", slots: int | None = None) -> list[dict]:
    """Median ms of the separate and the fused pass over `[batch, canvas, vocab]` fp32 logits (rows at different
    places in their step budgets), and whether they agree bit for bit."""
    device = default_device() if device_name == "auto" else torch.device(device_name)
    dtype = getattr(torch, out_dtype)
    logits = torch.randn(batch, canvas, vocab, generator=torch.Generator().manual_seed(0)).mul_(3).to(device)
    budgets = torch.full((batch, 1, 1), 8, device=device)
    remaining = torch.arange(8, 8 - batch, -1, device=device).clamp(min=1)[:, None, None]
    temperature = step_temperature(T_MIN, T_MAX, budgets, remaining)
    sampler = InverseCdfSampler()
    slots = slots or chunk_slots(vocab, device)

    def generators() -> list[torch.Generator]:
        return [torch.Generator(device=device).manual_seed(row) for row in range(batch)]

    def separate() -> VocabPass:
        return separate_vocab_pass(logits.clone(), budgets, remaining, T_MIN, T_MAX, sampler, generators(), dtype)

    def fused() -> VocabPass:
        return fused_vocab_pass(logits.clone(), temperature, sampler, generators(), dtype, slots)

    def copy_only() -> torch.Tensor:  # both passes start from a copy of the logits, which they overwrite
        return logits.clone()

    a, b = separate(), fused()
    same = all(torch.equal(getattr(a, k), getattr(b, k)) for k in ("proposal", "argmax", "entropy", "self_cond"))
    del a, b
    names = {"separate": "separate (baseline)", "fused": f"fused, {slots} slots a chunk"}
    medians, _ = time_interleaved({"copy": copy_only, "separate": separate, "fused": fused}, repeats, device)
    rows = []
    for key, name in names.items():
        ms = medians[key] - medians["copy"]
        rows.append({"case": name, "device": str(device), "threads": torch.get_num_threads(), "vocab": vocab,
                     "canvas": canvas, "batch": batch, "self_cond_dtype": out_dtype, "ms_median": round(ms, 1),
                     "identical": same, "line": f"{name:<28} {ms:9.1f} ms"})
    rows.append({"case": "speed-up", "identical": same, "ratio": round(rows[0]["ms_median"] / rows[1]["ms_median"], 2),
                 "line": f"speed-up {rows[0]['ms_median'] / rows[1]['ms_median']:.2f}x; identical results: {same}"})
    return rows
