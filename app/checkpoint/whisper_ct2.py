"""CTranslate2's Whisper variables to a Hugging Face `WhisperModel` state dict and config (pure, no file I/O).

CTranslate2 fuses attention projections: self-attention's query, key and value are one matrix (rows stacked in
that order), cross-attention's key and value are one. Whisper's key projection has no bias; CTranslate2 stores a
zero one in its place, which is checked and dropped.
"""

from __future__ import annotations

import re

import torch
from transformers import WhisperConfig

from app.checkpoint.ct2_format import Ct2Model

WHISPER_SPEC = "WhisperSpec"
# A projection or norm: CTranslate2 suffix -> Hugging Face suffix.
_PARAM = {"weight": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}
_LAYER = re.compile(r"^(encoder|decoder)/layer_(\d+)/")


def layer_count(model: Ct2Model, stack: str) -> int:
    """Layers of the encoder or decoder stack."""
    found = {int(m.group(2)) for name in model.variables if (m := _LAYER.match(name)) and m.group(1) == stack}
    if found != set(range(len(found))):
        raise ValueError(f"{stack} layers are not numbered 0..n-1: {sorted(found)}")
    return len(found)


def whisper_state_dict(model: Ct2Model) -> dict[str, torch.Tensor]:
    """Every weight of the Whisper model under `WhisperModel`'s names, projections un-fused."""
    if model.spec != WHISPER_SPEC:
        raise ValueError(f"model.bin holds a {model.spec}, not a {WHISPER_SPEC}")
    v = model.variables
    state = {
        "encoder.conv1.weight": v["encoder/conv1/weight"], "encoder.conv1.bias": v["encoder/conv1/bias"],
        "encoder.conv2.weight": v["encoder/conv2/weight"], "encoder.conv2.bias": v["encoder/conv2/bias"],
        "encoder.embed_positions.weight": v["encoder/position_encodings/encodings"],
        "decoder.embed_tokens.weight": v["decoder/embeddings/weight"],
        "decoder.embed_positions.weight": v["decoder/position_encodings/encodings"],
    }
    state |= _norm(v, "encoder/layer_norm", "encoder.layer_norm")
    state |= _norm(v, "decoder/layer_norm", "decoder.layer_norm")
    for i in range(layer_count(model, "encoder")):
        state |= _encoder_layer(v, f"encoder/layer_{i}", f"encoder.layers.{i}")
    for i in range(layer_count(model, "decoder")):
        state |= _decoder_layer(v, f"decoder/layer_{i}", f"decoder.layers.{i}")
    return state


def whisper_config(model: Ct2Model, special_ids: dict[str, int]) -> WhisperConfig:
    """The `WhisperConfig` of the variables' shapes; `special_ids` maps Whisper's special tokens to their ids."""
    v = model.variables
    d_model, mels, _ = v["encoder/conv1/weight"].shape
    eot = special_ids["<|endoftext|>"]
    return WhisperConfig(
        vocab_size=v["decoder/embeddings/weight"].shape[0],
        num_mel_bins=mels,
        d_model=d_model,
        encoder_layers=layer_count(model, "encoder"),
        decoder_layers=layer_count(model, "decoder"),
        encoder_attention_heads=int(v["encoder/num_heads"]),
        decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
        # The output projection is an alias of the token embeddings in model.bin: the two are tied.
        tie_word_embeddings=model.aliases.get("decoder/projection/weight") == "decoder/embeddings/weight",
        decoder_start_token_id=special_ids["<|startoftranscript|>"],
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
    )


def _norm(v: dict[str, torch.Tensor], ct2: str, hf: str) -> dict[str, torch.Tensor]:
    return {f"{hf}.{_PARAM[p]}": v[f"{ct2}/{p}"] for p in ("gamma", "beta")}


def _linear(v: dict[str, torch.Tensor], ct2: str, hf: str) -> dict[str, torch.Tensor]:
    return {f"{hf}.{_PARAM[p]}": v[f"{ct2}/{p}"] for p in ("weight", "bias")}


def _split(v: dict[str, torch.Tensor], ct2: str, hf_prefix: str, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Un-fuse a stacked projection into `names` equal row blocks, dropping the key's (zero) bias."""
    weights = v[f"{ct2}/weight"].chunk(len(names), dim=0)
    biases = v[f"{ct2}/bias"].chunk(len(names), dim=0)
    out = {}
    for name, weight, bias in zip(names, weights, biases, strict=True):
        out[f"{hf_prefix}.{name}.weight"] = weight.contiguous()
        if name == "k_proj":
            if torch.count_nonzero(bias):
                raise ValueError(f"{ct2}: the key projection has a non-zero bias, which Whisper cannot hold")
            continue
        out[f"{hf_prefix}.{name}.bias"] = bias.contiguous()
    return out


def _feed_forward(v: dict[str, torch.Tensor], ct2: str, hf: str) -> dict[str, torch.Tensor]:
    return (_linear(v, f"{ct2}/ffn/linear_0", f"{hf}.fc1") | _linear(v, f"{ct2}/ffn/linear_1", f"{hf}.fc2")
            | _norm(v, f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm"))


def _self_attention(v: dict[str, torch.Tensor], ct2: str, hf: str) -> dict[str, torch.Tensor]:
    return (_split(v, f"{ct2}/self_attention/linear_0", f"{hf}.self_attn", ("q_proj", "k_proj", "v_proj"))
            | _linear(v, f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
            | _norm(v, f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm"))


def _encoder_layer(v: dict[str, torch.Tensor], ct2: str, hf: str) -> dict[str, torch.Tensor]:
    return _self_attention(v, ct2, hf) | _feed_forward(v, ct2, hf)


def _decoder_layer(v: dict[str, torch.Tensor], ct2: str, hf: str) -> dict[str, torch.Tensor]:
    cross = (_linear(v, f"{ct2}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
             | _split(v, f"{ct2}/attention/linear_1", f"{hf}.encoder_attn", ("k_proj", "v_proj"))
             | _linear(v, f"{ct2}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
             | _norm(v, f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm"))
    return _self_attention(v, ct2, hf) | cross | _feed_forward(v, ct2, hf)
