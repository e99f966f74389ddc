"""The converted whisper-base encoder (`diffusion-asr convert-encoder`), frozen, for a window of 10, 20 or 30 s.

Whisper's encoder attends over its whole window, so its cost grows with the window; a shorter window keeps the
first positional embeddings only (as whisper.cpp's `audio_ctx` does), and Whisper's decoder still reads it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from app.checkpoint.errors import CheckpointError
from app.checkpoint.whisper_base import MARKER_FILE, MODEL_FILE
from app.model.encoder import HOP_LENGTH, SAMPLE_RATE

WINDOW_SECONDS = (10, 20, 30)
# Whisper's second convolution halves the 100 mel frames per second: 50 encoder positions per second.
POSITIONS_PER_SECOND = SAMPLE_RATE // HOP_LENGTH // 2
_ENCODER_PREFIX = "encoder."


def encoder_positions(window_seconds: int) -> int:
    """Encoder positions (output frames) of a window; only the windows of `WINDOW_SECONDS` are offered."""
    if window_seconds not in WINDOW_SECONDS:
        raise ValueError(f"encoder window {window_seconds} s: choose one of {', '.join(map(str, WINDOW_SECONDS))}")
    return window_seconds * POSITIONS_PER_SECOND


def load_pretrained_encoder(directory: Path, window_seconds: int, device: torch.device | None = None,
                            dtype: torch.dtype = torch.float32) -> WhisperEncoder:
    """The converted encoder cut to `window_seconds`, frozen, in eval mode, on `device` in `dtype`."""
    directory = Path(directory)
    positions = encoder_positions(window_seconds)
    if not (directory / MARKER_FILE).is_file():
        raise CheckpointError(f"{directory} holds no converted whisper-base encoder; run `diffusion-asr "
                              f"convert-encoder` (the Makefile's venv target does)")
    config = WhisperConfig.from_pretrained(str(directory), local_files_only=True)
    if positions > config.max_source_positions:
        raise CheckpointError(f"{directory}: a {window_seconds} s window needs {positions} positions, the encoder "
                              f"has {config.max_source_positions}")
    config.max_source_positions = positions
    saved = load_file(str(directory / MODEL_FILE))
    state = {name.removeprefix(_ENCODER_PREFIX): t for name, t in saved.items() if name.startswith(_ENCODER_PREFIX)}
    state["embed_positions.weight"] = state["embed_positions.weight"][:positions]
    encoder = WhisperEncoder(config)
    encoder.load_state_dict(state, strict=True)
    return encoder.to(device=device, dtype=dtype).eval().requires_grad_(False)
