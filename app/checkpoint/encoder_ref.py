"""A checkpoint whose encoder is the converted whisper-base, referenced instead of copied.

The frozen encoder is 82 MB that the registry packages already carry, so a checkpoint trained on it keeps
only `encoder/pretrained_encoder.json`: which conversion (its tensors' sha256, written by `convert-encoder`)
and which window. Loading finds the conversion under `ASR_CACHE_DIR/whisper-base` and refuses, naming the
packages and the command, when it is missing or is another conversion.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from app.checkpoint.errors import CheckpointError
from app.checkpoint.whisper_base import MARKER_FILE, WHISPER_BASE_DIR, default_output_dir, missing_packages_message

REFERENCE_FILE = "pretrained_encoder.json"


@dataclass(frozen=True)
class EncoderReference:
    """Which converted encoder a checkpoint reads, and over how long a window."""

    tensors_sha256: str
    window_seconds: int
    name: str = WHISPER_BASE_DIR


def read_reference(encoder_dir: Path) -> EncoderReference | None:
    """The reference in `encoder_dir`, or None when the directory holds an encoder of its own."""
    path = Path(encoder_dir) / REFERENCE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return EncoderReference(str(data["tensors_sha256"]), int(data["window_seconds"]), str(data["name"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: not an encoder reference ({exc})") from None


def write_reference(encoder_dir: Path, reference: EncoderReference) -> None:
    """Write `encoder_dir/pretrained_encoder.json`."""
    Path(encoder_dir).mkdir(parents=True, exist_ok=True)
    (Path(encoder_dir) / REFERENCE_FILE).write_text(json.dumps(asdict(reference), indent=2) + "\n")


def converted_identity(converted: Path) -> str | None:
    """The checksum `convert-encoder` recorded for a conversion, None when there is none there."""
    marker = Path(converted) / MARKER_FILE
    if not marker.is_file():
        return None
    return json.loads(marker.read_text(encoding="utf-8")).get("tensors_sha256")


def resolve_reference(reference: EncoderReference, cache_dir: Path | None = None) -> Path:
    """The converted encoder's directory; a clear error when it is missing or is not the one referenced.

    The conversion checked its tensors' sha256 before writing them, so its recorded checksum is compared here
    (hashing 82 MB again at every load would cost the load a second).
    """
    if reference.name != WHISPER_BASE_DIR:
        raise CheckpointError(f"encoder reference to {reference.name!r}: only {WHISPER_BASE_DIR!r} is known")
    if cache_dir is None:
        from app.config import Settings

        cache_dir = Settings().model.cache_dir
    converted = default_output_dir(cache_dir)
    found = converted_identity(converted)
    if found is None:
        raise CheckpointError(f"the model's encoder is the converted whisper-base, not found in {converted} "
                              f"(ASR_CACHE_DIR): {missing_packages_message()}, then run `diffusion-asr "
                              f"convert-encoder`")
    if found != reference.tensors_sha256:
        raise CheckpointError(f"{converted} holds another whisper-base conversion (tensors sha256 {found}) than "
                              f"the model was trained on ({reference.tensors_sha256}); run `diffusion-asr "
                              f"convert-encoder` with the pinned packages")
    return converted
