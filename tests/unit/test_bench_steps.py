"""`bench-steps` options: bucketed forwards and the profiler's kernel table (behaviour only, no timing verdicts)."""

from __future__ import annotations

from app.bench.steps import run_prefill_benchmark, run_step_benchmark


def test_buckets_pad_the_forward_and_the_profile_lists_kernels():
    [row] = run_step_benchmark("tiny-random", [3], [16], steps=2, repeats=1, device_name="cpu", buckets=(8, 4),
                               profile_top=5)
    assert row["batch"] == 3 and row["forward_rows"] == 4
    assert row["step_ms_median"] > 0
    table = row["line"].splitlines()[1:]
    assert any("Self CPU" in line for line in table)
    kernels = [line for line in table if line.strip().startswith("aten::")]
    assert 1 <= len(kernels) <= 5


def test_without_options_the_forward_runs_at_the_batch_size_and_nothing_is_profiled():
    [row] = run_step_benchmark("tiny-random", [3], [16], steps=2, repeats=1, device_name="cpu")
    assert row["forward_rows"] == 3
    assert "aten::" not in row["line"]


def test_prefill_benchmark_times_both_ways_and_compares_the_caches():
    alone, together, verdict = run_prefill_benchmark("tiny-random", rows=3, repeats=1, device_name="cpu",
                                                     prompt_tokens=12)
    assert alone["case"].startswith("one at a time") and together["case"] == "together"
    assert alone["ms_median"] > 0 and together["ms_median"] > 0
    assert 0 <= verdict["max_cache_difference"] < 1e-5
