"""Waveform augmentation of synthetic speech: room reverberation, noise, telephone band and gain.

Synthetic voices are studio-clean; real clips are not. Each clip gets its own draw of these effects from its own
RNG (`data.clip_rng`), so a seed gives the same audio on any machine and with any worker count.

Written with numpy rather than with `audiomentations`: that package pulls librosa, numba, scikit-learn and scipy
(several hundred MB) into the service's environment for four short filters.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from app.training import synth

SR = synth.SAMPLE_RATE


@dataclass(frozen=True)
class DegradeSpec:
    """Probabilities and ranges of each effect (recorded in the dataset manifest)."""

    reverb_prob: float = 0.35
    rt60_s: tuple[float, float] = (0.15, 0.8)  # time for the room's tail to fall by 60 dB
    drr_db: tuple[float, float] = (-2.0, 12.0)  # direct-to-reverberant energy ratio
    # Measured with whisper-base reading Pico's English (docs/training-data.md): noise at 5-35 dB doubled its WER
    # (21% -> 42%), so the noise floor starts at 10 dB and a third of the clips stay clean.
    noise_prob: float = 0.65
    snr_db: tuple[float, float] = (10.0, 40.0)
    telephone_prob: float = 0.1
    gain_db: tuple[float, float] = (-12.0, 3.0)
    silence_s: tuple[float, float] = synth.SILENCE_S

    def as_dict(self) -> dict:
        return asdict(self)


def room_impulse(rng: np.random.Generator, rt60_s: float, drr_db: float, sr: int = SR) -> np.ndarray:
    """A synthetic room response: a unit direct path, then exponentially decaying noise with the given RT60 and
    direct-to-reverberant ratio (Schroeder's statistical model of a diffuse tail)."""
    n = max(int(rt60_s * sr), 2)
    t = np.arange(1, n) / sr
    tail = rng.standard_normal(n - 1) * np.exp(-3 * math.log(10) * t / rt60_s)  # -60 dB at rt60
    tail *= math.sqrt(10 ** (-drr_db / 10) / max(float(np.sum(tail**2)), 1e-12))
    return np.concatenate([[1.0], tail])


def convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Full linear convolution by FFT (the response's tail extends the clip)."""
    size = 1 << (x.size + h.size - 2).bit_length()
    return np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[: x.size + h.size - 1]


def add_noise(x: np.ndarray, rng: np.random.Generator, snr_db: float, speech_power: float) -> np.ndarray:
    """`x` plus white or pink noise at `snr_db` below `speech_power` (the speech's own, not the padded clip's)."""
    noise = synth.pink_noise(x.size, rng) if rng.random() < 0.5 else rng.standard_normal(x.size)
    scale = math.sqrt(speech_power / max(float(np.mean(noise**2)), 1e-12) / 10 ** (snr_db / 10))
    return x + noise * scale


def telephone(x: np.ndarray, sr: int = SR) -> np.ndarray:
    """A narrow-band telephone channel: 300-3400 Hz, 8 kHz sampling, 8-bit mu-law (G.711), back to `sr`."""
    spec = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(x.size, 1 / sr)
    spec[(freqs < 300) | (freqs > 3400)] = 0
    narrow = synth.resample(np.fft.irfft(spec, x.size).astype(np.float32), sr, 8000)
    mu = 255.0
    peak = max(float(np.abs(narrow).max()), 1e-9)
    y = np.sign(narrow) * np.log1p(mu * np.abs(narrow / peak)) / math.log1p(mu)
    y = np.round(y * 127) / 127  # 8 bits
    narrow = np.sign(y) * np.expm1(np.abs(y) * math.log1p(mu)) / mu * peak
    return synth.resample(narrow.astype(np.float32), 8000, sr)[: x.size].astype(np.float64)


def degrade(speech: np.ndarray, rng: np.random.Generator, spec: DegradeSpec = DegradeSpec()) -> np.ndarray:
    """Speech normalised to a -6 dBFS peak and padded with silence, then maybe reverberated, maybe noisy, maybe
    band-limited to a telephone channel, and scaled by a random gain (rescaled, never clipped, above 0.99).

    Every draw is made whether or not its effect applies, so one effect's probability does not shift the
    others' draws (changing `telephone_prob` keeps each clip's room and noise)."""
    speech = speech.astype(np.float64) * (0.5 / max(float(np.abs(speech).max()), 1e-9))
    lead, trail = (int(rng.uniform(*spec.silence_s) * SR) for _ in range(2))
    x = np.concatenate([np.zeros(lead), speech, np.zeros(trail)])
    use_reverb, use_noise, use_phone = (rng.random() < p for p in
                                        (spec.reverb_prob, spec.noise_prob, spec.telephone_prob))
    rt60, drr, snr, gain = (rng.uniform(*r) for r in (spec.rt60_s, spec.drr_db, spec.snr_db, spec.gain_db))
    room_seed, noise_seed = rng.integers(2**63, size=2)
    if use_reverb:
        x = convolve(x, room_impulse(np.random.default_rng(room_seed), rt60, drr))[: x.size]
    if use_noise:
        x = add_noise(x, np.random.default_rng(noise_seed), snr, float(np.mean(speech**2)) or 1e-12)
    if use_phone:
        x = telephone(x)
    x *= 10 ** (gain / 20)
    peak = float(np.abs(x).max())
    if peak > 0.99:
        x *= 0.99 / peak
    return x.astype(np.float32)
