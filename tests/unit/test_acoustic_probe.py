"""`diffusion-asr probe-acoustics` on synthetic encoder outputs where every character has its own frame vector."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from app.training.acoustic_probe import AcousticProbe, CharVocab, ProbeOptions, read, train_probe
from app.training.commands import main
from app.training.encoder_cache import META, OUTPUTS, SAMPLES_PER_POSITION, EncoderCache

WIDTH = 16
ALPHABET = "abcd"
SMALL = {"width": 32, "hidden": 32, "heads": 2, "ffn": 64, "dropout": 0.0, "batch_size": 16, "warmup_steps": 10,
         "learning_rate": 3e-3}


def _speak(texts: list[str], langs: list[str], positions: int = 64) -> EncoderCache:
    """Encoder outputs where each character is 4 positions of its own vector, then 2 of silence."""
    rng = np.random.default_rng(0)
    vectors = {ch: rng.normal(size=WIDTH) for ch in ALPHABET}
    silence = rng.normal(size=WIDTH) * 0.1
    outputs = np.tile(silence, (len(texts), positions, 1)).astype(np.float16)
    used = []
    for row, text in enumerate(texts):
        for k, ch in enumerate(text):
            outputs[row, 6 * k: 6 * k + 4] = vectors[ch]
        used.append(6 * len(text))
    num_samples = np.array(used, dtype=np.int64) * SAMPLES_PER_POSITION
    return EncoderCache(outputs, texts, langs, num_samples, np.array(used, dtype=np.int64), 10, "0" * 64)


def _words(length: int) -> list[str]:
    return ["".join(w) for w in itertools.product(ALPHABET, repeat=length)]


def test_greedy_reading_collapses_repeats_then_drops_blanks() -> None:
    vocab = CharVocab(["ba"])  # chars sorted: a = 1, b = 2
    assert vocab.greedy([1, 1, 0, 1, 2, 2, 0, 0]) == "aab"
    assert vocab.greedy([0, 0]) == ""


def test_probe_learns_to_read_words_it_never_trained_on() -> None:
    words = _words(3)  # 64 three-letter words, repeated letters included
    rng = np.random.default_rng(1)
    rng.shuffle(words)
    held = words[:12]
    train = _speak(words[12:], ["en"] * 52)
    evals = {"eval": _speak(held, ["en"] * 6 + ["de"] * 6)}
    _, _, result = train_probe(train, evals, ProbeOptions(steps=150, **SMALL), report=lambda _: None)
    assert result.steps == 150
    assert set(result.cer["eval"]) == {"de", "en"}
    assert max(result.cer["eval"].values()) < 5.0


def test_untrained_probe_reads_poorly() -> None:
    # The counterpart of the test above: the same evaluation on a probe that took one step is far off.
    words = _words(3)
    _, _, result = train_probe(_speak(words, ["en"] * 64), {"eval": _speak(words[:12], ["en"] * 12)},
                               ProbeOptions(steps=1, **SMALL), report=lambda _: None)
    assert result.cer["eval"]["en"] > 50.0


def test_minutes_end_the_run_before_its_steps() -> None:
    ticks = itertools.count()
    words = _words(2)
    _, _, result = train_probe(_speak(words, ["en"] * 16), {"eval": _speak(words[:4], ["en"] * 4)},
                               ProbeOptions(steps=1000, minutes=0.5, **SMALL), clock=lambda: float(next(ticks)),
                               report=lambda _: None)
    assert 0 < result.steps < 1000


def test_context_layers_do_not_read_past_a_clip() -> None:
    # A clip's reading must not change when a longer clip shares its batch (the padding mask).
    torch.manual_seed(0)
    options = ProbeOptions(context_layers=2, **SMALL)
    cache = _speak(["ab", "abcdabcd"], ["en", "en"])
    model = AcousticProbe(WIDTH, len(CharVocab(ALPHABET)), options).eval()
    frames = torch.from_numpy(cache.outputs.astype(np.float32))
    alone = model(frames[:1, :12], torch.tensor([6]))
    together = model(frames[:, :48], torch.tensor([6, 24]))
    torch.testing.assert_close(together[0, :6], alone[0, :6])
    unmasked = model(frames[:, :48], torch.tensor([24, 24]))
    assert not torch.allclose(unmasked[0, :6], alone[0, :6], atol=1e-4)


def test_read_returns_one_transcript_per_clip_in_order() -> None:
    cache = _speak(["ab", "cd", "abc"], ["en"] * 3)
    model = AcousticProbe(WIDTH, len(CharVocab(ALPHABET)), ProbeOptions(**SMALL))
    assert len(read(model, CharVocab(ALPHABET), cache, batch_size=2)) == 3


def _write(cache: EncoderCache, directory: Path) -> None:
    directory.mkdir(parents=True)
    np.save(directory / OUTPUTS, cache.outputs)
    meta = {"window_seconds": 10, "encoder": {"tensors_sha256": cache.encoder_sha256}, "texts": cache.texts,
            "langs": cache.langs, "num_samples": cache.num_samples.tolist(), "positions": cache.outputs.shape[1]}
    (directory / META).write_text(json.dumps(meta), encoding="utf-8")


def test_command_prints_cer_per_eval_set_and_language(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    words = _words(2)
    _write(_speak(words, ["en"] * 8 + ["fr"] * 8), tmp_path / "train")
    _write(_speak(words[:4], ["en", "en", "fr", "fr"]), tmp_path / "eval")
    _write(_speak(words[4:6], ["en", "fr"]), tmp_path / "eval-words")
    assert main(["probe-acoustics", "--encoder-cache", str(tmp_path), "--steps", "2", "--threads", "1",
                 "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "2 steps of 4" in out and "16 training clips" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith(("set", "eval"))}
    assert rows["set"] == ["en", "fr"] and len(rows["eval"]) == 2 and len(rows["eval-words"]) == 2


def test_command_without_held_out_caches_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _write(_speak(_words(2), ["en"] * 16), tmp_path / "train")
    assert main(["probe-acoustics", "--encoder-cache", str(tmp_path), "--steps", "1"]) == 2
    assert "needs eval/ or eval-<name>/" in capsys.readouterr().err
