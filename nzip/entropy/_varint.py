"""LEB128 varints and a bounds-checked reader for the compact headers of nzip blobs."""
from __future__ import annotations

from ..errors import CorruptDataError


def put_uvarint(out: bytearray, v: int) -> None:
    if v < 0:
        raise ValueError("uvarint of a negative number")
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


def put_svarint(out: bytearray, v: int) -> None:
    put_uvarint(out, (v << 1) if v >= 0 else ((-v) << 1) - 1)


class Reader:
    """Reads a blob front to back; every overrun is a :class:`CorruptDataError` naming ``what``."""

    def __init__(self, data: bytes | memoryview, what: str = "blob") -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.what = what

    def fail(self, msg: str) -> CorruptDataError:
        return CorruptDataError(f"{self.what}: {msg}")

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("truncated (header ends early)")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def uvarint(self, limit: int = 1 << 62) -> int:
        v = shift = 0
        while True:
            b = self.byte()
            v |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 70:
                raise self.fail("malformed varint in header")
        if v > limit:
            raise self.fail(f"header value {v} exceeds its bound {limit}")
        return v

    def svarint(self) -> int:
        u = self.uvarint(1 << 66)
        return (u >> 1) if not u & 1 else -((u + 1) >> 1)

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"truncated (needs {n} more bytes at offset {self.pos}, has "
                            f"{len(self.data) - self.pos})")
        v = self.data[self.pos : self.pos + n]
        self.pos += n
        return v

    def rest(self) -> memoryview:
        v = self.data[self.pos :]
        self.pos = len(self.data)
        return v
