"""Reading CTranslate2's `model.bin` (binary version 6) into named tensors, without the ctranslate2 package.

The layout, all little-endian: u32 binary version; string spec name; u32 spec revision; u32 variable count; per
variable: string name, u8 rank, rank x u32 dimensions, u8 dtype id, u32 byte count, the raw bytes; then u32 alias
count and per alias two strings (alias, target). A string is a u16 length (counting a closing NUL), the UTF-8
bytes and the NUL.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import torch

SUPPORTED_BINARY_VERSION = 6
# Ids in the order of CTranslate2's DataType enum.
DTYPES = (torch.float32, torch.int8, torch.int16, torch.int32, torch.float16, torch.bfloat16)


@dataclass
class Ct2Model:
    """A model.bin's contents: its spec name, variables by name, and aliases (alias -> variable it repeats)."""

    spec: str
    revision: int
    variables: dict[str, torch.Tensor]
    aliases: dict[str, str] = field(default_factory=dict)


class _Cursor:
    """Sequential little-endian reads over a byte buffer, failing clearly past its end."""

    def __init__(self, data: bytearray) -> None:
        self.data = data
        self.pos = 0

    def unpack(self, fmt: str) -> int:
        size = struct.calcsize("<" + fmt)
        self._need(size)
        (value,) = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        length = self.unpack("H")
        self._need(length)
        raw = bytes(self.data[self.pos:self.pos + length])
        self.pos += length
        return raw.rstrip(b"\0").decode("utf-8")

    def tensor(self, dtype: torch.dtype, shape: list[int], nbytes: int) -> torch.Tensor:
        self._need(nbytes)
        count = nbytes // torch.empty(0, dtype=dtype).element_size()
        flat = torch.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos) if count else \
            torch.empty(0, dtype=dtype)
        self.pos += nbytes
        return flat.clone().reshape(shape)

    def _need(self, size: int) -> None:
        if self.pos + size > len(self.data):
            raise ValueError(f"model.bin ends early: {size} bytes wanted at offset {self.pos} of {len(self.data)}")


def parse_model_bin(data: bytearray) -> Ct2Model:
    """The variables and aliases of a whole model.bin (its parts already joined, in order)."""
    cursor = _Cursor(data)
    version = cursor.unpack("I")
    if version != SUPPORTED_BINARY_VERSION:
        raise ValueError(f"model.bin has binary version {version}; only {SUPPORTED_BINARY_VERSION} is read")
    spec, revision = cursor.string(), cursor.unpack("I")
    variables = {}
    for _ in range(cursor.unpack("I")):
        name = cursor.string()
        shape = [cursor.unpack("I") for _ in range(cursor.unpack("B"))]
        dtype_id = cursor.unpack("B")
        if dtype_id >= len(DTYPES):
            raise ValueError(f"model.bin variable {name!r} has unknown dtype id {dtype_id}")
        variables[name] = cursor.tensor(DTYPES[dtype_id], shape, cursor.unpack("I"))
    aliases = {}
    for _ in range(cursor.unpack("I")):
        alias = cursor.string()
        aliases[alias] = cursor.string()
    if cursor.pos != len(data):
        raise ValueError(f"model.bin has {len(data) - cursor.pos} unread bytes after its aliases")
    return Ct2Model(spec, revision, variables, aliases)
