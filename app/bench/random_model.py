"""Random-weight models of a preset's shape, built in memory directly on the device in the timing dtype.

Building in the final dtype on the final device matters at full size: the `real` preset is about 47 GiB in bf16,
and an fp32 copy first (about 100 GB) fits neither an 80 GB GPU nor most hosts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers import DiffusionGemmaForBlockDiffusion

from app.checkpoint.parts import asr_config_for, build_model
from app.checkpoint.presets import PRESETS, backbone_config
from app.checkpoint.tokenizer import SEED_CORPUS, build_tokenizer
from app.model.pipeline import AsrParts, AsrPipeline
from app.model.row_start import NoiseStart

BENCH_IDS = {"pad": 0, "eos": 1, "bos": 2, "image": 5, "boi": 6, "eoi": 7}


@contextmanager
def building_on(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """New parameters are created on `device` in `dtype` (and initialised there)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def random_backbone(preset: str, canvas: int, device: torch.device, dtype: torch.dtype,
                    seed: int = 0) -> DiffusionGemmaForBlockDiffusion:
    """The preset's backbone (no LoRA) with random weights, frozen, canvas `canvas`."""
    torch.manual_seed(seed)
    config = backbone_config(PRESETS[preset], BENCH_IDS)
    config.canvas_length = canvas
    with building_on(device, dtype):
        model = DiffusionGemmaForBlockDiffusion(config)
    return model.eval().requires_grad_(False)


def random_pipeline(preset: str, device: torch.device, dtype: torch.dtype, seed: int = 0) -> AsrPipeline:
    """The whole model of the preset's shape with random weights (LoRA included, unmerged), as serving loads it."""
    dims = PRESETS[preset]
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(SEED_CORPUS, vocab_size=dims.vocab_size)
    with building_on(device, dtype):
        parts = build_model(dims, tokenizer)
    backbone = parts.backbone.base_model.model.eval().requires_grad_(False)  # the LoRA stays injected in place
    encoder = parts.whisper.get_encoder().eval().requires_grad_(False)
    model = AsrParts(encoder=encoder, projector=parts.projector.eval().requires_grad_(False), backbone=backbone,
                     tokenizer=tokenizer)
    return AsrPipeline(f"random-{preset}", model, asr_config_for(dims), NoiseStart(backbone))
