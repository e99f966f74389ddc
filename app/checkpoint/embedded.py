"""The model used when none is configured: the trained default shipped in `models/default`, else a
random-weight fallback written once into the cache directory."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from app.checkpoint.parts import write_random_checkpoint

log = logging.getLogger(__name__)

REPO_MODEL_DIR = Path(__file__).resolve().parent.parent.parent / "models" / "default"
FALLBACK_PRESET = "tiny-random"
FALLBACK_WARNING = (
    "NO TRAINED MODEL: serving a random-weight tiny-random checkpoint from {path}. "
    "Its transcripts are random text and mean nothing. Set ASR_MODEL (or --model) to a real model directory."
)


def embedded_model_dir(cache_dir: Path) -> Path:
    """The shipped default model if present, else the random fallback (written on first use)."""
    if (REPO_MODEL_DIR / "adapter" / "asr_config.json").is_file():
        return REPO_MODEL_DIR
    target = cache_dir / f"{FALLBACK_PRESET}-seed0"
    if not (target / "adapter" / "asr_config.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written beside the target and renamed, so a crash or a concurrent start never leaves half a model.
        scratch = Path(tempfile.mkdtemp(prefix=".writing-", dir=target.parent))
        write_random_checkpoint(scratch, FALLBACK_PRESET, seed=0)
        try:
            os.rename(scratch, target)
        except OSError:
            shutil.rmtree(scratch, ignore_errors=True)
    log.warning(FALLBACK_WARNING.format(path=target))
    return target
