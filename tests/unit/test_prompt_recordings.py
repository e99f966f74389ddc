"""Recorded prompts as a dataset: transcripts read and cleaned, G.722 decoded, the held-out split by sentence."""

from __future__ import annotations

import gzip
from pathlib import Path

import av
import numpy as np
import pytest

from app.training.data import load_dataset
from app.training.prompt_recordings import SPEAKERS, prompts, read_g722, transcripts, write_dataset

SR = 16_000
# G.722's analysis and synthesis filters delay the signal by 22 samples.
CODEC_DELAY = 22
LINES = [
    "; Core Asterisk Sounds in English",
    "",
    "hello: Hello there.",
    "thanks: Thank you.",
    "press-five: Press 5 now.",  # a digit: the transcript would not say what is spoken
    "beep: [this is a simple beep tone]",
    "no-file: This prompt has no recording.",
    "dictate/forhelp: Ask the operator for help.",
    "goodbye: Goodbye.",
]


def _tone(seconds: float, hz: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _write_g722(path: Path, audio: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="g722") as out:
        stream = out.add_stream("g722", rate=SR, layout="mono")
        frame = av.AudioFrame.from_ndarray((audio * 32767).astype(np.int16)[None], format="s16", layout="mono")
        frame.sample_rate = SR
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """A file system root holding the English text and G.722 packages' files."""
    doc = tmp_path / "usr/share/doc/asterisk-core-sounds-en"
    doc.mkdir(parents=True)
    with gzip.open(doc / "core-sounds-en.txt.gz", "wt", encoding="utf-8") as out:
        out.write("\n".join(LINES) + "\n")
    sounds = tmp_path / "usr/share/asterisk/sounds" / SPEAKERS["en"]
    for i, name in enumerate(("hello", "thanks", "press-five", "beep", "dictate/forhelp", "goodbye")):
        _write_g722(sounds / f"{name}.g722", _tone(0.5 + 0.25 * i, 300 + 100 * i))
    return tmp_path


def test_transcripts_and_usable_prompts(root: Path) -> None:
    raw = transcripts("en", root)
    assert raw["press-five"] == "Press 5 now." and raw["dictate/forhelp"] == "Ask the operator for help."
    assert "; Core Asterisk Sounds in English" not in raw.values()
    usable = {p.name: p.text for split in ("train", "eval") for p in prompts("en", split, root)}
    # Digits and bracketed descriptions are refused, a prompt without a recording is skipped, one word is kept.
    assert usable == {"hello": "Hello there.", "thanks": "Thank you.", "dictate/forhelp": "Ask the operator for help.",
                      "goodbye": "Goodbye."}
    train = {p.name for p in prompts("en", "train", root)}
    held_out = {p.name for p in prompts("en", "eval", root)}
    assert not train & held_out and train | held_out == set(usable)


def test_g722_is_decoded_to_the_recorded_samples(tmp_path: Path) -> None:
    tone = _tone(1.0, 440)
    _write_g722(tmp_path / "tone.g722", tone)
    decoded = read_g722(tmp_path / "tone.g722")
    assert decoded.dtype == np.float32 and decoded.size == tone.size
    shifted = decoded[CODEC_DELAY + 200:]
    assert np.corrcoef(tone[200:200 + shifted.size], shifted)[0, 1] > 0.99


def test_dataset_holds_each_prompt_as_recorded_then_augmented(root: Path, tmp_path: Path) -> None:
    dest = write_dataset(tmp_path / "out", "train", ("en",), copies=2, root=root)
    dataset = load_dataset(dest)
    names = [p.name for p in prompts("en", "train", root)]
    assert len(dataset) == 2 * len(names) and dataset.manifest["counts"] == {"en": 2 * len(names)}
    assert dataset.manifest["text_source"]["licence"] == "CC-BY-SA-3.0"
    sounds = root / "usr/share/asterisk/sounds" / SPEAKERS["en"]
    for k, name in enumerate(names):
        recorded, degraded = dataset[2 * k], dataset[2 * k + 1]
        assert recorded.text == degraded.text and recorded.lang == "en"
        original = read_g722(sounds / f"{name}.g722")
        np.testing.assert_allclose(recorded.audio, original, atol=1e-3)  # stored as float16
        assert degraded.audio.size != original.size or not np.allclose(degraded.audio, original, atol=1e-3)


def test_missing_package_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="asterisk-core-sounds-fr"):
        transcripts("fr", tmp_path)
    with pytest.raises(ValueError, match="copies"):
        write_dataset(tmp_path / "out", "train", ("en",), copies=0, root=tmp_path)
