"""`diffusion-asr lexicon`: the training vocabulary written into a checkpoint as word lists, and its card."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from app.checkpoint.asr_config_file import read_asr_config
from app.checkpoint.reading import load_lexicons
from app.model.asr_config import AsrConfig
from app.training import texts
from app.training.card import decoding_md


def _ctc_start_model(tiny_model_dir: Path, tmp_path: Path, canvas_init: str = "ctc") -> Path:
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    config = model / "adapter" / "asr_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "ctc_start": {"canvas": canvas_init}}))
    return model


def _lexicon(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", "lexicon", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_command_writes_the_vocabulary_of_each_language_and_switches_decoding(tiny_model_dir, tmp_path):
    model = _ctc_start_model(tiny_model_dir, tmp_path)
    out = _lexicon("--model", str(model), "--words", "200", "--languages", "en", "hi", "zh")
    assert out.returncode == 0, out.stderr
    lists = load_lexicons(model / "adapter")
    assert set(lists) == {"en", "hi", "zh"}
    for lang, counts in lists.items():
        assert list(counts) == list(texts.vocabulary(lang, 200))
        assert len(set(counts.values())) == 1 and next(iter(counts.values())) > 0, "the training prior: all equal"
    assert read_asr_config(model / "adapter").ctc_start["decoding"] == "lexicon"

    from app.checkpoint.loading import load_model_dir as load_pipeline

    assert load_pipeline(model).start.search is not None


def test_the_wordfreq_prior_weighs_words_as_the_language_uses_them(tiny_model_dir, tmp_path):
    model = _ctc_start_model(tiny_model_dir, tmp_path)
    out = _lexicon("--model", str(model), "--words", "200", "--languages", "en", "--prior", "wordfreq")
    assert out.returncode == 0, out.stderr
    values = list(load_lexicons(model / "adapter")["en"].values())
    assert all(a >= b > 0 for a, b in itertools.pairwise(values)), "wordfreq's order is most frequent first"
    assert values[0] > 10 * values[-1]


def test_the_training_prior_is_how_the_training_sentences_draw_their_words() -> None:
    vocabulary = texts.vocabulary("en", 200)
    drawn = Counter(word for sentence in texts.make_sentences("en", 4000, seed=3, vocab_size=200)
                    for word in sentence.split())
    assert set(drawn) <= set(vocabulary)
    # About 110 draws per word (4,000 sentences of 3-8 words): uniform draws stay well within 2x of each
    # other; wordfreq's weights for these words span more than 10x.
    assert max(drawn.values()) < 2 * min(drawn[word] for word in vocabulary)


def test_a_checkpoint_that_starts_from_noise_is_refused_and_left_alone(tiny_model_dir, tmp_path):
    model = _ctc_start_model(tiny_model_dir, tmp_path, canvas_init="noise")
    before = (model / "adapter" / "asr_config.json").read_text()
    out = _lexicon("--model", str(model), "--languages", "en")
    assert out.returncode != 0 and "ctc_start.canvas" in out.stderr
    assert (model / "adapter" / "asr_config.json").read_text() == before
    assert not (model / "adapter" / "lexicon").exists()


def test_the_card_states_the_search_only_for_checkpoints_that_use_it() -> None:
    lexicon = AsrConfig(ctc_start={"canvas": "ctc", "decoding": "lexicon", "beam_width": 24})
    equal = {"en": dict.fromkeys(map(str, range(3000)), 1.0), "de": dict.fromkeys(map(str, range(2500)), 1.0)}
    card = decoding_md(lexicon, equal)
    assert "24 hypotheses" in card and "de 2,500, en 3,000" in card
    assert str(-40.0).rstrip("0").rstrip(".") in card  # the search's default out-of-list penalty
    assert "equally likely" in card and "wordfreq" not in card
    assert "wordfreq" in decoding_md(lexicon, {**equal, "de": {"und": 0.03, "der": 0.02}})
    assert decoding_md(AsrConfig(ctc_start={"canvas": "ctc"}), equal) == ""
    assert decoding_md(AsrConfig(), equal) == ""
