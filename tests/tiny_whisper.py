"""A tiny random Whisper saved as `convert-encoder` saves whisper-base (1500 positions, its real tensor checksum)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import WhisperConfig, WhisperModel

from app.checkpoint.whisper_base import MARKER_FILE, MODEL_FILE, tensors_sha256


def write_tiny_whisper(directory: Path) -> Path:
    """Write the model, its config and the conversion marker into `directory`; returns it."""
    torch.manual_seed(0)
    config = WhisperConfig(vocab_size=16, num_mel_bins=80, d_model=8, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=16,
                           decoder_ffn_dim=16, max_source_positions=1500, max_target_positions=6,
                           pad_token_id=12, bos_token_id=12, eos_token_id=12, decoder_start_token_id=13)
    directory.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(directory)
    state = {k: v.contiguous() for k, v in WhisperModel(config).state_dict().items()}
    save_file(state, str(directory / MODEL_FILE))
    marker = {"tensors_sha256": tensors_sha256(state), "packages": []}
    (directory / MARKER_FILE).write_text(json.dumps(marker), encoding="utf-8")
    return directory
