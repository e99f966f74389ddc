"""Shared fixtures: a tiny random checkpoint written once per test session, and the shared audio clips."""

from __future__ import annotations

import json
import os

# The suite's models are tiny: one intra-op thread is as fast as two, and it avoids OpenMP's spin-waiting
# collapsing when another process holds the second core (seen: 16 s vs 91 s for the denoiser tests). Set
# before torch is imported; server subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
from pathlib import Path

import pytest

SHARED_AUDIO = Path(__file__).resolve().parent.parent.parent / "shared" / "audio"
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".aiff", ".m4a", ".webm", ".sph"}


def shared_audio_files() -> list[Path]:
    """Every audio clip in ../shared/audio."""
    return sorted(p for p in SHARED_AUDIO.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)


def shared_manifest() -> dict[str, dict]:
    """The clips' manifest keyed by file name."""
    rows = [json.loads(line) for line in (SHARED_AUDIO / "manifest.jsonl").read_text().splitlines() if line.strip()]
    return {Path(r.get("file") or r.get("path") or r.get("name")).name: r for r in rows}


@pytest.fixture
def one_thread():
    """torch on one intra-op thread for the test, the previous count restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny-random checkpoint in the standard layout."""
    from app.checkpoint.parts import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("models") / "tiny", "tiny-random", seed=0)


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_model_dir: Path):
    """The pipeline loaded from the tiny checkpoint (CPU, fp32)."""
    import torch

    from app.checkpoint.loading import load_model_dir as load_pipeline

    return load_pipeline(tiny_model_dir, device=torch.device("cpu"), dtype=torch.float32)


def model_with_asr_config(model_dir: Path, out: Path, **changes) -> Path:
    """A copy of a checkpoint whose `asr_config.json` has `changes` applied (top-level keys)."""
    import shutil

    copy = out / "model"
    shutil.copytree(model_dir, copy)
    path = copy / "adapter" / "asr_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return copy


@pytest.fixture(scope="session")
def published_adapter(tmp_path_factory: pytest.TempPathFactory):
    """A tiny adapter in the published repo's layout, with its tiny encoder and backbone (tests/published_adapter.py)."""
    from tests.published_adapter import write_published_fixture

    return write_published_fixture(tmp_path_factory.mktemp("published"))
