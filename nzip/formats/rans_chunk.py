"""One chunk of an ``nzip.rans`` array, coded and decoded (no zarr needed: :mod:`.zarr_codec`
wraps these for zarr, and nzip's own readers call them directly).

Chunk layout: byte mode (0 single blob, 1 planes). Planes: svarint min, byte planes, then
uvarint length + blob per plane. Narrow-range chunks are one lane-rANS blob with the chunk's own
table; chunks whose values span more than 2**16 integers are split into byte planes of
(value - min), each coded on its own.
"""
from __future__ import annotations

import numpy as np

from .. import entropy
from ..entropy._varint import Reader, put_svarint, put_uvarint

SINGLE, PLANES = 0, 1
PLANE_THRESHOLD = 1 << 16


def encode_chunk(a: np.ndarray) -> bytes:
    """One chunk (any integer or bool dtype) to bytes."""
    flat = np.ascontiguousarray(a).reshape(-1)
    if flat.dtype == np.bool_ or flat.size == 0 or flat.dtype.itemsize == 1:
        return bytes([SINGLE]) + entropy.encode(flat)
    lo, hi = int(flat.min()), int(flat.max())
    if hi - lo < PLANE_THRESHOLD:
        return bytes([SINGLE]) + entropy.encode(flat)
    width = flat.dtype.itemsize
    u = flat.view(f"u{width}") - np.array(lo, dtype=flat.dtype).view(f"u{width}")  # wraps mod 2**bits
    planes = (hi - lo).bit_length() + 7 >> 3
    by = u.astype("<u8", copy=False).view(np.uint8).reshape(-1, 8)[:, :planes]
    out = bytearray([PLANES])
    put_svarint(out, lo)
    out.append(planes)
    for p in range(planes):
        blob = entropy.encode(np.ascontiguousarray(by[:, p]))
        put_uvarint(out, len(blob))
        out += blob
    return bytes(out)


def decode_chunk(data: bytes | memoryview, dtype: np.dtype, size: int, what: str = "chunk") -> np.ndarray:
    """Inverse of :func:`encode_chunk`; checks the element count before allocating."""
    r = Reader(data, what)
    mode = r.byte()
    if mode == SINGLE:
        out = entropy.decode(r.rest(), max_symbols=size, what=what)
    elif mode == PLANES:
        lo = r.svarint()
        planes = r.byte()
        if not 1 <= planes <= 8:
            raise r.fail(f"bad plane count {planes}")
        acc = np.zeros(size, dtype=np.uint64)
        for p in range(planes):
            plane = entropy.decode(r.take(r.uvarint(len(r.data))), max_symbols=size, what=what)
            if plane.size != size or plane.dtype != np.uint8:
                raise r.fail(f"byte plane {p} holds {plane.size} values, expected {size}")
            acc |= plane.astype(np.uint64) << np.uint64(8 * p)
        if r.pos != len(r.data):
            raise r.fail("trailing bytes after the byte planes")
        width = np.dtype(dtype).itemsize
        base = np.array(lo, dtype=np.int64 if lo < 0 else np.uint64).view(np.uint64)
        out = (acc + base).astype(f"u{width}").view(dtype)
    else:
        raise r.fail(f"unknown chunk mode {mode}")
    if out.size != size:
        raise r.fail(f"holds {out.size} values, expected {size}")
    if out.dtype != dtype:
        raise r.fail(f"holds {out.dtype} values, the array is {np.dtype(dtype)}")
    return out
