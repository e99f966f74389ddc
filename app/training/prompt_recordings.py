"""Real speech with transcripts from Debian's `asterisk-core-sounds-*` packages (telephone-system prompts).

One professional speaker per language (en: Allison, es: Allison, Mexican Spanish, fr: June, Canadian French),
recorded at 16 kHz and stored as G.722 (`-g722` packages); the transcripts are the `core-sounds-<lang>.txt`
the text packages ship. Licence: CC-BY-SA-3.0 (the packages' copyright files). `make training-deps` installs
them.

A prompt's split is the corpus's keyed hash of its sentence (`corpus.assign_split`) with its own fractions, so
the same sentence is always in the same split, and the held-out prompts are a real-speech test set the
training never hears. Prompts are cleaned like corpus sentences (digits, `#`, `*` and other symbols are
rejected, as the transcript would not say what is spoken) but may be one word long.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from app.training import corpus, data, degrade

LANGUAGES = ("en", "es", "fr")
SPEAKERS = {"en": "en_US_f_Allison", "es": "es_MX_f_Allison", "fr": "fr_CA_f_June"}
PACKAGES = tuple(f"asterisk-core-sounds-{lang}{suffix}" for lang in LANGUAGES for suffix in ("", "-g722"))
LICENCE = "CC-BY-SA-3.0"
SAMPLE_RATE = 16_000
# A quarter of the prompts are held out: about 100 per language, enough for a per-language figure.
EVAL_FRACTION = 0.25


@dataclass(frozen=True)
class Prompt:
    """One recorded prompt: its sound file and cleaned transcript."""

    lang: str
    name: str
    text: str
    path: Path


def transcripts(lang: str, root: Path = Path("/")) -> dict[str, str]:
    """Prompt name -> raw transcript, from the package's `core-sounds-<lang>.txt.gz`."""
    path = root / f"usr/share/doc/asterisk-core-sounds-{lang}/core-sounds-{lang}.txt.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: install asterisk-core-sounds-{lang} (make training-deps)")
    entries: dict[str, str] = {}
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if line.startswith(";") or ": " not in line:
                continue
            name, text = line.split(": ", 1)
            entries[name.strip()] = text.strip()
    return entries


def prompts(lang: str, split: str, root: Path = Path("/")) -> list[Prompt]:
    """The usable prompts of `lang` in `split` ("train" or "eval"), in name order."""
    sounds = root / "usr/share/asterisk/sounds" / SPEAKERS[lang]
    found = []
    for name, raw in sorted(transcripts(lang, root).items()):
        text = corpus.clean_sentence(raw, lang, min_words=1)
        path = sounds / f"{name}.g722"
        if text is None or not path.is_file():
            continue
        held_out = corpus.assign_split(corpus.sentence_key(text), dev_fraction=0.0, eval_fraction=EVAL_FRACTION)
        if (held_out == "eval") == (split == "eval"):
            found.append(Prompt(lang, name, text, path))
    return found


def read_g722(path: Path) -> np.ndarray:
    """A raw G.722 file as 16 kHz mono float32 (PyAV's g722 demuxer and decoder; the files have no header)."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    chunks = []
    with av.open(str(path), format="g722") as container:
        for frame in container.decode(container.streams.audio[0]):
            chunks.extend(out.to_ndarray()[0] for out in resampler.resample(frame))
    chunks.extend(out.to_ndarray()[0] for out in resampler.resample(None))
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def write_dataset(out_dir: Path, split: str, langs: tuple[str, ...] = LANGUAGES, max_seconds: float = 10.0,
                  copies: int = 1, seed: int = 0, root: Path = Path("/")) -> Path:
    """Write `out_dir/split` in the dataset layout of `app.training.data` (readable by `encode-cache`).

    Each prompt once as recorded and `copies - 1` more times through `degrade` (room, noise, telephone band,
    gain; each copy's draw from `data.clip_rng`), so one studio speaker is also heard in other conditions.
    """
    if copies < 1:
        raise ValueError(f"copies must be at least 1, got {copies}")
    if split not in data.SPLITS:
        raise ValueError(f"split must be one of {data.SPLITS}, got {split!r}")
    dest = Path(out_dir) / split
    dest.mkdir(parents=True, exist_ok=True)
    for stale in [*dest.glob("shard-*.npz"), dest / data.MANIFEST]:
        stale.unlink(missing_ok=True)
    clips, counts, too_long, seconds = [], Counter(), Counter(), 0.0
    for lang in langs:
        for index, prompt in enumerate(prompts(lang, split, root)):
            audio = read_g722(prompt.path)
            if audio.size > max_seconds * SAMPLE_RATE:
                too_long[lang] += 1
                continue
            for copy in range(copies):
                rng = data.clip_rng(seed, f"asterisk-{split}-{copy}", lang, index)
                heard = audio if copy == 0 else degrade.degrade(audio, rng)
                clips.append((prompt.text, lang, heard.astype(np.float16)))
                counts[lang] += 1
                seconds += heard.size / SAMPLE_RATE
    if not clips:
        raise ValueError(f"no {split} prompts found for {', '.join(langs)}")
    data.write_shard(dest / "shard-00000.npz", clips)
    manifest = {
        "generator_version": data.GENERATOR_VERSION, "split": split, "languages": list(langs),
        "counts": dict(counts), "total": len(clips), "too_long": dict(too_long), "hours": round(seconds / 3600, 4),
        "sample_rate": SAMPLE_RATE, "audio_dtype": "float16", "max_seconds": max_seconds, "copies": copies, "seed": seed,
        "shards": [{"file": "shard-00000.npz", "clips": len(clips)}],
        "text_source": {"source": "asterisk-core-sounds transcripts", "licence": LICENCE,
                        "speakers": {lang: SPEAKERS[lang] for lang in langs}, "eval_fraction": EVAL_FRACTION,
                        "packages": {p: corpus.package_version(p) for p in PACKAGES}},
    }
    (dest / data.MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
    return dest
