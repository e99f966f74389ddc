"""G.711 (ITU-T) μ-law and A-law: 8-bit telephone samples at 8 kHz, expanded to 16-bit linear PCM.

Each code stands for one fixed 16-bit value, so decoding is a lookup in a 256-entry table built once from the
standard's segment formulas.
"""

from __future__ import annotations

import numpy as np

RATE = 8000
"""G.711's sample rate."""


def _ulaw_value(code: int) -> int:
    u = ~code & 0xFF  # codes are sent inverted
    exponent, mantissa = (u >> 4) & 0x07, u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return -magnitude if u & 0x80 else magnitude


def _alaw_value(code: int) -> int:
    a = code ^ 0x55  # even bits are sent inverted
    exponent, mantissa = (a >> 4) & 0x07, a & 0x0F
    magnitude = (mantissa << 4) + 8 if exponent == 0 else ((mantissa << 4) + 0x108) << (exponent - 1)
    return magnitude if a & 0x80 else -magnitude


_TABLES = {
    "ulaw": np.array([_ulaw_value(c) for c in range(256)], dtype="<i2"),
    "alaw": np.array([_alaw_value(c) for c in range(256)], dtype="<i2"),
}
LAWS = tuple(_TABLES)


def to_pcm16(data: bytes, law: str) -> bytes:
    """G.711 bytes (`law` is `ulaw` or `alaw`) as little-endian 16-bit PCM, one sample per byte."""
    return _TABLES[law][np.frombuffer(data, dtype=np.uint8)].tobytes()
