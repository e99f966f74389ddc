"""The benchmark commands run from the command line and print both sides of each comparison (no timing verdicts)."""

from __future__ import annotations

from app.cli import main


def test_bench_vocab_prints_the_baseline_the_fused_pass_and_the_check(capsys):
    code = main(["bench-vocab", "--vocab", "300", "--canvas", "16", "--batch", "2", "--repeats", "1", "--slots", "3"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[0].startswith("separate (baseline)") and lines[1].startswith("fused, 3 slots a chunk")
    assert lines[2].endswith("identical results: True")


def test_bench_engine_prints_each_concurrency_together_and_one_at_a_time(capsys):
    code = main(["bench-engine", "--preset", "tiny-random", "--device", "cpu", "--concurrency", "2", "--seconds", "1",
                 "--steps", "1", "--buckets", "4"])
    out = capsys.readouterr().out
    assert code == 0
    assert "concurrency 2 (2 windows" in out
    assert "together" in out and "one at a time" in out
    assert "same texts: True" in out
