"""A tiny adapter written the way the published `diffusion-gemma-asr-small` repo is laid out, for a tiny backbone
whose tokenizer carries Gemma-4's special tokens.

The folder holds `inference.py`, `model.py` (a config dataclass stating the audio token ids), `audio.py` (an
`AudioProjector` with a three-conv stack: not inferable from its shapes), the projector's fp32 tensors in
`audio_projector.safetensors` under the module's own prefix, and a peft LoRA at the folder's root.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

GEMMA4_SPECIALS = ["<|turn>", "<turn|>", "<|audio>", "<|audio|>", "<audio|>"]

MODEL_PY = '''"""Stub of the published model.py: the config dataclass."""
from dataclasses import dataclass


@dataclass
class DiffusionAsrConfig:
    whisper_id: str = "openai/whisper-small"
    whisper_dim: int = {whisper_dim}
    d_model: int = {d_model}
    vocab_size: int = {vocab}
    boa_token_id: int = {boa}
    audio_token_id: int = {audio}
    eoa_token_id: int = {eoa}
    final_logit_softcapping: float = 30.0
    subsample_factor: int = 8
    proj_hidden: int = 48
'''

AUDIO_PY = '''"""Stub of the published audio.py: the projector."""
import torch
from torch import nn

from model import DiffusionAsrConfig  # the published files import each other as siblings


class AudioProjector(nn.Module):
    """Three stride-2 convs (8x) then a linear to the backbone's width."""

    def __init__(self, config: DiffusionAsrConfig) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv1d(config.whisper_dim, config.proj_hidden, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv1d(config.proj_hidden, config.proj_hidden, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv1d(config.proj_hidden, config.proj_hidden, 3, stride=2, padding=1), nn.GELU(),
        )
        self.out = nn.Linear(config.proj_hidden, config.d_model)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.out(self.convs(frames.transpose(1, 2)).transpose(1, 2))
'''

INFERENCE_PY = '''"""Stub of the published inference.py."""


def load(path):
    raise NotImplementedError


def transcribe(model, audio):
    raise NotImplementedError
'''


@dataclass(frozen=True)
class PublishedFixture:
    """Where the fixture's parts are."""

    encoder: Path
    backbone: Path
    adapter: Path
    token_ids: dict[str, int]  # Gemma-4 special token -> id in the fixture's tokenizer

    def copy_adapter(self, out: Path) -> Path:
        """A copy of the adapter folder to alter."""
        import shutil

        return Path(shutil.copytree(self.adapter, out))


def write_published_fixture(root: Path, seed: int = 0) -> PublishedFixture:
    """Write the tiny backbone and encoder (project layout) and the adapter in the published layout."""
    from app.checkpoint.parts import asr_config_for, build_model, save_checkpoint
    from app.checkpoint.presets import PRESETS
    from app.checkpoint.tokenizer import SEED_CORPUS, build_tokenizer

    dims = PRESETS["tiny-random"]
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(SEED_CORPUS, vocab_size=dims.vocab_size)
    tokenizer.add_special_tokens({"additional_special_tokens": GEMMA4_SPECIALS})
    parts = build_model(dims, tokenizer)
    for name, param in parts.backbone.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    save_checkpoint(root / "model", parts, asr_config_for(dims), "fixture\n")
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in GEMMA4_SPECIALS}

    adapter = root / "diffusion-gemma-asr-small"
    adapter.mkdir()
    (adapter / "model.py").write_text(MODEL_PY.format(
        whisper_dim=dims.encoder_width, d_model=dims.hidden, vocab=len(tokenizer),
        boa=ids["<|audio>"], audio=ids["<|audio|>"], eoa=ids["<audio|>"]))
    (adapter / "audio.py").write_text(AUDIO_PY)
    (adapter / "inference.py").write_text(INFERENCE_PY)
    (adapter / "README.md").write_text("# diffusion-gemma-asr-small (test fixture)\n")
    projector = stub_projector(adapter)
    save_file({f"audio_projector.{k}": v.contiguous() for k, v in projector.state_dict().items()},
              str(adapter / "audio_projector.safetensors"))
    parts.backbone.save_pretrained(str(adapter))  # peft: adapter_config.json + adapter_model.safetensors
    return PublishedFixture(root / "model" / "encoder", root / "model" / "backbone", adapter, ids)


def stub_projector(adapter: Path, seed: int = 1) -> torch.nn.Module:
    """A fresh `AudioProjector` from the fixture's stub code (seeded), or the saved one with its weights loaded."""
    sys.path.insert(0, str(adapter))
    try:
        spec = importlib.util.spec_from_file_location("fixture_audio", adapter / "audio.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        model_module = sys.modules["model"]
        config = model_module.DiffusionAsrConfig()
    finally:
        sys.path.remove(str(adapter))
        sys.modules.pop("model", None)
    torch.manual_seed(seed)
    projector = module.AudioProjector(config).eval()
    saved = adapter / "audio_projector.safetensors"
    if saved.is_file():
        state = load_file(str(saved))
        projector.load_state_dict({k.removeprefix("audio_projector."): v for k, v in state.items()})
    return projector


def rewrite_lora(adapter: Path, rename=None, scale_b: float | None = None) -> None:
    """Rewrite the saved LoRA in place: names through `rename`, lora_B tensors multiplied by `scale_b`."""
    path = adapter / "adapter_model.safetensors"
    state = load_file(str(path))
    out = {}
    for name, tensor in state.items():
        if scale_b is not None and "lora_B" in name:
            tensor = tensor * scale_b
        out[rename(name) if rename else name] = tensor.contiguous()
    save_file(out, str(path))


def set_stated_audio_id(adapter: Path, token_id: int) -> None:
    """Make the stub's model.py state another id for `<|audio|>`."""
    source = adapter / "model.py"
    lines = [f"    audio_token_id: int = {token_id}" if "audio_token_id" in line else line
             for line in source.read_text().splitlines()]
    source.write_text("\n".join(lines) + "\n")


def write_json(path: Path, data: dict) -> None:
    """A JSON file."""
    path.write_text(json.dumps(data))
