"""`diffusion-asr train` end to end on a handful of synthetic clips: data, tokenizer, loop, checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from app.cli import main
from app.checkpoint.loading import load_model_dir as load_pipeline
from app.results import DecodeOptions


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_train_command_writes_a_checkpoint_the_pipeline_serves(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "model"
    code = main([
        "train", "--work-dir", str(work), "--out", str(out), "--train-per-lang", "2", "--eval-per-lang", "1",
        "--batch-size", "4", "--max-steps", "3", "--ctc-only-until-minutes", "0", "--threads", "1",
        "--workers", "1", "--probe-every", "0", "--no-progress",
        "--dim", "encoder_layers=1", "--dim", "layers=1", "--freq-masks", "2", "--time-masks", "1",
    ])
    assert code == 0
    info = json.loads((out / "adapter" / "train_info.json").read_text(encoding="utf-8"))
    assert info["steps"] == 3 and info["examples_seen"] == 12
    assert info["config"]["word_initial"] is True
    asr_config = json.loads((out / "adapter" / "asr_config.json").read_text(encoding="utf-8"))
    assert {key: asr_config[key] for key in info["config"]["sampler"]} == info["config"]["sampler"]
    assert asr_config["ctc_start"]["canvas"] == info["config"]["canvas_init"] == "ctc"
    card = (out / "adapter" / "MODEL_CARD.md").read_text()
    assert "Decoding starts from the greedy-CTC transcript" in card
    assert info["config"]["freq_masks"] == 2 and "2 mel bands of up to 15 bins and 1 time spans" in card
    # The card names where the run trained and which espeak-ng made its speech, but no path of this machine.
    assert info["device_name"] == "CPU" and "(fp32, CPU, " in card
    assert info["data_manifest"]["espeak_version"].startswith("eSpeak NG") and "Data at" not in card

    pipeline = load_pipeline(out, device=torch.device("cpu"), dtype=torch.float32)
    # The checkpoint's tokenizer is the run's word-initial one: a space joins the next character.
    assert pipeline.tokenizer.convert_ids_to_tokens(pipeline.tokenizer("a b", add_special_tokens=False).input_ids) \
        == ["a", "Ġb"]
    audio = np.random.default_rng(0).standard_normal(16_000).astype(np.float32) * 0.1
    result = pipeline.transcribe(audio, DecodeOptions(steps=pipeline.default_steps))
    assert isinstance(result.text, str)


def test_a_run_continues_from_a_checkpoint_training_only_the_adapter(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from app.checkpoint.parts import load_parts
    from app.training.config import SHIPPED_DIMS, TrainConfig

    tiny = ["--train-per-lang", "2", "--eval-per-lang", "1", "--batch-size", "4", "--ctc-only-until-minutes", "0",
            "--threads", "1", "--workers", "1", "--probe-every", "0", "--no-progress",
            "--dim", "encoder_layers=1", "--dim", "layers=1"]
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["train", "--work-dir", str(tmp_path / "w1"), "--out", str(first), "--max-steps", "1", *tiny]) == 0
    assert main(["train", "--work-dir", str(tmp_path / "w2"), "--out", str(second), "--max-steps", "2",
                 "--init-from", str(first), "--train-only", "adapter", *tiny]) == 0

    def same(path: str) -> bool:
        a, b = load_file(str(first / path)), load_file(str(second / path))
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    assert same("encoder/model.safetensors") and same("backbone/model.safetensors")
    assert not same("adapter/projector.safetensors") and not same("adapter/lora/adapter_model.safetensors")
    card = (second / "adapter" / "MODEL_CARD.md").read_text()
    assert f"The projector and the LoRA weights trained from the weights of `{first}`" in card
    with pytest.raises(ValueError, match="encoder_layers 1 \\(run: 2\\)"):
        load_parts(first, TrainConfig(dims_override={**SHIPPED_DIMS, "encoder_layers": 2, "layers": 1}).dims())


@pytest.mark.parametrize(("flags", "characters"), [([], True), (["--no-characters"], False),
                                                   (["--characters"], True)])
def test_train_tokenizer_choice_reaches_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    flags: list[str], characters: bool) -> None:
    import app.training.trainer as trainer

    seen = []
    monkeypatch.setattr(trainer, "train", lambda config, argv=None: seen.append(config))
    assert main(["train", "--work-dir", str(tmp_path / "w"), "--out", str(tmp_path / "m"), *flags]) == 0
    assert seen[0].characters is characters


@pytest.mark.parametrize(("flags", "choice"), [([], "stock"), (["--self-cond-temperatures", "sampler"], "sampler")])
def test_train_self_conditioning_temperatures_reach_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               flags: list[str], choice: str) -> None:
    import app.training.trainer as trainer

    seen = []
    monkeypatch.setattr(trainer, "train", lambda config, argv=None: seen.append(config))
    assert main(["train", "--work-dir", str(tmp_path / "w"), "--out", str(tmp_path / "m"), *flags]) == 0
    assert seen[0].self_cond_temperatures == choice
