"""Typed audio errors. Each message is written to be shown to the user as is."""


class AudioError(Exception):
    """Base class: the input could not be turned into 16 kHz mono samples."""

    code = "invalid_audio"


class EmptyAudioError(AudioError):
    """The upload holds no bytes, or decodes to zero samples."""


class NoAudioStreamError(AudioError):
    """The container decodes but carries no audio stream."""


class UndecodableAudioError(AudioError):
    """FFmpeg does not recognise the data as any container/codec it knows."""


class TruncatedAudioError(AudioError):
    """The container is recognised but its data ends or breaks early."""


class InvalidSamplesError(AudioError):
    """Decoded samples hold NaN or infinite values."""


class AudioTooLargeError(AudioError):
    """The encoded input exceeds the byte limit."""

    code = "audio_too_large"


class AudioTooLongError(AudioError):
    """The decoded audio exceeds the duration limit."""

    code = "audio_too_long"
