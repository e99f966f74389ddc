"""Media files must not make the decoder open other files or reach the network."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from app.audio.decode import AudioLimits, _allowed_formats, decode_audio
from app.audio.errors import UndecodableAudioError

LIMITS = AudioLimits(max_bytes=50 * 1024 * 1024, max_seconds=3600)


def _watch_for_reader(fifo: Path, stop: threading.Event, opened: list[bool]) -> None:
    """Record whether anything opens `fifo` for reading while the decoder runs."""
    while not stop.is_set():
        try:
            # Succeeds only once a reader has the FIFO open (ENXIO before).
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            time.sleep(0.001)
            continue
        opened.append(True)
        os.close(fd)  # the reader sees end of file instead of blocking
        return


@pytest.mark.parametrize(
    "playlist",
    [
        b"ffconcat version 1.0\nfile target.wav\n",
        b"ffconcat version 1.0\nfile {abs}\n",
        b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{abs}\n#EXT-X-ENDLIST\n",
        b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:{abs}\n#EXT-X-ENDLIST\n",
    ],
)
def test_playlists_never_open_referenced_files(
    playlist: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A FIFO makes any attempt to open the referenced file observable, even
    # one that a later check would turn into an error.
    target = tmp_path / "target.wav"
    os.mkfifo(target)
    monkeypatch.chdir(tmp_path)  # relative references resolve against the cwd
    stop, opened = threading.Event(), []
    watcher = threading.Thread(target=_watch_for_reader, args=(target, stop, opened), daemon=True)
    watcher.start()
    try:
        with pytest.raises(UndecodableAudioError):
            decode_audio(playlist.replace(b"{abs}", str(target).encode()), LIMITS)
    finally:
        stop.set()
        watcher.join()
    assert not opened


def test_sdp_session_description_is_refused() -> None:
    # An SDP file would make FFmpeg open RTP sockets to receive the stream.
    sdp = b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 5004 RTP/AVP 0\r\n"
    with pytest.raises(UndecodableAudioError):
        decode_audio(sdp, LIMITS)


def test_format_allow_list_excludes_reference_following_demuxers() -> None:
    allowed = set(_allowed_formats().split(","))
    assert {"wav", "mp3", "ogg", "flac", "aiff", "mov", "mp4", "matroska", "webm", "nistsphere"} <= allowed
    assert not allowed & {"hls", "concat", "dash", "sdp", "rtsp", "rtp", "image2", "lavfi"}
