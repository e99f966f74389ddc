"""Decoding uploads to 16 kHz mono float32: formats, resampling, limits, typed errors."""

from __future__ import annotations

import io
import json
import struct
import time
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.audio.decode import SAMPLE_RATE, AudioLimits, decode_audio
from app.audio.errors import (
    AudioError,
    AudioTooLargeError,
    AudioTooLongError,
    EmptyAudioError,
    InvalidSamplesError,
    NoAudioStreamError,
    TruncatedAudioError,
    UndecodableAudioError,
)
from app.audio.resample import FrameResampler

from tests.conftest import SHARED_AUDIO

AUDIO_DIR = SHARED_AUDIO
AUDIO_EXTENSIONS = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".aiff", ".aif", ".m4a", ".aac", ".webm", ".sph"}
LIMITS = AudioLimits(max_bytes=50 * 1024 * 1024, max_seconds=3600)


def _shared_files() -> list[Path]:
    if not AUDIO_DIR.is_dir():
        return []
    return sorted(p for p in AUDIO_DIR.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS)


def _manifest_durations() -> dict[str, float]:
    path = AUDIO_DIR / "manifest.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {row["file"]: float(row["duration_s"]) for row in rows if row.get("duration_s")}


def _container_duration(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        if stream.duration is not None:
            return float(stream.duration * stream.time_base)
        return container.duration / av.time_base


def _peak_hz(samples: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / rate)[int(np.argmax(spectrum))])


def _sine(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def _wav_s16(x: np.ndarray, rate: int, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        interleaved = np.repeat(x[:, None], channels, axis=1).reshape(-1)
        w.writeframes((interleaved * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def _wav_f32(interleaved: np.ndarray, rate: int, channels: int) -> bytes:
    """A float WAV (format code 3, IEEE float), which the `wave` module cannot write."""
    data = interleaved.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, channels, rate, rate * channels * 4, channels * 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _encode(codec: str, container_format: str, rate: int, layout: str, seconds: float = 1.0) -> bytes:
    """Encode a 440 Hz sine with PyAV into an in-memory file."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        sample_format = stream.codec_context.format
        channels = len(av.AudioLayout(layout).channels)
        planes = np.tile(_sine(440, seconds, rate), (channels, 1))
        array = planes if sample_format.is_planar else planes.T.reshape(1, -1)
        if sample_format.name.startswith("s16"):
            array = (array * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(array), format=sample_format.name, layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


def _assert_user_message(exc: AudioError) -> None:
    message = str(exc)
    assert message and message.endswith(".") and "\n" not in message
    for internal in ("Errno", "av.", "avcodec", "Traceback", "0x"):
        assert internal not in message


# --- every real clip decodes -------------------------------------------------


@pytest.mark.parametrize("path", _shared_files(), ids=lambda p: p.name)
def test_shared_clip_decodes_to_16k_mono_float(path: Path) -> None:
    expected = _manifest_durations().get(path.name) or _container_duration(path)
    audio = decode_audio(path.read_bytes(), LIMITS)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.size / SAMPLE_RATE - expected) <= 0.05
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0


@pytest.mark.parametrize(
    "codec,container_format,rate,layout",
    [
        ("aac", "mp4", 44100, "stereo"),  # m4a/aac
        ("aac", "adts", 22050, "mono"),
        ("libopus", "webm", 48000, "stereo"),
        ("flac", "matroska", 96000, "5.1"),
        ("pcm_s16be", "aiff", 11025, "mono"),
    ],
)
def test_generated_containers_decode(codec: str, container_format: str, rate: int, layout: str) -> None:
    audio = decode_audio(_encode(codec, container_format, rate, layout), LIMITS)
    # AAC keeps its encoder priming when the container has no edit list.
    assert abs(audio.size / SAMPLE_RATE - 1.0) < 0.1
    assert abs(_peak_hz(audio) - 440) < 3


def test_nist_sphere_decodes() -> None:
    pcm = (_sine(300, 1.0, 8000) * 32767).astype("<i2")
    header = (
        "NIST_1A\n   1024\nsample_rate -i 8000\nchannel_count -i 1\nsample_n_bytes -i 2\n"
        f"sample_byte_format -s2 01\nsample_coding -s3 pcm\nsample_count -i {pcm.size}\nend_head\n"
    ).encode().ljust(1024, b" ")
    audio = decode_audio(header + pcm.tobytes(), LIMITS)
    assert audio.size == SAMPLE_RATE and abs(_peak_hz(audio) - 300) < 3


def test_44k_stereo_wav_is_resampled_with_frequency_and_level_kept() -> None:
    audio = decode_audio(_wav_s16(_sine(1000, 2.0, 44100), 44100, channels=2), LIMITS)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.size - 2 * SAMPLE_RATE) <= 2
    assert abs(_peak_hz(audio) - 1000) < 1.5
    # Identical channels downmix to the same level (channel mean), not 1.41x.
    assert 0.45 < np.abs(audio).max() < 0.55


# --- typed errors ------------------------------------------------------------


def test_empty_bytes() -> None:
    with pytest.raises(EmptyAudioError) as info:
        decode_audio(b"", LIMITS)
    _assert_user_message(info.value)


def test_wav_with_zero_samples_is_empty() -> None:
    with pytest.raises(EmptyAudioError):
        decode_audio(_wav_s16(np.zeros(0, np.float32), 16000), LIMITS)


def test_random_bytes_are_undecodable() -> None:
    with pytest.raises(UndecodableAudioError) as info:
        decode_audio(np.random.default_rng(0).bytes(4096), LIMITS)
    _assert_user_message(info.value)


def test_video_only_container_has_no_audio_stream() -> None:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            image = np.full((32, 32, 3), i * 40, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(NoAudioStreamError) as info:
        decode_audio(buf.getvalue(), LIMITS)
    _assert_user_message(info.value)


def test_subtitle_only_file_has_no_audio_stream() -> None:
    with pytest.raises(NoAudioStreamError):
        decode_audio(b"1\n00:00:01,000 --> 00:00:02,000\nhello\n\n", LIMITS)


# Truncating to 30%: WAV/AIFF headers declare their size, FLAC breaks
# mid-frame and this MP3's Xing frame declares its length, so those are
# refused; Ogg/Opus have no total to compare against and decode the part
# that exists.
@pytest.mark.parametrize(
    "name,truncation_detected",
    [
        ("en_uberi_english.wav", True),
        ("fr_uberi_french.aiff", True),
        ("en_whisper_jfk.flac", True),
        ("zh_uberi_chinese.flac", True),
        ("en_whispercpp_jfk.mp3", True),
        ("und_silero_test.opus", False),
        ("de_fleurs_cuttledoc_000.ogg", False),
    ],
)
def test_truncated_file(name: str, truncation_detected: bool) -> None:
    path = AUDIO_DIR / name
    data = path.read_bytes()
    full_seconds = decode_audio(data, LIMITS).size / SAMPLE_RATE
    cut = data[: int(len(data) * 0.3)]
    if truncation_detected:
        with pytest.raises(TruncatedAudioError) as info:
            decode_audio(cut, LIMITS)
        _assert_user_message(info.value)
    else:
        partial = decode_audio(cut, LIMITS)
        assert 0.1 * full_seconds < partial.size / SAMPLE_RATE < 0.5 * full_seconds


def test_too_large_is_refused_before_decoding() -> None:
    limits = AudioLimits(max_bytes=1024 * 1024, max_seconds=60)
    with pytest.raises(AudioTooLargeError) as info:
        decode_audio(b"\x00" * (1024 * 1024 * 3 // 2), limits)
    assert "1.5 MB" in str(info.value) and "1.0 MB" in str(info.value)
    _assert_user_message(info.value)


def test_too_long_stops_decoding_early(monkeypatch: pytest.MonkeyPatch) -> None:
    pushed = []
    original_push = FrameResampler.push

    def counting_push(self: FrameResampler, frame: av.AudioFrame) -> list[np.ndarray]:
        pushed.append(frame.samples / frame.sample_rate)
        return original_push(self, frame)

    monkeypatch.setattr(FrameResampler, "push", counting_push)
    with pytest.raises(AudioTooLongError) as info:
        decode_audio(_wav_s16(_sine(440, 10.0, 16000), 16000), AudioLimits(max_bytes=10**7, max_seconds=2))
    assert "2 s" in str(info.value)
    _assert_user_message(info.value)
    assert 2.0 < sum(pushed) < 3.0  # stopped at the limit, not after all 10 s


def _silent_flac(seconds: float, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="flac") as container:
        stream = container.add_stream("flac", rate=rate, layout="mono")
        block = np.zeros((1, 65536), np.int16)
        for start in range(0, int(seconds * rate), block.shape[1]):
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


def test_small_file_expanding_to_an_hour_is_refused_quickly() -> None:
    data = _silent_flac(3600)
    assert len(data) < 2 * 1024 * 1024
    # CPU time, not wall time: the machine running the tests may be busy.
    started = time.process_time()
    with pytest.raises(AudioTooLongError):
        decode_audio(data, AudioLimits(max_bytes=10 * 1024 * 1024, max_seconds=30))
    assert time.process_time() - started < 1.0  # a full decode takes ~7 s


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("rate,channels", [(16000, 1), (44100, 2)])
def test_non_finite_samples(bad: float, rate: int, channels: int) -> None:
    samples = np.zeros(rate * channels, np.float32)
    samples[1001] = bad
    with pytest.raises(InvalidSamplesError) as info:
        decode_audio(_wav_f32(samples, rate, channels), LIMITS)
    _assert_user_message(info.value)


def test_float_wav_out_of_range_is_clipped() -> None:
    audio = decode_audio(_wav_f32(np.full(1600, 3.0, np.float32), 16000, 1), LIMITS)
    assert audio.max() == 1.0


# --- nothing but AudioError escapes --------------------------------------------

_HEADERS = [b"", b"RIFF\x24\x00\x00\x00WAVEfmt ", b"fLaC", b"OggS\x00\x02", b"ID3\x03\x00", b"\xff\xfb\x90",
            b"FORM\x00\x00\x00\x20AIFFCOMM", b"\x1aE\xdf\xa3", b"\x00\x00\x00\x18ftypM4A ", b"NIST_1A\n   1024\n"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(head=st.sampled_from(_HEADERS), tail=st.binary(max_size=3000))
def test_arbitrary_bytes_raise_only_audio_errors(head: bytes, tail: bytes) -> None:
    try:
        audio = decode_audio(head + tail, AudioLimits(max_bytes=10**6, max_seconds=60))
    except AudioError as exc:
        _assert_user_message(exc)
    else:
        assert audio.dtype == np.float32 and audio.ndim == 1 and audio.size > 0
