"""StreamBuffer and friends: PCM framing, resampling on the stream clock, the stored audio, silero per frame,
and the span splitter's parity with the upload path."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.api.transcription import split_audio
from app.audio.decode import AudioLimits, decode_audio
from app.audio.resample import resample_pcm
from app.audio.segmenter import StreamSegmenter
from app.audio.stream_buffer import PcmDecoder, SampleStore, SileroFrameVad, SpanSplitter, StreamBuffer
from app.audio.vad import VoiceActivityDetector
from tests.conftest import SHARED_AUDIO
from tests.unit.test_stream_segmenter import EnergyVad

RATE = 16000


def clip(name: str, seconds: float | None = None) -> np.ndarray:
    audio = decode_audio((SHARED_AUDIO / name).read_bytes(), AudioLimits(2**30, 3600))
    return audio if seconds is None else audio[: int(seconds * RATE)]


@given(st.lists(st.integers(0, 9), min_size=1, max_size=20))
def test_decoder_joins_samples_split_across_frames(cuts):
    samples = np.arange(-50, 50, dtype="<i2") * 300
    data = samples.tobytes()
    decoder, out, position = PcmDecoder("pcm_s16le"), [], 0
    for size in cuts:
        out.append(decoder.decode(data[position: position + size]))
        position += size
    out.append(decoder.decode(data[position:]))
    assert np.array_equal(np.concatenate(out), samples.astype(np.float32) / 32768)


def test_float_decoder_and_store():
    data = np.array([0.5, -0.25, 1.0], dtype="<f4").tobytes()
    assert PcmDecoder("f32le").decode(data).tolist() == [0.5, -0.25, 1.0]
    store = SampleStore()
    store.append(np.arange(40000, dtype=np.float32))
    store.forget_before(30000)
    assert store.base == 30000 and store.end == 40000
    assert store.slice(30000, 30003).tolist() == [30000, 30001, 30002]
    with pytest.raises(IndexError):
        store.slice(10, 20)


@settings(max_examples=15, deadline=None)
@given(rate=st.sampled_from([8000, 22050, 44100, 48000]), frame=st.integers(100, 3000))
def test_buffer_segments_tile_the_resampled_stream(rate, frame):
    """Any input rate: the segments (with their audio) cover the 16 kHz stream exactly, flush included."""
    rng = np.random.default_rng(rate)
    source = np.concatenate([rng.uniform(-0.5, 0.5, rate), np.zeros(rate), rng.uniform(-0.5, 0.5, rate // 2)])
    data = source.astype("<f4").tobytes()
    buffer = StreamBuffer("f32le", rate, StreamSegmenter(EnergyVad(), 1.0, 0.3, max_silence_s=0.5))
    segments = []
    for i in range(0, len(data), frame * 4):
        segments += buffer.push(data[i: i + frame * 4])
    segments += buffer.flush(end_of_stream=True)
    expected = resample_pcm(source.astype(np.float32), rate)
    assert segments[0].cut.start == 0 and segments[-1].cut.end == expected.shape[0] == buffer.total
    assert all(a.cut.end == b.cut.start for a, b in zip(segments, segments[1:]))
    joined = np.concatenate([s.samples for s in segments])
    np.testing.assert_allclose(joined, expected, atol=1e-6)  # chunked resampling equals one-shot resampling


def test_silero_frames_find_the_speech_in_a_real_clip():
    vad = SileroFrameVad.from_template(SileroFrameVad.load_template())
    audio = clip("en_whisper_jfk.flac", 4.0)
    frames = audio[: audio.shape[0] // 512 * 512].reshape(-1, 512)
    probabilities = vad.probabilities(frames)
    assert len(probabilities) == frames.shape[0]
    assert max(probabilities[:5]) < 0.5 < max(probabilities)  # a quiet start, then speech
    assert SileroFrameVad.from_template(SileroFrameVad.load_template()).probabilities(frames) == probabilities


def test_span_splitter_matches_the_upload_split():
    shared = VoiceActivityDetector()
    splitter = SpanSplitter(shared, size=2)
    for audio in (clip("en_whisper_jfk.flac"), clip("none_leopard_empty.wav", 3.0), np.zeros(1, np.float32)):
        ours, upload = splitter.split(audio, 30.0), split_audio(audio, 30.0, shared, 0.0)
        assert [(w.start, w.end, w.has_speech) for w in ours.windows] == \
            [(w.start, w.end, w.has_speech) for w in upload.windows]
        assert ours.duration == upload.duration
