"""The frozen whisper-base encoder's outputs for every clip of a dataset, computed once and stored as fp16.

The encoder is frozen in training, so its output for a clip never changes: computing it once lets every
training step start at the projector. `diffusion-asr encode-cache` reads a dataset written by `generate_dataset`
and writes:
  encoder.npy   float16 [N, positions, width] (memory-mapped when read; 500 x 512 x 2 B = 0.5 MB a clip at 10 s)
  meta.json     texts, langs, num_samples, audio_positions per clip, window, encoder identity, dataset manifest
The whole window is stored, padding included: Whisper's encoder attends over the padded window, so its outputs
at the padding depend on the audio, and the model reads all of them at inference.
While a build runs, progress.json says how many clips encoder.npy already holds: an interrupted build of the same
dataset, window and encoder goes on from there instead of encoding everything again (the training data's
largest cost on a CPU, 30-80 minutes at 4-6 clips/s).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from app.checkpoint.pretrained_encoder import encoder_positions, load_pretrained_encoder
from app.checkpoint.whisper_base import MARKER_FILE
from app.model.encoder import HOP_LENGTH, SAMPLE_RATE, encode, feature_extractor_for, window_frames
from app.training.data import Clip, load_dataset
from app.training.features import fast_log_mel

OUTPUTS = "encoder.npy"
META = "meta.json"
PROGRESS = "progress.json"
# Each encoder position covers two mel hops (its second convolution has stride 2).
SAMPLES_PER_POSITION = 2 * HOP_LENGTH


@dataclass
class EncoderCache:
    """Cached encoder outputs of one dataset split, memory-mapped."""

    outputs: np.ndarray  # float16 [N, positions, width]
    texts: list[str]
    langs: list[str]
    num_samples: np.ndarray  # int64 [N]
    audio_positions: np.ndarray  # int64 [N]: positions that cover real audio, the rest covers padding
    window_seconds: int
    encoder_sha256: str | None = None  # the conversion's checksum of the encoder's tensors

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def features(self) -> np.ndarray:
        """The rows a training batch reads (`app.training.batches.collate`): the encoder outputs."""
        return self.outputs


def _identity(encoder_dir: Path) -> dict:
    """What identifies the encoder's weights: the conversion's checksum of its tensors."""
    marker = json.loads((Path(encoder_dir) / MARKER_FILE).read_text(encoding="utf-8"))
    return {"tensors_sha256": marker.get("tensors_sha256"), "packages": marker.get("packages")}


def _batches(clips: Iterator[Clip], size: int) -> Iterator[list[Clip]]:
    batch: list[Clip] = []
    for clip in clips:
        batch.append(clip)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _resume_point(out_dir: Path, identity: dict, shape: tuple[int, int, int]) -> int:
    """How many clips an interrupted build of the same identity left in encoder.npy (0: start afresh)."""
    progress_path, outputs_path = out_dir / PROGRESS, out_dir / OUTPUTS
    if not (progress_path.is_file() and outputs_path.is_file()):
        return 0
    progress = json.loads(progress_path.read_text(encoding="utf-8"))
    if progress.get("identity") != identity or progress.get("shape") != list(shape):
        return 0
    return int(progress.get("done", 0))


def _write_progress(out_dir: Path, identity: dict, shape: tuple[int, int, int], done: int) -> None:
    # Written only after the memmap is flushed, so `done` never counts clips that are not on disk; the rename
    # keeps a crash mid-write from leaving a torn file.
    tmp = out_dir / (PROGRESS + ".tmp")
    tmp.write_text(json.dumps({"identity": identity, "shape": list(shape), "done": done}), encoding="utf-8")
    tmp.replace(out_dir / PROGRESS)


def build_encoder_cache(dataset_dir: Path, encoder_dir: Path, out_dir: Path, window_seconds: int = 10,
                        batch_size: int = 8, device: str = "cpu", progress: bool = False) -> EncoderCache:
    """Encode every clip of `dataset_dir` once (or reuse a complete cache of the same dataset, window and
    encoder, or go on with an interrupted one). Refuses clips longer than the window: cutting them would leave
    words the transcript has."""
    dataset = load_dataset(Path(dataset_dir))
    out_dir = Path(out_dir)
    identity = {"window_seconds": window_seconds, "encoder": _identity(encoder_dir), "source": dataset.manifest}
    meta_path = out_dir / META
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if {k: meta.get(k) for k in identity} == identity and meta.get("count") == len(dataset):
            return load_encoder_cache(out_dir)
    encoder = load_pretrained_encoder(Path(encoder_dir), window_seconds, torch.device(device))
    extractor, frames = feature_extractor_for(encoder), window_frames(encoder)
    shape = (len(dataset), encoder_positions(window_seconds), encoder.config.d_model)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)  # from here on the directory is an unfinished cache
    done = _resume_point(out_dir, identity, shape)
    outputs = np.lib.format.open_memmap(out_dir / OUTPUTS, mode="r+" if done else "w+", dtype=np.float16,
                                        shape=shape)
    texts, langs, samples = [], [], []
    batches = _batches(iter(dataset), batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, total=-(-len(dataset) // batch_size), desc="encoder cache", mininterval=5)
    with torch.inference_mode():
        for batch in batches:
            too_long = [c.text for c in batch if c.audio.size > frames * HOP_LENGTH]
            if too_long:
                raise ValueError(f"clip longer than the {window_seconds} s window: {too_long[0]!r}; generate the "
                                 f"dataset with --max-seconds {window_seconds} or less")
            start = len(texts)
            texts += [c.text for c in batch]
            langs += [c.lang for c in batch]
            samples += [int(c.audio.size) for c in batch]
            # Progress is saved at batch boundaries, so a resumed build skips whole batches.
            if start + len(batch) <= done:
                continue
            features = torch.stack([fast_log_mel(extractor, c.audio, frames) for c in batch])
            outputs[start:start + len(batch)] = encode(encoder, features).float().cpu().numpy().astype(np.float16)
            outputs.flush()
            _write_progress(out_dir, identity, shape, start + len(batch))
    del outputs
    meta = {**identity, "count": len(texts), "positions": shape[1], "width": shape[2], "dtype": "float16",
            "sample_rate": SAMPLE_RATE, "texts": texts, "langs": langs, "num_samples": samples}
    # Written last: a directory without meta.json is an interrupted cache.
    meta_path.write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    (out_dir / PROGRESS).unlink(missing_ok=True)
    return load_encoder_cache(out_dir)


def load_encoder_cache(out_dir: Path) -> EncoderCache:
    """Open a cache written by `build_encoder_cache`."""
    out_dir = Path(out_dir)
    meta_path = out_dir / META
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} missing: no encoder cache there, or its build was interrupted")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    samples = np.asarray(meta["num_samples"], dtype=np.int64)
    audio_positions = np.minimum(meta["positions"], -(-samples // SAMPLES_PER_POSITION))
    return EncoderCache(np.load(out_dir / OUTPUTS, mmap_mode="r"), meta["texts"], meta["langs"], samples,
                        audio_positions, meta["window_seconds"], meta["encoder"].get("tensors_sha256"))
