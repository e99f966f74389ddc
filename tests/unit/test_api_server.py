"""`diffusion-asr serve` start-up checks: bad settings give one line per value and exit code 2."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.api.server import settings_error_lines
from app.cli import main
from app.config import Settings


def test_error_lines_name_the_variable_limit_and_value(monkeypatch):
    monkeypatch.setenv("ASR_MAX_BATCH_SIZE", "0")
    monkeypatch.setenv("ASR_DEVICE", "tpu")
    monkeypatch.setenv("ASR_PORT", "http")
    monkeypatch.setenv("ASR_API_KEYS", "secret")
    with pytest.raises(ValidationError) as info:
        Settings()
    lines = settings_error_lines(info.value)
    assert "ASR_MAX_BATCH_SIZE: must be >= 1 (got 0)" in lines
    assert "ASR_PORT: must be an integer (got http)" in lines
    assert any(line.startswith("ASR_DEVICE: must be one of") and line.endswith("(got tpu)") for line in lines)
    assert len(lines) == 3


def test_serve_with_bad_settings_exits_2(monkeypatch, capsys):
    monkeypatch.setenv("ASR_MAX_BATCH_SIZE", "0")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "diffusion-asr: error: ASR_MAX_BATCH_SIZE: must be >= 1 (got 0)"
    assert "Traceback" not in err


def test_serve_with_missing_model_exits_2(monkeypatch, capsys, tmp_path):
    assert main(["serve", "--model", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffusion-asr: error: ") and len(err.strip().splitlines()) == 1
