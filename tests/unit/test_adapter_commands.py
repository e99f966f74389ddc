"""`inspect-adapter` and `import-adapter` on the published-layout fixture, and a projector read from its shapes."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from app.audio.decode import AudioLimits, decode_audio
from app.checkpoint.layout import CheckpointPaths
from app.checkpoint.loading import load_pipeline
from app.cli import main
from app.results import DecodeOptions
from tests.conftest import SHARED_AUDIO
from tests.published_adapter import stub_projector

CPU = torch.device("cpu")


def _load(fixture, adapter, trust: bool):
    paths = CheckpointPaths(fixture.encoder, fixture.backbone, adapter)
    return load_pipeline(paths, CPU, torch.float32, trust_adapter_code=trust)


@pytest.fixture(scope="module")
def imported(published_adapter, tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "adapter"
    code = main(["import-adapter", str(published_adapter.adapter), str(out), "--trust-adapter-code",
                 "--backbone", str(published_adapter.backbone)])
    assert code == 0
    return out


def test_inspect_lists_every_tensor_with_its_mapping_without_loading_the_backbone(published_adapter, capsys,
                                                                                   monkeypatch):
    import app.checkpoint.reading as reading

    monkeypatch.setattr(reading.DiffusionGemmaForBlockDiffusion, "from_pretrained",
                        lambda *a, **k: pytest.fail("inspect-adapter loaded the backbone"))
    code = main(["inspect-adapter", str(published_adapter.adapter), "--backbone", str(published_adapter.backbone),
                 "--encoder", str(published_adapter.encoder), "--trust-adapter-code"])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    for file, role in (("adapter_model.safetensors", "LoRA "), ("audio_projector.safetensors", "projector via")):
        saved = load_file(str(published_adapter.adapter / file))
        for name, tensor in saved.items():
            line = next(line for line in lines if line.strip().startswith(name + " "))
            assert f"{list(tensor.shape)} float32 -> {role}" in line
    assert "audio_projector.convs.4.weight [48, 48, 3] float32 -> projector via AudioProjector convs.4.weight" in out
    lora_b = "base_model.model.model.encoder.language_model.layers.1.self_attn.q_proj.lora_B.weight"
    assert any(line.strip().startswith(lora_b) and "B of model.encoder.language_model.layers.1.self_attn.q_proj"
               in line for line in lines)
    ids = published_adapter.token_ids
    assert f"{ids['<|audio>']}, {ids['<|audio|>']} x 188, {ids['<audio|>']}" in out
    assert "canvas 192, 8 steps" in out and "soft-capping 30.0" in out
    assert "Transcribe the audio." in out
    assert lines[-1] == "missing: nothing"


def test_inspect_without_the_flag_says_what_is_missing_and_exits_non_zero(published_adapter, capsys):
    code = main(["inspect-adapter", str(published_adapter.adapter), "--backbone", str(published_adapter.backbone)])
    out = capsys.readouterr().out
    assert code == 1
    assert "audio_projector.out.weight [64, 48] float32 -> projector (layout unknown)" in out
    assert "--trust-adapter-code" in out.split("missing:")[1]


def test_imported_adapter_serves_without_the_flag_with_the_same_projector_and_text(published_adapter, imported):
    plain = _load(published_adapter, imported, trust=False)
    frames = torch.randn(2, 1500, 64, generator=torch.Generator().manual_seed(4))
    expected = stub_projector(published_adapter.adapter)(frames)
    assert torch.allclose(plain.projector(frames), expected, atol=1e-6, rtol=0)

    trusted = _load(published_adapter, published_adapter.adapter, trust=True)
    audio = decode_audio((SHARED_AUDIO / "en_deepspeech_LDC93S1_44k_stereo.wav").read_bytes(), AudioLimits(10_000_000, 60.0))
    options = DecodeOptions(steps=3, seed=11)
    first, second = plain.transcribe(audio, options), trusted.transcribe(audio, options)
    assert first.text and first.text == second.text  # random weights: random text, but the same text
    assert plain.prompts.build().ids.tolist() == trusted.prompts.build().ids.tolist()
    assert plain.config.canvas_length == trusted.config.canvas_length == 192


def test_import_refuses_an_occupied_output(published_adapter, imported, capsys):
    code = main(["import-adapter", str(published_adapter.adapter), str(imported), "--trust-adapter-code"])
    assert code == 2 and "not empty" in capsys.readouterr().err


def test_a_conv_whose_kernel_is_the_subsampling_is_read_from_its_shapes(published_adapter, tmp_path):
    adapter = published_adapter.copy_adapter(tmp_path / "adapter")
    (adapter / "audio_projector.safetensors").unlink()
    torch.manual_seed(0)
    conv, linear = torch.nn.Conv1d(64, 40, 8, stride=8), torch.nn.Linear(40, 64)
    save_file({"speech.down.weight": conv.weight.detach().clone(), "speech.down.bias": conv.bias.detach().clone(),
               "speech.up.weight": linear.weight.detach().clone(), "speech.up.bias": linear.bias.detach().clone()},
              str(adapter / "speech_projector.safetensors"))
    pipeline = _load(published_adapter, adapter, trust=False)
    frames = torch.randn(1, 1500, 64, generator=torch.Generator().manual_seed(6))
    padded = torch.nn.functional.pad(frames.transpose(1, 2), (0, 4))  # 1500 -> 1504, a multiple of 8
    expected = linear(torch.nn.functional.gelu(conv(padded)).transpose(1, 2))
    assert pipeline.config.audio_slots == 188
    assert torch.allclose(pipeline.projector(frames), expected, atol=1e-6, rtol=0)


def test_transcribe_takes_the_flag_on_the_command_line(published_adapter, capsys):
    parts = ["--encoder", str(published_adapter.encoder), "--backbone", str(published_adapter.backbone),
             "--adapter", str(published_adapter.adapter), "--device", "cpu"]
    clip = str(SHARED_AUDIO / "en_deepspeech_LDC93S1_44k_stereo.wav")
    assert main(["transcribe", clip, *parts, "--steps", "2"]) == 2
    assert "--trust-adapter-code" in capsys.readouterr().err
    assert main(["transcribe", clip, *parts, "--steps", "2", "--format", "json", "--trust-adapter-code"]) == 0
    assert '"text"' in capsys.readouterr().out
