"""espeak-ng speech synthesis with light augmentation, for synthetic ASR training clips."""

from __future__ import annotations

import io
import math
import shutil
import subprocess
import wave
from functools import lru_cache

import numpy as np

SAMPLE_RATE = 16_000

# Variants from espeak-ng-data/voices/!v that still sound like speech; the novelty
# ones (whisper, croak, robosoft, ...) were left out so the model hears plausible voices.
VARIANTS: tuple[str, ...] = (
    "", "m1", "m2", "m3", "m4", "m5", "m6", "m7",
    "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3",
)

# Only eSpeak's own voices: the mb-* (MBROLA) voices need the separate mbrola package.
# Mandarin must use cmn-latn-pinyin: the plain `cmn` voice reads many Hanzi as pinyin
# spelled out with English phonemes.
BASE_VOICES: dict[str, tuple[str, ...]] = {
    "en": ("en-us", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc"),
    "de": ("de",),
    "fr": ("fr-fr", "fr-be", "fr-ch"),
    "es": ("es", "es-419"),
    "hi": ("hi",),
    "zh": ("cmn-latn-pinyin",),
}

VOICES: dict[str, list[str]] = {
    lang: [f"{base}+{var}" if var else base for base in bases for var in VARIANTS]
    for lang, bases in BASE_VOICES.items()
}

SPEED_WPM = (130, 200)
PITCH = (30, 70)
# espeak-ng's own defaults (`-s 175 -p 50`): each language's first base voice spoken this way, clean, is the
# plain check set `speak_plain` renders.
DEFAULT_SPEED_WPM = 175
DEFAULT_PITCH = 50
# A rendering shorter than this (50 ms) spoke nothing: the clip is skipped.
MIN_SPEECH_SAMPLES = SAMPLE_RATE // 20
GAIN_DB = (-6.0, 3.0)
SNR_DB = (20.0, 40.0)
SILENCE_S = (0.05, 0.4)
_PEAK_LIMIT = 0.99
# espeak-ng output peaks close to full scale; normalising speech to -6 dBFS first keeps
# the whole -6..+3 dB gain range usable instead of pinning most clips at the limiter.
_REF_PEAK = 0.5


def espeak_binary() -> str:
    """Path of espeak-ng, or a RuntimeError that says how to get it."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise RuntimeError("espeak-ng not found: install the Debian package espeak-ng (apt-get install espeak-ng)")
    return path


def espeak_version() -> str:
    """espeak-ng's version line, recorded in manifests so datasets can be traced.

    The line ends with the data directory ("...: 1.51  Data at: /usr/lib/..."); that part is the machine's
    layout, not the synthesiser's, so it is left out of what datasets and model cards record.
    """
    out = subprocess.run([espeak_binary(), "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip().split("  Data at:")[0].strip()


def run_espeak(text: str, voice: str, speed: int, pitch: int) -> tuple[np.ndarray, int]:
    """Synthesize `text` with espeak-ng; returns (float32 mono samples, sample rate)."""
    # Argument list, never a shell: the text is arbitrary. "--" stops a text starting with "-"
    # from being parsed as an option.
    cmd = [espeak_binary(), "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", "--", text]
    proc = subprocess.run(cmd, capture_output=True, check=False, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"espeak-ng failed for voice {voice}: {proc.stderr.decode(errors='replace')}")
    return decode_wav(proc.stdout)


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Decode 16-bit PCM WAV bytes to float32 mono in [-1, 1]."""
    if not data:
        return np.zeros(0, np.float32), SAMPLE_RATE
    with wave.open(io.BytesIO(data)) as w:
        if w.getsampwidth() != 2:
            raise RuntimeError(f"unexpected WAV sample width {w.getsampwidth()}")
        channels, rate = w.getnchannels(), w.getframerate()
        # espeak-ng writes to a pipe, so it cannot patch the header: the frame count is
        # a 0x7fffffff placeholder. Read what is there instead of trusting it.
        raw = w.readframes(w.getnframes())
    usable = len(raw) - len(raw) % (2 * channels)
    pcm = np.frombuffer(raw[:usable], dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1)
    return pcm, rate


@lru_cache(maxsize=8)
def _polyphase_table(up: int, down: int, zeros: int = 16, beta: float = 8.0) -> tuple[np.ndarray, int]:
    """Kaiser-windowed sinc weights, one row per output phase, and the half-width in taps."""
    # Cut off a little under the lower Nyquist so the transition band does not alias.
    cutoff = 0.5 * min(1.0, up / down) * 0.94  # cycles per input sample
    half = int(math.ceil(zeros / (2 * cutoff)))
    k = np.arange(-half + 1, half + 1)
    tau = np.arange(up)[:, None] / up - k[None, :]  # distance from output instant to each tap
    window = np.i0(beta * np.sqrt(np.clip(1 - (tau / half) ** 2, 0, None))) / np.i0(beta)
    table = 2 * cutoff * np.sinc(2 * cutoff * tau) * window
    table /= table.sum(axis=1, keepdims=True)  # unit DC gain for every phase
    return table.astype(np.float32), half


def resample(x: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited polyphase resampling of a mono float signal (zero-phase, same duration)."""
    if sr_in == sr_out or x.size == 0:
        return x.astype(np.float32, copy=False)
    g = math.gcd(sr_in, sr_out)
    up, down = sr_out // g, sr_in // g
    table, half = _polyphase_table(up, down)
    n_out = int(math.ceil(x.size * up / down))
    padded = np.concatenate([np.zeros(half, np.float32), x.astype(np.float32), np.zeros(half + 1, np.float32)])
    # Row i of `windows` holds the taps k = -half+1..half around input sample i-1.
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half)
    out = np.empty(n_out, np.float32)
    # Outputs p, p+up, p+2*up, ... share one filter phase and their input windows are
    # `down` apart, so each phase is one strided matrix-vector product (5x faster than
    # gathering a window per output sample).
    for p in range(min(up, n_out)):
        count = len(range(p, n_out, up))
        first = (p * down) // up + 1
        out[p::up] = windows[first::down][:count] @ table[(p * down) % up]
    return out


def trim_silence(x: np.ndarray, rel_db: float = -50.0) -> np.ndarray:
    """Cut espeak's own leading/trailing silence so the added silence is what we chose."""
    if x.size == 0:
        return x
    loud = np.flatnonzero(np.abs(x) > np.abs(x).max() * 10 ** (rel_db / 20))
    return x[loud[0] : loud[-1] + 1] if loud.size else x[:0]


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f-power noise by shaping white noise in the frequency domain."""
    size = 1 << max(n - 1, 1).bit_length()  # a power of two: arbitrary FFT sizes can be slow
    spec = np.fft.rfft(rng.standard_normal(size))
    freqs = np.arange(spec.size, dtype=np.float64)
    freqs[0] = 1.0  # avoid dividing by zero; DC is removed below anyway
    noise = np.fft.irfft(spec / np.sqrt(freqs), size)[:n]
    return noise - noise.mean()


def augment(speech: np.ndarray, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Normalise speech to a -6 dBFS peak, pad with random silence, add white or pink noise
    at 20-40 dB SNR, then apply a -6..+3 dB gain (rescaled, never clipped, above 0.99)."""
    lead, trail = (int(rng.uniform(*SILENCE_S) * sr) for _ in range(2))
    speech = speech.astype(np.float64) * (_REF_PEAK / max(float(np.abs(speech).max()), 1e-9))
    x = np.concatenate([np.zeros(lead), speech, np.zeros(trail)])
    noise = pink_noise(x.size, rng) if rng.random() < 0.5 else rng.standard_normal(x.size)
    # SNR against the speech itself, not the padded clip, so silence length does not change it.
    speech_power = float(np.mean(speech**2)) or 1e-12
    noise_power = float(np.mean(noise**2)) or 1e-12
    snr_db = rng.uniform(*SNR_DB)
    x += noise * math.sqrt(speech_power / noise_power / 10 ** (snr_db / 10))
    x *= 10 ** (rng.uniform(*GAIN_DB) / 20)
    peak = float(np.abs(x).max())
    if peak > _PEAK_LIMIT:
        x *= _PEAK_LIMIT / peak  # scale rather than clip: clipping adds distortion the model never sees at test time
    return x.astype(np.float32)


def synthesize(text: str, lang: str, rng: np.random.Generator) -> np.ndarray:
    """Speak `text` in `lang` with a random voice, speed and pitch; 16 kHz float32, augmented.

    Returns an empty array when espeak-ng produces no audible speech, so callers can skip it.
    """
    if lang not in VOICES:
        raise ValueError(f"unsupported language {lang!r}; expected one of {sorted(VOICES)}")
    voice = VOICES[lang][int(rng.integers(len(VOICES[lang])))]
    speed = int(rng.integers(SPEED_WPM[0], SPEED_WPM[1] + 1))
    pitch = int(rng.integers(PITCH[0], PITCH[1] + 1))
    speech = _espeak_speech(text, voice, speed, pitch)
    return augment(speech, rng) if speech.size else speech


def speak_plain(text: str, lang: str) -> np.ndarray:
    """`text` in `lang`'s default espeak-ng voice at the default rate and pitch, no effects: 16 kHz float32,
    silence trimmed; empty when nothing audible was spoken (under 50 ms)."""
    if lang not in BASE_VOICES:
        raise ValueError(f"unsupported language {lang!r}; expected one of {sorted(BASE_VOICES)}")
    return _espeak_speech(text, BASE_VOICES[lang][0], DEFAULT_SPEED_WPM, DEFAULT_PITCH)


def _espeak_speech(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """espeak-ng's rendering at 16 kHz with its silence trimmed; empty when nothing was really spoken."""
    pcm, rate = run_espeak(text, voice, speed, pitch)
    speech = trim_silence(resample(pcm, rate, SAMPLE_RATE))
    return speech if speech.size >= MIN_SPEECH_SAMPLES else np.zeros(0, np.float32)
