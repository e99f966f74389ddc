"""StreamSegmenter: the cuts tile the stream exactly (property test), and where they fall (examples)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from app.audio.segmenter import FRAME_SAMPLES, Cut, StreamSegmenter

RATE = 16000
LOUD = 0.5


class EnergyVad:
    """Deterministic stand-in for silero: a frame is speech when its RMS is above 0.1."""

    def __init__(self) -> None:
        self.frames = 0

    def probabilities(self, frames: np.ndarray) -> list[float]:
        assert frames.ndim == 2 and frames.shape[1] == FRAME_SAMPLES
        self.frames += frames.shape[0]
        return [1.0 if float(np.sqrt(np.mean(f * f))) > 0.1 else 0.0 for f in frames]


def signal(pattern: list[tuple[bool, int]]) -> np.ndarray:
    """Concatenated stretches of loud noise (speech) or zeros (silence), lengths in samples."""
    rng = np.random.default_rng(0)
    parts = [rng.uniform(-LOUD, LOUD, n).astype(np.float32) if loud else np.zeros(n, np.float32)
             for loud, n in pattern]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def segmenter(window_s: float = 2.0, endpoint_s: float = 0.3, max_silence_s: float = 1.0) -> StreamSegmenter:
    return StreamSegmenter(EnergyVad(), window_s, endpoint_s, max_silence_s=max_silence_s, preroll_s=0.1)


def check_tiling(cuts: list[Cut], total: int, max_len: int) -> None:
    assert cuts, "a non-empty stream gives at least one cut"
    assert cuts[0].start == 0 and cuts[-1].end == total
    for before, after in zip(cuts, cuts[1:]):
        assert before.end == after.start  # no gap, no overlap
    for cut in cuts:
        assert 0 < cut.end - cut.start <= max_len
        if cut.speech_start is not None:
            assert cut.start <= cut.speech_start < cut.speech_end <= cut.end


patterns = st.lists(st.tuples(st.booleans(), st.integers(1, 2 * RATE)), min_size=1, max_size=10)
chunks = st.lists(st.integers(1, 4000), min_size=1, max_size=30)


@settings(max_examples=120, deadline=None)
@given(pattern=patterns, chunk_sizes=chunks, flush_every=st.integers(0, 40), window_s=st.sampled_from([0.5, 2.0]))
def test_cuts_tile_the_stream_exactly(pattern, chunk_sizes, flush_every, window_s):
    """Random pauses, random chunk sizes, random flushes: every sample lands in exactly one cut <= window."""
    audio = signal(pattern)
    seg = segmenter(window_s=window_s)
    cuts: list[Cut] = []
    position, i = 0, 0
    while position < audio.shape[0]:
        size = chunk_sizes[i % len(chunk_sizes)]
        cuts += seg.push(audio[position: position + size])
        position += size
        i += 1
        if flush_every and i % flush_every == 0:
            cuts += seg.flush()
    cuts += seg.flush()  # the end of the stream
    assert seg.flush() == []  # nothing left, nothing emitted twice
    check_tiling(cuts, audio.shape[0], int(window_s * RATE))
    covered = np.zeros(audio.shape[0], dtype=np.int32)
    for cut in cuts:
        covered[cut.start: cut.end] += 1
    assert (covered == 1).all()


@settings(max_examples=40, deadline=None)
@given(pattern=patterns, chunk=st.integers(1, 2000))
def test_chunking_does_not_change_the_cuts(pattern, chunk):
    """The same audio pushed in any chunk size gives the same cuts (VAD frames are whole 512-sample frames)."""
    audio = signal(pattern)
    whole = segmenter()
    expected = whole.push(audio) + whole.flush()
    chunked = segmenter()
    got = []
    for start in range(0, audio.shape[0], chunk):
        got += chunked.push(audio[start: start + chunk])
    assert got + chunked.flush() == expected


def test_utterances_end_after_the_endpoint_silence():
    """Two utterances separated by a long pause: one final each, cut once 0.3 s of silence follows speech."""
    audio = signal([(False, 4000), (True, RATE), (False, RATE // 2), (True, RATE), (False, RATE // 2)])
    seg = segmenter(window_s=5.0)
    cuts = seg.push(audio)
    assert [c.reason for c in cuts] == ["endpoint", "endpoint"]
    first, second = cuts
    assert first.start == 0 and first.has_speech
    assert abs(first.speech_end - (4000 + RATE)) <= FRAME_SAMPLES
    assert first.end - first.speech_end == seg.endpoint_frames * FRAME_SAMPLES  # the silence that ended it
    assert second.start == first.end
    assert seg.flush()[0].start == second.end  # what is left (trailing silence) is not lost


def test_long_silence_becomes_its_own_segment_keeping_a_preroll():
    seg = segmenter(window_s=5.0, max_silence_s=1.0)
    cuts = seg.push(np.zeros(3 * RATE, np.float32))
    assert cuts and all(c.reason == "silence" and not c.has_speech for c in cuts)
    assert all(c.end - c.start <= RATE for c in cuts)
    assert seg.total - seg.origin >= seg.preroll_frames * FRAME_SAMPLES  # kept for a word starting now


def test_long_utterance_is_cut_in_its_pause_at_the_window():
    """Speech with short (non-endpoint) pauses is cut at the window, inside a pause rather than mid-word."""
    pattern = [(True, 12_000), (False, 3_000)] * 6
    audio = signal(pattern)
    seg = segmenter(window_s=2.0, endpoint_s=0.5)
    cuts = seg.push(audio) + seg.flush()
    windows = [c for c in cuts if c.reason == "window"]
    assert windows
    for cut in windows:
        assert cut.end - cut.start <= 2 * RATE
        assert float(np.abs(audio[cut.end - 1: cut.end + 1]).max()) == 0.0  # the cut is in silence


def test_flush_cuts_partial_frames_and_restarts_the_frame_grid():
    seg = segmenter()
    assert seg.push(np.full(700, LOUD, np.float32)) == []
    flushed = seg.flush()
    assert [(c.start, c.end, c.reason) for c in flushed] == [(0, 700, "flush")]
    seg.push(np.zeros(100, np.float32))
    assert [(c.start, c.end) for c in seg.flush()] == [(700, 800)]
    assert seg.flush() == []
