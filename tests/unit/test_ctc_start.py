"""The embedded demo's CTC-start add-on (`app.model.ctc_start`), switched on by an `asr_config.json` section:
compressed prompt audio, a canvas that starts from the CTC reading under the head's language tag, and its checks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from app.checkpoint.errors import CheckpointError
from app.checkpoint.loading import load_model_dir
from app.model.ctc_start.start import CtcStart
from app.model.denoiser import DenoiseJob, denoise_all
from app.results import DecodeOptions
from tests.conftest import model_with_asr_config


def _speech(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(16_000).astype(np.float32) * 0.1


def _ctc_model(tiny_model_dir, tmp_path, **section):
    return load_model_dir(model_with_asr_config(tiny_model_dir, tmp_path, ctc_start=section),
                          device=torch.device("cpu"), dtype=torch.float32)


def _prefilled(pipeline, rng_seed: int):
    """The compressed audio of one second of random audio and its prefill."""
    encoded = pipeline.encode([_speech(rng_seed)])
    return torch.stack([window.audio for window in encoded]), pipeline.prefill(encoded[0], None, None)


def _denoise_seeing(pipeline, keyword: str, states: list, steps: int) -> list:
    """Denoise each prefill alone (generator seed 0); `keyword` of every backbone call, in order."""
    seen = []
    hook = pipeline.backbone.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs[keyword]), with_kwargs=True)
    try:
        for state in states:
            denoise_all(pipeline.backbone, [DenoiseJob(state, steps, torch.Generator().manual_seed(0))],
                        pipeline.params)
    finally:
        hook.remove()
    return seen


def test_the_section_switches_the_add_on_on_and_the_prompt_gets_one_slot_per_emitted_run(tiny_model_dir, tmp_path):
    from app.model.ctc_start.compression import ctc_compress

    pipeline = _ctc_model(tiny_model_dir, tmp_path, canvas="noise")
    assert isinstance(pipeline.start, CtcStart)
    audio = [_speech(0)]
    projected = pipeline.project(audio)
    encoded = torch.stack([window.audio for window in pipeline.encode(audio)])
    with torch.no_grad():
        expected = ctc_compress(projected, pipeline.backbone.lm_head(projected), pipeline.tokenizer.pad_token_id)
    torch.testing.assert_close(encoded, expected)
    assert not torch.equal(encoded, projected)
    state = pipeline.prefill(pipeline.encode(audio)[0], None, None)
    assert state.start is None and state.tag is None  # canvas "noise": compression only
    assert pipeline.transcribe(audio[0], DecodeOptions(steps=2)).duration == pytest.approx(1.0)


def test_ctc_start_is_the_first_steps_canvas_under_the_prompts_tag(tiny_model_dir, tmp_path):
    from app.model.backbone import prompt_embeddings
    from app.model.ctc_start.compression import ctc_canvas

    pipeline = _ctc_model(tiny_model_dir, tmp_path, canvas="ctc")
    audio, state = _prefilled(pipeline, 3)
    expected = ctc_canvas(audio, pipeline.backbone.lm_head, pipeline.config.canvas_length,
                          pipeline.tokenizer.pad_token_id, pipeline.tokenizer.eos_token_id)[0]
    assert torch.equal(state.start, expected)
    # The tag is the lm_head's choice among the language tags after the prompt, here from a fresh encoder pass.
    tags = list(pipeline.transcripts.tag_ids)
    embeds = prompt_embeddings(pipeline.backbone, pipeline.prompts.build(None, None), audio[0])
    with torch.no_grad():
        hidden = pipeline.backbone.model.encoder(inputs_embeds=embeds).last_hidden_state[0, -1]
        assert state.tag == tags[int(pipeline.backbone.lm_head(hidden)[tags].argmax())]
    unseeded = dataclasses.replace(state, start=None, tag=None)
    seen = _denoise_seeing(pipeline, "decoder_input_ids", [state, unseeded], steps=1)
    seeded_first, noise_first = seen[0][0], seen[1][0]
    assert torch.equal(seeded_first[1:], expected)
    assert seeded_first[0] == state.tag
    assert not torch.equal(noise_first[1:], expected)


def test_the_ctc_start_takes_one_lm_head_pass_over_the_audio_and_one_for_the_tag(tiny_model_dir, tmp_path):
    from app.model.row_start import EncodedWindow

    pipeline = _ctc_model(tiny_model_dir, tmp_path, canvas="ctc")
    audio, _ = _prefilled(pipeline, 5)
    calls = []
    hook = pipeline.backbone.lm_head.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    try:
        pipeline.prefill(EncodedWindow(audio[0]), None, None)
    finally:
        hook.remove()
    assert len(calls) == 2  # the audio slots once, and the prompt's last position for the tag


def test_a_prefilled_tag_stays_in_slot_zero_and_names_the_language(tiny_model_dir, tmp_path):
    pipeline = _ctc_model(tiny_model_dir, tmp_path, canvas="ctc")
    _, state = _prefilled(pipeline, 4)
    other = next(tag for tag in pipeline.transcripts.tag_ids if tag != state.tag)  # not the model's choice
    pinned = dataclasses.replace(state, tag=other)
    seen = _denoise_seeing(pipeline, "decoder_input_ids", [pinned], steps=3)
    assert [int(canvas[0, 0]) for canvas in seen] == [other] * 3
    result = denoise_all(pipeline.backbone, [DenoiseJob(pinned, 3, torch.Generator().manual_seed(0))],
                         pipeline.params)[0]
    assert result.tokens[0] == other
    assert pipeline.transcripts.decode(result.tokens, None)[1] == pipeline.transcripts.tag_ids[other]


@pytest.mark.parametrize("section, named", [
    ({"canvas": "ctc_beam"}, "ctc_start.canvas"),
    ({"canvas": "noise", "decoding": "lexicon"}, "canvas 'ctc'"),
    ({"canvas": "ctc", "beam": 3}, "unknown keys"),
])
def test_a_bad_section_is_refused_by_name_at_load(tiny_model_dir, tmp_path, section, named):
    with pytest.raises(CheckpointError, match=named):
        _ctc_model(tiny_model_dir, tmp_path, **section)
