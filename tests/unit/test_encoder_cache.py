"""`diffusion-asr encode-cache` on a tiny Whisper encoder written here in the converted layout and three clips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from app.checkpoint.pretrained_encoder import load_pretrained_encoder
from app.model.encoder import encode, feature_extractor_for, log_mel, window_frames
from app.training import encoder_cache
from app.training.commands import main as training_main
from app.training.data import MANIFEST, write_shard
from app.training.encoder_cache import build_encoder_cache, load_encoder_cache
from tests.tiny_whisper import write_tiny_whisper

SR = 16_000


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Whisper with 1500 positions (as whisper-base), saved as `convert-encoder` saves."""
    return write_tiny_whisper(tmp_path_factory.mktemp("encoder"))


def _dataset(directory: Path, seconds: list[float]) -> list[np.ndarray]:
    """A one-shard dataset of chirps of the given lengths, in `generate_dataset`'s layout."""
    rng = np.random.default_rng(0)
    audio = [(0.3 * np.sin(np.cumsum(rng.uniform(0.05, 0.3, int(s * SR))))).astype(np.float16) for s in seconds]
    directory.mkdir(parents=True)
    write_shard(directory / "shard-00000.npz", [(f"clip {i}", "en", a) for i, a in enumerate(audio)])
    manifest = {"shards": [{"file": "shard-00000.npz", "clips": len(audio)}], "seed": 0}
    (directory / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    return [a.astype(np.float32) for a in audio]


def test_cache_holds_what_the_inference_path_computes(tmp_path: Path, tiny_encoder: Path) -> None:
    audio = _dataset(tmp_path / "data", [1.0, 2.5, 0.4])
    cache = build_encoder_cache(tmp_path / "data", tiny_encoder, tmp_path / "cache", window_seconds=10,
                                batch_size=2)
    assert cache.outputs.dtype == np.float16 and cache.outputs.shape == (3, 500, 8)
    assert cache.texts == ["clip 0", "clip 1", "clip 2"] and cache.langs == ["en"] * 3
    assert cache.audio_positions.tolist() == [50, 125, 20]
    # Expected: the serving path's own features (Whisper's extractor) through the encoder, one clip at a time.
    encoder = load_pretrained_encoder(tiny_encoder, 10)
    with torch.no_grad():
        for i, clip in enumerate(audio):
            expected = encode(encoder, log_mel(feature_extractor_for(encoder), [clip], window_frames(encoder)))[0]
            torch.testing.assert_close(torch.from_numpy(np.array(cache.outputs[i])).float(), expected,
                                       atol=2e-3, rtol=2e-3)


def test_complete_cache_is_reused_and_a_changed_window_is_not(tmp_path: Path, tiny_encoder: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _dataset(tmp_path / "data", [0.5, 0.7])
    first = build_encoder_cache(tmp_path / "data", tiny_encoder, tmp_path / "cache")
    calls: list[int] = []
    real = encoder_cache.encode
    monkeypatch.setattr(encoder_cache, "encode", lambda enc, feats: calls.append(len(feats)) or real(enc, feats))
    again = build_encoder_cache(tmp_path / "data", tiny_encoder, tmp_path / "cache")
    assert calls == [] and np.array_equal(first.outputs, again.outputs)
    wider = build_encoder_cache(tmp_path / "data", tiny_encoder, tmp_path / "cache", window_seconds=20)
    assert calls == [2] and wider.outputs.shape == (2, 1000, 8) and wider.window_seconds == 20


def test_interrupted_cache_is_not_read(tmp_path: Path, tiny_encoder: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _dataset(tmp_path / "data", [0.5, 0.7, 0.6])

    def fail(*_args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(encoder_cache, "encode", fail)
    with pytest.raises(KeyboardInterrupt):
        build_encoder_cache(tmp_path / "data", tiny_encoder, tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="interrupted"):
        load_encoder_cache(tmp_path / "cache")


def test_command_refuses_clips_longer_than_the_window(tmp_path: Path, tiny_encoder: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    _dataset(tmp_path / "data", [0.5, 10.5])
    args = ["encode-cache", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "cache"),
            "--encoder-dir", str(tiny_encoder), "--no-progress"]
    assert training_main(args) == 2
    assert "longer than the 10 s window: 'clip 1'" in capsys.readouterr().err
    assert training_main([*args, "--window", "20"]) == 0
    assert load_encoder_cache(tmp_path / "cache").outputs.shape == (2, 1000, 8)



def _count_encodes(monkeypatch: pytest.MonkeyPatch, calls: list[int], fail_on: int | None = None) -> None:
    """Record each batch `encode` sees; the `fail_on`-th call is interrupted as Ctrl-C would."""
    def counted(enc: torch.nn.Module, feats: torch.Tensor) -> torch.Tensor:
        calls.append(len(feats))
        if len(calls) == fail_on:
            raise KeyboardInterrupt
        return encode(enc, feats)  # app.model.encoder's, whatever the module holds now

    monkeypatch.setattr(encoder_cache, "encode", counted)


def test_interrupted_build_goes_on_where_it_stopped(tmp_path: Path, tiny_encoder: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _dataset(tmp_path / "data", [0.5, 0.7, 0.6, 0.9, 0.3])
    whole = build_encoder_cache(tmp_path / "data", tiny_encoder, tmp_path / "whole", batch_size=2)
    calls: list[int] = []
    _count_encodes(monkeypatch, calls, fail_on=3)
    with pytest.raises(KeyboardInterrupt):
        build_encoder_cache(tmp_path / "data", tiny_encoder, tmp_path / "cache", batch_size=2)
    assert calls == [2, 2, 1]
    calls.clear()
    _count_encodes(monkeypatch, calls)
    resumed = build_encoder_cache(tmp_path / "data", tiny_encoder, tmp_path / "cache", batch_size=2)
    # Only the last clip was left to encode; the four before it come from the interrupted build's file.
    assert calls == [1]
    assert np.array_equal(resumed.outputs, whole.outputs)
    assert resumed.texts == whole.texts and resumed.num_samples.tolist() == whole.num_samples.tolist()
    assert not (tmp_path / "cache" / encoder_cache.PROGRESS).exists()


def test_interrupted_build_of_another_window_starts_afresh(tmp_path: Path, tiny_encoder: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _dataset(tmp_path / "data", [0.5, 0.7, 0.6])
    calls: list[int] = []
    _count_encodes(monkeypatch, calls, fail_on=2)
    with pytest.raises(KeyboardInterrupt):
        build_encoder_cache(tmp_path / "data", tiny_encoder, tmp_path / "cache", batch_size=2)
    calls.clear()
    _count_encodes(monkeypatch, calls)
    wider = build_encoder_cache(tmp_path / "data", tiny_encoder, tmp_path / "cache", window_seconds=20,
                                batch_size=2)
    assert calls == [2, 1] and wider.outputs.shape == (3, 1000, 8)
