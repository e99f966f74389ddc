"""Batched prefill: windows that join at the same step boundary share encoder passes; every row's cache is its
solo cache to float rounding and its tokens are its solo tokens."""

from __future__ import annotations

import numpy as np
import torch

from app.audio.vad import AudioWindow
from app.model.backbone import prefill, prefill_many
from app.model.denoiser import denoise_all
from app.results import DecodeOptions


def _audio(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(16_000).astype(np.float32) * 0.1


def _assert_same_cache(a, b) -> None:
    # A matrix product over more rows may round differently (seen: 6e-7 on values of order 1).
    assert a.length == b.length
    for (keys_a, values_a), (keys_b, values_b) in zip(a.layers, b.layers, strict=True):
        assert keys_a.shape == keys_b.shape
        torch.testing.assert_close(keys_a, keys_b, rtol=0, atol=1e-5)
        torch.testing.assert_close(values_a, values_b, rtol=0, atol=1e-5)
    torch.testing.assert_close(a.last_hidden, b.last_hidden, rtol=0, atol=1e-5)


def _encoder_passes(pipeline):
    calls = []
    hook = pipeline.backbone.model.encoder.register_forward_hook(lambda *_: calls.append(1))
    return calls, hook


def test_prompts_of_mixed_lengths_are_prefilled_one_pass_per_length_as_if_alone(tiny_pipeline):
    backbone = tiny_pipeline.backbone
    embed = backbone.model.encoder.get_input_embeddings()
    lengths = [12, 20, 12, 12, 20]
    embeds = [embed(torch.randint(10, 500, (1, n), generator=torch.Generator().manual_seed(i)))
              for i, n in enumerate(lengths)]
    calls, hook = _encoder_passes(tiny_pipeline)
    try:
        together = prefill_many(backbone, embeds)
    finally:
        hook.remove()
    assert len(calls) == 2
    for e, state in zip(embeds, together, strict=True):
        _assert_same_cache(state, prefill(backbone, e))


def test_rows_started_together_match_rows_started_alone(tiny_pipeline):
    audio = [_audio(seed) for seed in range(3)]
    encoded = tiny_pipeline.encode(audio)
    options = [DecodeOptions(steps=3, seed=7), DecodeOptions(steps=4, seed=8, language="en"),
               DecodeOptions(steps=2, seed=9, prompt="a short context")]
    windows = [AudioWindow(0.0, 1.0, a, has_speech=True) for a in audio]
    specs = [(e, i, w, o, None) for i, (e, w, o) in enumerate(zip(encoded, windows, options))]
    calls, hook = _encoder_passes(tiny_pipeline)
    try:
        together = tiny_pipeline.start_rows(specs)
    finally:
        hook.remove()
    alone = [tiny_pipeline.start_row(e, i, w, o) for e, i, w, o, _ in specs]
    lengths = {len(tiny_pipeline.prompts.build(o.language, o.prompt).ids) for o in options}
    assert len(calls) == len(lengths) < len(specs)  # two windows shared a pass
    for a, b in zip(together, alone, strict=True):
        _assert_same_cache(a.job.prefill, b.job.prefill)
    batched = denoise_all(tiny_pipeline.backbone, [r.job for r in together], tiny_pipeline.params)
    solo = [denoise_all(tiny_pipeline.backbone, [r.job], tiny_pipeline.params)[0] for r in alone]
    assert [r.tokens for r in batched] == [r.tokens for r in solo]
