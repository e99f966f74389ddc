"""Benchmark: wall time of the converted whisper-base encoder (features to hidden states) per window length."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

from app.checkpoint.pretrained_encoder import load_pretrained_encoder
from app.model.encoder import SAMPLE_RATE, encode, feature_extractor_for, log_mel, window_frames


def run_encoder_benchmark(directory: Path, windows: list[int], repeats: int) -> list[dict]:
    """Median and spread of `repeats` timed encoder passes (after one warm-up) for each window, batch 1, fp32."""
    rows = []
    for seconds in windows:
        encoder = load_pretrained_encoder(directory, seconds, torch.device("cpu"), torch.float32)
        # 5 s of noise: the encoder's cost depends only on the padded window, never on the content.
        audio = np.random.default_rng(0).standard_normal(5 * SAMPLE_RATE).astype(np.float32) * 0.1
        features = log_mel(feature_extractor_for(encoder), [audio], window_frames(encoder))
        times = []
        with torch.inference_mode():
            for repeat in range(repeats + 1):
                started = time.perf_counter()
                encode(encoder, features)
                if repeat:  # the first pass is a warm-up
                    times.append(time.perf_counter() - started)
        median = statistics.median(times)
        rows.append({"window_s": seconds, "median_s": median, "min_s": min(times), "max_s": max(times),
                     "line": f"{seconds:>2} s window: median {median:.3f} s (min {min(times):.3f}, "
                             f"max {max(times):.3f}, {repeats} passes, {torch.get_num_threads()} threads)"})
    return rows
