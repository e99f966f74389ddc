"""`bench-engine` drives the real engine: concurrent clips share batches, the baseline sends them one at a time,
and both give each clip the transcript the pipeline gives it alone (behaviour only; no timing verdicts)."""

from __future__ import annotations

from dataclasses import replace

import torch

from app.bench.engine import run_engine_benchmark, synthetic_clip
from app.bench.random_model import random_pipeline
from app.results import DecodeOptions, join_segments


def test_concurrent_clips_share_batches_and_get_their_solo_transcripts():
    rows = run_engine_benchmark("tiny-random", "cpu", [1, 3], seconds=2.0, steps=2)
    header, one, three = rows
    assert header["preset"] == "tiny-random" and header["dtype"] == "float32"
    assert [one["concurrency"], three["concurrency"]] == [1, 3]
    assert three["together"]["largest_batch"] == 3 and three["one_at_a_time"]["largest_batch"] == 1
    for row in (one, three):
        for phase in ("together", "one_at_a_time", "stock_generate"):
            summary = row[phase]
            assert 0 < summary["p50_s"] <= summary["p95_s"]
            assert summary["clips_per_s"] > 0 and summary["rtf"] > 0
        assert row["memory_peak_gib"] > 0
        assert row["identical"] is True

    pipeline = random_pipeline("tiny-random", torch.device("cpu"), torch.float32)
    pipeline.params = replace(pipeline.params, confidence_threshold=0.0)
    for i, text in enumerate(three["texts"]):
        clip = synthetic_clip(i, 2.0, pipeline.window_seconds)
        alone = join_segments(pipeline.transcribe_windows(clip.windows, DecodeOptions(steps=2, seed=i)), duration=2.0)
        assert text == alone.text


def test_random_models_are_built_in_the_requested_dtype():
    pipeline = random_pipeline("tiny-random", torch.device("cpu"), torch.bfloat16)
    # LoRA weights aside: peft keeps adapters in fp32 over a bf16 base, as it does for the served checkpoint.
    dtypes = {p.dtype for module in (pipeline.encoder, pipeline.projector, pipeline.backbone)
              for name, p in module.named_parameters() if "lora_" not in name}
    assert dtypes == {torch.bfloat16}
    assert torch.get_default_dtype() == torch.float32  # the build leaves the process default alone
