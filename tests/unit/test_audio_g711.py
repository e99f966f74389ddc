"""G.711 expansion against the standard library's independent implementation (audioop, Python 3.11)."""

from __future__ import annotations

import warnings

import pytest

from app.audio.g711 import LAWS, to_pcm16

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # deprecated, gone in Python 3.13: this test then needs another reference

EVERY_CODE = bytes(range(256))


@pytest.mark.parametrize("law, reference", [("ulaw", audioop.ulaw2lin), ("alaw", audioop.alaw2lin)])
def test_every_code_expands_as_the_standard_says(law, reference):
    assert law in LAWS
    assert to_pcm16(EVERY_CODE, law) == reference(EVERY_CODE, 2)
    assert to_pcm16(b"", law) == b""
