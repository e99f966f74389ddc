"""The text-only stage: a tiny backbone trained on sentences alone, its prompt without audio, and the checkpoint
that `train --init-from` continues with the audio of the cached clips (`tests.unit.test_training_cached`'s)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from app.checkpoint.loading import load_model_dir
from app.checkpoint.parts import build_model
from app.cli import main
from app.model.aligned_positions.positions import aligned_positions
from app.training.batches import train_tokenizer
from app.training.cached import cache_reference, cached_dims, load_cached_splits
from app.training.forward import AsrTrainer
from app.training.text_stage import TextBatch, TextStage, draw_batch, fitting_sentences
from tests.unit.test_training_cached import TINY, _config, cache_root, encoded  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")

SENTENCES = {"en": ["the quick fox", "a lazy dog"], "de": ["der kleine hund", "ein roter ball"],
             "fr": ["le petit chat", "une belle maison"], "es": ["el perro come"], "hi": ["यह एक घर है"],
             "zh": ["我们好"]}


def _stage(tmp_path: Path, cache: Path, **overrides) -> TextStage:
    config = _config(tmp_path, cache, **overrides)
    feats, _ = load_cached_splits(cache)
    dims = cached_dims(config.dims(), feats)
    texts = [s for lang in SENTENCES for s in SENTENCES[lang]]
    langs = [lang for lang in SENTENCES for _ in SENTENCES[lang]]
    tokenizer = train_tokenizer(texts * 4, langs * 4, dims.vocab_size)
    torch.manual_seed(0)
    parts = build_model(dims, tokenizer, cache_reference(feats))
    return TextStage(AsrTrainer(parts, dims, config), fitting_sentences(SENTENCES, tokenizer, dims.canvas_length),
                     config)


def test_sentences_that_do_not_fit_the_canvas_are_left_out(tmp_path: Path, encoded: Path) -> None:
    stage = _stage(tmp_path, encoded)
    tokenizer, canvas = stage.trainer.parts.tokenizer, stage.trainer.dims.canvas_length
    long = "the quick fox " * 8
    assert len(tokenizer(long, add_special_tokens=False).input_ids) + 2 > canvas
    kept = fitting_sentences({"en": ["a lazy dog", long], "de": [long]}, tokenizer, canvas)
    assert kept == {"en": [tokenizer("a lazy dog", add_special_tokens=False).input_ids]}


def test_each_row_draws_a_sentence_of_its_own_language() -> None:
    sentences = {"en": [[1, 2]], "de": [[3], [4, 5]], "zh": [[6]]}
    batch = draw_batch(sentences, random.Random(0), 200, 0.5)
    assert set(batch.langs) == {"en", "de", "zh"}
    assert all(ids in sentences[lang] for lang, ids in zip(batch.langs, batch.text_ids))


def test_the_backbone_learns_the_sentences_and_the_projector_is_untouched(tmp_path: Path, encoded: Path) -> None:
    stage = _stage(tmp_path, encoded, self_cond_prob=1.0, max_steps=10)
    before = {k: v.clone() for k, v in stage.trainer.parts.projector.state_dict().items()}
    history = [stage.step() for _ in range(10)]
    assert all(np.isfinite(v) for values in history for v in values.values()), history
    assert history[-1]["diff"] < history[0]["diff"] and history[-1]["ar"] < history[0]["ar"]
    after = stage.trainer.parts.projector.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no audio, no gradient for the audio path


def test_the_prompt_without_audio_keeps_the_audio_case_positions(tmp_path: Path, encoded: Path) -> None:
    stage = _stage(tmp_path, encoded, aligned_positions=True)
    batch = TextBatch(["en", "de"], [[5, 6, 7], [8]], hinted=False)
    ids, rotary, canvas_at = stage.prompt(batch)
    full, layout = stage.trainer.prompt(2, None)
    audio = layout.audio_positions
    audio_start, slots = int(audio[0]), len(audio)
    assert stage.trainer.prompts.audio_id not in ids.tolist()[0]
    assert ids.shape[1] == full.shape[1] - slots
    # The audio case with every token spoken by the last slot: the same positions around the audio.
    counts = torch.zeros(2, slots, dtype=torch.long)
    counts[:, -1] = torch.tensor([3, 1])
    spoken = aligned_positions(counts, audio_start, full.shape[1])
    keep = torch.ones(full.shape[1], dtype=torch.bool)
    keep[audio] = False
    assert torch.equal(rotary, spoken[:, keep]) and canvas_at == audio_start

    plain = _stage(tmp_path / "plain", encoded, aligned_positions=False)
    ids, rotary, canvas_at = plain.prompt(batch)
    assert rotary is None and canvas_at == ids.shape[1]


def test_pretrain_text_writes_a_checkpoint_that_train_continues_with_audio(
        tmp_path: Path, encoded: Path, cache_root: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
        capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("ASR_CACHE_DIR", str(cache_root))
    corpus = tmp_path / "corpus"
    for lang, sentences in SENTENCES.items():
        (corpus / lang).mkdir(parents=True)
        (corpus / lang / "train.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    dims = [arg for key, value in TINY["dims_override"].items() for arg in ("--dim", f"{key}={value!r}")]
    common = ["--encoder-cache", str(encoded), "--preset", "tiny-random", *dims, "--batch-size", "3",
              "--max-steps", "2", "--threads", "1", "--no-characters", "--no-word-initial", "--probe-every", "0",
              "--no-progress"]
    text_model = tmp_path / "text"
    assert main(["pretrain-text", "--corpus", str(corpus), "--out", str(text_model), *common]) == 0
    info = json.loads((text_model / "adapter" / "text_stage.json").read_text(encoding="utf-8"))
    assert info["steps"] == 2 and info["sentences"] == {lang: len(s) for lang, s in SENTENCES.items()}

    # The tokenizer learnt the corpus too, not the clips' transcripts alone; the audio stage keeps it.
    feats, _ = load_cached_splits(encoded)
    clips_only = train_tokenizer(list(feats.texts), list(feats.langs), TINY["dims_override"]["vocab_size"])
    text_vocab = load_model_dir(text_model, device=torch.device("cpu"), dtype=torch.float32).tokenizer.get_vocab()
    assert text_vocab != clips_only.get_vocab()
    out = tmp_path / "model"
    assert main(["train", "--init-from", str(text_model), "--work-dir", str(tmp_path / "work"), "--out", str(out),
                 *common]) == 0
    assert load_model_dir(out, device=torch.device("cpu"), dtype=torch.float32).tokenizer.get_vocab() == text_vocab

    assert main(["pretrain-text", "--out", str(tmp_path / "none"), *common]) == 2
    assert "--corpus" in capsys.readouterr().err
