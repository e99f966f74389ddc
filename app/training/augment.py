"""SpecAugment-style masking of training log-mels, redrawn every time a clip is drawn.

A synthetic clip's features are computed once, so without this every epoch shows the model the very same
input; a run with many epochs (the GPU run of docs/training.md saw each clip 18 times) learns its clips
instead of the speech. Masking a few mel bands and short time spans of each clip, differently each time,
is the standard cure (Park et al., 2019, SpecAugment); time warping is left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MaskSpec:
    """How many masks of which sizes (`TrainConfig` fields of the same names)."""

    freq_masks: int = 0
    freq_mask_bins: int = 15  # widest band, in mel bins (of 80)
    time_masks: int = 0
    time_mask_frac: float = 0.05  # widest span, as a fraction of the clip's real frames

    @property
    def active(self) -> bool:
        return self.freq_masks > 0 or self.time_masks > 0


def _spans(lengths: torch.Tensor, widest: torch.Tensor, count: int, size: int,
           generator: torch.Generator) -> torch.Tensor:
    """`[B, size]` mask of `count` random spans per row, each 0..widest[b] long, inside 0..lengths[b]."""
    rows, device = lengths.shape[0], lengths.device
    draws = torch.rand(2, rows, count, generator=generator).to(device)
    widths = torch.minimum((draws[0] * (widest[:, None] + 1)).long(), lengths[:, None])
    starts = (draws[1] * (lengths[:, None] - widths + 1)).long()
    index = torch.arange(size, device=device)[None, None, :]
    inside = (index >= starts[..., None]) & (index < (starts + widths)[..., None])
    return inside.any(dim=1)


def mask_spectrogram(features: torch.Tensor, frames: torch.Tensor, spec: MaskSpec,
                     generator: torch.Generator) -> torch.Tensor:
    """`features` `[B, n_mels, T]` with `spec`'s masks set to each clip's mean over its real frames.

    `frames` `[B]` counts each clip's real (not padding) frames; masks stay inside them, so the padding, which
    the encoder also sees at inference, is left as it is. The mean rather than zero because Whisper's
    scaling leaves the features of a clip centred near its own mean, not near 0. All draws come from the
    (CPU) `generator`, so a seed gives the same masks on any device; the masks are built where `features` are.
    """
    if not spec.active:
        return features
    batch, n_mels, total = features.shape
    device = features.device
    frames = frames.to(device).long().clamp(0, total)
    real = torch.arange(total, device=device)[None, :] < frames[:, None]  # [B, T]
    fill = (features * real[:, None, :]).sum(dim=(1, 2)) / (frames.clamp(min=1) * n_mels)
    masked = torch.zeros(batch, n_mels, total, dtype=torch.bool, device=device)
    if spec.freq_masks:
        bands = _spans(torch.full((batch,), n_mels, device=device),
                       torch.full((batch,), spec.freq_mask_bins, device=device), spec.freq_masks, n_mels, generator)
        masked |= bands[:, :, None] & real[:, None, :]
    if spec.time_masks:
        widest = (frames.double() * spec.time_mask_frac).long()
        masked |= _spans(frames, widest, spec.time_masks, total, generator)[:, None, :]
    return torch.where(masked, fill[:, None, None].to(features.dtype), features)
