"""Which model runs when none is configured: `models/default` when the repository ships one, else a random
fallback written once into the cache directory and announced loudly."""

from __future__ import annotations

from app.checkpoint import embedded


def test_without_a_shipped_model_a_random_fallback_is_written_once_and_announced(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(embedded, "REPO_MODEL_DIR", tmp_path / "missing")
    with caplog.at_level("WARNING", logger="app.checkpoint.embedded"):
        first = embedded.embedded_model_dir(tmp_path / "cache")
    assert (first / "adapter" / "asr_config.json").is_file()
    assert "NO TRAINED MODEL" in caplog.text
    assert embedded.embedded_model_dir(tmp_path / "cache") == first
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.name]  # no scratch directories left


def test_a_shipped_model_is_preferred(tmp_path, monkeypatch):
    shipped = tmp_path / "models" / "default"
    (shipped / "adapter").mkdir(parents=True)
    (shipped / "adapter" / "asr_config.json").write_text("{}")
    monkeypatch.setattr(embedded, "REPO_MODEL_DIR", shipped)
    assert embedded.embedded_model_dir(tmp_path / "cache") == shipped
    assert not (tmp_path / "cache").exists()
