"""A checkpoint with word lists: the pipeline starts the canvas from the search and realigns the prompt's audio."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from app.checkpoint.errors import CheckpointError
from app.checkpoint.loading import load_model_dir as load_pipeline

WORDS = ("the", "cat", "sat", "on", "a", "mat")


def _lexicon_model(tiny_model_dir, tmp_path, lists: bool = True, **changes):
    """A copy of the tiny model that decodes its CTC start with word lists (the same words in every language)."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    config = model / "adapter" / "asr_config.json"
    section = {"canvas": "ctc", "decoding": "lexicon", **changes}
    config.write_text(json.dumps({**json.loads(config.read_text()), "ctc_start": section}))
    if lists:
        (model / "adapter" / "lexicon").mkdir()
        for lang in ("en", "de", "fr", "es", "hi", "zh"):
            (model / "adapter" / "lexicon" / f"{lang}.tsv").write_text("".join(f"{w}\t{i + 1}\n" for i, w in
                                                                              enumerate(WORDS)))
    return model


def _speech(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(16_000).astype(np.float32) * 0.1


def test_the_start_canvas_is_the_word_list_search_in_the_tagged_language(tiny_model_dir, tmp_path):
    from app.model.backbone import prefill, prompt_embeddings
    from app.model.alignment import ctc_alignment
    from app.model.ctc_start.compression import compress_runs

    pipeline = load_pipeline(_lexicon_model(tiny_model_dir, tmp_path), device=torch.device("cpu"),
                             dtype=torch.float32)
    [window] = pipeline.encode([_speech(0)])
    state = pipeline.prefill(window, None, None)
    language = pipeline.transcripts.tag_ids[state.tag]
    logprobs = window.ctc_logprobs.numpy()
    ids = pipeline.start.search.decode(logprobs, pipeline.start.lexicons[language])
    assert ids, "the random model's search should emit something for this audio"
    start = state.start.tolist()
    assert start[: len(ids) + 1] == ids + [pipeline.tokenizer.eos_token_id]
    assert set(start[len(ids) + 1:]) == {pipeline.tokenizer.pad_token_id}
    # The prompt's audio is merged along the frames that spoke each token of the reading, not greedy runs.
    runs = torch.full((1, window.projected.shape[0]), -1)
    runs[0, : logprobs.shape[0]] = torch.from_numpy(ctc_alignment(logprobs, ids, pipeline.tokenizer.pad_token_id))
    built = pipeline.prompts.build(None, None)
    aligned = compress_runs(window.projected[None], runs)[0]
    expected = prefill(pipeline.backbone, prompt_embeddings(pipeline.backbone, built, aligned))
    greedy = prefill(pipeline.backbone, prompt_embeddings(pipeline.backbone, built, window.audio))
    torch.testing.assert_close(state.layers[0][0], expected.layers[0][0])
    assert not torch.allclose(state.layers[0][0], greedy.layers[0][0])


def test_the_hinted_language_picks_the_list_and_a_language_without_one_reads_greedily(tiny_model_dir, tmp_path):
    from app.model.ctc_start.compression import ctc_canvas

    model = _lexicon_model(tiny_model_dir, tmp_path)
    (model / "adapter" / "lexicon" / "de.tsv").write_text("katze\t1\n\nhund\t2\n")  # blank lines are skipped
    (model / "adapter" / "lexicon" / "zh.tsv").unlink()
    pipeline = load_pipeline(model, device=torch.device("cpu"), dtype=torch.float32)
    [window] = pipeline.encode([_speech(1)])
    ids = pipeline.start.search.decode(window.ctc_logprobs.numpy(), pipeline.start.lexicons["de"])
    assert pipeline.prefill(window, "de", None).start.tolist()[: len(ids)] == ids
    greedy = ctc_canvas(window.audio[None], pipeline.backbone.lm_head, pipeline.config.canvas_length,
                        pipeline.tokenizer.pad_token_id, pipeline.tokenizer.eos_token_id)[0]
    assert torch.equal(pipeline.prefill(window, "zh", None).start, greedy)


def test_greedy_checkpoints_keep_no_per_frame_reading(tiny_model_dir, tmp_path):
    pipeline = load_pipeline(_lexicon_model(tiny_model_dir, tmp_path, decoding="greedy"),
                             device=torch.device("cpu"), dtype=torch.float32)
    [window] = pipeline.encode([_speech(2)])
    assert pipeline.start.search is None and window.ctc_logprobs is None


def test_lexicon_decoding_without_lists_or_without_the_ctc_start_is_refused(tiny_model_dir, tmp_path):
    with pytest.raises(CheckpointError, match="lexicon"):
        load_pipeline(_lexicon_model(tiny_model_dir, tmp_path / "a", lists=False))
    with pytest.raises(CheckpointError, match="canvas 'ctc'"):
        load_pipeline(_lexicon_model(tiny_model_dir, tmp_path / "b", canvas="noise"))


def test_a_malformed_list_line_is_named_with_its_file_and_line(tiny_model_dir, tmp_path):
    model = _lexicon_model(tiny_model_dir, tmp_path)
    (model / "adapter" / "lexicon" / "en.tsv").write_text("the\t3\ncat three\n")
    with pytest.raises(CheckpointError, match=r"en\.tsv:2"):
        load_pipeline(model)


def test_a_runner_up_language_in_doubt_is_read_in_its_own_list_and_the_better_reading_names_it(tiny_model_dir,
                                                                                                 tmp_path):
    from app.model.backbone import prefill, prompt_embeddings
    from app.model.ctc_start.start import next_tokens_among

    model = _lexicon_model(tiny_model_dir, tmp_path / "a")
    head_only = load_pipeline(model, device=torch.device("cpu"), dtype=torch.float32)
    [window] = head_only.encode([_speech(2)])
    built = head_only.prompts.build(None, None)
    state = prefill(head_only.backbone, prompt_embeddings(head_only.backbone, built, window.audio))
    ranked = next_tokens_among(head_only.backbone, state, list(head_only.transcripts.tag_ids))
    first, second = (head_only.transcripts.tag_ids[tag] for tag, _ in ranked[:2])
    # The head's first language gets a list the audio fits worse than the runner-up's: one long word.
    (model / "adapter" / "lexicon" / f"{first}.tsv").write_text("mattresses\t1\n")
    config = model / "adapter" / "asr_config.json"
    for languages, expected in ((1, first), (2, second)):
        data = json.loads(config.read_text())
        data["ctc_start"].update(languages=languages, language_doubt=0.0)
        config.write_text(json.dumps(data))
        pipeline = load_pipeline(model, device=torch.device("cpu"), dtype=torch.float32)
        logprobs = window.ctc_logprobs.numpy()
        scores = {lang: pipeline.start.search.decode_scored(logprobs, pipeline.start.lexicons[lang])[1]
                  for lang in (first, second)}
        assert scores[second] > scores[first]
        assert pipeline.transcripts.tag_ids[pipeline.prefill(window, None, None).tag] == expected
    # A runner-up the head is sure against is not searched.
    data = json.loads(config.read_text())
    data["ctc_start"]["language_doubt"] = 1.0
    config.write_text(json.dumps(data))
    pipeline = load_pipeline(model, device=torch.device("cpu"), dtype=torch.float32)
    assert pipeline.transcripts.tag_ids[pipeline.prefill(window, None, None).tag] == first


@pytest.mark.parametrize(("key", "value"), [("languages", 0), ("language_doubt", 1.5)])
def test_language_check_settings_out_of_range_are_refused_by_name(key, value) -> None:
    from app.model.ctc_start.config import CtcStartConfig

    with pytest.raises(ValueError, match=key):
        CtcStartConfig(canvas="ctc", decoding="lexicon", **{key: value})
