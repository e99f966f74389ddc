"""Stage 1: Whisper log-mel features and the frozen Whisper encoder."""

from __future__ import annotations

import numpy as np
import torch
from transformers import WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder

SAMPLE_RATE = 16_000
HOP_LENGTH = 160  # Whisper's 10 ms hop: 100 mel frames per second


def window_frames(encoder: WhisperEncoder) -> int:
    """Mel frames the encoder requires: exactly twice its positions (its first conv has stride 1, the second 2)."""
    return 2 * encoder.config.max_source_positions


def window_seconds(encoder: WhisperEncoder) -> float:
    """Audio seconds in one encoder window, read from the encoder's config, never assumed to be 30."""
    return window_frames(encoder) * HOP_LENGTH / SAMPLE_RATE


def feature_extractor_for(encoder: WhisperEncoder) -> WhisperFeatureExtractor:
    """A feature extractor that pads/cuts every clip to the encoder's window."""
    seconds = window_seconds(encoder)
    chunk = int(seconds) if float(seconds).is_integer() else seconds
    return WhisperFeatureExtractor(
        feature_size=encoder.config.num_mel_bins,
        sampling_rate=SAMPLE_RATE,
        hop_length=HOP_LENGTH,
        chunk_length=chunk,
        n_fft=400,
    )


def log_mel(
    extractor: WhisperFeatureExtractor, windows: list[np.ndarray], frames: int
) -> torch.Tensor:
    """Log-mel features `[B, n_mels, frames]`, each window zero-padded to the full encoder window."""
    feats = extractor(
        [w.astype(np.float32, copy=False) for w in windows],
        sampling_rate=SAMPLE_RATE,
        return_tensors="pt",
        padding="max_length",
        max_length=frames * HOP_LENGTH,
        truncation=True,
    ).input_features
    if feats.shape[-1] != frames:
        raise ValueError(f"feature extractor produced {feats.shape[-1]} frames, the encoder needs {frames}")
    return feats


def encode(encoder: WhisperEncoder, features: torch.Tensor) -> torch.Tensor:
    """Encoder hidden states `[B, positions, width]`."""
    param = next(encoder.parameters())
    return encoder(features.to(device=param.device, dtype=param.dtype)).last_hidden_state
