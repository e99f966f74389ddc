"""A few steps of the real training loop on a tiny model: finite, falling losses; exact resume."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from app.checkpoint.parts import build_model
from app.checkpoint.presets import PRESETS
from app.training.batches import make_examples, train_tokenizer
from app.training.config import TrainConfig
from app.training.features import FeatureSet
from app.training.trainer import Loop

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = replace(
    PRESETS["tiny-random"], encoder_positions=40, subsample=2, canvas_length=16, vocab_size=320,
    max_positions=256, layers=1, layer_types=("full_attention",),
)
TEXTS = ["the cat sat", "der hund", "le chat", "el perro", "नमस्ते दुनिया", "我们是"]
LANGS = ["en", "de", "fr", "es", "hi", "zh"]


def _features(n: int = 6) -> FeatureSet:
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((n, TINY.n_mels, 2 * TINY.encoder_positions)).astype(np.float16)
    return FeatureSet(feats, TEXTS[:n], LANGS[:n], np.full(n, 12_000, dtype=np.int64), 2 * TINY.encoder_positions)


def _loop(tmp_path: Path, **overrides) -> Loop:
    feats = _features()
    tokenizer = train_tokenizer(feats.texts * 4, feats.langs * 4, TINY.vocab_size)
    settings = dict(work_dir=tmp_path, dims_override={}, batch_size=6, lr=3e-3, warmup_steps=1, max_steps=8,
                    progress=False, hint_prob=0.0, threads=1, ctc_only_until_minutes=0.0)
    config = TrainConfig(**{**settings, **overrides})
    examples, dropped = make_examples(feats, tokenizer, TINY)
    assert len(examples) == 6, dropped
    torch.manual_seed(0)
    return Loop(config, build_model(TINY, tokenizer), TINY, feats, examples)



def test_losses_finite_and_falling_on_a_repeated_batch(tmp_path: Path) -> None:
    loop = _loop(tmp_path, self_cond_prob=1.0)
    history = [loop.step() for _ in range(8)]
    for values in history:
        assert all(np.isfinite(v) for v in values.values()), values
    first, last = history[0], history[-1]
    assert last["loss"] < first["loss"]
    assert last["ar"] < first["ar"] and last["ctc"] < first["ctc"]
    assert np.mean([h["diff"] for h in history[-2:]]) < np.mean([h["diff"] for h in history[:2]])


def test_resume_restores_step_and_next_loss(tmp_path: Path) -> None:
    loop = _loop(tmp_path, max_steps=3)
    loop.fit()  # three steps, then the resumable state is written
    expected = loop.step()
    resumed = _loop(tmp_path, max_steps=3)
    assert resumed.resume()
    assert resumed.run.step == 3
    got = resumed.step()
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert got["diff"] == pytest.approx(expected["diff"], rel=1e-5)


def test_ctc_stage_updates_only_the_audio_path(tmp_path: Path) -> None:
    loop = _loop(tmp_path, ctc_only_until_minutes=1e9)
    head = loop.trainer.model.lm_head.weight.detach().clone()
    conv = loop.trainer.parts.projector.conv.weight.detach().clone()
    backbone_layer = loop.trainer.model.model.encoder.language_model.layers[0].mlp.down_proj.weight
    layer = backbone_layer.detach().clone()
    values = loop.step()
    assert np.isfinite(values["ctc"]) and np.isnan(values["diff"]) and np.isnan(values["ar"])
    # The CTC head is the backbone's (tied) lm_head: it learns with the audio path, the blank row included.
    assert not torch.equal(loop.trainer.model.lm_head.weight, head)
    assert not torch.equal(loop.trainer.parts.projector.conv.weight, conv)
    assert torch.equal(backbone_layer, layer)


@pytest.mark.parametrize("freeze", [True, False])
def test_full_stage_after_the_ctc_stage_freezes_the_audio_path_when_asked(tmp_path: Path, freeze: bool) -> None:
    loop = _loop(tmp_path, ctc_only_until_minutes=1.0, freeze_audio=freeze)
    loop.run.elapsed_s = 120.0  # past the CTC stage
    conv = loop.trainer.parts.projector.conv.weight.detach().clone()
    attention = loop.trainer.encoder.layers[0].self_attn.q_proj.weight.detach().clone()
    head = loop.trainer.model.lm_head.weight.detach().clone()
    backbone_layer = loop.trainer.model.model.encoder.language_model.layers[0].mlp.down_proj.weight
    layer = backbone_layer.detach().clone()
    values = loop.step()
    assert np.isfinite(values["diff"]) and np.isfinite(values["ar"]) and np.isfinite(values["ctc"])
    assert not torch.equal(backbone_layer, layer)
    assert not torch.equal(loop.trainer.model.lm_head.weight, head)  # CTC still trains the tied head
    assert torch.equal(loop.trainer.parts.projector.conv.weight, conv) == freeze
    assert torch.equal(loop.trainer.encoder.layers[0].self_attn.q_proj.weight, attention) == freeze


def _record_calls(monkeypatch: pytest.MonkeyPatch, module, name: str) -> list:
    """Replace `module.name` by a wrapper that records each call's result; returns the record."""
    results, original = [], getattr(module, name)

    def recording(*args, **kwargs):
        results.append(original(*args, **kwargs))
        return results[-1]

    monkeypatch.setattr(module, name, recording)
    return results


def _step_seeing(loop: Loop, keyword: str) -> tuple[dict, list]:
    """One training step; returns its losses and `keyword` of every backbone call it made (None if absent)."""
    seen = []
    hook = loop.trainer.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs.get(keyword)), with_kwargs=True)
    try:
        values = loop.step()
    finally:
        hook.remove()
    return values, seen


def test_training_canvas_sits_where_inference_puts_it(tmp_path: Path) -> None:
    loop = _loop(tmp_path, self_cond_prob=0.0, ctc_only_until_minutes=0.0)
    _, seen = _step_seeing(loop, "decoder_position_ids")
    prompt = loop.trainer.prompts.build(None)
    positions = next(p for p in seen if p is not None)
    assert torch.equal(positions[0], len(prompt.ids) + torch.arange(TINY.canvas_length))


def test_seeded_rows_start_from_the_ctc_transcript(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.training import forward

    seeds = _record_calls(monkeypatch, forward, "ctc_canvas")
    # u ** 1e6 is 0 for every u < 1: the seeds are not corrupted any further.
    loop = _loop(tmp_path, canvas_init="ctc", seed_prob=1.0, seed_noise_exponent=1e6, self_cond_prob=0.0)
    assert loop.trainer.asr_config.ctc_start == {"canvas": "ctc"}
    values, seen = _step_seeing(loop, "decoder_input_ids")
    assert np.isfinite(values["diff"])
    canvases = [s for s in seen if s is not None]
    assert len(seeds) == 1 and len(canvases) == 1
    assert seeds[0].shape == (6, TINY.canvas_length - 1)
    assert torch.equal(canvases[0][:, 1:], seeds[0])


def test_without_seeded_rows_ctc_start_trains_exactly_as_a_noise_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.training import forward

    seeds = _record_calls(monkeypatch, forward, "ctc_canvas")
    canvases = {}
    for init in ("ctc", "noise"):
        loop = _loop(tmp_path / init, canvas_init=init, seed_prob=0.0, self_cond_prob=0.0)
        assert loop.trainer.asr_config.ctc_start == {"canvas": init}
        canvases[init] = [s for s in _step_seeing(loop, "decoder_input_ids")[1] if s is not None]
    assert seeds == []  # no transcript is built when no row takes it
    assert len(canvases["ctc"]) == 1 and torch.equal(canvases["ctc"][0], canvases["noise"][0])


def test_whisper_prefix_equals_the_encoder_over_the_full_window(tmp_path: Path) -> None:
    from app.training.forward import whisper_prefix

    loop = _loop(tmp_path)
    encoder = loop.trainer.encoder.eval()
    features = torch.from_numpy(loop.feats.features[:2].astype(np.float32))
    full = encoder(features).last_hidden_state
    torch.testing.assert_close(whisper_prefix(encoder, features, TINY.encoder_positions), full)
    # A prefix sees only its own frames: it differs from the full pass near its end, where the full window's
    # attention also reads the frames after it.
    assert whisper_prefix(encoder, features, 10).shape == (2, 10, TINY.encoder_width)


def test_bucketed_batches_group_similar_lengths_and_cover_the_epoch() -> None:
    import random

    from app.training.batches import Example, next_batch

    examples = [Example(i, "en", [5], slots) for i, slots in enumerate(random.Random(1).choices(range(2, 150), k=96))]
    order: list[int] = []
    sampler = random.Random(0)
    batches = [next_batch(examples, sampler, 8, 0.0, order, bucket_batches=4)[0] for _ in range(12)]
    assert sorted(e.index for b in batches for e in b) == list(range(96))
    spread = np.mean([max(e.slots for e in b) - min(e.slots for e in b) for b in batches])
    unbucketed: list[int] = []
    plain = [next_batch(examples, random.Random(0), 8, 0.0, unbucketed)[0] for _ in range(12)]
    assert spread < 0.5 * np.mean([max(e.slots for e in b) - min(e.slots for e in b) for b in plain])


def test_convolutions_learn_at_their_own_rate(tmp_path: Path) -> None:
    loop = _loop(tmp_path, conv_lr_scale=0.0, lr=1e-2)
    encoder = loop.trainer.encoder
    conv = encoder.conv1.weight.detach().clone()
    attention = encoder.layers[0].self_attn.q_proj.weight.detach().clone()
    loop.step()
    assert torch.equal(encoder.conv1.weight, conv)  # scale 0: frozen, and no weight decay either
    assert not torch.equal(encoder.layers[0].self_attn.q_proj.weight, attention)


def test_a_batch_larger_than_the_training_set_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--batch-size 7 is more than the 6 usable training clips"):
        _loop(tmp_path, batch_size=7)


def test_per_stage_learning_rate_anneals_the_ctc_stage_and_restarts_for_the_full_stage() -> None:
    from app.training.state import lr_factor

    one_cycle = TrainConfig(max_minutes=10.0, ctc_only_until_minutes=4.0, warmup_steps=10, min_lr_ratio=0.05,
                            lr_per_stage=False)
    per_stage = replace(one_cycle, lr_per_stage=True)
    # One cycle: halfway through the budget is halfway down the cosine, whatever the stage.
    assert lr_factor(one_cycle, 500, 300.0) == pytest.approx(0.525)
    assert lr_factor(one_cycle, 500, 300.0, full_stage_step=400) == pytest.approx(0.525)
    # Per stage: the CTC stage reaches the floor at its end...
    assert lr_factor(per_stage, 399, 239.9) == pytest.approx(0.05, abs=1e-4)
    # ...and the full stage warms up again from its first step, then decays over the time that is left.
    assert lr_factor(per_stage, 400, 240.0, full_stage_step=400) == pytest.approx(0.1)
    assert lr_factor(per_stage, 409, 241.0, full_stage_step=400) == pytest.approx(1.0, abs=1e-3)
    assert lr_factor(per_stage, 600, 420.0, full_stage_step=400) == pytest.approx(0.525)
    assert lr_factor(per_stage, 900, 600.0, full_stage_step=400) == pytest.approx(0.05)


def test_loop_records_where_the_full_stage_began_and_warms_up_from_there(tmp_path: Path) -> None:
    loop = _loop(tmp_path, max_steps=None, max_minutes=10.0, ctc_only_until_minutes=1.0, lr_per_stage=True,
                 warmup_steps=4)
    loop.run.step, loop.run.elapsed_s = 5, 70.0  # just into the full stage
    loop.step()
    assert loop.run.full_stage_step == 5
    assert max(group["lr"] for group in loop.optimizer.param_groups) == pytest.approx(3e-3 / 4)
    loop.step()
    assert loop.run.full_stage_step == 5
    assert max(group["lr"] for group in loop.optimizer.param_groups) == pytest.approx(3e-3 * 2 / 4)


def test_training_device_is_refused_by_name_when_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.training.trainer import training_device

    assert training_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"--device cuda: no CUDA device"):
        training_device("cuda")
    with pytest.raises(ValueError, match=r"--device meta: training runs on 'cpu' or 'cuda"):
        training_device("meta")


def test_adapter_only_training_moves_the_projector_and_lora_and_nothing_else(tmp_path: Path) -> None:
    loop = _loop(tmp_path, train_only="adapter")
    parts = loop.trainer.parts
    before = {name: p.detach().clone() for module in (parts.whisper, parts.projector, parts.backbone)
              for name, p in module.named_parameters(prefix=type(module).__name__)}
    for _ in range(3):
        loop.step()
    after = {name: p.detach() for module in (parts.whisper, parts.projector, parts.backbone)
             for name, p in module.named_parameters(prefix=type(module).__name__)}
    moved = {name for name in before if not torch.equal(before[name], after[name])}
    learnable = {name for name in before if name.startswith("Projector") or "lora_" in name}
    assert moved and moved <= learnable
    assert any(name.startswith("Projector") for name in moved) and any("lora_" in name for name in moved)


@pytest.mark.parametrize(("choice", "low", "high"), [("stock", 0.4, 0.8), ("sampler", 0.1, 0.3)])
def test_self_conditioning_temperatures_follow_the_chosen_range(tmp_path: Path, choice: str, low: float,
                                                                high: float) -> None:
    sampler = {"entropy_bound": 1.0, "t_min": 0.1, "t_max": 0.3}
    loop = _loop(tmp_path, self_cond_temperatures=choice, sampler=sampler)
    drawn = loop.trainer.self_cond_temperature(4000, torch.Generator().manual_seed(0)).flatten()
    assert drawn.shape == (4000,)
    assert low <= float(drawn.min()) < low + 0.01 and high - 0.01 < float(drawn.max()) <= high


def test_unknown_self_conditioning_temperatures_are_refused_before_training(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="self_cond_temperatures"):
        _loop(tmp_path, self_cond_temperatures="sharp")
