"""Checkpoint layout: load the three parts offline, or write a small model of the same classes.

```
MODEL/
  encoder/    Hugging Face Whisper (config.json + weights)
  backbone/   Hugging Face DiffusionGemma (config.json + weights) and its tokenizer
  adapter/    projector.safetensors, lora/ (peft), asr_config.json
```
The three parts may also live in three unrelated directories (that is how the real weights come).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from peft import PeftModel
from transformers import DiffusionGemmaForBlockDiffusion, PreTrainedTokenizerFast, WhisperModel

from app.model.asr_config import AsrConfig
from app.model.backbone import attach_new_lora, lora_config
from app.model.presets import PRESETS, ModelDims, backbone_config, whisper_config
from app.model.projector import Projector
from app.model.tokenizer import LANGUAGE_TAG_FORMAT, SEED_CORPUS, build_tokenizer, special_ids

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


class CheckpointError(Exception):
    """A model part is missing or incomplete; the message names the path and the missing file."""


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

    def validate(self) -> None:
        """Fail at once, naming the path and file, if any part is missing or incomplete."""
        _require_dir(self.encoder, "encoder")
        _require(self.encoder, "config.json")
        _require_any(self.encoder, WEIGHT_FILES)
        _require_dir(self.backbone, "backbone")
        _require(self.backbone, "config.json")
        _require_any(self.backbone, WEIGHT_FILES)
        _require_any(self.backbone, TOKENIZER_FILES)
        _require_dir(self.adapter, "adapter")
        _require(self.adapter, "asr_config.json")
        _require(self.adapter, "projector.safetensors")
        _require(self.adapter / "lora", "adapter_config.json")
        _require_any(self.adapter / "lora", ("adapter_model.safetensors", "adapter_model.bin"))


def _require_dir(path: Path, part: str) -> None:
    if not path.is_dir():
        raise CheckpointError(f"{part} directory not found: {path}")


def _require(path: Path, name: str) -> None:
    if not (path / name).is_file():
        raise CheckpointError(f"missing file {name} in {path}")


def _require_any(path: Path, names: tuple[str, ...]) -> None:
    if not any((path / name).is_file() for name in names):
        raise CheckpointError(f"missing file in {path}: expected one of {', '.join(names)}")


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA, fp32 on CPU (bf16 matmuls are several times slower on common CPUs)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_projector(adapter: Path, device: torch.device, dtype: torch.dtype) -> Projector:
    """The projector, sized from its own saved weights and `projector.json`."""
    meta = json.loads((adapter / "projector.json").read_text()) if (adapter / "projector.json").is_file() else {}
    state = load_file(str(adapter / "projector.safetensors"))
    width, encoder_width, subsample = state["conv.weight"].shape
    hidden = state["proj.weight"].shape[0]
    projector = Projector(encoder_width, width, hidden, meta.get("subsample", subsample))
    projector.load_state_dict(state)
    return projector.to(device=device, dtype=dtype).eval().requires_grad_(False)


def load_tokenizer(backbone: Path) -> PreTrainedTokenizerFast:
    """The backbone's tokenizer, offline."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(backbone), local_files_only=True)


LEXICON_DIR = "lexicon"


def load_lexicons(adapter: Path) -> dict[str, dict[str, float]]:
    """The adapter's word lists, `lexicon/<lang>.tsv` with one `word<TAB>frequency` per line, by language."""
    lexicons = {}
    for path in sorted((adapter / LEXICON_DIR).glob("*.tsv")):
        counts = {}
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            word, _, frequency = line.partition("\t")
            try:
                counts[word] = float(frequency)
            except ValueError:
                raise CheckpointError(f"{path}:{number}: expected 'word<TAB>frequency', got {line!r}") from None
        lexicons[path.stem] = counts
    return lexicons


def write_random_checkpoint(out: Path, preset: str, seed: int = 0) -> Path:
    """Write a random-init model of the preset's shape in the standard layout; deterministic from `seed`."""
    if preset not in PRESETS:
        raise CheckpointError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    dims = PRESETS[preset]
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(SEED_CORPUS, vocab_size=dims.vocab_size)
    parts = build_model(dims, tokenizer)
    # peft initialises LoRA B to zero; a random checkpoint gets small non-zero B so the adapter path is exercised.
    for name, param in parts.backbone.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    card = (f"# {preset} (random weights)\n\nWritten by `diffusion-asr make-checkpoint --preset {preset} "
            f"--seed {seed}`. Its transcripts are random text: it exists to exercise the serving code.\n")
    save_checkpoint(out, parts, asr_config_for(dims), card)
    return out


@dataclass
class ModelParts:
    """The trainable model in memory: Whisper (encoder used), projector, backbone wrapped with LoRA, tokenizer."""

    whisper: WhisperModel
    projector: Projector
    backbone: PeftModel
    tokenizer: PreTrainedTokenizerFast


def build_model(dims: ModelDims, tokenizer: PreTrainedTokenizerFast) -> ModelParts:
    """Random-init parts of the preset's shape (call `torch.manual_seed` first for determinism)."""
    vocab = max(dims.vocab_size, len(tokenizer))
    sized = ModelDims(**{**asdict(dims), "vocab_size": vocab})
    backbone = DiffusionGemmaForBlockDiffusion(backbone_config(sized, special_ids(tokenizer)))
    return ModelParts(
        whisper=WhisperModel(whisper_config(dims)),
        projector=Projector(dims.encoder_width, dims.projector_width, dims.hidden, dims.subsample),
        backbone=attach_new_lora(backbone, lora_config(dims.lora_rank, dims.lora_alpha)),
        tokenizer=tokenizer,
    )


def load_parts(model: Path, dims: ModelDims) -> ModelParts:
    """A saved checkpoint as trainable parts in fp32 on the CPU: the start of a run that continues from it.

    Refused by name when its shape is not `dims`' (the run's batches, prompts and canvas follow `dims`).
    """
    paths = CheckpointPaths.from_model_dir(Path(model))
    paths.validate()
    whisper = WhisperModel.from_pretrained(str(paths.encoder), local_files_only=True, dtype=torch.float32)
    backbone = DiffusionGemmaForBlockDiffusion.from_pretrained(str(paths.backbone), local_files_only=True,
                                                               dtype=torch.float32)
    config = AsrConfig.load(paths.adapter / "asr_config.json")
    found = {"encoder_layers": whisper.config.encoder_layers, "encoder_width": whisper.config.d_model,
             "encoder_positions": whisper.config.max_source_positions, "audio_slots": config.audio_slots,
             "canvas_length": config.canvas_length, "hidden": backbone.config.get_text_config().hidden_size}
    wanted = {key: getattr(dims, key) for key in found}
    if found != wanted:
        differ = ", ".join(f"{key} {found[key]} (run: {wanted[key]})" for key in found if found[key] != wanted[key])
        raise ValueError(f"--init-from {model}: the checkpoint's shape differs from the run's: {differ}")
    backbone.config.canvas_length = config.canvas_length
    # peft's own loader puts the saved LoRA weights back into trainable wrappers of the same layers.
    lora = PeftModel.from_pretrained(backbone, str(paths.adapter / "lora"), is_trainable=True, local_files_only=True)
    projector = load_projector(paths.adapter, torch.device("cpu"), torch.float32).requires_grad_(True)
    return ModelParts(whisper=whisper, projector=projector, backbone=lora, tokenizer=load_tokenizer(paths.backbone))


def asr_config_for(
    dims: ModelDims,
    audio_compression: str | None = None,
    canvas_positions: str = "after_prompt",
    canvas_prior: str | None = None,
    canvas_init: str = "noise",
) -> AsrConfig:
    """The prompt format of checkpoints the project builds: one language-tag token as the hint.

    The hint goes before the audio so that the distance from each audio slot to the canvas is the same with or
    without it: the decoder finds the k-th (compressed) audio slot at one fixed relative position.
    """
    return AsrConfig(
        audio_compression=audio_compression,
        canvas_positions=canvas_positions,
        canvas_prior=canvas_prior,
        canvas_init=canvas_init,
        prompt_template="<bos><start_of_turn>{hint}{audio}<end_of_turn>",
        language_hint=LANGUAGE_TAG_FORMAT.replace("{lang}", "{language}"),
        context_hint="",
        audio_slots=dims.audio_slots,
        canvas_length=dims.canvas_length,
        language_tag_format=LANGUAGE_TAG_FORMAT,
    )


def save_checkpoint(out: Path, parts: ModelParts, config: AsrConfig, model_card: str, half: bool = False) -> None:
    """Write the standard layout; `half` stores weights as fp16 (they load back in the requested dtype)."""
    from app.model.encoder import feature_extractor_for

    paths = CheckpointPaths.from_model_dir(out)
    dtype = torch.float16 if half else None
    # Copies, so saving in fp16 mid-training leaves the training model in its own dtype.
    whisper = copy.deepcopy(parts.whisper).to(dtype) if dtype else parts.whisper
    whisper.save_pretrained(str(paths.encoder))
    feature_extractor_for(whisper.get_encoder()).save_pretrained(str(paths.encoder))
    # peft's wrapped layers keep the base weight under `base_layer`; the backbone is saved from a copy with
    # the wrappers removed, then the adapter on its own.
    base = parts.backbone.get_base_model()
    plain = _without_lora(base)
    (plain.to(dtype) if dtype else plain).save_pretrained(str(paths.backbone))
    parts.tokenizer.save_pretrained(str(paths.backbone))
    paths.adapter.mkdir(parents=True, exist_ok=True)
    parts.backbone.save_pretrained(str(paths.adapter / "lora"))
    state = {k: (v.half() if half else v).contiguous() for k, v in parts.projector.state_dict().items()}
    save_file(state, str(paths.adapter / "projector.safetensors"))
    (paths.adapter / "projector.json").write_text(json.dumps({"subsample": parts.projector.subsample}) + "\n")
    config.save(paths.adapter / "asr_config.json")
    (paths.adapter / "MODEL_CARD.md").write_text(model_card)


def _without_lora(model: DiffusionGemmaForBlockDiffusion) -> DiffusionGemmaForBlockDiffusion:
    """A copy of the backbone with every LoRA-wrapped layer replaced by its base layer."""
    from peft.tuners.lora import LoraLayer

    plain = copy.deepcopy(model)
    for name, module in list(plain.named_modules()):
        if isinstance(module, LoraLayer):
            parent_name, _, child = name.rpartition(".")
            setattr(plain.get_submodule(parent_name), child, module.get_base_layer())
    return plain
