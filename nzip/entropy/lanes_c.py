"""The C lane decoder (``_lanes_c.c``): static and context blobs, AVX2 where the CPU has it, and
the fused float decodes of weights/lossless (:func:`decode_join`, :func:`decode_joint`; the
latter in AVX-512 where the CPU has AVX512F/BW/VL and VBMI2).

Same results as the numba kernels of :mod:`nzip.entropy.lanes`, which stay the fallback:
``available`` is False where the extension was not built, and ``NZIP_NO_C=1`` turns it off.
Several blocks decode at once on the extensions' shared thread pool (:mod:`nzip._native`).
"""
from __future__ import annotations

import ctypes

import numpy as np

from .._native import load, on_pool

_lib = load("nzip.entropy._lanes_c")
available = _lib is not None
if available:  # (load imported the module: its one Python-level function)
    from ._lanes_c import small_static as _small_static
_P = ctypes.c_void_p
_U64 = ctypes.c_uint64
if available:
    _lib.nz_simd.restype = ctypes.c_int
    _lib.nz_simd.argtypes = []
    _lib.nz_decode_blocks.restype = None
    _lib.nz_decode_blocks.argtypes = [_P, _U64, _P, _P, _P, ctypes.c_int, _U64, _P, ctypes.c_int, _U64, _U64,
                                      ctypes.c_uint32, _P, _P, _U64, _P, _U64, _U64, ctypes.c_int]
    _lib.nz_decode_join.restype = None
    _lib.nz_decode_join.argtypes = [_P, _U64, _P, _P, _P, ctypes.c_int, _U64, _P, ctypes.c_uint32, ctypes.c_uint32,
                                    ctypes.c_uint32, ctypes.c_uint32, _P, _P, _U64, _U64, ctypes.c_uint32, _P, _U64,
                                    _P, _U64, _U64, ctypes.c_int]
    _lib.nz_decode_joint.restype = None
    _lib.nz_decode_joint.argtypes = [_P, _U64, _P, _P, _P, _U64, _P, _P, _P, _U64, ctypes.c_int32, ctypes.c_uint32,
                                     ctypes.c_uint32, ctypes.c_uint32, _P, _U64, _P, _P, _U64, _U64, ctypes.c_uint32,
                                     _P, _U64, _P, _P, _U64, _U64, ctypes.c_int]
    simd = bool(_lib.nz_simd())  # also builds the permutation table, before any thread runs
    _lib.nz_simd_level.restype = ctypes.c_int
    _lib.nz_simd_level.argtypes = []
    level = int(_lib.nz_simd_level())  # 0 scalar, 1 AVX2, 2 AVX-512 (the joint decode's)
    _I64, _I32 = ctypes.c_int64, ctypes.c_int
    for _name, _res, _args in (
            ("nz_read_table", _I64, [_P, _I64, _I64, _I64, _I64, _P]),
            ("nz_parse_ctx_packed", None, [_P, _I64, _I64, _I64, _I64, _I64, _I64, _P, _P, _P, _P]),
            ("nz_fill_slots", _I64, [_P, _I64, _P, _I32, _P]),
            ("nz_pack_tables", None, [_P, _P, _P, _U64]),
            ("nz_zero_fields", _I64, [_P, _I32, _U64, ctypes.c_uint32, ctypes.c_uint32, _P]),
            ("nz_join16", None, [_P, _P, _P, ctypes.c_uint32, _P, _U64]),
            ("nz_join32", None, [_P, _P, _P, _P, _P, _U64]),
            ("nz_join32_hi", None, [_P, _P, _P, _P, _U64]),
            ("nz_lo_join", None, [_P, _U64, _U64, _P, _P, _P, _P, _P, _P, _I32])):
        getattr(_lib, _name).restype = _res
        getattr(_lib, _name).argtypes = _args
else:
    simd, level = False, 0

MIN_SYMBOLS = 1 << 15  # below this the numba kernels win (measured: 8K symbols 84 vs 120 us)


def decode_blocks_packed(words, woffsets, states, out, ctx, block, lanes, prec, table, status,
                         force_scalar: int = 0, pool: bool = True) -> None:
    """:func:`nzip.entropy.lanes.decode_blocks_packed`: one packed uint32 per slot, ``out`` uint8.
    ``pool``: the blocks split across the extensions' pool, else all on this thread."""
    run = _runner(words, woffsets, states, out, ctx, block, lanes, prec, table, None, status, force_scalar)
    on_pool(run, status.shape[0]) if pool else run(0, status.shape[0])


def blocks_runner(words, woffsets, states, out, block, lanes, prec, table, status, symtab=None):
    """The decode of a static blob (no contexts) as ``run(b0, b1)``, to run on any thread (see
    :func:`joint_runner`): :func:`decode_blocks_packed`, or with ``symtab`` (the slot symbols, of
    out's type) :func:`decode_blocks` with ``table`` its frequency << 16 | bias table."""
    return _runner(words, woffsets, states, out, None, block, lanes, prec, table, symtab, status, False)


def decode_blocks(words, woffsets, states, out, ctx, block, lanes, prec, slot_sym, slot_pack, status,
                  force_scalar: int = 0, pool: bool = True) -> None:
    """:func:`nzip.entropy.lanes.decode_blocks` (``ctx`` None) or ``decode_blocks_ctx``: a symbol
    table (uint8 or uint16, as ``out``) beside the frequency << 16 | bias table. ``pool`` as
    :func:`decode_blocks_packed`."""
    run = _runner(words, woffsets, states, out, ctx, block, lanes, prec, slot_pack, slot_sym, status, force_scalar)
    on_pool(run, status.shape[0]) if pool else run(0, status.shape[0])


def _runner(words, woffsets, states, out, ctx, block, lanes, prec, table, symtab, status, force_scalar):
    if symtab is not None:  # (the slot symbols, of out's type, widened for the kernel)
        if symtab.dtype != out.dtype or out.dtype not in (np.uint8, np.uint16):
            raise ValueError("the C decoder writes uint8 or uint16 symbols of the table's type")
        symtab = symtab.astype(np.uint32)
    words = np.ascontiguousarray(words, np.uint16)
    woffsets = np.ascontiguousarray(woffsets, np.int64)
    states = np.ascontiguousarray(states, np.uint32)
    table = np.ascontiguousarray(table, np.uint32)
    if not (out.flags.c_contiguous and out.dtype in (np.uint8, np.uint16) and status.dtype == np.int64):
        raise ValueError("out must be contiguous uint8 / uint16, status int64")
    if symtab is None and out.dtype != np.uint8:
        raise ValueError("packed tables decode to uint8")
    if symtab is not None and symtab.shape != table.shape:
        raise ValueError("symbol and frequency tables differ in size")
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

    head = (words.ctypes.data, len(words), woffsets.ctypes.data, states.ctypes.data, out.ctypes.data, out.itemsize,
            len(out), None if cx is None else cx.ctypes.data, cb, block, lanes, prec, table.ctypes.data,
            None if symtab is None else symtab.ctypes.data, len(table), status.ctypes.data)
    held = (words, woffsets, states, out, cx, table, symtab, status)  # (alive as long as run)

    def run(b0: int, b1: int, _held=held) -> None:
        _lib.nz_decode_blocks(*head, b0, b1, int(force_scalar))

    return run


def decode_join(words, woffsets, states, out, ectx, emin: int, ecount: int, eshift: int, mshift: int, block,
                lanes, prec, table, status, lo1=None, lo0=None, force_scalar: bool = False) -> None:
    """The fused float decode: a packed-table context blob of sign+mantissa bytes whose context is
    ``e - emin + 1`` for an exponent ``e = ectx[i]`` in ``emin .. emin + ecount - 1``, else 0,
    written joined with the exponents as ``(s & 0x80) << 8 | e << eshift | (s & 0x7F) << mshift``
    into ``out`` (uint16), or that value << 16 (``out`` uint32: the top half of fp32 values), ORed
    with the low bits where given: ``lo1`` (uint16 out: fp16's 3 low mantissa bits), or
    ``lo1 << 8 | lo0`` (uint32 out: fp32's low 16 bits). ``status`` as :func:`decode_blocks`;
    ``ecount`` must be below the blob's contexts."""
    words = np.ascontiguousarray(words, np.uint16)
    woffsets = np.ascontiguousarray(woffsets, np.int64)
    states = np.ascontiguousarray(states, np.uint32)
    table = np.ascontiguousarray(table, np.uint32)
    ectx = np.ascontiguousarray(ectx)
    nblocks = status.shape[0]
    if not (out.flags.c_contiguous and out.dtype in (np.uint16, np.uint32) and status.dtype == np.int64):
        raise ValueError("out must be contiguous uint16 / uint32, status int64")
    if ectx.dtype != np.uint8 or len(ectx) < len(out):
        raise ValueError("exponents must be uint8, one per value")
    lows = [None if a is None else np.ascontiguousarray(a) for a in (lo1, lo0)]
    pair_ok = lows[1] is None if out.dtype == np.uint16 else (lows[0] is None) == (lows[1] is None)
    if not pair_ok or any(a is not None and (a.dtype != np.uint8 or len(a) < len(out)) for a in lows):
        raise ValueError("low bits: uint8, one per value (lo1 for uint16 out, lo1 and lo0 for uint32)")
    if not (0 <= emin < 256 and 0 <= ecount < len(table) >> prec):
        raise ValueError("the exponent range names contexts the blob does not have")
    if woffsets.shape[0] != nblocks + 1 or states.shape[0] != nblocks * lanes:
        raise ValueError("block offsets or states do not match the number of blocks")

    def run(b0: int, b1: int) -> None:
        _lib.nz_decode_join(words.ctypes.data, len(words), woffsets.ctypes.data, states.ctypes.data,
                            out.ctypes.data, out.itemsize, len(out), ectx.ctypes.data, emin, ecount,
                            eshift, mshift, *[None if a is None else a.ctypes.data for a in lows], block,
                            lanes, prec, table.ctypes.data, len(table),
                            status.ctypes.data, b0, b1, int(force_scalar))

    on_pool(run, nblocks)


def decode_joint(words, woffsets, states, out, ctx, base: int, eshift: int, mshift: int, planes, block, lanes,
                 prec, table, status, lost, force_scalar: int = 0, lows=None) -> None:
    """The joint float decode of weights/lossless: a packed-table context blob (``ctx`` uint8,
    one per symbol) of symbols s = (e - base + 1) << 2 | m2, or s < 4 for an escape, joined with
    the raw 6-bit fields r (sign << 5 | low 5 mantissa bits) held in ``planes`` (3 x q bytes:
    values i < 3q in the low 6 bits of byte i, value 3q + k in the top 2 bits of bytes k, q + k
    and 2q + k) into ``out`` (uint16): r >> 5 << 15 | e << eshift | (m2 << 5 | r & 31) << mshift,
    escapes with e = m2 = 0. ``status`` as :func:`decode_blocks`; ``lost[b]``: block b's escapes.
    With ``lows`` (fp32: two uint8 arrays, bits 8-15 and 0-7 of each value) ``out`` is uint32 and
    receives that value << 16 | lows[0] << 8 | lows[1].

    ``ctx`` may instead be a matrix's scale offsets ``(rows, cols, bias, hi)`` (integer arrays of
    its row and column offsets, then two ints): value i's context is then computed in the kernel as
    ``clip(rows[i // len(cols)] + cols[i % len(cols)] + bias, 0, hi)``, with no context array.

    ``force_scalar``: 1 the scalar path, 2 no wider than AVX2 (tests compare the paths); the
    AVX-512 path runs by default where the CPU has it (32 lanes, scale contexts, >= 16 columns)."""
    on_pool(joint_runner(words, woffsets, states, out, ctx, base, eshift, mshift, planes, block, lanes, prec,
                         table, status, lost, force_scalar, lows), status.shape[0])


def joint_runner(words, woffsets, states, out, ctx, base: int, eshift: int, mshift: int, planes, block, lanes,
                 prec, table, status, lost, force_scalar: int = 0, lows=None):
    """:func:`decode_joint`'s arguments checked, as ``run(b0, b1)``: the decode of blocks b0..b1
    (one C call, no Python objects touched: any thread may run any range, ranges in any order)."""
    words = np.ascontiguousarray(words, np.uint16)
    woffsets = np.ascontiguousarray(woffsets, np.int64)
    states = np.ascontiguousarray(states, np.uint32)
    table = np.ascontiguousarray(table, np.uint32)
    planes = np.ascontiguousarray(planes, np.uint8)
    nblocks = status.shape[0]
    n = len(out)
    q = (n + 3) // 4
    if not (out.flags.c_contiguous and out.dtype == (np.uint16 if lows is None else np.uint32)
            and status.dtype == np.int64 and lost.dtype == np.int64 and lost.shape == status.shape):
        raise ValueError("out must be contiguous uint16 (uint32 with the low bytes), status and lost int64 per block")
    lo1 = lo0 = None
    if lows is not None:
        lo1, lo0 = (np.ascontiguousarray(a) for a in lows)
        if lo1.dtype != np.uint8 or lo0.dtype != np.uint8 or len(lo1) < n or len(lo0) < n:
            raise ValueError("low bytes: two uint8 arrays, one byte per value each")
    if planes.size != 3 * q:
        raise ValueError("the planes must hold 3 x ceil(n / 4) bytes")
    if woffsets.shape[0] != nblocks + 1 or states.shape[0] != nblocks * lanes:
        raise ValueError("block offsets or states do not match the number of blocks")
    if isinstance(ctx, tuple):  # no context array: the kernel computes them
        ra, cb, bias, hi = ctx
        rowoff = np.ascontiguousarray(ra, np.int32)
        coloff = np.asarray(cb, np.int32) + np.int32(bias)
        ncols, cptr = len(coloff), None
        if ncols < 8 or len(rowoff) * ncols != n or hi < 0:  # (contexts beyond the tables: ERR_SLOT)
            raise ValueError("scale offsets: at least 8 columns and rows x columns values")
        rptr, colptr = rowoff.ctypes.data, coloff.ctypes.data
    else:
        ctx = np.ascontiguousarray(ctx)
        if ctx.dtype != np.uint8 or len(ctx) < n:
            raise ValueError("contexts must be uint8, one per value")
        ncols, hi, cptr, rptr, colptr = 0, 0, ctx.ctypes.data, None, None
        rowoff = coloff = None
    head = (words.ctypes.data, len(words), woffsets.ctypes.data, states.ctypes.data, out.ctypes.data, n, cptr, rptr,
            colptr, ncols, hi, base, eshift, mshift, planes.ctypes.data, q,
            None if lo1 is None else lo1.ctypes.data, None if lo0 is None else lo0.ctypes.data, block, lanes, prec,
            table.ctypes.data, len(table), status.ctypes.data, lost.ctypes.data)
    # the arrays behind those addresses live as long as run does (it may run after this returns)
    held = (words, woffsets, states, out, ctx, rowoff, coloff, planes, lo1, lo0, table, status, lost)

    def run(b0: int, b1: int, _held=held) -> None:
        _lib.nz_decode_joint(*head, b0, b1, int(force_scalar))

    return run


# ------------------------------------------------------------------------------------------------
# parsing and the small passes of a restore (so that a restore the C decoder runs never loads
# numba); each the twin of the numba function named, same arguments and returns. The callers check
# the arrays' types and sizes, as they do for the numba functions.
# ------------------------------------------------------------------------------------------------


def read_table(buf, k, nalpha, total, freqs) -> int:
    """:func:`nzip.entropy.lanes.read_table` (``buf`` uint8, ``freqs`` int64 zeros)."""
    return _lib.nz_read_table(buf.ctypes.data, len(buf), k, nalpha, total, freqs.ctypes.data)


def parse_ctx_packed(buf, pos, nctx, nalpha, prec, max_prec, table, used, freqs):
    """:func:`nzip.entropy.lanes.parse_ctx_packed`: (status, pos, failing context, largest frequency)."""
    ret = np.empty(4, np.int64)
    _lib.nz_parse_ctx_packed(buf.ctypes.data, len(buf), pos, nctx, nalpha, prec, max_prec, table.ctypes.data,
                             used.ctypes.data, freqs.ctypes.data, ret.ctypes.data)
    return tuple(ret.tolist())


def fill_slots(freqs, sym, pack) -> int:
    """:func:`nzip.entropy.lanes.fill_slots` (``sym`` uint8, uint16 or uint32)."""
    freqs = np.ascontiguousarray(freqs, np.int64)
    return _lib.nz_fill_slots(freqs.ctypes.data, len(freqs), sym.ctypes.data, sym.itemsize, pack.ctypes.data)


def pack_tables(slot_sym, slot_pack, out) -> None:
    """:func:`nzip.entropy.lanes.pack_tables`."""
    _lib.nz_pack_tables(slot_sym.ctypes.data, slot_pack.ctypes.data, out.ctypes.data, len(out))


def decode_small_static(buf, max_symbols, *limits):
    """:func:`nzip.entropy.lanes.decode_small_static`: (0 or SMALL_DECLINED, dtype code, offset,
    alphabet size, symbols); ``buf`` any contiguous buffer of the blob's bytes."""
    st, code, offset, nalpha, out = _small_static(buf, max_symbols, *limits)
    return st, code, offset, nalpha, np.frombuffer(out, np.uint8) if out is not None else np.zeros(0, np.uint8)


def zero_fields(v, shift, mask):
    """``weights_lossless._zero_fields``: where the field (v >> shift) & mask of v (uint16 or uint32)
    is 0, as int64 positions."""
    args = (v.ctypes.data, v.itemsize, len(v), shift, mask)
    at = np.empty(_lib.nz_zero_fields(*args, None), np.int64)
    _lib.nz_zero_fields(*args, at.ctypes.data)
    return at


def join16(e, sm, lo, ebits, out) -> None:
    """``weights_lossless._join16_part`` (``lo`` empty for bf16)."""
    _lib.nz_join16(e.ctypes.data, sm.ctypes.data, lo.ctypes.data if lo.shape[0] else None, ebits, out.ctypes.data,
                   len(out))


def join32(e, sm, b1, b0, out) -> None:
    """``weights_lossless._join32_part``."""
    _lib.nz_join32(e.ctypes.data, sm.ctypes.data, b1.ctypes.data, b0.ctypes.data, out.ctypes.data, len(out))


def join32_hi(hi, b1, b0, out) -> None:
    """``weights_lossless._join32_hi_part``."""
    _lib.nz_join32_hi(hi.ctypes.data, b1.ctypes.data, b0.ctypes.data, out.ctypes.data, len(out))


def lo_join(tz, per, full1, full0, low, high, b1, b0, plain_full) -> None:
    """``weights_lossless._lo_join``."""
    _lib.nz_lo_join(tz.ctypes.data, len(tz), per, full1.ctypes.data, full0.ctypes.data, low.ctypes.data,
                    high.ctypes.data, b1.ctypes.data, b0.ctypes.data, int(plain_full))
