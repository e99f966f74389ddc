"""Many voices for training speech: espeak-ng's voice variants and SVOX Pico, rotated per utterance.

Each clip's voice, rate and pitch are drawn from that clip's own RNG (`data.clip_rng`), so a dataset hears the
same voice for a given clip whatever the worker count. The engine is drawn first, uniformly among those that
speak the language, then a voice of that engine: espeak-ng has dozens of variants per language and Pico one or
two, so drawing from one pooled list would almost never pick Pico, which sounds far less robotic.
"""

from __future__ import annotations

import html
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.training import synth

ENGINES: tuple[str, ...] = ("espeak", "pico")

# SVOX Pico (Debian non-free `libttspico-utils`): one female voice per locale.
PICO_VOICES: dict[str, tuple[str, ...]] = {
    "en": ("en-US", "en-GB"), "de": ("de-DE",), "fr": ("fr-FR",), "es": ("es-ES",),
}
# Pico's markup levels are percentages of its default; beyond about +-25% its voices start to break up.
PICO_SPEED = (80, 120)
PICO_PITCH = (80, 125)


@dataclass(frozen=True)
class VoiceDraw:
    """One utterance's voice: engine, voice name, rate and pitch (in the engine's own units)."""

    engine: str
    voice: str
    speed: int
    pitch: int


def engines_for(lang: str, engines: tuple[str, ...] = ENGINES) -> tuple[str, ...]:
    """The engines among `engines` that speak `lang`."""
    speaks = {"espeak": lang in synth.VOICES, "pico": lang in PICO_VOICES}
    unknown = set(engines) - set(ENGINES)
    if unknown:
        raise ValueError(f"unknown TTS engines {sorted(unknown)}; expected some of {ENGINES}")
    return tuple(e for e in engines if speaks[e])


def draw_voice(lang: str, rng: np.random.Generator, engines: tuple[str, ...] = ENGINES) -> VoiceDraw:
    """A voice for one utterance of `lang`, a pure function of `rng`'s state."""
    usable = engines_for(lang, engines)
    if not usable:
        raise ValueError(f"none of the engines {engines} speaks {lang!r}")
    engine = usable[int(rng.integers(len(usable)))]
    if engine == "pico":
        names, speed, pitch = PICO_VOICES[lang], PICO_SPEED, PICO_PITCH
    else:
        names, speed, pitch = tuple(synth.VOICES[lang]), synth.SPEED_WPM, synth.PITCH
    voice = names[int(rng.integers(len(names)))]
    return VoiceDraw(engine, voice, int(rng.integers(speed[0], speed[1] + 1)),
                     int(rng.integers(pitch[0], pitch[1] + 1)))


def pico_binary() -> str:
    """Path of pico2wave, or a RuntimeError that says how to get it."""
    path = shutil.which("pico2wave")
    if path is None:
        raise RuntimeError("pico2wave not found: install the Debian package libttspico-utils (make training-deps)")
    return path


def run_pico(text: str, voice: str, speed: int, pitch: int) -> tuple[np.ndarray, int]:
    """Synthesize `text` with SVOX Pico; returns (float32 mono samples, sample rate)."""
    # Pico reads its input as markup: escape the text, then wrap it in the rate and pitch elements.
    markup = f"<speed level='{speed}'><pitch level='{pitch}'>{html.escape(text)}</pitch></speed>"
    # pico2wave only writes to a named file ending in .wav.
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        proc = subprocess.run([pico_binary(), "-l", voice, "-w", str(out), "--", markup],
                              capture_output=True, check=False, timeout=60)
        if proc.returncode != 0 or not out.is_file():
            raise RuntimeError(f"pico2wave failed for voice {voice}: {proc.stderr.decode(errors='replace')}")
        return synth.decode_wav(out.read_bytes())


def speak(text: str, draw: VoiceDraw) -> np.ndarray:
    """`text` spoken by `draw`'s voice: 16 kHz float32, the engine's own leading and trailing silence cut."""
    if draw.engine == "pico":
        pcm, rate = run_pico(text, draw.voice, draw.speed, draw.pitch)
    else:
        pcm, rate = synth.run_espeak(text, draw.voice, draw.speed, draw.pitch)
    return synth.trim_silence(synth.resample(pcm, rate, synth.SAMPLE_RATE))


def available_engines() -> tuple[str, ...]:
    """The engines installed on this machine."""
    found = {"espeak": shutil.which("espeak-ng"), "pico": shutil.which("pico2wave")}
    return tuple(e for e in ENGINES if found[e])
