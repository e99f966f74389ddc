"""Model sizes in one place.

A preset names every dimension of the three parts (Whisper encoder, projector,
DiffusionGemma backbone) so that small checkpoints for tests and timing are
built from the same classes and layout as the real weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import DiffusionGemmaConfig, DiffusionGemmaTextConfig, WhisperConfig
from transformers.models.gemma4 import Gemma4VisionConfig

from app.model.projector import SlotContext


@dataclass(frozen=True)
class ModelDims:
    """Every size that distinguishes one model from another of the same architecture."""

    # Whisper encoder
    n_mels: int = 80
    encoder_positions: int = 1500  # max_source_positions: the window is encoder_positions / 50 seconds
    encoder_width: int = 768
    encoder_layers: int = 12
    encoder_heads: int = 12
    encoder_ffn: int = 3072
    # Projector
    projector_width: int = 2048
    subsample: int = 8
    # Transformer layers over the projector's slots (`app.model.projector.SlotContext`; 0: none, as published)
    context_layers: int = 0
    context_heads: int = SlotContext.heads
    context_ffn: int = SlotContext.ffn
    # DiffusionGemma backbone
    vocab_size: int = 262_144
    hidden: int = 2816
    layers: int = 30
    heads: int = 16
    kv_heads: int = 8
    head_dim: int = 256
    global_head_dim: int = 512
    global_kv_heads: int = 2
    dense_ffn: int = 2112
    experts: int = 128
    top_k_experts: int = 8
    expert_ffn: int = 704
    sliding_window: int = 1024
    sliding_pattern: int = 6  # five sliding-window layers, then one full-attention layer
    canvas_length: int = 256
    # LoRA on the backbone's attention projections
    lora_rank: int = 16
    lora_alpha: int = 32
    max_positions: int = 8192
    layer_types: tuple[str, ...] | None = field(default=None)

    @property
    def audio_slots(self) -> int:
        """Projected audio embeddings per window (frames padded up to a multiple of the subsampling)."""
        return -(-self.encoder_positions // self.subsample)

    @property
    def window_seconds(self) -> float:
        """Audio seconds one encoder window covers (Whisper: 100 mel frames/s, 2 frames per position)."""
        return self.encoder_positions * 2 / 100.0

    def backbone_layer_types(self) -> list[str]:
        """Layer pattern with the last layer forced to full attention, as the backbone requires."""
        if self.layer_types is not None:
            return list(self.layer_types)
        types = [
            "full_attention" if (i + 1) % self.sliding_pattern == 0 else "sliding_attention"
            for i in range(self.layers)
        ]
        types[-1] = "full_attention"
        return types


PRESETS: dict[str, ModelDims] = {
    # The served model's real shapes (whisper-small + DiffusionGemma 26B-A4B).
    "real": ModelDims(),
    # Random weights, seconds to build: what the test suite runs on.
    "tiny-random": ModelDims(
        encoder_width=64,
        encoder_layers=1,
        encoder_heads=2,
        encoder_ffn=128,
        projector_width=96,
        vocab_size=512,
        hidden=64,
        layers=2,
        heads=4,
        kv_heads=2,
        head_dim=16,
        global_head_dim=32,
        global_kv_heads=1,
        dense_ffn=128,
        experts=2,
        top_k_experts=1,
        expert_ffn=32,
        sliding_window=512,
        canvas_length=64,
        lora_rank=4,
        lora_alpha=8,
        max_positions=1024,
    ),
    # The embedded default model trained by the project (`diffusion-asr train`): a 10 s window, and 4x
    # subsampling so the CTC head has enough slots for dense speech.
    "default": ModelDims(
        encoder_positions=500,
        encoder_width=256,
        encoder_layers=4,
        encoder_heads=4,
        encoder_ffn=1024,
        projector_width=512,
        subsample=4,
        vocab_size=4096,
        hidden=256,
        layers=4,
        heads=4,
        kv_heads=2,
        head_dim=64,
        global_head_dim=64,
        global_kv_heads=2,
        dense_ffn=512,
        experts=2,
        top_k_experts=1,
        expert_ffn=256,
        sliding_window=512,
        sliding_pattern=2,
        canvas_length=64,
        lora_rank=8,
        lora_alpha=16,
        max_positions=512,
    ),
    # The real backbone's width and head layout with few layers and a small vocabulary: for GPU timing.
    "real-width": ModelDims(
        encoder_layers=2,
        vocab_size=4096,
        layers=6,
        max_positions=4096,
    ),
}


def whisper_config(dims: ModelDims) -> WhisperConfig:
    """Whisper config whose encoder has the preset's shape (the decoder is kept minimal, it is never used)."""
    return WhisperConfig(
        num_mel_bins=dims.n_mels,
        max_source_positions=dims.encoder_positions,
        d_model=dims.encoder_width,
        encoder_layers=dims.encoder_layers,
        encoder_attention_heads=dims.encoder_heads,
        encoder_ffn_dim=dims.encoder_ffn,
        decoder_layers=1,
        decoder_attention_heads=dims.encoder_heads,
        decoder_ffn_dim=dims.encoder_ffn,
        vocab_size=64,
        max_target_positions=16,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )


def backbone_config(dims: ModelDims, special_ids: dict[str, int]) -> DiffusionGemmaConfig:
    """DiffusionGemma config with the preset's shape.

    `DiffusionGemmaTextConfig()` defaults are not the real model; every size is set here. The vision tower
    is built even for text-only use, so it gets a tiny config instead of the 167M-parameter default.
    """
    text = DiffusionGemmaTextConfig(
        vocab_size=dims.vocab_size,
        hidden_size=dims.hidden,
        intermediate_size=dims.dense_ffn,
        num_hidden_layers=dims.layers,
        num_attention_heads=dims.heads,
        num_key_value_heads=dims.kv_heads,
        head_dim=dims.head_dim,
        global_head_dim=dims.global_head_dim,
        num_global_key_value_heads=dims.global_kv_heads,
        layer_types=dims.backbone_layer_types(),
        sliding_window=dims.sliding_window,
        num_experts=dims.experts,
        top_k_experts=dims.top_k_experts,
        moe_intermediate_size=dims.expert_ffn,
        use_bidirectional_attention="vision",
        max_position_embeddings=dims.max_positions,
        pad_token_id=special_ids["pad"],
        eos_token_id=special_ids["eos"],
        bos_token_id=special_ids["bos"],
    )
    vision = Gemma4VisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
        head_dim=8,
    )
    return DiffusionGemmaConfig(
        text_config=text,
        vision_config=vision,
        canvas_length=dims.canvas_length,
        image_token_id=special_ids["image"],
        boi_token_id=special_ids["boi"],
        eoi_token_id=special_ids["eoi"],
    )
