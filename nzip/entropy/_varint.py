"""LEB128 varints and a bounds-checked reader for the compact headers of nzip blobs."""
from __future__ import annotations

import numpy as np

from ..errors import CorruptDataError


def put_uvarint(out: bytearray, v: int) -> None:
    if v < 0:
        raise ValueError("uvarint of a negative number")
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


def put_uvarints(out: bytearray, values: np.ndarray) -> None:
    """Many non-negative varints at once (numpy): the bytes of put_uvarint for each value in turn."""
    v = np.asarray(values, dtype=np.uint64).reshape(-1)
    if v.size == 0:
        return
    if v.size < 64:
        for x in v.tolist():
            put_uvarint(out, x)
        return
    nbytes = np.ones(v.size, np.int64)
    for k in range(1, 10):
        nbytes += v >= np.uint64(1) << np.uint64(7 * k)
    ends = np.cumsum(nbytes)
    buf = np.empty(int(ends[-1]), np.uint8)
    starts = ends - nbytes
    for k in range(int(nbytes.max())):
        at = nbytes > k
        byte = (v[at] >> np.uint64(7 * k)) & np.uint64(0x7F)
        more = (nbytes[at] > k + 1).astype(np.uint64) << np.uint64(7)
        buf[starts[at] + k] = (byte | more).astype(np.uint8)
    out += buf.tobytes()


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

    def uvarints(self, count: int, limit: int = 1 << 62) -> np.ndarray:
        """``count`` varints (int64) with the values and errors of ``count`` calls of uvarint:
        vectorised where every one is at most 8 bytes long and within ``limit``, else read one by
        one (which raises the same error at the same varint)."""
        if count <= 0:
            return np.zeros(0, np.int64)
        buf = np.frombuffer(self.data[self.pos : self.pos + 11 * count], np.uint8)
        ends = np.flatnonzero(buf < 0x80)[:count]
        if len(ends) == count:
            starts = np.empty(count, np.int64)
            starts[0] = 0
            starts[1:] = ends[:-1] + 1
            lens = ends - starts + 1
            if int(lens.max()) <= 8:
                v = np.zeros(count, np.int64)
                for k in range(int(lens.max())):
                    at = lens > k
                    v[at] |= (buf[starts[at] + k].astype(np.int64) & 0x7F) << (7 * k)
                if int(v.max()) <= limit:
                    self.pos += int(ends[-1]) + 1
                    return v
        return np.array([self.uvarint(limit) for _ in range(count)], dtype=np.int64)

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
