"""Wall-clock timing shared by the benchmarks: GPU work waited for, cases compared in turns."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so wall time measures it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(cases: dict[str, Callable[[], object]], repeats: int,
                     device: torch.device) -> tuple[dict[str, float], dict[str, object]]:
    """Median milliseconds of each case over `repeats` rounds, the cases taking turns within each round (so a
    machine shared with other work slows them alike) after one warm-up round; and each case's last result."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    results: dict[str, object] = {}
    for round_ in range(repeats + 1):
        for name, fn in cases.items():
            synchronize(device)
            started = time.perf_counter()
            results[name] = fn()
            synchronize(device)
            if round_:
                times[name].append((time.perf_counter() - started) * 1000.0)
    return {name: statistics.median(ms) for name, ms in times.items()}, results
