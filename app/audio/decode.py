"""Decode any container/codec FFmpeg knows into 16 kHz mono float32 samples.

Uploads are untrusted: limits are enforced while decoding, media files cannot
reach files or the network, and every failure surfaces as an `AudioError`
subclass whose message can be shown to the user as is.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import av
import numpy as np

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
from app.audio.resample import SAMPLE_RATE, FrameResampler, StreamResampler, resample_pcm

__all__ = [
    "SAMPLE_RATE",
    "AudioLimits",
    "StreamResampler",
    "decode_audio",
    "resample_pcm",
]

_MB = 1024 * 1024

# Demuxers that open other resources (playlists, URLs, file patterns, sockets,
# filter graphs, capture devices). Decoding one would let an upload make the
# server read its own files or reach the network, so they are never selected.
_DENIED_FORMATS = frozenset(
    {
        "hls", "applehttp", "dash", "webm_dash_manifest", "concat", "ffconcat",
        "imf", "sdp", "rtsp", "rtp", "sap", "image2", "lavfi", "tee",
        "avisynth", "vapoursynth", "alsa", "oss", "pulse", "jack", "fbdev",
        "kmsgrab", "x11grab", "xcbgrab", "video4linux2", "v4l2", "libcdio",
        "openal", "dshow", "gdigrab", "vfwcap", "avfoundation", "android_camera",
    }
)

# No protocol name matches this, so any nested open that slips past the
# format allow-list (and past `_refuse_nested_open`) still fails.
_NO_PROTOCOLS = "none"


@dataclass(frozen=True)
class AudioLimits:
    """Byte and duration limits for one decoded upload."""

    max_bytes: int
    max_seconds: float

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_seconds <= 0:
            raise ValueError("AudioLimits needs positive max_bytes and max_seconds")


class _NestedOpenRefused(Exception):
    """Raised inside FFmpeg's io_open callback; never leaves this module."""


def _refuse_nested_open(url: str, flags: int, options: dict[str, Any]) -> Any:
    # Demuxers route every secondary open through this callback when one is
    # set, so a playlist or reference chunk cannot open anything at all.
    raise _NestedOpenRefused(url)


@lru_cache(maxsize=1)
def _allowed_formats() -> str:
    """Comma list of every demuxer this FFmpeg build has, minus the denied ones."""
    names: set[str] = set()
    for entry in av.formats_available:
        try:
            av.ContainerFormat(entry, "r")
        except Exception:  # muxer-only names cannot be opened for reading
            continue
        names.update(part for part in entry.split(",") if part)
    return ",".join(sorted(names - _DENIED_FORMATS))


def _open_container(data: bytes) -> av.container.InputContainer:
    try:
        container = av.open(
            io.BytesIO(data),
            mode="r",
            container_options={
                # Checked by FFmpeg before the demuxer reads its header, unlike
                # the post-open deny check which would be too late for HLS.
                "format_whitelist": _allowed_formats(),
                "protocol_whitelist": _NO_PROTOCOLS,
                "enable_drefs": "0",  # mov/mp4: do not follow external data references
                "safe": "1",  # concat: refuse unsafe paths (denied anyway)
            },
            io_open=_refuse_nested_open,
            metadata_errors="replace",
        )
    except Exception as exc:
        raise UndecodableAudioError("The file is not in an audio format that can be decoded.") from exc
    # Belt and braces behind the allow-list: names like "mov,mp4,m4a" are lists.
    if set(container.format.name.split(",")) & _DENIED_FORMATS:
        container.close()
        raise UndecodableAudioError("This file type is not accepted; upload an audio file.")
    return container


def _iff_declares_more_than_present(data: bytes) -> bool:
    """True when a WAV or AIFF header promises more sample bytes than the upload holds.

    FFmpeg silently decodes such files short, so a cut-off upload would
    otherwise pass as a complete recording.
    """
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        endian, sample_chunk = "<", b"data"
    elif data[:4] == b"FORM" and data[8:12] in (b"AIFF", b"AIFC"):
        endian, sample_chunk = ">", b"SSND"
    else:
        return False
    offset = 12
    for _ in range(64):  # a real header has a handful of chunks; bound the walk
        if offset + 8 > len(data):
            return False
        chunk_id = data[offset : offset + 4]
        (size,) = struct.unpack(endian + "I", data[offset + 4 : offset + 8])
        if chunk_id == sample_chunk:
            # 0 and near-4 GiB sizes are placeholders written by streaming
            # encoders that could not seek back; they declare nothing.
            if size == 0 or size >= 0x7FFF0000:
                return False
            return size > len(data) - (offset + 8)
        offset += 8 + size + (size & 1)
    return False


SHORTFALL_TOLERANCE_S = 0.5
SHORTFALL_TOLERANCE_FRACTION = 0.1
"""How far decoded audio may fall short of the container's declared duration (encoder padding, estimated
durations) before the file counts as cut off."""


def _declared_seconds(container: av.container.InputContainer, stream: av.AudioStream) -> float | None:
    """The duration the file's headers declare (an MP3's Xing/Info frame count, FLAC's total samples), if any."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _check_complete(declared: float | None, samples: int) -> None:
    """Refuse audio that decodes to clearly less than its header declares: a cut-off upload would otherwise be
    transcribed as if complete, and the client could not tell its transcript misses the end."""
    if declared is None:
        return
    decoded = samples / SAMPLE_RATE
    if declared - decoded > max(SHORTFALL_TOLERANCE_S, SHORTFALL_TOLERANCE_FRACTION * declared):
        raise TruncatedAudioError(
            f"The audio file is truncated: its header declares {_fmt_seconds(declared)} but only "
            f"{_fmt_seconds(decoded)} could be decoded."
        )


def _fmt_seconds(seconds: float) -> str:
    return f"{seconds:.1f}".rstrip("0").rstrip(".") + " s"


def _fmt_mb(n_bytes: int, limit: int) -> tuple[str, str]:
    # Show enough decimals that a size just over the limit does not print as equal.
    for decimals in (1, 3, 6):
        size, cap = f"{n_bytes / _MB:.{decimals}f}", f"{limit / _MB:.{decimals}f}"
        if size != cap:
            break
    return size, cap


def _decode_stream(
    container: av.container.InputContainer, stream: av.AudioStream, max_samples: int
) -> np.ndarray:
    resampler = FrameResampler()
    chunks: list[np.ndarray] = []
    total = 0

    def accept(new_chunks: list[np.ndarray]) -> None:
        nonlocal total
        for chunk in new_chunks:
            if not np.isfinite(chunk).all():
                raise InvalidSamplesError("The audio contains invalid sample values (NaN or infinity).")
            total += chunk.shape[0]
            # Checked per frame so a tiny file that expands to hours is
            # stopped long before it is buffered.
            if total > max_samples:
                raise AudioTooLongError(
                    f"The audio is longer than the {_fmt_seconds(max_samples / SAMPLE_RATE)} limit."
                )
            chunks.append(chunk)

    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                accept(resampler.push(frame))
        accept(resampler.flush())
    except AudioError:
        raise
    except av.FFmpegError as exc:
        # The container and stream were recognised, so a failure here means
        # the data stops or is damaged partway through.
        raise TruncatedAudioError(
            f"The audio file is truncated or damaged; decoding failed after {_fmt_seconds(total / SAMPLE_RATE)}."
        ) from exc

    if total == 0:
        raise EmptyAudioError("The audio file contains no audio samples.")
    audio = np.concatenate(chunks) if len(chunks) > 1 else chunks[0].copy()
    # Downmixing adds channels and the resampler's filter overshoots a little;
    # callers are promised samples in [-1, 1].
    np.clip(audio, -1.0, 1.0, out=audio)
    return audio.astype(np.float32, copy=False)


def decode_audio(data: bytes, limits: AudioLimits) -> np.ndarray:
    """Decode an uploaded media file into float32 mono 16 kHz samples in [-1, 1].

    Raises an `AudioError` subclass, and nothing else, for any bad input.
    """
    if len(data) > limits.max_bytes:
        size, cap = _fmt_mb(len(data), limits.max_bytes)
        raise AudioTooLargeError(f"The audio file is {size} MB, above the {cap} MB limit.")
    if len(data) == 0:
        raise EmptyAudioError("The audio file is empty.")
    max_samples = int(limits.max_seconds * SAMPLE_RATE)
    try:
        container = _open_container(bytes(data))
        try:
            stream = container.streams.best("audio")
            if stream is None:
                raise NoAudioStreamError("The file contains no audio track.")
            if stream.codec_context is None:
                raise UndecodableAudioError("The file's audio codec is not supported.")
            if _iff_declares_more_than_present(data):
                raise TruncatedAudioError(
                    "The audio file is truncated: its header declares more audio than the file contains."
                )
            declared = _declared_seconds(container, stream)
            audio = _decode_stream(container, stream, max_samples)
            _check_complete(declared, audio.shape[0])
            return audio
        finally:
            container.close()
    except AudioError:
        raise
    except Exception as exc:
        # Demuxers and decoders have many failure modes (bad metadata, odd
        # layouts the resampler refuses, ...); to the user they all mean the
        # file cannot be decoded, and nothing else may reach the API layer.
        raise UndecodableAudioError("The audio file could not be decoded.") from exc

