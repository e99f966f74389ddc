"""Turning settings into a loaded pipeline: which directories, which device, which dtype."""

from __future__ import annotations

import torch

from app.config import Settings
from app.model.checkpoint import CheckpointPaths, default_device
from app.model.embedded import embedded_model_dir
from app.model.pipeline import AsrPipeline
from app.model.sampling import SAMPLERS

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_paths(settings: Settings) -> CheckpointPaths:
    """The configured model, or the embedded default when nothing is configured."""
    if settings.model is None and not (settings.encoder and settings.backbone and settings.adapter):
        model = embedded_model_dir(settings.cache_dir)
    else:
        model = settings.model
    return CheckpointPaths.resolve(model, settings.encoder, settings.backbone, settings.adapter)


def resolve_device(settings: Settings) -> torch.device:
    """`auto` picks CUDA when present; asking for CUDA without one is an error, not a silent fallback."""
    if settings.device == "auto":
        return default_device()
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("ASR_DEVICE=cuda but no CUDA device is available")
    return torch.device(settings.device)


def load_from_settings(settings: Settings) -> AsrPipeline:
    """Load the pipeline the settings describe."""
    device = resolve_device(settings)
    dtype = DTYPES.get(settings.dtype)
    return AsrPipeline(
        resolve_paths(settings),
        device=device,
        dtype=dtype,
        canvas_length=settings.canvas_length,
        sampler=SAMPLERS[settings.sampler](),
    )
