"""Reading each part of a model from its directory, offline, into the modules `app.model` computes with."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import (
    AutoTokenizer, DiffusionGemmaForBlockDiffusion, PreTrainedTokenizerFast, WhisperModel,
)
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from app.checkpoint.errors import CheckpointError, reading
from app.checkpoint.layout import LEXICON_DIR, LORA_DIR, PROJECTOR_FILE, PROJECTOR_META_FILE
from app.model.projector import Projector


def load_encoder(path: Path, device: torch.device, dtype: torch.dtype) -> WhisperEncoder:
    """The encoder half of a Hugging Face Whisper checkpoint, frozen, in eval mode."""
    whisper = WhisperModel.from_pretrained(str(path), local_files_only=True, dtype=dtype)
    encoder = whisper.get_encoder()
    del whisper  # the text decoder is never used
    return encoder.to(device).eval().requires_grad_(False)


def load_projector(adapter: Path, device: torch.device, dtype: torch.dtype) -> Projector:
    """The projector, sized from its own saved weights and `projector.json`."""
    meta_path = adapter / PROJECTOR_META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    state = load_file(str(adapter / PROJECTOR_FILE))
    width, encoder_width, subsample = state["conv.weight"].shape
    hidden = state["proj.weight"].shape[0]
    projector = Projector(encoder_width, width, hidden, meta.get("subsample", subsample))
    projector.load_state_dict(state)
    return projector.to(device=device, dtype=dtype).eval().requires_grad_(False)


def load_backbone(path: Path, lora: Path, device: torch.device, dtype: torch.dtype,
                  canvas_length: int) -> DiffusionGemmaForBlockDiffusion:
    """DiffusionGemma with the adapter's LoRA injected in place, frozen, its canvas set to `canvas_length`.

    The LoRA is deliberately not merged: encoder and decoder layers share (tie) their base weights, so merging
    the encoder's LoRA would also change the decoder's weights.
    """
    backbone = DiffusionGemmaForBlockDiffusion.from_pretrained(str(path), local_files_only=True, dtype=dtype)
    backbone.config.canvas_length = canvas_length
    with reading(lora):  # named apart from the backbone's own files
        peft_model = PeftModel.from_pretrained(backbone.to(device), str(lora), is_trainable=False,
                                               local_files_only=True)
    model = peft_model.eval().base_model.model
    return model.eval().requires_grad_(False)


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
