"""The trainable model in memory and on disk: random parts of a preset's shape, a saved checkpoint as trainable
parts, and writing the standard layout (`app.checkpoint.layout`)."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from safetensors.torch import save_file
from transformers import DiffusionGemmaForBlockDiffusion, PreTrainedTokenizerFast, WhisperModel

from app.checkpoint.asr_config_file import read_asr_config, write_asr_config
from app.checkpoint.encoder_ref import EncoderReference, read_reference, write_reference
from app.checkpoint.errors import CheckpointError
from app.checkpoint.layout import LORA_DIR, PROJECTOR_FILE, PROJECTOR_META_FILE, CheckpointPaths
from app.checkpoint.presets import PRESETS, ModelDims, backbone_config, whisper_config
from app.checkpoint.projector_files import own_projector_json
from app.checkpoint.reading import encoder_frames, load_projector, load_tokenizer
from app.checkpoint.tokenizer import LANGUAGE_TAG_FORMAT, SEED_CORPUS, build_tokenizer, special_ids
from app.model.asr_config import ALIGNED_POSITIONS, AsrConfig
from app.model.backbone import attach_new_lora, lora_config
from app.model.encoder import feature_extractor_for
from app.model.projector import Projector, SlotContext, with_context


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
    """The trainable model in memory: Whisper (encoder used), projector, backbone wrapped with LoRA, tokenizer.

    With `pretrained_encoder` the encoder is the frozen converted whisper-base, not held here (`whisper` is
    None): training reads its cached outputs and the checkpoint references it.
    """

    whisper: WhisperModel | None
    projector: Projector
    backbone: PeftModel
    tokenizer: PreTrainedTokenizerFast
    pretrained_encoder: EncoderReference | None = None


def build_model(dims: ModelDims, tokenizer: PreTrainedTokenizerFast,
                pretrained_encoder: EncoderReference | None = None) -> ModelParts:
    """Random-init parts of the preset's shape (call `torch.manual_seed` first for determinism); with
    `pretrained_encoder` no Whisper is built (its width and positions must be `dims`')."""
    vocab = max(dims.vocab_size, len(tokenizer))
    sized = ModelDims(**{**asdict(dims), "vocab_size": vocab})
    backbone = DiffusionGemmaForBlockDiffusion(backbone_config(sized, special_ids(tokenizer)))
    return ModelParts(
        whisper=None if pretrained_encoder else WhisperModel(whisper_config(dims)),
        projector=Projector(dims.encoder_width, dims.projector_width, dims.hidden, dims.subsample,
                            slot_context(dims)),
        backbone=attach_new_lora(backbone, lora_config(dims.lora_rank, dims.lora_alpha)),
        tokenizer=tokenizer,
        pretrained_encoder=pretrained_encoder,
    )


def slot_context(dims: ModelDims) -> SlotContext:
    """The transformer layers over the projector's slots that `dims` asks for."""
    return SlotContext(dims.context_layers, dims.context_heads, dims.context_ffn)


def load_parts(model: Path, dims: ModelDims) -> ModelParts:
    """A saved checkpoint as trainable parts in fp32 on the CPU: the start of a run that continues from it.

    Refused by name when its shape is not `dims`' (the run's batches, prompts and canvas follow `dims`). A
    projector saved without context layers gains the ones `dims` asks for, silent until trained
    (`with_context`), so a run can add them to a trained model.
    """
    paths = CheckpointPaths.from_model_dir(Path(model))
    paths.validate()
    reference = read_reference(paths.encoder)
    whisper = None if reference else WhisperModel.from_pretrained(str(paths.encoder), local_files_only=True,
                                                                  dtype=torch.float32)
    backbone = DiffusionGemmaForBlockDiffusion.from_pretrained(str(paths.backbone), local_files_only=True,
                                                               dtype=torch.float32)
    config = read_asr_config(paths.adapter)
    projector = load_projector(paths.adapter, torch.device("cpu"), torch.float32)
    if not projector.context_spec.layers and dims.context_layers:
        projector = with_context(projector, slot_context(dims))
    found = {"encoder_positions": encoder_frames(paths.encoder), "audio_slots": config.audio_slots,
             "canvas_length": config.canvas_length, "hidden": backbone.config.get_text_config().hidden_size,
             "context_layers": projector.context_spec.layers}
    if whisper is not None:
        found |= {"encoder_layers": whisper.config.encoder_layers, "encoder_width": whisper.config.d_model}
    wanted = {key: getattr(dims, key) for key in found}
    if found != wanted:
        differ = ", ".join(f"{key} {found[key]} (run: {wanted[key]})" for key in found if found[key] != wanted[key])
        raise ValueError(f"--init-from {model}: the checkpoint's shape differs from the run's: {differ}")
    backbone.config.canvas_length = config.canvas_length
    # peft's own loader puts the saved LoRA weights back into trainable wrappers of the same layers.
    lora = PeftModel.from_pretrained(backbone, str(paths.adapter / LORA_DIR), is_trainable=True, local_files_only=True)
    return ModelParts(whisper=whisper, projector=projector.train().requires_grad_(True), backbone=lora,
                      tokenizer=load_tokenizer(paths.backbone),
                      pretrained_encoder=reference)


def asr_config_for(dims: ModelDims, ctc_start: dict[str, Any] | None = None,
                   aligned_positions: bool = False, past_audio: str = "count") -> AsrConfig:
    """The prompt format of checkpoints the project builds: one language-tag token as the hint (and the section of
    the demo's add-on a run uses: CTC start or aligned positions).

    The hint goes before the audio so that the distance from each audio slot to the canvas is the same with or
    without it: the decoder finds the k-th (compressed) audio slot at one fixed relative position.
    """
    return AsrConfig(
        ctc_start=ctc_start,
        aligned_positions={**ALIGNED_POSITIONS, "past_audio": past_audio} if aligned_positions else None,
        prompt_template="<bos><start_of_turn>{hint}{audio}<end_of_turn>",
        language_hint=LANGUAGE_TAG_FORMAT.replace("{lang}", "{language}"),
        context_hint="",
        audio_slots=dims.audio_slots,
        canvas_length=dims.canvas_length,
        language_tag_format=LANGUAGE_TAG_FORMAT,
    )


def save_checkpoint(out: Path, parts: ModelParts, config: AsrConfig, model_card: str, half: bool = False) -> None:
    """Write the standard layout; `half` stores weights as fp16 (they load back in the requested dtype)."""
    paths = CheckpointPaths.from_model_dir(out)
    dtype = torch.float16 if half else None
    if parts.whisper is None:
        if parts.pretrained_encoder is None:
            raise ValueError("parts without a Whisper encoder need the pretrained encoder they reference")
        write_reference(paths.encoder, parts.pretrained_encoder)
    else:
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
    # peft names the adapter's base after the directory the backbone was loaded from (a run's --init-from),
    # filling it in on save from the model's `name_or_path` when the config has none. In this layout the base
    # is always the backbone beside the adapter, so both are cleared and the adapter names no base.
    base.name_or_path = ""
    for lora_config in parts.backbone.peft_config.values():
        lora_config.base_model_name_or_path = None
    parts.backbone.save_pretrained(str(paths.adapter / LORA_DIR))
    state = {k: (v.half() if half else v).contiguous() for k, v in parts.projector.state_dict().items()}
    save_file(state, str(paths.adapter / PROJECTOR_FILE))
    (paths.adapter / PROJECTOR_META_FILE).write_text(json.dumps(own_projector_json(parts.projector)) + "\n")
    write_asr_config(config, paths.adapter)
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
