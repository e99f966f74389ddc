"""SpecAugment-style masks: inside each clip's real frames, set to its mean, reproducible from the generator."""

from __future__ import annotations

import torch

from app.training.augment import MaskSpec, mask_spectrogram


def _features(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    features = torch.randn(4, 80, 300, generator=torch.Generator().manual_seed(seed))
    frames = torch.tensor([300, 150, 40, 1])
    features[1, :, 150:] = -1.5  # padding, as Whisper's scaling leaves it
    features[2, :, 40:] = -1.5
    features[3, :, 1:] = -1.5
    return features, frames


def test_no_masks_returns_the_features_and_draws_nothing() -> None:
    features, frames = _features()
    generator = torch.Generator().manual_seed(1)
    state = generator.get_state()
    assert mask_spectrogram(features, frames, MaskSpec(), generator) is features
    assert torch.equal(generator.get_state(), state)  # runs without masks keep their random stream


def test_masks_cover_bands_and_spans_inside_the_real_frames_with_the_clip_mean() -> None:
    features, frames = _features()
    spec = MaskSpec(freq_masks=2, freq_mask_bins=10, time_masks=2, time_mask_frac=0.1)
    out = mask_spectrogram(features, frames, spec, torch.Generator().manual_seed(3))
    changed = out != features
    for row, n in enumerate(frames.tolist()):
        assert not changed[row, :, n:].any()  # the padding is never touched
        mean = features[row, :, :n].mean()
        assert torch.allclose(out[row][changed[row]], mean.expand(int(changed[row].sum())))
        # A frequency mask spans the clip's real frames, so a masked bin is masked at every real frame; the
        # bins masked at a frame no time mask covers are the frequency masks alone: at most 2 x 10 of them.
        bins_per_frame = changed[row, :, :n].sum(dim=0)
        assert int(bins_per_frame.min()) <= 20
        # Time masks: frames masked in every bin, at most 2 spans of 10% of the real frames.
        whole_frames = int((bins_per_frame == 80).sum())
        assert whole_frames <= 2 * int(n * 0.1)
        if row == 0:
            assert whole_frames > 0 and int(bins_per_frame.min()) > 0  # spans in time, bands at every frame


def test_masks_are_drawn_from_the_generator() -> None:
    features, frames = _features()
    spec = MaskSpec(freq_masks=2, time_masks=2)
    first = mask_spectrogram(features, frames, spec, torch.Generator().manual_seed(5))
    again = mask_spectrogram(features, frames, spec, torch.Generator().manual_seed(5))
    other = mask_spectrogram(features, frames, spec, torch.Generator().manual_seed(6))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
