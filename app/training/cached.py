"""The data of a run on the frozen pretrained encoder: its cached outputs (`diffusion-asr encode-cache`).

`TrainConfig.encoder_cache` is a directory with `train/` and, for the CTC probe, `eval/`. Both must come from
the same conversion and window: the checkpoint references that encoder (`app.checkpoint.encoder_ref`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from app.checkpoint.encoder_ref import EncoderReference
from app.checkpoint.presets import ModelDims
from app.training.encoder_cache import META, EncoderCache, load_encoder_cache

TRAIN_SPLIT = "train"
EVAL_SPLIT = "eval"


def load_cached_splits(root: Path) -> tuple[EncoderCache, EncoderCache | None]:
    """The train split and, when there is one, the eval split; refused when they differ in encoder or window."""
    train = load_encoder_cache(Path(root) / TRAIN_SPLIT)
    if not (Path(root) / EVAL_SPLIT / META).is_file():
        return train, None
    held_out = load_encoder_cache(Path(root) / EVAL_SPLIT)
    ours, theirs = (train.encoder_sha256, train.window_seconds), (held_out.encoder_sha256, held_out.window_seconds)
    if ours != theirs:
        raise ValueError(f"{root}: train and eval caches differ in encoder or window ({ours} against {theirs})")
    return train, held_out


def cache_reference(cache: EncoderCache) -> EncoderReference:
    """The encoder the cache was computed with, as the checkpoint will reference it."""
    if not cache.encoder_sha256:
        raise ValueError("the encoder cache records no checksum of its encoder; rebuild it with `encode-cache`")
    return EncoderReference(cache.encoder_sha256, cache.window_seconds)


def cached_dims(dims: ModelDims, cache: EncoderCache) -> ModelDims:
    """The run's sizes with the encoder's positions and width taken from its cached outputs."""
    _, positions, width = cache.outputs.shape
    return replace(dims, encoder_positions=positions, encoder_width=width)
