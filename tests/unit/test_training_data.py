"""Fast checks of the synthetic training-data generator (texts, espeak-ng synthesis, shards)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.training import synth
from app.training.data import Clip, generate_dataset, load_dataset, split_sentences
from app.training.texts import LANGS, make_sentences, train_eval_split

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="install the Debian package espeak-ng (make system-deps)"
)

HANZI_ONLY = re.compile(r"[\u4e00-\u9fff]+")
DEVANAGARI_WORDS = re.compile(r"[\u0900-\u0963\u0971-\u097f]+( [\u0900-\u0963\u0971-\u097f]+)*")


@pytest.mark.parametrize("lang", LANGS)
def test_sentences_deterministic_per_seed(lang: str) -> None:
    first = make_sentences(lang, 20, seed=1)
    assert first == make_sentences(lang, 20, seed=1)
    assert first != make_sentences(lang, 20, seed=2)
    assert len(set(first)) == 20


def test_sentence_lengths_follow_word_bounds() -> None:
    for sentence in make_sentences("en", 50, seed=3, min_words=2, max_words=4):
        assert 2 <= len(sentence.split(" ")) <= 4


def test_sentence_stream_is_prefix_stable() -> None:
    assert make_sentences("de", 30, seed=5)[:10] == make_sentences("de", 10, seed=5)


@pytest.mark.parametrize("lang", LANGS)
def test_train_eval_disjoint(lang: str) -> None:
    train, evals = train_eval_split(lang, 1500, 300, seed=0)
    assert len(train) == 1500 and len(evals) == 300
    assert not set(train) & set(evals)


def test_dataset_splits_disjoint_for_any_eval_size() -> None:
    train = set(split_sentences("zh", "train", 2000, seed=4))
    assert not train & set(split_sentences("zh", "eval", 50, seed=4))
    assert not train & set(split_sentences("zh", "eval", 1000, seed=4))


def test_scripts_are_clean() -> None:
    for sentence in make_sentences("zh", 100, seed=0):
        assert HANZI_ONLY.fullmatch(sentence), sentence
    for sentence in make_sentences("hi", 100, seed=0):
        assert DEVANAGARI_WORDS.fullmatch(sentence), sentence
    for lang in ("en", "de", "fr", "es"):
        for sentence in make_sentences(lang, 100, seed=0):
            assert all(word.isalpha() for word in sentence.split(" ")), sentence


def test_resampler_preserves_in_band_tone_and_rejects_alias() -> None:
    sr_in = 22_050
    t = np.arange(sr_in) / sr_in
    y = synth.resample(np.sin(2 * np.pi * 1000 * t).astype(np.float32), sr_in, 16_000)
    assert y.dtype == np.float32 and y.size == 16_000
    ref = np.sin(2 * np.pi * 1000 * np.arange(y.size) / 16_000)
    assert np.abs(y - ref)[500:-500].max() < 1e-3
    # 9 kHz is above the new Nyquist frequency: it must be filtered out, not folded to 7 kHz.
    alias = synth.resample(np.sin(2 * np.pi * 9000 * t).astype(np.float32), sr_in, 16_000)
    assert np.abs(alias[500:-500]).max() < 0.02


def test_missing_espeak_raises_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="install the Debian package espeak-ng"):
        synth.synthesize("hello", "en", np.random.default_rng(0))


def test_every_language_has_several_voices() -> None:
    assert set(synth.VOICES) == set(LANGS)
    assert all(len(voices) >= 10 for voices in synth.VOICES.values())
    assert all(v.startswith("cmn-latn-pinyin") for v in synth.VOICES["zh"])


@needs_espeak
@pytest.mark.parametrize("lang", LANGS)
def test_synthesize_gives_plausible_audio(lang: str) -> None:
    text = make_sentences(lang, 1, seed=11, min_words=3, max_words=4)[0]
    audio = synth.synthesize(text, lang, np.random.default_rng(0))
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.3 <= audio.size / synth.SAMPLE_RATE <= 10
    assert np.isfinite(audio).all()
    assert np.abs(audio).max() <= 1.0


@needs_espeak
def test_synthesize_is_deterministic_for_an_rng_seed() -> None:
    a = synth.synthesize("guten morgen", "de", np.random.default_rng(5))
    b = synth.synthesize("guten morgen", "de", np.random.default_rng(5))
    assert a.tobytes() == b.tobytes()


@needs_espeak
def test_unspeakable_text_gives_empty_audio() -> None:
    assert synth.synthesize("", "en", np.random.default_rng(0)).size == 0


def _read(path: Path) -> list[Clip]:
    return list(load_dataset(path))


@needs_espeak
def test_generate_dataset_is_reproducible(tmp_path: Path) -> None:
    first = generate_dataset(tmp_path / "a", list(LANGS), 2, seed=9, split="train", workers=1)
    second = generate_dataset(tmp_path / "b", list(LANGS), 2, seed=9, split="train", workers=1)
    assert list(first.glob("shard-*.npz"))
    manifest = json.loads((first / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["total"] == 12 and manifest["seed"] == 9 and manifest["languages"] == list(LANGS)
    a, b = _read(first), _read(second)
    assert [(c.text, c.lang) for c in a] == [(c.text, c.lang) for c in b]
    assert all(x.audio.tobytes() == y.audio.tobytes() for x, y in zip(a, b))
    assert {c.lang for c in a} == set(LANGS)
    assert all(c.audio.dtype == np.float32 and c.audio.size > 0 for c in a)
    ds = load_dataset(first)
    assert len(ds) == 12 and ds[-1].text == a[-1].text


@needs_espeak
def test_generate_dataset_independent_of_worker_count(tmp_path: Path) -> None:
    langs = ["en", "zh", "hi"]
    one = _read(generate_dataset(tmp_path / "w1", langs, 2, seed=3, split="eval", workers=1))
    two = _read(generate_dataset(tmp_path / "w2", langs, 2, seed=3, split="eval", workers=2, shard_size=4))
    assert [c.text for c in one] == [c.text for c in two]
    assert all(x.audio.tobytes() == y.audio.tobytes() for x, y in zip(one, two))


@needs_espeak
def test_features_are_the_same_for_any_worker_count(tmp_path: Path) -> None:
    from transformers import WhisperFeatureExtractor

    from app.training.features import extract_features, fast_log_mel

    data = generate_dataset(tmp_path / "data", ["en", "de"], 3, seed=5, split="eval", workers=1, shard_size=2)
    extractor, frames = WhisperFeatureExtractor(), 600  # 80 mels, 10 ms hops: a 6 s window
    one = extract_features(data, tmp_path / "one", extractor, frames, progress=False, workers=1)
    three = extract_features(data, tmp_path / "three", extractor, frames, progress=False, workers=3)
    assert len(load_dataset(data).shard_starts) == 3 and len(three) == 6
    assert np.array_equal(one.features, three.features)
    assert (one.texts, one.langs) == (three.texts, three.langs)
    assert np.array_equal(one.num_samples, three.num_samples)
    # Row i holds clip i (each shard wrote its own rows, none was left empty).
    clips = list(load_dataset(data))
    for i, clip in enumerate(clips):
        assert np.array_equal(three.features[i], fast_log_mel(extractor, clip.audio, frames).numpy().astype(np.float16))
        assert three.texts[i] == clip.text
