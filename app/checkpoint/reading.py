"""Reading each part of a model from its directory, offline, into the modules `app.model` computes with."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import (
    AutoTokenizer, DiffusionGemmaForBlockDiffusion, PreTrainedTokenizerFast, WhisperModel,
)
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from app.checkpoint.encoder_ref import read_reference, resolve_reference
from app.checkpoint.errors import CheckpointError
from app.checkpoint.layout import LEXICON_DIR, PROJECTOR_FILE, PROJECTOR_META_FILE
from app.checkpoint.lora import LoraPlan, apply_lora
from app.checkpoint.pretrained_encoder import encoder_positions, load_pretrained_encoder
from app.checkpoint.projector_files import own_projector
from app.model.projector import Projector

log = logging.getLogger(__name__)


def load_encoder(path: Path, device: torch.device, dtype: torch.dtype) -> WhisperEncoder:
    """The encoder half of a Hugging Face Whisper checkpoint, or the converted whisper-base a reference names,
    frozen, in eval mode."""
    reference = read_reference(path)
    if reference is not None:
        return load_pretrained_encoder(resolve_reference(reference), reference.window_seconds, device, dtype)
    whisper = WhisperModel.from_pretrained(str(path), local_files_only=True, dtype=dtype)
    encoder = whisper.get_encoder()
    del whisper  # the text decoder is never used
    return encoder.to(device).eval().requires_grad_(False)


def load_projector(adapter: Path, device: torch.device, dtype: torch.dtype) -> Projector:
    """The project's own projector, sized from its saved weights and `projector.json` (training continues it)."""
    meta_path = adapter / PROJECTOR_META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    projector = own_projector(meta, load_file(str(adapter / PROJECTOR_FILE)))
    return projector.to(device=device, dtype=dtype).eval().requires_grad_(False)


def load_backbone(path: Path, lora: LoraPlan, tensors: dict[str, torch.Tensor], device: torch.device,
                  dtype: torch.dtype, canvas_length: int, softcap: float | None = None
                  ) -> DiffusionGemmaForBlockDiffusion:
    """DiffusionGemma with the adapter's LoRA injected in place (strictly: see `app.checkpoint.lora`), frozen, its
    canvas set to `canvas_length` and, when given, its final logit soft-capping to `softcap`.

    The LoRA is deliberately not merged: encoder and decoder layers share (tie) their base weights, so merging
    the encoder's LoRA would also change the decoder's weights.
    """
    log.info("loading backbone weights from %s", path)
    backbone = DiffusionGemmaForBlockDiffusion.from_pretrained(str(path), local_files_only=True, dtype=dtype)
    backbone.config.canvas_length = canvas_length
    if softcap is not None:
        backbone.config.get_text_config().final_logit_softcapping = softcap
        backbone.final_logit_softcapping = softcap
    model = apply_lora(backbone.to(device), lora, tensors)
    return model.eval().requires_grad_(False)


def encoder_frames(encoder: Path) -> int:
    """The Whisper encoder's positions per window, from its config (or its reference) alone."""
    reference = read_reference(encoder)
    if reference is not None:
        return encoder_positions(reference.window_seconds)
    try:
        return int(json.loads((encoder / "config.json").read_text())["max_source_positions"])
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{encoder / 'config.json'}: cannot read max_source_positions ({exc})") from None


def load_tokenizer(backbone: Path) -> PreTrainedTokenizerFast:
    """The backbone's tokenizer."""
    return AutoTokenizer.from_pretrained(str(backbone), local_files_only=True)


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
