"""Reproducible synthetic multilingual speech datasets: sharded writer and lazy reader.

Layout of a dataset directory (one per split):
  manifest.json         counts, seed, languages, voices, text source, generator version
  shard-00000.npz ...   audio (float16, clips concatenated), offsets (int64, n+1),
                        texts and langs (unicode arrays; no pickle needed to read)
"""

from __future__ import annotations

import json
import multiprocessing as mp
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.training import corpus, degrade, synth, texts, voices

GENERATOR_VERSION = "1"
SHARD_SIZE = 2000
SPLITS = ("train", "eval")  # a corpus adds "dev" (`corpus.SPLIT_NAMES`); the random-word generator has none
# Training sentences avoid this many eval sentences per language, so any eval set of
# up to this size, generated later or earlier with the same seed, is truly held out.
EVAL_RESERVE = 1000
MANIFEST = "manifest.json"


@dataclass
class Clip:
    """One utterance: 16 kHz mono float32 audio, its transcript and language code."""

    audio: np.ndarray
    text: str
    lang: str


@dataclass(frozen=True)
class _Task:
    seed: int
    split: str
    lang: str
    index: int
    text: str
    max_samples: int
    # Empty: the original recipe (espeak-ng, `synth.augment`); else natural-speech rendering with these engines
    # rotated per clip and `degrade`'s room, noise, telephone and gain.
    engines: tuple[str, ...] = ()
    plain: bool = False  # `synth.speak_plain`: the default voice, clean (a check set, never training data)


def clip_rng(seed: int, split: str, lang: str, index: int) -> np.random.Generator:
    """The RNG for one clip, a pure function of (seed, split, lang, index).

    Because no state flows between clips, the output does not depend on how clips
    are spread over worker processes.
    """
    if seed < 0:
        raise ValueError("seed must be non-negative")
    entropy = [seed, zlib.crc32(split.encode()), zlib.crc32(lang.encode()), index]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def split_sentences(lang: str, split: str, n: int, seed: int, eval_reserve: int = EVAL_RESERVE,
                    corpus_dir: Path | None = None) -> list[str]:
    """The `n` sentences for (lang, split, seed); train never contains the eval reserve.

    With `corpus_dir` they are the corpus's split (`diffusion-asr corpus`; eval is its held-out split), repeated
    in order when `n` exceeds it: a repeated sentence is a new clip index, so it gets another voice and room.
    """
    if corpus_dir is not None:
        pool = corpus.load_split(corpus_dir, lang, split)
        if not pool:
            raise ValueError(f"the corpus at {corpus_dir} has no {lang} {split} sentences")
        return [pool[i % len(pool)] for i in range(n)]
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} (a corpus adds dev), got {split!r}")
    if split == "eval":
        if n > eval_reserve:
            raise ValueError(f"eval n_per_lang={n} exceeds the reserve of {eval_reserve} held out from training")
        return texts.eval_sentences(lang, n, seed)
    return texts.train_eval_split(lang, n, eval_reserve, seed)[0]


def _shorten(text: str, lang: str) -> str:
    """Drop the last word (last character for Mandarin, which has no spaces)."""
    if lang == "zh":
        return text[:-1]
    return text.rsplit(" ", 1)[0] if " " in text else ""


def _render(task: _Task) -> tuple[str, str, np.ndarray | None, bool]:
    """Synthesize one task; returns (lang, final text, float16 audio or None, shortened?)."""
    text, shortened = task.text, False
    while text:
        # A fresh RNG per attempt keeps the voice, speed and pitch of the shortened retry.
        rng = clip_rng(task.seed, task.split, task.lang, task.index)
        if task.plain:
            audio = synth.speak_plain(text, task.lang)
        elif task.engines:
            audio = render_natural(text, task.lang, rng, task.engines)
        else:
            audio = synth.synthesize(text, task.lang, rng)
        if audio.size == 0:
            return task.lang, text, None, shortened
        if audio.size <= task.max_samples:
            return task.lang, text, audio.astype(np.float16), shortened
        text, shortened = _shorten(text, task.lang), True
    return task.lang, task.text, None, shortened


def render_natural(text: str, lang: str, rng: np.random.Generator, engines: tuple[str, ...]) -> np.ndarray:
    """One clip of the natural-speech recipe: a voice drawn from `engines`, then `degrade`; empty when the
    engine spoke nothing audible (under 50 ms)."""
    speech = voices.speak(text, voices.draw_voice(lang, rng, engines))
    if speech.size < synth.MIN_SPEECH_SAMPLES:
        return np.zeros(0, np.float32)
    return degrade.degrade(speech, rng)


def write_shard(path: Path, clips: list[tuple[str, str, np.ndarray]]) -> None:
    """Write one shard: concatenated float16 audio with offsets, texts and langs."""
    lengths = [a.size for _, _, a in clips]
    np.savez(
        path,
        audio=np.concatenate([a for _, _, a in clips]),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        texts=np.array([t for t, _, _ in clips], dtype=str),
        langs=np.array([lang for _, lang, _ in clips], dtype=str),
    )


def _results(tasks: list[_Task], workers: int) -> Iterable[tuple[str, str, np.ndarray | None, bool]]:
    """Render tasks in order, in-process for one worker, else in a process pool."""
    if workers <= 1:
        yield from map(_render, tasks)
        return
    # spawn, not fork: the parent may have torch or other threaded libraries loaded.
    with mp.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(_render, tasks, chunksize=16)


def generate_dataset(
    out_dir: Path,
    langs: list[str],
    n_per_lang: int,
    seed: int,
    split: str,
    workers: int = 2,
    max_seconds: float = 8.0,
    shard_size: int = SHARD_SIZE,
    eval_reserve: int = EVAL_RESERVE,
    corpus_dir: Path | None = None,
    engines: tuple[str, ...] = (),
    plain: bool = False,
) -> Path:
    """Synthesize `n_per_lang` clips per language into `out_dir/split`; returns that directory.

    Clips are interleaved across languages so every shard is mixed. Over-long clips are
    shortened word by word until they fit `max_seconds`; clips espeak-ng cannot speak are
    skipped and counted in the manifest. With `corpus_dir` the sentences are the corpus's natural ones; with
    `engines` each clip is rendered by `render_natural` (voices rotated over those engines, `degrade`); with
    `plain` by `synth.speak_plain` (each language's default voice, no effects).
    """
    if plain and engines:
        raise ValueError("a plain dataset speaks with the default espeak-ng voice only: give no engines")
    synth.espeak_binary()  # fail fast, before spawning workers
    dest = Path(out_dir) / split
    dest.mkdir(parents=True, exist_ok=True)
    for stale in [*dest.glob("shard-*.npz"), dest / MANIFEST]:
        stale.unlink(missing_ok=True)  # never mix shards from an earlier run
    max_samples = int(max_seconds * synth.SAMPLE_RATE)
    if "pico" in engines:
        voices.pico_binary()
    sentences = {lang: split_sentences(lang, split, n_per_lang, seed, eval_reserve, corpus_dir) for lang in langs}
    tasks = [
        _Task(seed, split, lang, i, sentences[lang][i], max_samples, tuple(engines), plain)
        for i in range(n_per_lang) for lang in langs
    ]
    counts: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    shortened: Counter[str] = Counter()
    shards: list[dict[str, object]] = []
    buffer: list[tuple[str, str, np.ndarray]] = []
    seconds = 0.0

    def flush() -> None:
        name = f"shard-{len(shards):05d}.npz"
        write_shard(dest / name, buffer)
        shards.append({"file": name, "clips": len(buffer)})
        buffer.clear()

    for lang, text, audio, was_shortened in _results(tasks, workers):
        shortened[lang] += was_shortened
        if audio is None:
            skipped[lang] += 1
            continue
        buffer.append((text, lang, audio))
        counts[lang] += 1
        seconds += audio.size / synth.SAMPLE_RATE
        if len(buffer) >= shard_size:
            flush()
    if buffer:
        flush()
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "split": split,
        "seed": seed,
        "languages": list(langs),
        "n_per_lang": n_per_lang,
        "counts": {lang: counts[lang] for lang in langs},
        "total": sum(counts.values()),
        "skipped": {lang: skipped[lang] for lang in langs},
        "shortened": {lang: shortened[lang] for lang in langs},
        "hours": round(seconds / 3600, 4),
        "sample_rate": synth.SAMPLE_RATE,
        "audio_dtype": "float16",
        "max_seconds": max_seconds,
        "shards": shards,
        **_voices_manifest(langs, engines, plain),
        "text_source": _text_source(langs, eval_reserve, corpus_dir),
        "espeak_version": synth.espeak_version(),
    }
    # Written last: a directory without a manifest is an interrupted run, not a dataset.
    (dest / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
    return dest


def _voices_manifest(langs: list[str], engines: tuple[str, ...], plain: bool) -> dict:
    """What spoke the clips and how they were degraded, for whichever rendering the dataset used."""
    if plain:
        return {"voices": {lang: [synth.BASE_VOICES[lang][0]] for lang in langs},
                "voice_ranges": {"espeak": {"speed_wpm": synth.DEFAULT_SPEED_WPM, "pitch": synth.DEFAULT_PITCH}},
                "augmentation": None}
    return _natural_manifest(langs, engines) if engines else _original_manifest(langs)


def _original_manifest(langs: list[str]) -> dict:
    """Voices and augmentation of the original recipe."""
    return {
        "voices": {lang: synth.VOICES[lang] for lang in langs},
        "augmentation": {
            "speed_wpm": synth.SPEED_WPM, "pitch": synth.PITCH, "gain_db": synth.GAIN_DB,
            "snr_db": synth.SNR_DB, "noise": "white or pink", "silence_s": synth.SILENCE_S,
        },
    }


def _text_source(langs: list[str], eval_reserve: int, corpus_dir: Path | None) -> dict:
    """Where the sentences came from: the corpus (with its manifest), or wordfreq's random word strings."""
    if corpus_dir is not None:
        path = Path(corpus_dir) / corpus.MANIFEST
        return {"corpus": str(corpus_dir),
                "corpus_manifest": json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None}
    return {
        "source": texts.TEXT_SOURCE,
        "vocab_size": {lang: texts.DEFAULT_VOCAB[lang] for lang in langs},
        "words_per_sentence": [texts.DEFAULT_MIN_WORDS, texts.DEFAULT_MAX_WORDS],
        "eval_reserve": eval_reserve,
    }


def _natural_manifest(langs: list[str], engines: tuple[str, ...]) -> dict:
    """Voices and augmentation of the natural-speech recipe."""
    return {
        "engines": list(engines),
        "voices": {lang: {"espeak": synth.VOICES[lang] if "espeak" in voices.engines_for(lang, engines) else [],
                          "pico": list(voices.PICO_VOICES.get(lang, ())) if "pico" in engines else []}
                   for lang in langs},
        "voice_ranges": {"espeak": {"speed_wpm": synth.SPEED_WPM, "pitch": synth.PITCH},
                         "pico": {"speed_pct": voices.PICO_SPEED, "pitch_pct": voices.PICO_PITCH}},
        "augmentation": degrade.DegradeSpec().as_dict(),
    }


class ClipDataset:
    """Lazy reader over a generated dataset; holds at most one shard in memory."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.exists():
            raise FileNotFoundError(f"{manifest_path} missing: not a dataset, or generation was interrupted")
        self.manifest: dict = json.loads(manifest_path.read_text(encoding="utf-8"))
        self._files = [self.path / s["file"] for s in self.manifest["shards"]]
        self._starts = np.cumsum([0] + [s["clips"] for s in self.manifest["shards"]])
        self._cached: tuple[int, dict[str, np.ndarray]] | None = None

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _shard(self, k: int) -> dict[str, np.ndarray]:
        if self._cached is None or self._cached[0] != k:
            with np.load(self._files[k], allow_pickle=False) as z:
                self._cached = (k, {name: z[name] for name in z.files})
        return self._cached[1]

    def _clip(self, shard: dict[str, np.ndarray], j: int) -> Clip:
        a, b = shard["offsets"][j], shard["offsets"][j + 1]
        return Clip(shard["audio"][a:b].astype(np.float32), str(shard["texts"][j]), str(shard["langs"][j]))

    def __getitem__(self, i: int) -> Clip:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        return self._clip(self._shard(k), i - int(self._starts[k]))

    def __iter__(self) -> Iterator[Clip]:
        for k in range(len(self._files)):
            yield from self.shard(k)

    @property
    def shard_starts(self) -> list[int]:
        """Index of each shard's first clip (clips are numbered across shards in order)."""
        return [int(start) for start in self._starts[:-1]]

    def shard(self, k: int) -> Iterator[Clip]:
        """The clips of shard `k`, in order."""
        shard = self._shard(k)
        for j in range(len(shard["texts"])):
            yield self._clip(shard, j)


def load_dataset(path: Path) -> ClipDataset:
    """Open a dataset directory written by generate_dataset (lazy, shard at a time)."""
    return ClipDataset(path)
