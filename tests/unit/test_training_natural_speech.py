"""Voice rotation, waveform augmentation and the natural-speech dataset recipe (`diffusion-asr speech`)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from app.training import degrade, synth, texts, voices
from app.training.commands import main as training_main
from app.training.data import EVAL_RESERVE, clip_rng, load_dataset, split_sentences

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="install the Debian package espeak-ng (make system-deps)")


def _band_energy(x: np.ndarray, lo: float, hi: float) -> float:
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / synth.SAMPLE_RATE)
    return float(power[(freqs >= lo) & (freqs < hi)].sum())


def test_voice_draw_is_a_function_of_the_clip_seed() -> None:
    draws = [voices.draw_voice("en", clip_rng(0, "train", "en", i)) for i in range(200)]
    assert draws == [voices.draw_voice("en", clip_rng(0, "train", "en", i)) for i in range(200)]
    engines = {d.engine for d in draws}
    assert engines == {"espeak", "pico"}
    # Engines are drawn first, so Pico's two voices get about half the clips, not 2 in 98.
    assert 70 <= sum(d.engine == "pico" for d in draws) <= 130
    assert len({d.voice for d in draws if d.engine == "espeak"}) > 30
    pico = [d for d in draws if d.engine == "pico"]
    assert all(voices.PICO_SPEED[0] <= d.speed <= voices.PICO_SPEED[1] for d in pico)
    assert len({d.pitch for d in pico}) > 10


def test_languages_pico_does_not_speak_use_espeak_only() -> None:
    assert voices.engines_for("hi") == ("espeak",) and voices.engines_for("zh") == ("espeak",)
    assert {voices.draw_voice("zh", clip_rng(1, "train", "zh", i)).engine for i in range(20)} == {"espeak"}
    with pytest.raises(ValueError, match="speaks"):
        voices.draw_voice("hi", np.random.default_rng(0), ("pico",))


def test_noise_lands_at_the_requested_snr() -> None:
    rng = np.random.default_rng(3)
    speech = np.sin(np.arange(16000) * 0.05)
    power = float(np.mean(speech**2))
    noisy = degrade.add_noise(speech, rng, 10.0, power)
    measured = 10 * np.log10(power / np.mean((noisy - speech) ** 2))
    assert abs(measured - 10.0) < 1e-6


def test_telephone_channel_removes_the_bands_outside_300_to_3400_hz() -> None:
    x = np.random.default_rng(0).standard_normal(16000)
    y = degrade.telephone(x)
    assert y.shape == x.shape
    assert _band_energy(y, 3700, 8000) < 0.01 * _band_energy(x, 3700, 8000)
    assert _band_energy(y, 0, 250) < 0.01 * _band_energy(x, 0, 250)
    assert _band_energy(y, 500, 3000) > 0.7 * _band_energy(x, 500, 3000)


def test_room_impulse_has_its_direct_to_reverberant_ratio_and_decays() -> None:
    h = degrade.room_impulse(np.random.default_rng(1), rt60_s=0.5, drr_db=6.0)
    assert h[0] == 1.0 and h.size == 8000
    assert abs(10 * np.log10(1.0 / np.sum(h[1:] ** 2)) - 6.0) < 1e-6
    early, late = np.sum(h[1:800] ** 2), np.sum(h[-800:] ** 2)
    assert late < early * 1e-3  # 60 dB down over the response, so the last tenth is far quieter


def test_degrade_is_deterministic_per_seed_and_never_clips() -> None:
    speech = np.sin(np.arange(8000) * 0.1).astype(np.float32)
    spec = degrade.DegradeSpec(reverb_prob=1.0, noise_prob=1.0, telephone_prob=1.0, gain_db=(6.0, 6.0))
    a = degrade.degrade(speech, np.random.default_rng(5), spec)
    assert np.array_equal(a, degrade.degrade(speech, np.random.default_rng(5), spec))
    assert not np.array_equal(a, degrade.degrade(speech, np.random.default_rng(6), spec))
    assert np.abs(a).max() <= 0.99 + 1e-6
    plain = degrade.degrade(speech, np.random.default_rng(5), degrade.DegradeSpec(0, noise_prob=0, telephone_prob=0))
    assert plain.size == a.size and not np.allclose(plain, a)


FAKE_PICO = '''#!{python}
"""A stand-in for pico2wave: records its arguments, writes a tone whose length follows the markup's speed."""
import json, re, sys, wave
import numpy as np
args = sys.argv[1:]
with open({log!r}, "a", encoding="utf-8") as log:
    log.write(json.dumps(args) + "\\n")
out, markup = args[args.index("-w") + 1], args[-1]
speed = int(re.search(r"speed level='(\\d+)'", markup).group(1))
tone = (0.3 * np.sin(np.arange(int(16000 * 100 / speed)) * 0.05) * 32767).astype("<i2")
with wave.open(out, "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(16000); w.writeframes(tone.tobytes())
'''


def test_pico_is_called_with_the_drawn_voice_rate_and_pitch(tmp_path: Path, monkeypatch) -> None:
    # Pico is a training-only dependency (Debian non-free), so `make test` checks the call through a stand-in
    # binary: the arguments and markup this code builds, and that the WAV it writes is read back at 16 kHz.
    log = tmp_path / "calls.jsonl"
    fake = tmp_path / "bin" / "pico2wave"
    fake.parent.mkdir()
    fake.write_text(FAKE_PICO.format(python=sys.executable, log=str(log)), encoding="utf-8")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    slow = voices.speak("Are we <safe> now?", voices.VoiceDraw("pico", "en-GB", 80, 110))
    fast = voices.speak("Are we <safe> now?", voices.VoiceDraw("pico", "en-GB", 120, 110))
    calls = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert [c[:2] for c in calls] == [["-l", "en-GB"]] * 2 and all(c[4] == "--" for c in calls)
    assert calls[0][-1] == "<speed level='80'><pitch level='110'>Are we &lt;safe&gt; now?</pitch></speed>"
    assert "<speed level='120'>" in calls[1][-1]
    assert fast.dtype == np.float32 and 0 < fast.size < slow.size


def test_a_missing_pico_is_named_with_its_package(monkeypatch) -> None:
    monkeypatch.setattr(voices.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="libttspico-utils"):
        voices.speak("Are we safe now?", voices.VoiceDraw("pico", "en-US", 100, 100))


@needs_espeak
def test_speech_command_renders_corpus_sentences_reproducibly(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    for lang, text in (("en", "Are we safe now?"), ("de", "Wer rastet, der rostet.")):
        (corpus / lang).mkdir(parents=True)
        (corpus / lang / "train.txt").write_text(f"{text}\n", encoding="utf-8")
    args = ["speech", "--corpus", str(corpus), "--languages", "en", "de", "--per-lang", "2", "--workers", "1",
            "--seed", "4", "--engines", "espeak"]
    assert training_main([*args, "--out", str(tmp_path / "a")]) == 0
    assert training_main([*args, "--out", str(tmp_path / "b")]) == 0
    first, second = load_dataset(tmp_path / "a" / "train"), load_dataset(tmp_path / "b" / "train")
    assert [c.text for c in first] == ["Are we safe now?", "Wer rastet, der rostet."] * 2
    for x, y in zip(first, second):
        assert np.array_equal(x.audio, y.audio) and x.audio.size > synth.SAMPLE_RATE // 2
    # The same sentence at two clip indices is two different renderings.
    assert not np.array_equal(first[0].audio[:4000], first[2].audio[:4000])
    manifest = json.loads((tmp_path / "a" / "train" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["engines"] == ["espeak"] and manifest["text_source"]["corpus"] == str(corpus)


@needs_espeak
def test_speech_command_renders_the_corpus_dev_split(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus" / "en"
    corpus.mkdir(parents=True)
    (corpus / "train.txt").write_text("Are we safe now?\n", encoding="utf-8")
    (corpus / "dev.txt").write_text("Tune the sampler on me.\n", encoding="utf-8")
    assert training_main(["speech", "--corpus", str(tmp_path / "corpus"), "--out", str(tmp_path / "o"),
                          "--split", "dev", "--languages", "en", "--per-lang", "1", "--workers", "1",
                          "--engines", "espeak"]) == 0
    assert [c.text for c in load_dataset(tmp_path / "o" / "dev")] == ["Tune the sampler on me."]


@needs_espeak
def test_plain_speech_is_espeak_ngs_default_voice_rate_and_pitch_without_effects(tmp_path: Path) -> None:
    import subprocess

    corpus = tmp_path / "corpus" / "en"
    corpus.mkdir(parents=True)
    (corpus / "eval.txt").write_text("Are we safe now?\n", encoding="utf-8")
    assert training_main(["speech", "--corpus", str(tmp_path / "corpus"), "--out", str(tmp_path / "o"),
                          "--split", "eval", "--languages", "en", "--per-lang", "2", "--workers", "1",
                          "--plain"]) == 0
    clips = list(load_dataset(tmp_path / "o" / "eval"))
    # espeak-ng left to its own defaults: no rate or pitch option at all.
    wav = subprocess.run(["espeak-ng", "-v", "en-us", "--stdout", "--", "Are we safe now?"], capture_output=True,
                         check=True).stdout
    expected = synth.trim_silence(synth.resample(*synth.decode_wav(wav), synth.SAMPLE_RATE))
    for clip in clips:  # both indices: no voice draw and no effects, so the same rendering
        assert np.allclose(clip.audio, expected, atol=1e-3)
    manifest = json.loads((tmp_path / "o" / "eval" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["voices"] == {"en": ["en-us"]} and manifest["augmentation"] is None


def test_plain_speech_refuses_engines(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        training_main(["speech", "--plain", "--engines", "espeak"])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_random_word_sets_have_no_dev_split() -> None:
    with pytest.raises(ValueError, match="a corpus adds dev"):
        split_sentences("en", "dev", 3, seed=0)


def test_speech_command_names_a_missing_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert training_main(["speech", "--corpus", str(tmp_path / "none"), "--out", str(tmp_path / "o"),
                          "--languages", "en", "--per-lang", "1", "--engines", "espeak"]) == 2
    assert "diffusion-asr corpus" in capsys.readouterr().err


def test_speech_command_names_an_empty_corpus_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "corpus" / "en"
    corpus.mkdir(parents=True)
    (corpus / "train.txt").write_text("Are we safe now?\n", encoding="utf-8")
    (corpus / "dev.txt").write_text("", encoding="utf-8")
    assert training_main(["speech", "--corpus", str(tmp_path / "corpus"), "--out", str(tmp_path / "o"),
                          "--split", "dev", "--languages", "en", "--per-lang", "1", "--engines", "espeak"]) == 2
    assert "has no en dev sentences" in capsys.readouterr().err


class _Generated(Exception):
    """Stops `train` right after it asked for its data."""


def test_train_command_generates_its_data_from_the_corpus_with_the_engines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import app.training.data as data

    asked: list[dict] = []

    def fake_generate(*args: object, **kwargs: object) -> None:
        asked.append(kwargs)
        raise _Generated

    monkeypatch.setattr(data, "generate_dataset", fake_generate)
    with pytest.raises(_Generated):
        training_main(["train", "--work-dir", str(tmp_path), "--corpus", str(tmp_path / "corpus"),
                       "--engines", "pico", "espeak", "--no-progress", "--threads", "1"])
    assert asked[0]["corpus_dir"] == tmp_path / "corpus" and asked[0]["engines"] == ("pico", "espeak")


def test_model_card_names_the_corpus_sources_and_engines() -> None:
    from app.training.card import _data_lines

    lines = _data_lines({"engines": ["espeak", "pico"], "espeak_version": "eSpeak NG 1.51", "text_source": {
        "corpus": "runs/corpus", "corpus_manifest": {"sources": {"fillets-fr": {
            "package": "fillets-ng-data", "version": "1.0.1-1.1", "licence": "GPL-2"}}}}})
    assert "espeak and pico voices" in lines and "fillets-ng-data 1.0.1-1.1, GPL-2" in lines
    assert "random sequences" not in lines


@needs_espeak
def test_speech_command_renders_word_lists_that_hold_no_eval_sentence(tmp_path: Path) -> None:
    assert training_main(["speech", "--word-lists", "--out", str(tmp_path / "o"), "--split", "train",
                          "--languages", "en", "--per-lang", "4", "--workers", "1", "--plain"]) == 0
    texts_written = [c.text for c in load_dataset(tmp_path / "o" / "train")]
    words = set(texts.vocabulary("en"))
    assert len(set(texts_written)) == 4
    # Each a string of the language's frequent words, lowercase and unpunctuated, as the word-list streams make.
    assert all(3 <= len(t.split()) <= 8 and set(t.split()) <= words for t in texts_written)
    assert not set(texts_written) & set(texts.eval_sentences("en", EVAL_RESERVE, seed=0))
    manifest = json.loads((tmp_path / "o" / "train" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["text_source"]["source"] == texts.TEXT_SOURCE


def test_word_lists_and_a_corpus_are_refused_together(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        training_main(["speech", "--word-lists", "--corpus", "runs/corpus"])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
