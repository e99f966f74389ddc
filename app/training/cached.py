"""The data of a run on the frozen pretrained encoder: its cached outputs (`diffusion-asr encode-cache`).

`TrainConfig.encoder_cache` is a directory with `train/` and, for the CTC probe, `eval/`. Further training
sources sit beside them as `train-<name>/` (the recorded prompts of `diffusion-asr recordings`, say) and are
read as one set with `train/`. All must come from the same conversion and window: the checkpoint references
that encoder (`app.checkpoint.encoder_ref`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from app.checkpoint.encoder_ref import EncoderReference
from app.checkpoint.presets import ModelDims
from app.training.encoder_cache import META, EncoderCache, load_encoder_cache

TRAIN_SPLIT = "train"
EVAL_SPLIT = "eval"


class StackedOutputs:
    """Several caches' memory-mapped outputs read as one array of rows (nothing is copied until a batch)."""

    def __init__(self, parts: list[np.ndarray]) -> None:
        self.parts = parts
        self.starts = np.cumsum([0] + [len(part) for part in parts])

    @property
    def shape(self) -> tuple[int, ...]:
        return (int(self.starts[-1]), *self.parts[0].shape[1:])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        rows = np.empty((len(index), *self.parts[0].shape[1:]), dtype=self.parts[0].dtype)
        which = np.searchsorted(self.starts, index, side="right") - 1
        for k, part in enumerate(self.parts):
            mine = np.flatnonzero(which == k)
            if mine.size:
                rows[mine] = part[index[mine] - self.starts[k]]
        return rows


def stack_caches(caches: list[EncoderCache]) -> EncoderCache:
    """One training set from several caches of the same encoder and window, rows in the given order."""
    first = caches[0]
    for other in caches[1:]:
        if (other.encoder_sha256, other.window_seconds) != (first.encoder_sha256, first.window_seconds):
            raise ValueError("training caches differ in encoder or window; encode them with the same encoder")
    if len(caches) == 1:
        return first
    return EncoderCache(StackedOutputs([c.outputs for c in caches]),  # type: ignore[arg-type]
                        [t for c in caches for t in c.texts], [lang for c in caches for lang in c.langs],
                        np.concatenate([c.num_samples for c in caches]),
                        np.concatenate([c.audio_positions for c in caches]), first.window_seconds,
                        first.encoder_sha256)


def train_dirs(root: Path) -> list[Path]:
    """`train/` first, then every `train-<name>/` in name order."""
    extra = sorted(p for p in Path(root).glob(f"{TRAIN_SPLIT}-*") if p.is_dir())
    return [Path(root) / TRAIN_SPLIT, *extra]


def train_clip_counts(root: Path) -> dict[str, int]:
    """Clips per training cache (`train`, `train-<name>`), from each cache's metadata, for the model card."""
    return {path.name: len(load_encoder_cache(path)) for path in train_dirs(root)}


def held_out_dirs(root: Path) -> list[Path]:
    """`eval/` first (when there is one), then every `eval-<name>/` in name order."""
    extra = sorted(p for p in Path(root).glob(f"{EVAL_SPLIT}-*") if p.is_dir())
    first = [Path(root) / EVAL_SPLIT] if (Path(root) / EVAL_SPLIT / META).is_file() else []
    return [*first, *extra]


def load_cached_splits(root: Path) -> tuple[EncoderCache, EncoderCache | None]:
    """The training set (`train/` and any `train-<name>/`) and, when there is one, the eval split; refused when
    they differ in encoder or window."""
    train = stack_caches([load_encoder_cache(path) for path in train_dirs(root)])
    if not (Path(root) / EVAL_SPLIT / META).is_file():
        return train, None
    return train, _held_out(Path(root) / EVAL_SPLIT, train)


def load_held_out(root: Path, train: EncoderCache) -> dict[str, EncoderCache]:
    """Every held-out cache (`eval/`, then each `eval-<name>/`) by directory name; refused when one differs from
    `train` in encoder or window."""
    return {path.name: _held_out(path, train) for path in held_out_dirs(root)}


def _held_out(path: Path, train: EncoderCache) -> EncoderCache:
    held_out = load_encoder_cache(path)
    ours, theirs = (train.encoder_sha256, train.window_seconds), (held_out.encoder_sha256, held_out.window_seconds)
    if ours != theirs:
        raise ValueError(f"{path.parent}: train and {path.name} caches differ in encoder or window "
                         f"({ours} against {theirs})")
    return held_out


def cache_reference(cache: EncoderCache) -> EncoderReference:
    """The encoder the cache was computed with, as the checkpoint will reference it."""
    if not cache.encoder_sha256:
        raise ValueError("the encoder cache records no checksum of its encoder; rebuild it with `encode-cache`")
    return EncoderReference(cache.encoder_sha256, cache.window_seconds)


def cached_dims(dims: ModelDims, cache: EncoderCache) -> ModelDims:
    """The run's sizes with the encoder's positions and width taken from its cached outputs."""
    _, positions, width = cache.outputs.shape
    return replace(dims, encoder_positions=positions, encoder_width=width)
