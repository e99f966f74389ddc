"""Aligned prompt positions (`app.model.aligned_positions`): counts along the greedy CTC path, the positions they
give, the row start that prefills with them, and training that uses the same positions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.checkpoint.errors import CheckpointError
from app.checkpoint.loading import load_model_dir
from app.model.aligned_positions.positions import aligned_positions, emission_counts, hold_past_audio
from app.model.aligned_positions.start import AlignedStart
from app.model.asr_config import AsrConfig
from app.model.backbone import prefill_batch, prompt_embeddings
from app.model.projector import audio_slots
from app.model.denoiser import DenoiseBatch, DenoiseJob
from app.training.config import TrainConfig
from tests.conftest import model_with_asr_config

pytestmark = pytest.mark.usefixtures("one_thread")

BLANK = 0
SECTION = {"counts": "greedy_ctc"}


def _one_hot_logits(path: list[int], vocab: int = 8) -> torch.Tensor:
    logits = torch.zeros(1, len(path), vocab)
    logits[0, torch.arange(len(path)), torch.tensor(path)] = 5.0
    return logits


def test_counts_follow_ctc_collapse_of_repeats_and_blanks() -> None:
    # Emissions: slot 1 (3), slot 4 (3 again after a blank), slot 5 (4); repeats and blanks emit nothing.
    path = [BLANK, 3, 3, BLANK, 3, 4, 4, BLANK]
    assert emission_counts(_one_hot_logits(path), BLANK).tolist() == [[0, 1, 1, 1, 2, 3, 3, 3]]
    # A token in the first slot is an emission too.
    assert emission_counts(_one_hot_logits([5, 5, 6]), BLANK).tolist() == [[1, 1, 2]]


def test_audio_slot_shares_the_position_of_the_canvas_slot_holding_its_token() -> None:
    counts = torch.tensor([[0, 1, 1, 1, 2, 3, 3, 3]])
    # Two prompt tokens before the audio, one after it.
    positions = aligned_positions(counts, audio_start=2, prompt_length=11)
    assert positions.tolist() == [[0, 1, 2, 3, 3, 3, 4, 5, 5, 5, 6]]
    # Canvas slot 0 (the tag) sits at audio_start = 2, so text token k (canvas slot k + 1) sits at 3 + k:
    # token 0 was emitted at audio slot 1 (prompt index 3), token 2 at audio slot 5 (prompt index 7).
    assert positions[0, 2 + 1] == 2 + 1 and positions[0, 2 + 5] == 2 + 3


def _speaking(pipeline, tokens: list[int]) -> torch.Tensor:
    """Projected audio whose greedy CTC path through the tied lm_head reads `tokens`, one per slot: each slot is
    its token's embedding, scaled so that the token's own logit wins (checked); `<pad>`'s embedding is zero, so
    its slots give all-equal logits, whose argmax is id 0, the blank."""
    embedding = pipeline.backbone.lm_head.weight.detach()
    slots = pipeline.config.audio_slots
    ids = torch.tensor((tokens + [BLANK] * slots)[:slots])
    audio = 8.0 * embedding[ids] / embedding[ids].norm(dim=-1, keepdim=True).clamp_min(1e-6)
    assert torch.equal(pipeline.backbone.lm_head(audio).argmax(dim=-1), ids)
    return audio


@pytest.fixture
def aligned_pipeline(tiny_model_dir: Path, tmp_path: Path):
    model = model_with_asr_config(tiny_model_dir, tmp_path, aligned_positions=SECTION)
    return load_model_dir(model, device=torch.device("cpu"), dtype=torch.float32)


def test_checkpoint_section_selects_the_aligned_start_which_prefills_at_counted_positions(aligned_pipeline) -> None:
    assert isinstance(aligned_pipeline.start, AlignedStart)
    path = [BLANK, 11, 11, BLANK, 12, 13, BLANK, 13]  # emits 11, 12, 13, 13: counts 0 1 1 1 2 3 3 4
    audio = _speaking(aligned_pipeline, path)
    encoded = aligned_pipeline.start.encode(audio[None], [16_000])
    prompt = aligned_pipeline.prompts.build("en")
    state = aligned_pipeline.start.prefill(encoded[0], prompt, "en")

    start, length = int(prompt.audio_positions[0]), len(prompt.ids)
    slots = aligned_pipeline.config.audio_slots
    by_hand = list(range(start)) + [start + c for c in [0, 1, 1, 1, 2, 3, 3, 4] + [4] * (slots - 8)]
    by_hand += [start + 5 + i for i in range(length - len(by_hand))]
    embeds = prompt_embeddings(aligned_pipeline.backbone, prompt, audio)
    expected = prefill_batch(aligned_pipeline.backbone, embeds, torch.tensor([by_hand]))[0]
    plain = prefill_batch(aligned_pipeline.backbone, embeds)[0]
    assert state.canvas_start == start
    for (keys, values), (keys_hand, values_hand), (keys_plain, _) in zip(state.layers, expected.layers, plain.layers):
        torch.testing.assert_close(keys, keys_hand)
        torch.testing.assert_close(values, values_hand)
        assert not torch.allclose(keys, keys_plain)  # the positions are not the indices


def test_held_counts_stop_at_each_rows_last_audio_slot() -> None:
    counts = torch.tensor([[0, 1, 1, 2, 3, 4], [1, 1, 2, 2, 3, 3], [0, 1, 2, 3, 4, 5]])
    held = hold_past_audio(counts, [3, 6, 0])
    # Row 0 holds at slot 2's count; row 1's audio fills the window; a row with no audio slot keeps its counts.
    assert held.tolist() == [[0, 1, 1, 1, 1, 1], [1, 1, 2, 2, 3, 3], [0, 1, 2, 3, 4, 5]]


@pytest.mark.parametrize("past_audio", ["hold", "count"])
def test_a_checkpoint_says_whether_the_padding_after_the_audio_counts(tiny_model_dir: Path, tmp_path: Path,
                                                                      past_audio: str) -> None:
    model = model_with_asr_config(tiny_model_dir, tmp_path, aligned_positions={**SECTION, "past_audio": past_audio})
    pipeline = load_model_dir(model, device=torch.device("cpu"), dtype=torch.float32)
    samples = 16_000 // 10
    used = audio_slots(samples, pipeline.projector.subsample, pipeline.config.audio_slots)
    # One emission per slot up to well past the clip's audio, as a head reading its silent padding can do.
    path = [11 + i % 2 for i in range(used + 3)]
    encoded = pipeline.start.encode(_speaking(pipeline, path)[None], [samples])[0]
    counts = encoded.counts.tolist()
    assert counts[:used] == list(range(1, used + 1))
    assert counts[used:used + 3] == ([used] * 3 if past_audio == "hold" else [used + 1, used + 2, used + 3])


def test_canvas_sits_at_the_prefills_canvas_start(aligned_pipeline) -> None:
    audio = _speaking(aligned_pipeline, [BLANK, 11, 12])
    encoded = aligned_pipeline.start.encode(audio[None], [16_000])
    prompt = aligned_pipeline.prompts.build(None)
    state = aligned_pipeline.start.prefill(encoded[0], prompt, None)
    seen = []
    hook = aligned_pipeline.backbone.register_forward_pre_hook(
        lambda _module, _args, kwargs: seen.append(kwargs["decoder_position_ids"].clone()), with_kwargs=True)
    try:
        batch = DenoiseBatch(aligned_pipeline.backbone, aligned_pipeline.params)
        batch.add(0, DenoiseJob(state, 2, torch.Generator().manual_seed(0)))
        batch.step()
    finally:
        hook.remove()
    start = int(prompt.audio_positions[0])
    assert start < state.length  # not where the stock layout puts it
    assert seen[0][0].tolist() == list(range(start, start + aligned_pipeline.config.canvas_length))


def test_a_section_other_than_the_one_form_or_beside_ctc_start_is_refused(tiny_model_dir: Path,
                                                                          tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="aligned_positions must be"):
        AsrConfig(aligned_positions={"counts": "beam"})
    with pytest.raises(ValueError, match="aligned_positions must be"):
        AsrConfig(aligned_positions={**SECTION, "past_audio": "skip"})
    assert AsrConfig(aligned_positions=SECTION).past_audio == "count"  # checkpoints written before the rule
    with pytest.raises(ValueError, match="a checkpoint has one"):
        AsrConfig(aligned_positions=SECTION, ctc_start={"canvas": "noise"})
    model = model_with_asr_config(tiny_model_dir, tmp_path, aligned_positions={"counts": "soft"})
    with pytest.raises(CheckpointError, match="aligned_positions"):
        load_model_dir(model, device=torch.device("cpu"), dtype=torch.float32)


def test_training_refuses_aligned_positions_over_compressed_audio() -> None:
    with pytest.raises(ValueError, match="needs audio_compression None"):
        TrainConfig(aligned_positions=True, audio_compression="ctc").ctc_start()
    assert TrainConfig(aligned_positions=True, audio_compression=None, canvas_init="noise").ctc_start() is None
