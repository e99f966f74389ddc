"""A published-layout adapter (tests/published_adapter.py) loads as downloaded, or fails at once saying why."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from app.checkpoint import loading
from app.checkpoint.errors import CheckpointError
from app.checkpoint.layout import CheckpointPaths
from app.checkpoint.loading import load_pipeline
from app.model.denoiser import DenoiseJob, denoise_all
from tests.published_adapter import rewrite_lora, set_stated_audio_id, stub_projector, write_json

CPU = torch.device("cpu")


def _paths(fixture, adapter=None) -> CheckpointPaths:
    return CheckpointPaths(fixture.encoder, fixture.backbone, adapter or fixture.adapter)


def _load(fixture, adapter=None, trust=True, **kwargs):
    return load_pipeline(_paths(fixture, adapter), CPU, torch.float32, trust_adapter_code=trust, **kwargs)


@pytest.fixture(scope="module")
def trusted(published_adapter):
    """The fixture loaded with the adapter's own projector code."""
    return _load(published_adapter)


def _final_canvas(pipeline, seed: int = 3) -> list[int]:
    audio = np.random.default_rng(seed).standard_normal(24_000).astype(np.float32) * 0.1
    encoded = pipeline.encode([audio])
    job = DenoiseJob(pipeline.prefill(encoded[0], None, None), 3, torch.Generator().manual_seed(seed))
    return denoise_all(pipeline.backbone, [job], pipeline.params)[0].tokens


def test_served_with_trusted_code_its_projector_is_the_adapters_own(published_adapter, trusted):
    frames = torch.randn(2, 1500, 64, generator=torch.Generator().manual_seed(0))
    expected = stub_projector(published_adapter.adapter)(frames)
    assert torch.allclose(trusted.projector(frames), expected, atol=1e-6, rtol=0)
    assert len(_final_canvas(trusted)) == 192


def test_without_the_flag_the_error_names_it(published_adapter):
    with pytest.raises(CheckpointError, match="--trust-adapter-code") as info:
        _load(published_adapter, trust=False)
    assert "ASR_TRUST_ADAPTER_CODE=1" in str(info.value)
    assert "audio_projector.convs.0.weight [48, 64, 3]" in str(info.value)


def test_published_defaults_canvas_steps_and_softcap(trusted):
    assert (trusted.config.canvas_length, trusted.config.default_steps) == (192, 8)
    assert trusted.backbone.config.canvas_length == 192
    assert trusted.backbone.final_logit_softcapping == 30.0
    assert trusted.config.audio_slots == 188


def test_defaults_are_overridden_by_an_asr_config_next_to_the_weights(published_adapter, tmp_path):
    adapter = published_adapter.copy_adapter(tmp_path / "adapter")
    write_json(adapter / "asr_config.json", {"canvas_length": 96, "default_steps": 16,
                                             "final_logit_softcapping": 20.0})
    pipeline = _load(published_adapter, adapter)
    assert (pipeline.config.canvas_length, pipeline.default_steps) == (96, 16)
    assert pipeline.backbone.final_logit_softcapping == 20.0
    assert pipeline.backbone.config.get_text_config().final_logit_softcapping == 20.0


def test_the_prompt_is_gemma4_with_boa_188_audio_tokens_and_eoa(published_adapter, trusted):
    tok = trusted.tokenizer
    ids = published_adapter.token_ids
    text = lambda s: tok(s, add_special_tokens=False).input_ids  # noqa: E731
    golden = ([tok.bos_token_id, ids["<|turn>"], *text("user\n"), ids["<|audio>"]] + [ids["<|audio|>"]] * 188
              + [ids["<audio|>"], *text("Transcribe the audio."), ids["<turn|>"], *text("\n"), ids["<|turn>"],
                 *text("model\n")])
    prompt = trusted.prompts.build()
    assert prompt.ids.tolist() == golden
    assert prompt.ids[prompt.audio_positions].eq(ids["<|audio|>"]).all()
    assert prompt.audio_positions[0] == golden.index(ids["<|audio>"]) + 1


def test_a_wrong_audio_token_fails_before_any_weight_is_read(published_adapter, tmp_path, monkeypatch, caplog):
    adapter = published_adapter.copy_adapter(tmp_path / "adapter")
    set_stated_audio_id(adapter, published_adapter.token_ids["<|audio|>"] + 7)
    read = []
    monkeypatch.setattr(loading, "load_backbone", lambda *a, **k: read.append("backbone"))
    monkeypatch.setattr(loading, "load_encoder", lambda *a, **k: read.append("encoder"))
    with caplog.at_level(logging.INFO), pytest.raises(CheckpointError, match=r"'<\|audio\|>'") as info:
        _load(published_adapter, adapter)
    assert "tokenizer has" in str(info.value)
    assert read == [] and "loading backbone weights" not in caplog.text


def test_a_prompt_token_the_tokenizer_lacks_fails_naming_it(published_adapter, tmp_path):
    adapter = published_adapter.copy_adapter(tmp_path / "adapter")
    write_json(adapter / "asr_config.json", {"prompt_template": "<bos><|speech_turn>{audio}<turn|>"})
    with pytest.raises(CheckpointError, match=r"<\|speech_turn>"):
        _load(published_adapter, adapter)


def test_a_lora_saved_under_a_wrapper_prefix_is_remapped_and_applied(published_adapter, tmp_path):
    adapter = published_adapter.copy_adapter(tmp_path / "adapter")
    rewrite_lora(adapter, rename=lambda n: n.replace("base_model.model.", "base_model.model.asr.backbone.", 1))
    pipeline = _load(published_adapter, adapter)
    saved = load_file(str(adapter / "adapter_model.safetensors"))
    name = "base_model.model.asr.backbone.model.decoder.layers.0.self_attn.q_proj.lora_B.weight"
    applied = pipeline.backbone.model.decoder.layers[0].self_attn.q_proj.lora_B["default"].weight
    assert torch.equal(applied, saved[name]) and applied.abs().sum() > 0


def test_a_lora_whose_names_fit_no_layer_under_any_prefix_fails_naming_them(published_adapter, tmp_path):
    adapter = published_adapter.copy_adapter(tmp_path / "adapter")
    rewrite_lora(adapter, rename=lambda n: n.replace(".self_attn.", ".attention."))
    with pytest.raises(CheckpointError, match="match no backbone layer, under any prefix") as info:
        _load(published_adapter, adapter)
    assert "model.decoder.layers.0.attention.k_proj" in str(info.value)


def test_a_lora_whose_prefix_fits_two_stacks_fails_naming_both(published_adapter, tmp_path):
    adapter = published_adapter.copy_adapter(tmp_path / "adapter")
    state = load_file(str(adapter / "adapter_model.safetensors"))
    save_file({k.replace("model.model.decoder.", "model.model.text_decoder."): v for k, v in state.items()
               if ".decoder." in k}, str(adapter / "adapter_model.safetensors"))
    with pytest.raises(CheckpointError, match="more than one prefix") as info:
        _load(published_adapter, adapter)
    message = str(info.value)
    assert "-> model.decoder" in message and "-> model.encoder.language_model" in message
    assert "model.text_decoder.layers.0.self_attn.q_proj" in message


def test_a_lora_whose_b_matrices_are_all_zero_fails(published_adapter, tmp_path):
    adapter = published_adapter.copy_adapter(tmp_path / "adapter")
    rewrite_lora(adapter, scale_b=0.0)
    with pytest.raises(CheckpointError, match="every saved lora_B is zero"):
        _load(published_adapter, adapter)


def test_a_lora_tensor_no_layer_takes_fails_naming_it(published_adapter, tmp_path):
    adapter = published_adapter.copy_adapter(tmp_path / "adapter")
    # Layer 1 is a full-attention layer: the backbone has no v_proj there.
    extra = "base_model.model.model.decoder.layers.1.self_attn.v_proj.lora_A.weight"
    state = load_file(str(adapter / "adapter_model.safetensors"))
    save_file({**state, extra: torch.ones(4, 64)}, str(adapter / "adapter_model.safetensors"))
    with pytest.raises(CheckpointError, match="layers.1.self_attn.v_proj"):
        _load(published_adapter, adapter)


def test_state_dict_files_and_a_peft_sub_folder_are_found_by_content(published_adapter, tmp_path, trusted):
    adapter = published_adapter.copy_adapter(tmp_path / "adapter")
    state = load_file(str(adapter / "audio_projector.safetensors"))
    (adapter / "audio_projector.safetensors").unlink()
    (adapter / "weights").mkdir()
    torch.save({"audio_projector": {k.removeprefix("audio_projector."): v for k, v in state.items()}},
               adapter / "weights" / "checkpoint.pt")
    (adapter / "lora_adapter").mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.move(adapter / name, adapter / "lora_adapter" / name)
    pipeline = _load(published_adapter, adapter)
    frames = torch.randn(1, 1500, 64, generator=torch.Generator().manual_seed(5))
    assert torch.equal(pipeline.projector(frames), trusted.projector(frames))
    assert _final_canvas(pipeline) == _final_canvas(trusted)


def test_a_folder_without_weights_says_what_it_found(published_adapter, tmp_path):
    adapter = published_adapter.copy_adapter(tmp_path / "adapter")
    (adapter / "audio_projector.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no projector weights found") as info:
        _load(published_adapter, adapter)
    assert "adapter_model.safetensors (peft adapter)" in str(info.value)


def test_a_projector_json_description_serves_without_trusting_code(published_adapter, tmp_path, trusted):
    adapter = published_adapter.copy_adapter(tmp_path / "adapter")
    conv = {"kernel": 3, "stride": 2, "padding": 1, "activation": "gelu"}
    keys = {"convs.0": "audio_projector.convs.0", "convs.1": "audio_projector.convs.2",
            "convs.2": "audio_projector.convs.4", "linears.0": "audio_projector.out"}
    (adapter / "projector.json").write_text(json.dumps({"conv": [conv] * 3, "linear": [{"activation": None}],
                                                        "keys": keys}))
    pipeline = _load(published_adapter, adapter, trust=False)
    frames = torch.randn(2, 1500, 64, generator=torch.Generator().manual_seed(2))
    expected = stub_projector(published_adapter.adapter)(frames)
    assert torch.allclose(pipeline.projector(frames), expected, atol=1e-6, rtol=0)


def test_a_projector_description_that_leaves_a_tensor_unused_fails_naming_it(published_adapter, tmp_path):
    adapter = published_adapter.copy_adapter(tmp_path / "adapter")
    keys = {"convs.0": "audio_projector.convs.0", "linears.0": "audio_projector.out"}
    conv = {"kernel": 3, "stride": 8, "padding": 1, "activation": "gelu"}
    write_json(adapter / "projector.json", {"conv": [conv], "linear": [{"activation": None}], "keys": keys})
    with pytest.raises(CheckpointError, match="audio_projector.convs.2.weight"):
        _load(published_adapter, adapter, trust=False)


def test_a_project_checkpoint_without_its_asr_config_is_read_as_published_and_says_what_it_found(tiny_model_dir,
                                                                                                 tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "adapter" / "asr_config.json").unlink()
    with pytest.raises(CheckpointError, match="cannot be inferred") as info:
        load_pipeline(CheckpointPaths.from_model_dir(model), CPU, torch.float32)
    assert "conv.weight [96, 64, 8]" in str(info.value) and "projector.json" in str(info.value)


def test_the_adapters_projector_leaving_a_saved_tensor_unused_fails_naming_it(published_adapter, tmp_path):
    adapter = published_adapter.copy_adapter(tmp_path / "adapter")
    state = load_file(str(adapter / "audio_projector.safetensors"))
    save_file({**state, "audio_projector.norm.weight": torch.ones(48)}, str(adapter / "audio_projector.safetensors"))
    with pytest.raises(CheckpointError, match=r"unused audio_projector\.norm\.weight; missing none"):
        _load(published_adapter, adapter)


def test_lora_tensors_without_a_peft_config_fail_saying_what_to_write(published_adapter, tmp_path):
    adapter = published_adapter.copy_adapter(tmp_path / "adapter")
    (adapter / "adapter_config.json").unlink()
    with pytest.raises(CheckpointError, match="no peft adapter_config.json") as info:
        _load(published_adapter, adapter)
    assert '"lora_alpha"' in str(info.value) and "audio_projector.safetensors: 8 tensors" in str(info.value)


def test_a_lora_tensor_of_the_wrong_shape_fails_before_any_weight_is_read(published_adapter, tmp_path,
                                                                          monkeypatch):
    adapter = published_adapter.copy_adapter(tmp_path / "adapter")
    name = "base_model.model.model.decoder.layers.0.self_attn.o_proj.lora_B.weight"
    state = load_file(str(adapter / "adapter_model.safetensors"))
    save_file({**state, name: torch.ones(32, 4)}, str(adapter / "adapter_model.safetensors"))  # o_proj gives 64
    monkeypatch.setattr(loading, "load_backbone", lambda *a, **k: pytest.fail("backbone weights were read"))
    with pytest.raises(CheckpointError, match="shape does not fit") as info:
        _load(published_adapter, adapter)
    assert name in str(info.value)


def test_an_old_format_bin_state_dict_is_read_flattened(tmp_path):
    from app.checkpoint.adapter_files import read_tensors

    path = tmp_path / "pytorch_model.bin"
    torch.save({"projector": {"conv.weight": torch.arange(6.0).reshape(2, 3)}, "step": 7}, path,
               _use_new_zipfile_serialization=False)
    tensors = read_tensors(path)
    assert list(tensors) == ["projector.conv.weight"]
    assert tensors["projector.conv.weight"].tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
