"""Stage 2: the projector maps Whisper frames to backbone embeddings (the trained part with LoRA)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


ENCODER_FRAME_SAMPLES = 160 * 2  # Whisper: mel hop 160 samples, then its stride-2 conv


def slot_samples(subsample: int) -> int:
    """Audio samples (16 kHz) per projector slot."""
    return ENCODER_FRAME_SAMPLES * subsample


def audio_slots(num_samples: int, subsample: int, max_slots: int) -> int:
    """Projector slots covering `num_samples` of audio (mel hop 160, Whisper stride 2, projector subsample),
    at most the window's `max_slots`: the CTC input length of a clip."""
    per_slot = slot_samples(subsample)
    return min(max_slots, -(-int(num_samples) // per_slot) + 1)


class Projector(nn.Module):
    """Conv1d subsampling (kernel = stride = `subsample`) then a linear map to the backbone's hidden size.

    The frame axis is zero-padded up to a multiple of `subsample`, so Whisper's 1500 frames give 188 slots.
    """

    def __init__(self, encoder_width: int, width: int, hidden: int, subsample: int = 8) -> None:
        super().__init__()
        self.subsample = subsample
        self.conv = nn.Conv1d(encoder_width, width, kernel_size=subsample, stride=subsample)
        self.proj = nn.Linear(width, hidden)

    def slots(self, frames: int) -> int:
        """Output length for `frames` input frames."""
        return -(-frames // self.subsample)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """`[B, T, encoder_width]` -> `[B, ceil(T / subsample), hidden]`."""
        pad = self.slots(frames.shape[1]) * self.subsample - frames.shape[1]
        x = F.pad(frames.transpose(1, 2), (0, pad))
        x = F.gelu(self.conv(x)).transpose(1, 2)
        return self.proj(x)
