"""`asr_config.json`: the stock fields, the `ctc_start` section, and files in the earlier flat format."""

from __future__ import annotations

import json

import pytest

from app.checkpoint.asr_config_file import read_asr_config, write_asr_config
from app.checkpoint.errors import CheckpointError
from app.model.asr_config import AsrConfig

LEGACY_LEXICON = {
    "audio_compression": "ctc", "canvas_positions": "after_prompt", "canvas_prior": None, "canvas_init": "ctc",
    "ctc_decoding": "lexicon", "lexicon_beam_width": 24, "lexicon_lm_weight": 0.7, "lexicon_word_bonus": 2.0,
    "lexicon_oov_penalty": -40.0, "lexicon_token_bonus": 2.0, "lexicon_languages": 2,
    "lexicon_language_doubt": 0.01,
}


def _write(tmp_path, data: dict):
    (tmp_path / "asr_config.json").write_text(json.dumps(data))
    return tmp_path


def test_a_written_config_reads_back_equal_and_the_stock_one_has_no_section(tmp_path):
    config = AsrConfig(audio_slots=150, canvas_length=96, ctc_start={"canvas": "ctc", "decoding": "greedy"})
    write_asr_config(config, tmp_path)
    assert read_asr_config(tmp_path) == config
    write_asr_config(AsrConfig(), tmp_path)
    assert "ctc_start" not in json.loads((tmp_path / "asr_config.json").read_text())
    assert read_asr_config(tmp_path).ctc_start is None


def test_the_earlier_flat_format_becomes_the_section(tmp_path):
    config = read_asr_config(_write(tmp_path, {"audio_slots": 150, **LEGACY_LEXICON}))
    assert config.audio_slots == 150
    assert config.ctc_start == {"canvas": "ctc", "decoding": "lexicon", "beam_width": 24, "lm_weight": 0.7,
                                "word_bonus": 2.0, "oov_penalty": -40.0, "token_bonus": 2.0, "languages": 2,
                                "language_doubt": 0.01}


def test_an_earlier_stock_file_has_no_section(tmp_path):
    stock = {"audio_compression": None, "canvas_positions": "after_prompt", "canvas_prior": None,
             "canvas_init": "noise", "ctc_decoding": "greedy", "lexicon_beam_width": 32}
    assert read_asr_config(_write(tmp_path, stock)).ctc_start is None


@pytest.mark.parametrize("changes, named", [
    ({"canvas_positions": "on_audio"}, "canvas_positions"),
    ({"canvas_prior": "ctc"}, "canvas_prior"),
    ({"audio_compression": "mean"}, "audio_compression"),
    ({"audio_compression": None}, "needs audio_compression"),
    ({"prompt_templat": "x"}, "unknown keys"),
])
def test_removed_options_and_typos_are_refused_naming_the_file_and_key(tmp_path, changes, named):
    with pytest.raises(CheckpointError, match=named) as info:
        read_asr_config(_write(tmp_path, {**LEGACY_LEXICON, **changes}))
    assert "asr_config.json" in str(info.value)
