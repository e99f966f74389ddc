"""Where the three parts of a model live, and the check that each is complete before anything loads.

```
MODEL/
  encoder/    Hugging Face Whisper (config.json + weights), or pretrained_encoder.json naming the converted
              whisper-base (`app.checkpoint.encoder_ref`)
  backbone/   Hugging Face DiffusionGemma (config.json + weights) and its tokenizer
  adapter/    asr_config.json, projector.safetensors (+ projector.json), lora/ (peft), optional lexicon/
```
The three parts may also live in three unrelated directories (that is how the real weights come). An adapter
directory without the project's file names is read as published elsewhere (`app.checkpoint.adapter_plan`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.checkpoint.adapter_files import require_weights, scan_adapter
from app.checkpoint.encoder_ref import read_reference, resolve_reference
from app.checkpoint.errors import CheckpointError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
ASR_CONFIG_FILE = "asr_config.json"
PROJECTOR_FILE = "projector.safetensors"
PROJECTOR_META_FILE = "projector.json"
LORA_DIR = "lora"
LORA_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
LEXICON_DIR = "lexicon"


@dataclass(frozen=True)
class CheckpointPaths:
    """Where the three parts of a model live."""

    encoder: Path
    backbone: Path
    adapter: Path

    @classmethod
    def from_model_dir(cls, model: Path) -> "CheckpointPaths":
        """The standard layout under one directory."""
        return cls(model / "encoder", model / "backbone", model / "adapter")

    @classmethod
    def resolve(
        cls, model: Path | None, encoder: Path | None, backbone: Path | None, adapter: Path | None
    ) -> "CheckpointPaths":
        """A whole-model directory, with any of the three parts overridden by its own directory."""
        base = cls.from_model_dir(model) if model is not None else None
        parts = {"encoder": encoder, "backbone": backbone, "adapter": adapter}
        missing = [name for name, path in parts.items() if path is None and base is None]
        if missing:
            raise CheckpointError(f"no model directory given and no path for: {', '.join(missing)}")
        return cls(
            encoder=encoder or base.encoder,  # type: ignore[union-attr]
            backbone=backbone or base.backbone,  # type: ignore[union-attr]
            adapter=adapter or base.adapter,  # type: ignore[union-attr]
        )

    @property
    def name(self) -> str:
        """A display name: the adapter directory's parent for the standard layout, else the adapter's name."""
        return self.adapter.parent.name if self.adapter.name == "adapter" else self.adapter.name

    def validate(self) -> None:
        """Fail at once, naming the path and file, if any part is missing or incomplete."""
        _require_dir(self.encoder, "encoder")
        reference = read_reference(self.encoder)
        if reference is not None:
            resolve_reference(reference)  # the converted whisper-base, found and the one referenced
        else:
            _require(self.encoder, "config.json")
            _require_any(self.encoder, WEIGHT_FILES)
        _require_dir(self.backbone, "backbone")
        _require(self.backbone, "config.json")
        _require_any(self.backbone, WEIGHT_FILES)
        _require_any(self.backbone, TOKENIZER_FILES)
        _require_dir(self.adapter, "adapter")
        if is_project_layout(self.adapter):
            _require(self.adapter, ASR_CONFIG_FILE)
            _require(self.adapter, PROJECTOR_FILE)
            _require(self.adapter / LORA_DIR, "adapter_config.json")
            _require_any(self.adapter / LORA_DIR, LORA_WEIGHT_FILES)
        else:
            require_weights(scan_adapter(self.adapter))


def is_project_layout(adapter: Path) -> bool:
    """The project's own layout: `asr_config.json` with `projector.safetensors`. Anything else is read as an
    adapter published elsewhere, its weights found by content (a published repo may well have a `lora/`
    folder or a `projector.safetensors` of its own, but not this project's `asr_config.json`)."""
    return (adapter / ASR_CONFIG_FILE).is_file() and (adapter / PROJECTOR_FILE).is_file()


def _require_dir(path: Path, part: str) -> None:
    if not path.is_dir():
        raise CheckpointError(f"{part} directory not found: {path}")


def _require(path: Path, name: str) -> None:
    if not (path / name).is_file():
        raise CheckpointError(f"missing file {name} in {path}")


def _require_any(path: Path, names: tuple[str, ...]) -> None:
    if not any((path / name).is_file() for name in names):
        raise CheckpointError(f"missing file in {path}: expected one of {', '.join(names)}")
