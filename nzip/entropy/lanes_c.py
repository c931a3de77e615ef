"""The C lane decoder (``_lanes_c.c``): packed-table blobs, AVX2 where the CPU has it.

Same arguments and results as :func:`nzip.entropy.lanes.decode_blocks_packed` (the numba kernel,
which stays the fallback: ``available`` is False where the extension was not built, and
``NZIP_NO_C=1`` turns it off). ctypes releases the GIL during a call, so several blocks decode on
a small thread pool, as many threads as numba's.
"""
from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

_lib = None
if os.environ.get("NZIP_NO_C", "") in ("", "0"):
    try:
        from . import _lanes_c

        _lib = ctypes.CDLL(_lanes_c.__file__)
    except (ImportError, OSError):
        _lib = None

available = _lib is not None
_P = ctypes.c_void_p
_U64 = ctypes.c_uint64
if available:
    _lib.nz_simd.restype = ctypes.c_int
    _lib.nz_simd.argtypes = []
    _lib.nz_decode_blocks_packed.restype = None
    _lib.nz_decode_blocks_packed.argtypes = [_P, _U64, _P, _P, _P, _U64, _P, ctypes.c_int, _U64, _U64,
                                             ctypes.c_uint32, _P, _U64, _P, _U64, _U64, ctypes.c_int]
    simd = bool(_lib.nz_simd())  # also builds the permutation table, before any thread runs
else:
    simd = False

_pool: ThreadPoolExecutor | None = None


def _threads() -> int:
    import numba

    return max(1, int(numba.get_num_threads()))


def decode_blocks_packed(words, woffsets, states, out, ctx, block, lanes, prec, table, status,
                         force_scalar: bool = False) -> None:
    """Decode every block of a packed-table blob into ``out`` (uint8), one status per block."""
    global _pool
    words = np.ascontiguousarray(words, np.uint16)
    woffsets = np.ascontiguousarray(woffsets, np.int64)
    states = np.ascontiguousarray(states, np.uint32)
    table = np.ascontiguousarray(table, np.uint32)
    assert out.dtype == np.uint8 and out.flags.c_contiguous and status.dtype == np.int64
    if ctx is None:
        cb, cx = 0, None
    else:
        cx = np.ascontiguousarray(ctx)
        cb = {np.dtype(np.uint8): 1, np.dtype(np.uint16): 2}[cx.dtype]
        if len(cx) < len(out):
            raise ValueError("fewer contexts than symbols")
    nblocks = status.shape[0]
    if woffsets.shape[0] != nblocks + 1 or states.shape[0] != nblocks * lanes:
        raise ValueError("block offsets or states do not match the number of blocks")

    def run(b0: int, b1: int) -> None:
        _lib.nz_decode_blocks_packed(words.ctypes.data, len(words), woffsets.ctypes.data,
                                     states.ctypes.data, out.ctypes.data, len(out),
                                     None if cx is None else cx.ctypes.data, cb, block, lanes, prec,
                                     table.ctypes.data, len(table), status.ctypes.data, b0, b1,
                                     int(force_scalar))

    t = min(_threads(), nblocks)
    if t <= 1:
        run(0, nblocks)
        return
    if _pool is None or _pool._max_workers < t:
        _pool = ThreadPoolExecutor(max_workers=t, thread_name_prefix="nzip-lanes")
    cuts = [nblocks * i // t for i in range(t + 1)]
    for f in [_pool.submit(run, cuts[i], cuts[i + 1]) for i in range(t)]:
        f.result()
