"""Log-mel features of a generated dataset, computed once and stored as an fp16 memmap.

Training must see exactly the features inference sees: `app.model.encoder.log_mel` (Whisper's extractor, every
clip zero-padded to the full encoder window). `fast_log_mel` computes the same numbers (checked against
`log_mel` in the tests) but runs the STFT only over the clip's real samples plus a margin: the frames of the
zero padding are exactly `log10(1e-10)` before Whisper's per-clip dynamic-range clamp, so they are filled in.
Synthetic clips fill on average less than half of the 10 s window, so this is ~2-3x cheaper.

Layout of a feature directory:
  features.npy   float16 [N, n_mels, frames]
  meta.json      texts, langs, num_samples per clip, frames, source dataset manifest
"""

from __future__ import annotations

import json
import multiprocessing as mp
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import WhisperFeatureExtractor

from app.model.encoder import HOP_LENGTH, SAMPLE_RATE
from app.training.data import load_dataset

FEATURES = "features.npy"
META = "meta.json"


def fast_log_mel(extractor: WhisperFeatureExtractor, audio: np.ndarray, frames: int) -> torch.Tensor:
    """Whisper log-mel `[n_mels, frames]` of one clip zero-padded to `frames` hops; equal to `log_mel`."""
    n_fft, hop = extractor.n_fft, extractor.hop_length
    total = frames * hop
    audio = audio[:total].astype(np.float32, copy=False)
    # Frames whose analysis window (centred, n_fft wide) reaches past the real samples see only zeros.
    needed = min(frames, (len(audio) + n_fft) // hop + 2)
    seg_len = min(total, needed * hop + n_fft)
    seg = np.zeros(seg_len, dtype=np.float32)
    seg[: len(audio)] = audio
    wave = torch.from_numpy(seg)
    if seg_len == total:
        computed = frames
    else:
        computed = needed
    window = torch.hann_window(n_fft)
    stft = torch.stft(wave, n_fft, hop, window=window, return_complex=True)
    mags = (stft[..., :computed].abs() ** 2).contiguous()
    mel = torch.from_numpy(extractor.mel_filters).float().T @ mags
    log_spec = torch.full((mel.shape[0], frames), -10.0)
    log_spec[:, :computed] = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


@dataclass
class FeatureSet:
    """Features and labels of one split, features memory-mapped."""

    features: np.ndarray  # float16 [N, n_mels, frames] (memmap)
    texts: list[str]
    langs: list[str]
    num_samples: np.ndarray  # int64 [N]
    frames: int

    def __len__(self) -> int:
        return len(self.texts)

    def audio_frames(self, index: np.ndarray) -> np.ndarray:
        """Mel frames that carry real audio, per clip."""
        return np.minimum(self.frames, -(-self.num_samples[index] // HOP_LENGTH))


def extract_features(
    dataset_dir: Path, out_dir: Path, extractor: WhisperFeatureExtractor, frames: int, progress: bool = True,
    workers: int = 1,
) -> FeatureSet:
    """Compute (or reuse, when complete and of the same shape) the features of one dataset split.

    With `workers` > 1 the dataset's shards are shared out among that many processes, each writing its rows of
    the one memmap; the result is the same array (tested). On a many-core machine this is most of the data
    preparation once synthesis runs in parallel.
    """
    out_dir = Path(out_dir)
    ds = load_dataset(Path(dataset_dir))
    meta_path = out_dir / META
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("frames") == frames and meta.get("count") == len(ds) and meta.get("source") == ds.manifest:
            return load_features(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)
    n_mels = extractor.feature_size
    arr = np.lib.format.open_memmap(out_dir / FEATURES, mode="w+", dtype=np.float16, shape=(len(ds), n_mels, frames))
    arr.flush()
    del arr
    tasks = [_ShardTask(Path(dataset_dir), k, start, out_dir / FEATURES, extractor, frames)
             for k, start in enumerate(ds.shard_starts)]
    results = _shard_results(tasks, workers)
    if progress:
        from tqdm import tqdm

        results = tqdm(results, total=len(tasks), desc=f"features {Path(dataset_dir).name} (shards)", mininterval=5)
    texts, langs, samples = [], [], []
    for shard_texts, shard_langs, shard_samples in results:
        texts += shard_texts
        langs += shard_langs
        samples += shard_samples
    meta = {"count": len(texts), "frames": frames, "n_mels": n_mels, "texts": texts, "langs": langs,
            "num_samples": samples, "sample_rate": SAMPLE_RATE, "source": ds.manifest}
    # Written last: a directory without meta.json is an interrupted extraction.
    meta_path.write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    return load_features(out_dir)


@dataclass(frozen=True)
class _ShardTask:
    dataset_dir: Path
    shard: int
    start: int  # the shard's first row in the memmap
    features_path: Path
    extractor: WhisperFeatureExtractor
    frames: int


def _extract_shard(task: _ShardTask) -> tuple[list[str], list[str], list[int]]:
    """Write one shard's rows into the memmap; returns its texts, languages and clip lengths."""
    arr = np.load(task.features_path, mmap_mode="r+")
    texts, langs, samples = [], [], []
    for j, clip in enumerate(load_dataset(task.dataset_dir).shard(task.shard)):
        arr[task.start + j] = fast_log_mel(task.extractor, clip.audio, task.frames).numpy().astype(np.float16)
        texts.append(clip.text)
        langs.append(clip.lang)
        samples.append(len(clip.audio))
    arr.flush()
    return texts, langs, samples


def _shard_results(tasks: list[_ShardTask], workers: int) -> Iterator[tuple[list[str], list[str], list[int]]]:
    """Shards in order, in-process for one worker, else in a process pool."""
    if workers <= 1 or len(tasks) <= 1:
        yield from map(_extract_shard, tasks)
        return
    # spawn, not fork, as for synthesis (app.training.data): the parent has torch loaded. Small STFTs: one thread
    # per worker is fastest (the in-process path runs at the caller's setting, one in `prepare_data`).
    with mp.get_context("spawn").Pool(min(workers, len(tasks)), torch.set_num_threads, (1,)) as pool:
        yield from pool.imap(_extract_shard, tasks)


def load_features(out_dir: Path) -> FeatureSet:
    """Open a feature directory written by `extract_features`."""
    out_dir = Path(out_dir)
    meta = json.loads((out_dir / META).read_text(encoding="utf-8"))
    feats = np.load(out_dir / FEATURES, mmap_mode="r")
    return FeatureSet(feats, meta["texts"], meta["langs"], np.asarray(meta["num_samples"], dtype=np.int64),
                      meta["frames"])
