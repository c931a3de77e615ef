"""``weights/lossless``: bit-exact checkpoint archiving by float-field entropy coding.

Each float is split into fields that behave differently and each field gets its own model
(ZipNN's and DFloat11's observation: the exponent carries little information, the mantissa is
nearly uniform):

* exponent: order-0 table per tensor (a trained tensor uses a dozen exponents; ~2.6 bits);
* exponent (``mode=best``, matrices): a table per row+column scale context. An additive model of
  log2|w| (row offset + column offset, quarter binades, stored as small integer arrays) gives each
  element one of 16 contexts, computed by the decoder from the side arrays alone, so the lane
  decoder stays parallel (neighbour contexts such as the previous weight would serialise it and
  measured no better on all-MiniLM-L6-v2);
* sign + top 7 mantissa bits: one byte, coded with a table per exponent (``mode=best``): inside a
  binade the density of a bell-shaped weight distribution falls off, so the top mantissa bits are
  skewed and the skew depends on the exponent;
* joint (``mode=best``, matrices, where it pays; the usual case): the exponent and the top 2
  mantissa bits as one symbol with the scale-context tables, the sign and the low 5 bits of the
  byte raw: the skew lives in the top bits, so this keeps both models' gain with one coded symbol
  per weight instead of two;
* fp32 low 16 mantissa bits: per-row precision first (rows whose values all end in k zero bits,
  e.g. rows that came from fp16 or were never trained in an upcast checkpoint, drop those bits),
  then a table per byte and precision; fp16's 3 low bits order-0;
* fp8, integers and bools: order-0 per byte plane; fp64: the top 16 bits as one field, then planes.

``mode=fast`` keeps the exponent order-0 and stores the sign+mantissa byte (and fp32's low bytes,
unless rows have spare precision) raw: one table lookup per weight at decode, ~1 % less ratio.

Stream of one tensor: byte version, then streams as (byte mode: 0 coded / 1 raw, uvarint length,
bytes). Tensors are separate arrays of the container, so any subset decodes alone.
"""
from __future__ import annotations

import os
import zlib
from typing import Any

import numpy as np

from .. import entropy as E
from .._jit import nb
from .._native import on_pool
from ..entropy import coder as EC
from ..entropy import lanes as K
from ..entropy import lanes_c as LC
from ..entropy._varint import Reader, put_uvarint
from ..entropy.tables import empirical_entropy_bits
from ..errors import CorruptDataError, InvalidInputError
from ..formats.checkpoint import (
    DTYPES,
    TORCH_SUFFIXES,
    Checkpoint,
    TensorRecord,
    extras_from_json,
    extras_to_json,
    read_checkpoint,
    write_checkpoint,
)
from ..formats.container import ArraySpec, Item
from ..registry import Codec, Encoded, register

STREAM_VERSION = 1
RAW_TENSOR = 0x81  # first byte of a tensor stored as it is (tiny tensors, where fields do not pay)
CODED, RAW = 0, 1
TOP_CONTEXTS = 15  # exponents with a table of their own for the sign+mantissa byte; the rest share one
MODES = ("best", "fast")
# context tables of the exponent and sign+mantissa fields: at most precision 12, so they decode from
# the packed tables (the exponent's search picked 14 on MiniLM's embedding matrix: 1.3 MB of tables;
# capped, it decodes ~12 % faster for 0.1 % more bytes of that field)
CTX_PRECISION = 12



_KJIT = dict(cache=True, nogil=True, boundscheck=False)
PARALLEL_MIN = 1 << 20  # below this a thread-pool launch costs more than it saves


@nb.njit(parallel=True, **_KJIT)
def _gather_u8_par(lut, keys, out):
    for i in nb.prange(keys.shape[0]):
        out[i] = lut[keys[i]]


@nb.njit(**_KJIT)
def _gather_u8_ser(lut, keys, out):
    for i in range(keys.shape[0]):
        out[i] = lut[keys[i]]


@nb.njit(**_KJIT)
def _clip_rows(a, b, bias, hi, out, r0, r1):
    cols = b.shape[0]
    for r in range(r0, r1):
        base = a[r] + bias
        row = out[r * cols:(r + 1) * cols]  # a 0-based slice: the inner loop vectorises
        for c in range(cols):
            v = base + b[c]
            row[c] = 0 if v < 0 else (hi if v > hi else v)


@nb.njit(parallel=True, **_KJIT)
def _outer_clip_par(a, b, bias, hi, out, parts):
    rows = a.shape[0]
    for p in nb.prange(parts):
        _clip_rows(a, b, bias, hi, out, p * rows // parts, (p + 1) * rows // parts)


# parallel for large tensors; serial below PARALLEL_MIN elements, where launching numba's threads
# costs more than the loop (small tensors decode several at a time on a thread pool anyway)
def _gather_u8(lut, keys, out):
    (_gather_u8_par if keys.shape[0] >= PARALLEL_MIN else _gather_u8_ser)(lut, keys, out)


def _outer_clip(a, b, bias, hi, out):
    if out.shape[0] >= PARALLEL_MIN:
        _outer_clip_par(a, b, bias, hi, out, 8)
    else:
        _clip_rows(a, b, bias, hi, out, 0, a.shape[0])


@nb.njit(**_KJIT)
def _lo_join(tz, per, full1, full0, low, high, b1, b0, plain_full):
    """Rebuild the low 16 bits row by row: with ``plain_full``, rows of tz 0 copy their bytes from
    full1 / full0; the others are (high byte if tz < 8, low byte if tz < 16) << tz."""
    li = 0
    hi = 0
    fi = 0
    for r in range(tz.shape[0]):
        t = np.uint32(tz[r])
        o1, o0 = b1[r * per:(r + 1) * per], b0[r * per:(r + 1) * per]
        if t >= 16:
            o1[:] = 0
            o0[:] = 0
            continue
        if t == 0 and plain_full:
            o1[:] = full1[fi:fi + per]
            o0[:] = full0[fi:fi + per]
            fi += per
            continue
        lw = low[li:li + per]
        li += per
        if t < 8:
            hw = high[hi:hi + per]
            hi += per
            for j in range(per):
                v = (np.uint32(lw[j]) | (np.uint32(hw[j]) << np.uint32(8))) << t
                o1[j] = (v >> np.uint32(8)) & np.uint32(0xFF)
                o0[j] = v & np.uint32(0xFF)
        else:
            for j in range(per):
                v = np.uint32(lw[j]) << t
                o1[j] = (v >> np.uint32(8)) & np.uint32(0xFF)
                o0[j] = v & np.uint32(0xFF)


# ------------------------------------------------------------------------------------------------
# streams
# ------------------------------------------------------------------------------------------------


def _put_stream(out: bytearray, blob: bytes | None, raw: np.ndarray | None = None) -> None:
    """Append a coded stream, or the raw field when coding does not pay (or blob is None)."""
    if raw is not None and (blob is None or len(blob) >= raw.nbytes):
        out.append(RAW)
        data = raw.astype(raw.dtype.newbyteorder("<"), copy=False).tobytes()
        put_uvarint(out, len(data))
        out += data
    else:
        out.append(CODED)
        put_uvarint(out, len(blob))
        out += blob


class _CPU:
    """Where the fields decode: numpy arrays on the CPU (this) or torch tensors on a device
    (:class:`_Device`, through the GPU kernels). The stream parsing above them is shared."""

    @staticmethod
    def raw(data, dtype) -> np.ndarray:
        return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype, copy=False)

    @staticmethod
    def static(data, n: int, what: str):
        return E.decode(data, max_symbols=n, what=what)

    @staticmethod
    def context(data, ctx, what: str):
        return E.decode_context(data, ctx, what=what)

    @staticmethod
    def cast(a, dtype):
        return a.astype(dtype, copy=False)

    @staticmethod
    def ctx_of(e, top: np.ndarray):
        return _ctx_of(e, top)

    @staticmethod
    def scale_contexts(a: np.ndarray, b: np.ndarray):
        return _scale_contexts(a, b)


class _Device:
    """Fields as torch tensors on ``device``: entropy blobs through the rANS lane kernel."""

    def __init__(self, device) -> None:
        import torch

        from ..kernels import rans

        self.torch, self.rans, self.device = torch, rans, device

    def raw(self, data, dtype):
        return self.torch.from_numpy(_CPU.raw(data, dtype).copy()).to(self.device)

    def static(self, data, n: int, what: str):
        return self.rans.decode_blobs([data], self.device, what=what, limits=[n])[0]

    def context(self, data, ctx, what: str):
        return self.rans.decode(data, self.device, contexts=ctx, what=what)

    def cast(self, a, dtype):
        return a.to({np.uint8: self.torch.uint8, np.int16: self.torch.int16}[np.dtype(dtype).type])

    def ctx_of(self, e, top: np.ndarray):
        return self.torch.from_numpy(_ctx_lut(top)).to(self.device)[e.long()]

    def scale_contexts(self, a: np.ndarray, b: np.ndarray):
        t = self.torch
        ta = t.from_numpy(a.astype(np.int32)).to(self.device)
        tb = t.from_numpy(b.astype(np.int32)).to(self.device)
        c = (ta[:, None] + tb[None, :] + SCALE_CONTEXTS // 2).clamp_(0, SCALE_CONTEXTS - 1)
        return c.reshape(-1).to(t.uint8)


def _get_stream(r: Reader, dtype, n: int, dev=_CPU):
    mode = r.byte()
    data = r.take(r.uvarint(len(r.data)))
    if mode == RAW:
        if len(data) != n * np.dtype(dtype).itemsize:
            raise r.fail(f"raw field holds {len(data)} bytes, expected {n * np.dtype(dtype).itemsize}")
        return dev.raw(data, dtype)
    if mode != CODED:
        raise r.fail(f"unknown stream mode {mode}")
    out = dev.static(data, n, r.what)
    if out.shape[0] != n:
        raise r.fail(f"field holds {out.shape[0]} values, expected {n}")
    return dev.cast(out, dtype)


def _context_map(e: np.ndarray) -> np.ndarray:
    """exponent -> context: the most frequent exponents get 1..TOP_CONTEXTS, all others 0."""
    counts = np.bincount(e, minlength=256)
    top = np.argsort(-counts, kind="stable")[:TOP_CONTEXTS]
    top = top[counts[top] > 0]
    return np.sort(top).astype(np.uint8)


def _ctx_lut(top: np.ndarray) -> np.ndarray:
    """exponent -> its sign/mantissa context (1.. for the exponents in ``top``, 0 for the rest)."""
    lut = np.zeros(256, dtype=np.uint8)
    lut[top] = np.arange(1, len(top) + 1, dtype=np.uint8)
    return lut


def _ctx_of(e: np.ndarray, top: np.ndarray) -> np.ndarray:
    out = np.empty(e.size, dtype=np.uint8)
    _gather_u8(_ctx_lut(top), e, out)
    return out


def _put_sm(out: bytearray, sm: np.ndarray, e: np.ndarray, mode: str) -> None:
    if mode == "fast" or sm.size < 4096:
        _put_stream(out, E.encode(sm) if mode == "best" else None, sm)
        return
    top = _context_map(e)
    out.append(len(top))
    out += top.tobytes()
    _put_stream(out, E.encode_context(sm, _ctx_of(e, top), TOP_CONTEXTS + 1, max_precision=CTX_PRECISION), sm)


class _FusedSM:
    """A sign+mantissa field that decodes fused with its exponents straight into the output
    (``LaneStreams.decode_join``) once the low bits, which come after it in the stream, are in."""

    def __init__(self, streams, e, emin: int, ecount: int, out, eshift: int, mshift: int) -> None:
        self.args = (streams, e, emin, ecount, out, eshift, mshift)

    def finish(self, lo1=None, lo0=None) -> None:
        p, e, emin, ecount, out, eshift, mshift = self.args
        p.decode_join(e, emin, ecount, out, eshift, mshift, lo1, lo0)


def _get_sm(r: Reader, e, n: int, mode: str, dev=_CPU, join=None):
    """The sign+mantissa bytes; with ``join`` = (out, eshift, mshift) on the CPU, a large
    context-coded field comes back as a :class:`_FusedSM` to finish instead (the caller joins only
    when it gets bytes)."""
    if mode == "fast" or n < 4096:
        return _get_stream(r, np.uint8, n, dev)
    k = r.byte()
    if k > TOP_CONTEXTS:
        raise r.fail("bad exponent context map")
    top = np.frombuffer(r.take(k), dtype=np.uint8)
    m = r.byte()
    data = r.take(r.uvarint(len(r.data)))
    if m == RAW:
        if len(data) != n:
            raise r.fail("raw sign/mantissa field has the wrong size")
        return dev.raw(data, np.uint8)
    if m != CODED:
        raise r.fail(f"unknown stream mode {m}")
    # fused with the exponents where the top exponents are a run (as a bell-shaped field's are)
    if (join is not None and dev is _CPU and n >= LC.MIN_SYMBOLS and k
            and int(top[-1]) - int(top[0]) == k - 1):
        out, eshift, mshift = join
        p = EC.parse_context(data, n, what=r.what)
        if p.joinable(e, k, out):
            return _FusedSM(p, e, int(top[0]), k, out, eshift, mshift)
        return p.decode(_ctx_of(e, top)).astype(np.uint8, copy=False)
    return dev.cast(dev.context(data, dev.ctx_of(e, top), r.what), np.uint8)



# ------------------------------------------------------------------------------------------------
# exponent: order-0, or one table per row+column scale context (mode=best, matrices)
# ------------------------------------------------------------------------------------------------

SCALE_STEPS = 4  # row/column log-scale offsets in quarter binades
SCALE_CONTEXTS = 16
SCALE_MIN_NUMEL = 1 << 16


def _rows_cols(shape, n: int) -> tuple[int, int]:
    if shape is None or len(shape) < 2:
        return 1, n
    c = int(shape[-1])
    return (n // c, c) if c else (1, n)


def _scale_offsets(e: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer row and column offsets of the exponent (an additive model of log2|w|, fitted by a
    few alternating means; zeros and subnormals clipped so they do not drag the fit)."""
    # two alternating means (the fit barely moves after that), which need only the clipped values'
    # row and column sums: one pass (numpy's float copies and five passes were a third of a large
    # matrix's encode; the sums' rounding differs from theirs, so a rare offset on a .5 boundary
    # may round the other way: the decoder reads the offsets from the stream either way)
    floor = float(np.float32(np.median(e[:: max(1, e.size // 65536)]) - 8))
    rsum, csum = np.zeros(rows), np.zeros(cols)
    _clipped_sums(np.ascontiguousarray(e), rows, cols, floor, rsum, csum)
    rm, cm = rsum / cols, csum / rows
    m = rm.mean()
    a = rm - m
    b = (cm - m) - a.mean()
    a = (rm - m) - b.mean()
    return (np.rint(a * SCALE_STEPS).astype(np.int16), np.rint(b * SCALE_STEPS).astype(np.int16))


@nb.njit(**_KJIT)
def _clipped_sums(e, rows, cols, floor, rsum, csum):
    """Row and column sums of max(e, floor) over e as a rows x cols matrix (float64)."""
    for r in range(rows):
        acc = 0.0
        row = e[r * cols:(r + 1) * cols]
        for c in range(cols):
            v = np.float64(row[c])
            v = v if v > floor else floor
            acc += v
            csum[c] += v
        rsum[r] = acc


def _scale_contexts(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Context of every element: the row plus column offset, clipped to 0..SCALE_CONTEXTS-1."""
    out = np.empty(a.size * b.size, dtype=np.uint8)
    _outer_clip(a.astype(np.int32), b.astype(np.int32), SCALE_CONTEXTS // 2, SCALE_CONTEXTS - 1, out)
    return out


def _put_e(out: bytearray, e: np.ndarray, shape, mode: str, plain: bytes | None = None) -> None:
    """The exponent field (``plain``: its order-0 blob, where the caller has it)."""
    rows, cols = _rows_cols(shape, e.size)
    plain = E.encode(e) if plain is None else plain
    if mode == "best" and e.size >= SCALE_MIN_NUMEL and rows >= 8 and cols >= 8:
        a, b = _scale_offsets(e, rows, cols)
        sa, sb = E.encode(a), E.encode(b)
        ctx = E.encode_context(e, _scale_contexts(a, b), SCALE_CONTEXTS, max_precision=CTX_PRECISION)
        if len(sa) + len(sb) + len(ctx) + 12 < len(plain):
            out.append(1)
            for blob in (sa, sb, ctx):
                put_uvarint(out, len(blob))
                out += blob
            return
    out.append(0)
    _put_stream(out, plain, e)


def _get_e(r: Reader, n: int, shape, dev=_CPU):
    flag = r.byte()
    if flag == 0:
        return _get_stream(r, np.uint8, n, dev)
    if flag != 1:
        raise r.fail(f"unknown exponent model {flag}")
    ctx = dev.scale_contexts(*_get_scale_offsets(r, n, shape))
    return dev.cast(dev.context(r.take(r.uvarint(len(r.data))), ctx, r.what), np.uint8)


def _get_scale_offsets(r: Reader, n: int, shape) -> tuple[np.ndarray, np.ndarray]:
    """The row and column offsets of the scale contexts (exponent model 1, the joint layout)."""
    rows, cols = _rows_cols(shape, n)
    a = E.decode(r.take(r.uvarint(len(r.data))), max_symbols=rows, what=r.what)
    b = E.decode(r.take(r.uvarint(len(r.data))), max_symbols=cols, what=r.what)
    if a.size != rows or b.size != cols or a.dtype != np.int16 or b.dtype != np.int16:
        raise r.fail("row/column scale offsets do not match the tensor's shape")
    return a, b


# ------------------------------------------------------------------------------------------------
# the exponent and the top mantissa bits as one symbol (mode=best, matrices): one coded symbol per
# weight instead of two (the exponent's table, then the sign+mantissa byte's), so the decoder does
# half the table steps, and the joint table keeps what both context models captured (on MiniLM in
# bf16: 1.5228x against the two fields' 1.5209x; scripts/research/lossless/joint_symbol.py)
# ------------------------------------------------------------------------------------------------

JOINT = 2  # exponent model flag: (exponent, top JOINT_BITS mantissa bits) | scale context
JOINT_BITS = 2  # 0..4 measured: 2 is best at precision 12 (the lower mantissa bits are ~uniform)
JOINT_SPAN = 63  # the top exponents with symbols of their own ((d + 1) << 2 | m, 4..255); the rest
                 # (zeros, tiny values) are symbol 0 and their exponent and bits go to an escape list


@nb.njit(**_KJIT)
def _joint_symbols(e, sm, base, sym):
    """The joint layout's symbols in one pass: (e - base + 1) << 2 | top 2 mantissa bits for
    exponents e >= base, 0 (an escape) below; returns how many escaped."""
    lost = 0
    top = (1 << JOINT_BITS) - 1
    for i in range(e.shape[0]):
        d = np.int32(e[i]) - np.int32(base)
        keep = d >= 0
        sym[i] = np.uint8((((d + 1) << JOINT_BITS) | ((np.int32(sm[i]) >> (7 - JOINT_BITS)) & top)) if keep else 0)
        lost += not keep
    return lost


@nb.njit(**_KJIT)
def _joint_escapes(e, sm, base, esc):
    """The escaped values' e << 2 | top 2 mantissa bits, in order."""
    k = 0
    top = (1 << JOINT_BITS) - 1
    for i in range(e.shape[0]):
        if np.int32(e[i]) < np.int32(base):
            esc[k] = np.uint16((np.int32(e[i]) << JOINT_BITS) | ((np.int32(sm[i]) >> (7 - JOINT_BITS)) & top))
            k += 1


def _pack6(sm: np.ndarray) -> np.ndarray:
    """The sign and the low 5 mantissa bits of each sign+mantissa byte (6 bits) in three byte
    planes of q = ceil(n / 4): the first three quarters of the values in the planes' low 6 bits,
    the last quarter's 6 bits spread over their top 2 bits (every decode loop contiguous)."""
    q = (sm.size + 3) // 4
    out = np.empty(3 * q, np.uint8)
    _pack6_into(sm, q, out)
    return out


@nb.njit(**_KJIT)
def _pack6_into(sm, q, out):
    """_pack6 in one pass: value i's 6 bits r_i (0 past the end); plane t < 3 byte k is
    r_{tq+k} | (bits 2t..2t+1 of r_{3q+k}) << 6."""
    n = sm.shape[0]
    for k in range(q):
        i = 3 * q + k
        last = np.uint32(0)
        if i < n:
            v = np.uint32(sm[i])
            last = ((v >> np.uint32(7)) << np.uint32(5)) | (v & np.uint32(31))
        for t in range(3):
            j = t * q + k
            r = np.uint32(0)
            if j < n:
                v = np.uint32(sm[j])
                r = ((v >> np.uint32(7)) << np.uint32(5)) | (v & np.uint32(31))
            out[j] = np.uint8(r | (((last >> np.uint32(2 * t)) & np.uint32(3)) << np.uint32(6)))


def _order0_floor(e: np.ndarray) -> int:
    """Bytes below which no order-0 blob of ``e`` can go (its empirical entropy, less a margin)."""
    return max(0, int(empirical_entropy_bits(K.histogram(e, 256)) / 8 * 0.999) - 64)


def _put_joint(out: bytearray, e: np.ndarray, sm: np.ndarray, shape, plain_e) -> bool:
    """Write the joint layout of a matrix's exponent and sign+mantissa fields and return True,
    or write nothing and return False where it does not apply or costs more than the two fields
    stored apart (``plain_e()``: the exponent's order-0 blob, made only where the joint layout
    does not win against its entropy alone: it costs ~20 % of a matrix's encode)."""
    rows, cols = _rows_cols(shape, e.size)
    if e.size < SCALE_MIN_NUMEL or rows < 8 or cols < 8:
        return False
    a, b = _scale_offsets(e, rows, cols)
    base = max(int(e.max()) - (JOINT_SPAN - 1), 0)
    sym = np.empty(e.size, np.uint8)
    esc = np.empty(_joint_symbols(e, sm, base, sym), np.uint16)
    if esc.size:
        _joint_escapes(e, sm, base, esc)
    blobs = [E.encode(a), E.encode(b),
             E.encode_context(sym, _scale_contexts(a, b), SCALE_CONTEXTS, max_precision=CTX_PRECISION),
             E.encode(esc) if esc.size else b""]
    packed = _pack6(sm)
    joint = sum(len(x) + 5 for x in blobs) + packed.size + 2
    if joint >= _order0_floor(e) + sm.size and joint >= len(plain_e()) + sm.size:
        return False
    out.append(JOINT)
    out.append(base)
    for blob in blobs:
        put_uvarint(out, len(blob))
        out += blob
    out += packed.tobytes()
    return True


@nb.njit(inline="always", **_KJIT)
def _joint_value(j, r, base, eshift, mshift):
    """s << 15 | e << eshift | m7 << mshift from joint symbol j and raw field r (uint32s); an
    escaped value (j < 4) gets exponent 0 and top mantissa bits 0, filled in afterwards.
    Branch-free, so the loops over it vectorise. (The C decoder's joint_value is its twin.)"""
    keep = np.uint32(0) - np.uint32(j >= np.uint32(4))
    ev = ((j >> np.uint32(2)) + np.uint32(base) - np.uint32(1)) & keep
    m7 = (((j & np.uint32(3)) << np.uint32(5)) & keep) | (r & np.uint32(31))
    return np.uint16(((r >> np.uint32(5)) << np.uint32(15)) | (ev << np.uint32(eshift)) | (m7 << np.uint32(mshift)))


@nb.njit(**_KJIT)
def _joint_lo(sym, x, base, eshift, mshift, out):
    """:func:`_joint_value` for values of the first three quarters (6-bit fields in the low bits
    of plane ``x``); returns how many escaped (a uint32 count keeps the loop vectorised; spans
    stay below 2**30 values)."""
    lost = np.uint32(0)
    for i in range(out.shape[0]):
        j = np.uint32(sym[i])
        out[i] = _joint_value(j, np.uint32(x[i]) & np.uint32(63), base, eshift, mshift)
        lost += np.uint32(j < np.uint32(4))
    return lost


@nb.njit(**_KJIT)
def _joint_hi(sym, pa, pb, pc, base, eshift, mshift, out):
    """:func:`_joint_lo` for the last quarter (its fields in the planes' top 2 bits)."""
    lost = np.uint32(0)
    for i in range(out.shape[0]):
        j = np.uint32(sym[i])
        r = (np.uint32(pa[i]) >> np.uint32(6)) | ((np.uint32(pb[i]) >> np.uint32(6)) << np.uint32(2)) \
            | ((np.uint32(pc[i]) >> np.uint32(6)) << np.uint32(4))
        out[i] = _joint_value(j, r, base, eshift, mshift)
        lost += np.uint32(j < np.uint32(4))
    return lost


@nb.njit(**_KJIT)
def _joint_span(sym, planes, base, eshift, mshift, out, t, k0, k1):
    """Values k0..k1 of quarter t."""
    q = planes.shape[0] // 3
    o = t * q
    if t < 3:
        return _joint_lo(sym[o + k0:o + k1], planes[t * q + k0:t * q + k1], base, eshift, mshift, out[o + k0:o + k1])
    return _joint_hi(sym[o + k0:o + k1], planes[k0:k1], planes[q + k0:q + k1], planes[2 * q + k0:2 * q + k1],
                  base, eshift, mshift, out[o + k0:o + k1])


@nb.njit(parallel=True, **_KJIT)
def _joint_par(sym, planes, base, eshift, mshift, out, parts, lost):
    q = planes.shape[0] // 3
    n = out.shape[0]
    for w in nb.prange(4 * parts):
        t, p = w // parts, w % parts
        size = min(q, n - t * q)  # the last quarter may be short
        if size > 0:
            lost[w] = _joint_span(sym, planes, base, eshift, mshift, out, t, p * size // parts,
                                  (p + 1) * size // parts)


def _joint_join(sym, planes, base, eshift, mshift, out) -> list[tuple[int, int, int]]:
    """The joint layout's values into ``out``; returns (start, stop, count) of the spans holding
    escaped values."""
    n, q = out.shape[0], planes.shape[0] // 3
    parts = 2 + (n >> 32) if n >= PARALLEL_MIN else 1
    spans = [(t * q + p * size // parts, t * q + (p + 1) * size // parts)
             for t in range(4) for p in range(parts) for size in [max(0, min(q, n - t * q))]]
    if parts > 1:
        lost = np.zeros(4 * parts, np.int64)
        _joint_par(sym, planes, base, eshift, mshift, out, parts, lost)
    else:
        lost = [int(_joint_span(sym, planes, base, eshift, mshift, out, t, 0, b - a)) if b > a else 0
                for t, (a, b) in enumerate(spans)]
    return [(a, b, int(c)) for (a, b), c in zip(spans, lost) if c]


def _get_joint_parts(r: Reader, n: int, shape):
    """The joint layout's streams: base, row and column offsets, the symbols' blob, the escape
    blob, the three planes of 6-bit fields."""
    base = r.byte()
    a, b = _get_scale_offsets(r, n, shape)
    data = r.take(r.uvarint(len(r.data)))
    esc = r.take(r.uvarint(len(r.data)))
    packed = np.frombuffer(r.take(3 * ((n + 3) // 4)), dtype=np.uint8)
    return base, a, b, data, esc, packed


def _escapes(r: Reader, esc, count: int, ebits: int):
    """The escaped values' exponents and top mantissa bits."""
    if not count:
        if len(esc):
            raise r.fail("escape list without escapes")
        return np.zeros(0, np.uint16), np.zeros(0, np.uint16)
    v = E.decode(esc, max_symbols=count, what=r.what) if len(esc) else np.zeros(0, np.uint16)
    if v.size != count or v.dtype != np.uint16 or int(v.max()) >> JOINT_BITS >= 1 << ebits:
        raise r.fail("the escape list does not match the escaped values")
    return v >> JOINT_BITS, v & ((1 << JOINT_BITS) - 1)


def _start_joint(r: Reader, n: int, shape, ebits: int, out: np.ndarray, lows=None):
    """The joint layout into ``out``, split at its kernel. ``out``: uint16, s << 15 | e << (15 -
    ebits) | m7 << mshift (mshift 3 for fp16, whose 3 low mantissa bits come later, else 0); or,
    with ``lows`` (fp32: a function that reads the two low byte fields, which follow the joint
    streams in r), uint32 with those 16 bits under that. The streams are parsed here (r left after
    them); returns ``(nblocks, run, after)``: ``run(b0, b1)`` decodes blocks b0..b1 on any thread
    (the C decoder, GIL-free; nblocks 0 and run None where the decode was done here instead);
    ``after()``, on the caller's thread once every block ran, checks their status and puts the
    escaped values in."""
    base, a, b, data, esc, packed = _get_joint_parts(r, n, shape)
    eshift, mshift = 15 - ebits, 3 if ebits == 5 else 0
    if base > max(0, (1 << ebits) - JOINT_SPAN):
        raise r.fail(f"joint exponent base {base} out of range")
    p = EC.parse_context(data, n, what=r.what)
    lo = lows() if lows is not None else None
    scale = (a, b, SCALE_CONTEXTS // 2, SCALE_CONTEXTS - 1)  # (the C decoder computes the contexts)
    sym = hi = None
    emask, eat = (1 << ebits) - 1, eshift + (16 if out.dtype == np.uint32 else 0)
    found: dict[int, np.ndarray] = {}  # block start -> where its escaped values are
    if p.jointable(scale, out, lo):  # the C decoder: symbols and raw fields to the floats' bits in one pass
        nblocks, kernel, spans_of, lost = p.joint_job(scale, base, eshift, mshift, packed, out, lo)

        def run(k0: int, k1: int) -> None:  # (escapes found where decoded: values left with exponent 0,
            kernel(k0, k1)                    # as kept values have e >= base > 0)
            for k in range(k0, k1):
                if lost[k]:
                    i = k * p.block
                    found[i] = i + _zero_fields(out[i:min(i + p.block, n)], eat, emask)
    else:
        sym = p.decode(_scale_contexts(a, b))
        if sym.size != n or sym.dtype != np.uint8:
            raise r.fail(f"joint field holds {sym.size} values, expected {n}")
        hi = out if lo is None else np.empty(n, np.uint16)
        spans = _joint_join(sym, packed, base, eshift, mshift, hi)
        nblocks, run, spans_of = 0, None, lambda: spans

    def after() -> None:
        spans = spans_of()
        count = sum(c for _, _, c in spans)
        ee, top = _escapes(r, esc, count, ebits)
        if count:
            if base == 0:  # (every exponent has a symbol: the encoder never escapes)
                raise r.fail("escaped values where none can be")
            # where: symbols below 4, or (decoded in C) as run found them
            none = np.zeros(0, np.int64)
            lost = np.concatenate([i + np.flatnonzero(sym[i:z] < 4) if sym is not None else found.get(i, none)
                                   for i, z, _ in spans])
            if lost.size != count:
                raise r.fail("the escape list does not match the escaped values")
            fix = ((ee << eshift) | (top << (5 + mshift))).astype(np.uint16)
            if hi is not None:
                hi[lost] |= fix
            else:
                out[lost] |= fix.astype(out.dtype) << (eat - eshift)
        if hi is not None and lo is not None:
            _join32_hi(hi, lo[0], lo[1], out)

    return nblocks, run, after


def _zero_fields(v, shift, mask):
    """Positions of the values of ``v`` whose field (v >> shift) & mask is 0 (int64)."""
    if LC.available and v.dtype in (np.uint16, np.uint32) and v.flags.c_contiguous:
        return LC.zero_fields(v, shift, mask)
    return _zero_fields_nb(v, shift, mask)


@nb.njit(**_KJIT)
def _zero_fields_nb(v, shift, mask):
    """Positions of the values of ``v`` whose field (v >> shift) & mask is 0."""
    count = 0
    for i in range(v.shape[0]):
        count += (v[i] >> shift) & mask == 0
    at = np.empty(count, np.int64)
    k = 0
    for i in range(v.shape[0]):
        if (v[i] >> shift) & mask == 0:
            at[k] = i
            k += 1
    return at


def _get_joint_device(r: Reader, n: int, shape, ebits: int, dev):
    """The joint layout on a device: (exponent, sign+mantissa byte) as uint8 tensors."""
    t = dev.torch
    base, a, b, data, esc, packed = _get_joint_parts(r, n, shape)
    j = dev.context(data, dev.scale_contexts(a, b), r.what).to(t.int32)
    if j.shape[0] != n:
        raise r.fail(f"joint field holds {j.shape[0]} values, expected {n}")
    p = t.from_numpy(packed.copy()).to(dev.device).to(t.int32).reshape(3, -1)
    last = (p[0] >> 6) | ((p[1] >> 6) << 2) | ((p[2] >> 6) << 4)
    f = t.cat([p[0] & 63, p[1] & 63, p[2] & 63, last])[:n]
    kept = j >= 4
    e = t.where(kept, (j >> 2) + base - 1, 0)
    top = t.where(kept, j & 3, 0)
    lost = t.nonzero(~kept).reshape(-1)
    ee, tb = _escapes(r, esc, int(lost.shape[0]), ebits)
    if lost.shape[0]:
        e[lost] = t.from_numpy(ee.astype(np.int32)).to(dev.device)
        top[lost] = t.from_numpy(tb.astype(np.int32)).to(dev.device)
    sm = ((f >> 5) << 7) | (top << 5) | (f & 31)
    return e.to(t.uint8), sm.to(t.uint8)


@nb.njit(**_KJIT)
def _join32_hi_nb(hi, b1, b0, out):
    for i in range(out.shape[0]):
        out[i] = (np.uint32(hi[i]) << np.uint32(16)) | (np.uint32(b1[i]) << np.uint32(8)) | np.uint32(b0[i])


def _join32_hi_part(hi, b1, b0, out) -> None:
    if _c_takes(b1, b0) and _c_takes(hi, dtype=np.uint16) and _c_takes(out, dtype=np.uint32):
        LC.join32_hi(hi, b1, b0, out)
    else:
        _join32_hi_nb(hi, b1, b0, out)


def _join32_hi(hi, b1, b0, out) -> None:
    """fp32 bits from the top halves (the joint layout's) and the two low bytes."""
    _on_parts(lambda a, b: _join32_hi_part(hi[a:b], b1[a:b], b0[a:b], out[a:b]), out.shape[0])


def _is_joint(r: Reader) -> bool:
    return r.pos < len(r.data) and r.data[r.pos] == JOINT


# ------------------------------------------------------------------------------------------------
# fp32 low mantissa bytes, with per-row precision: rows whose low bits are all zero (values that
# came from fp16/bf16, untrained rows of an upcast checkpoint) drop those bits
# ------------------------------------------------------------------------------------------------


def _row_precision(lo: np.ndarray, rows: int) -> np.ndarray:
    """Trailing zero bits common to every value of each row (16 for an all-zero row)."""
    acc = np.bitwise_or.reduce(lo.reshape(rows, -1), axis=1).astype(np.uint32)
    tz = np.full(rows, 16, dtype=np.uint8)
    nz = acc != 0
    low = acc[nz] & (~acc[nz] + np.uint32(1))  # lowest set bit
    tz[nz] = np.log2(low.astype(np.float64)).astype(np.uint8)
    return tz


def _put_byte_pair(out: bytearray, lo: np.ndarray, mode: str) -> None:
    """Bits 8..15, then bits 0..7 of ``lo`` as two byte fields: nearly uniform, so mode=fast keeps
    them raw and mode=best codes them only where that pays (~1.5 % of these bytes on MiniLM), and
    tries only where their entropy leaves more than 0.1 % to gain (coding the others to keep them
    raw anyway was ~15 % of an fp32 encode)."""
    for shift in (8, 0):
        b = ((lo >> shift) & 0xFF).astype(np.uint8)
        _put_stream(out, E.encode(b) if mode == "best" and b.size and _may_pay(b) else None, b)


def _may_pay(b: np.ndarray) -> bool:
    """Whether coding byte field ``b`` could save more than 0.1 % of it: its order-0 entropy plus
    two bits per used symbol of table is below 99.9 % of its size."""
    counts = K.histogram(b, 256)
    return empirical_entropy_bits(counts) / 8 + np.count_nonzero(counts) / 4 < 0.999 * b.size


def _put_lo32(out: bytearray, u: np.ndarray, shape, mode: str) -> None:
    """The low 16 bits of fp32 values. Flag 0: two byte fields (coded where it pays). Flag 2 (per-row
    precision, where some row has trailing zero bits): each row's precision tz; the full-precision
    rows' two bytes as two fields, as flag 0 (they are close to uniform: coding them through the
    contexts of flag 1, which older files hold, saved nothing and cost a decode of every byte);
    the other rows' 16 - tz significant bits coded with tz as context (the low byte, and the high
    byte where tz < 8)."""
    lo = (u & 0xFFFF).astype(np.uint32)
    rows, _ = _rows_cols(shape, u.size)
    tz = _row_precision(lo, rows) if u.size else np.zeros(0, np.uint8)
    if not tz.size or not tz.any():
        out.append(0)
        _put_byte_pair(out, lo, mode)
        return
    out.append(2)
    per = u.size // rows
    tz_blob = E.encode(tz)
    put_uvarint(out, len(tz_blob))
    out += tz_blob
    _put_byte_pair(out, lo[np.repeat(tz == 0, per)], mode)
    tze = np.repeat(tz, per)
    v = lo >> tze.astype(np.uint32)  # 16 - tz significant bits
    keep = (tze > 0) & (tze < 16)
    low_b = (v[keep] & 0xFF).astype(np.uint8)
    high = (tze > 0) & (tze < 8)
    high_b = (v[high] >> 8).astype(np.uint8)
    blobs = [E.encode_context(low_b, tze[keep], 17) if low_b.size else b"",
             E.encode_context(high_b, tze[high], 8) if high_b.size else b""]
    for blob in blobs:
        put_uvarint(out, len(blob))
        out += blob


def _get_lo32(r: Reader, n: int, shape) -> np.ndarray:
    """The low 16 bits of every value as (bits 8..15, bits 0..7), uint8 each."""
    flag = r.byte()
    if flag == 0:  # two plain byte fields: the join reads them directly
        return _get_stream(r, np.uint8, n), _get_stream(r, np.uint8, n)
    if flag not in (1, 2):
        raise r.fail(f"unknown low-mantissa model {flag}")
    rows, _ = _rows_cols(shape, n)
    tz = E.decode(r.take(r.uvarint(len(r.data))), max_symbols=rows, what=r.what)
    if tz.size != rows or tz.dtype != np.uint8 or int(tz.max()) > 16:
        raise r.fail("row precisions do not match the tensor")
    per = n // rows
    if flag == 2:  # the full-precision rows' bytes as plain fields
        nfull = int((tz == 0).sum()) * per
        full1, full0 = _get_stream(r, np.uint8, nfull), _get_stream(r, np.uint8, nfull)
        keep, high = tz[(tz > 0) & (tz < 16)], tz[(tz > 0) & (tz < 8)]
    else:  # (flag 1: every row through the contexts)
        full1 = full0 = np.zeros(0, np.uint8)
        keep, high = tz[tz < 16], tz[tz < 8]
    low_blob, high_blob = r.take(r.uvarint(len(r.data))), r.take(r.uvarint(len(r.data)))
    low = (E.decode_context(low_blob, np.repeat(keep, per), what=r.what) if keep.size
           else np.zeros(0, np.uint8))
    hi = (E.decode_context(high_blob, np.repeat(high, per), what=r.what) if high.size
          else np.zeros(0, np.uint8))
    if low.size != keep.size * per or hi.size != high.size * per:
        raise r.fail("low mantissa fields do not match the row precisions")
    b1, b0 = np.empty(n, np.uint8), np.empty(n, np.uint8)
    if _c_takes(tz, full1, full0, low, hi, b1, b0):
        LC.lo_join(tz, per, full1, full0, low, hi, b1, b0, flag == 2)
    else:
        _lo_join(tz, per, full1, full0, low, hi, b1, b0, flag == 2)
    return b1, b0


# ------------------------------------------------------------------------------------------------
# field reassembly: one pass over the output instead of numpy's several temporaries
# ------------------------------------------------------------------------------------------------

_JIT = dict(cache=True, nogil=True, boundscheck=False)


@nb.njit(**_JIT)
def _join16_nb(e, sm, lo, ebits, out):
    """sign | exponent | mantissa of 16-bit floats: bf16 (ebits 8, no lo) and fp16 (ebits 5, lo
    holds the 3 low mantissa bits). Loops run over range(len) of (sliced) arrays, so numba can
    prove the index non-negative and vectorise: a range(start, stop) loop was 4-10x slower."""
    shift = np.uint32(15 - ebits)
    if lo.shape[0]:
        for i in range(out.shape[0]):
            m = np.uint32(sm[i])
            out[i] = np.uint16(((m & np.uint32(0x80)) << np.uint32(8)) | (np.uint32(e[i]) << shift)
                               | ((m & np.uint32(0x7F)) << np.uint32(3)) | np.uint32(lo[i]))
    else:
        for i in range(out.shape[0]):
            m = np.uint32(sm[i])
            out[i] = np.uint16(((m & np.uint32(0x80)) << np.uint32(8)) | (np.uint32(e[i]) << shift)
                               | (m & np.uint32(0x7F)))


@nb.njit(**_JIT)
def _join32_nb(e, sm, b1, b0, out):
    for i in range(out.shape[0]):
        m = np.uint32(sm[i])
        out[i] = (((m & np.uint32(0x80)) << np.uint32(24)) | (np.uint32(e[i]) << np.uint32(23))
                  | ((m & np.uint32(0x7F)) << np.uint32(16)) | (np.uint32(b1[i]) << np.uint32(8))
                  | np.uint32(b0[i]))


def _c_takes(*arrays, dtype=np.uint8) -> bool:
    """Whether the C twins of the kernels here take these arrays: the extension is loaded and each
    is a contiguous 1-D array of ``dtype`` (anything else goes to the numba kernel)."""
    return LC.available and all(a.dtype == dtype and a.ndim == 1 and a.flags.c_contiguous for a in arrays)


def _on_parts(run, n: int) -> None:
    """run(a, b) over 0..n in parts of about PARALLEL_MIN values, across the extensions' pool (one
    call on this thread below 2 * PARALLEL_MIN; the C and numba kernels run GIL-free alike)."""
    parts = max(1, n // PARALLEL_MIN)
    on_pool(lambda p0, p1: run(p0 * n // parts, p1 * n // parts), parts)


def _join16_part(e, sm, lo, ebits, out) -> None:
    """sign | exponent | mantissa of 16-bit floats (see _join16_nb), on this thread."""
    if _c_takes(e, sm, lo) and _c_takes(out, dtype=np.uint16):
        LC.join16(e, sm, lo, ebits, out)
    else:
        _join16_nb(e, sm, lo, ebits, out)


def _join32_part(e, sm, b1, b0, out) -> None:
    """fp32 bits from the exponent, sign+mantissa and two low byte fields, on this thread."""
    if _c_takes(e, sm, b1, b0) and _c_takes(out, dtype=np.uint32):
        LC.join32(e, sm, b1, b0, out)
    else:
        _join32_nb(e, sm, b1, b0, out)


def _join16(e, sm, lo, ebits, out):
    _on_parts(lambda a, b: _join16_part(e[a:b], sm[a:b], lo[a:b] if lo.shape[0] else lo, ebits, out[a:b]),
              out.size)


def _join32(e, sm, b1, b0, out):
    _on_parts(lambda a, b: _join32_part(e[a:b], sm[a:b], b1[a:b], b0[a:b], out[a:b]), out.size)


# ------------------------------------------------------------------------------------------------
# one tensor
# ------------------------------------------------------------------------------------------------


def _put_fields(out: bytearray, e: np.ndarray, sm: np.ndarray, shape, mode: str) -> None:
    """A float's exponent and sign+mantissa byte: joint where it applies and pays (mode=best),
    else the two fields one after the other."""
    plain: list[bytes] = []

    def plain_e() -> bytes:  # (once, where needed)
        if not plain:
            plain.append(E.encode(e))
        return plain[0]

    if mode == "best" and _put_joint(out, e, sm, shape, plain_e):
        return
    _put_e(out, e, shape, mode, plain_e())
    _put_sm(out, sm, e, mode)


def _split_fields(u: np.ndarray, eshift: int, emask: int, sshift: int, mshift: int):
    """A float's exponent (u >> eshift) & emask and its sign+mantissa byte: the sign (u >> sshift)
    & 0x80 and the top 7 mantissa bits (u >> mshift) & 0x7F, as two uint8 arrays (one pass)."""
    e, sm = np.empty(u.size, np.uint8), np.empty(u.size, np.uint8)
    _split_fields_into(np.ascontiguousarray(u), eshift, emask, sshift, mshift, e, sm)
    return e, sm


@nb.njit(**_KJIT)
def _split_fields_into(u, eshift, emask, sshift, mshift, e, sm):
    for i in range(u.shape[0]):
        v = np.uint32(u[i])
        e[i] = np.uint8((v >> np.uint32(eshift)) & np.uint32(emask))
        sm[i] = np.uint8(((v >> np.uint32(sshift)) & np.uint32(0x80)) | ((v >> np.uint32(mshift)) & np.uint32(0x7F)))


def encode_tensor(dtype: str, raw: np.ndarray, mode: str = "best", shape=None) -> bytes:
    """The coded bytes of one tensor's raw little-endian data (``shape`` gives matrices their
    row/column models; without it the tensor is one row)."""
    out = bytearray([STREAM_VERSION])
    if dtype == "BF16":
        u = raw.view("<u2")
        e, sm = _split_fields(u, 7, 0xFF, 8, 0)
        _put_fields(out, e, sm, shape, mode)
    elif dtype == "F16":
        u = raw.view("<u2")
        e, sm = _split_fields(u, 10, 0x1F, 8, 3)
        lo = (u & 0x7).astype(np.uint8)
        _put_fields(out, e, sm, shape, mode)
        _put_stream(out, E.encode(lo), lo)
    elif dtype == "F32":
        u = raw.view("<u4")
        e, sm = _split_fields(u, 23, 0xFF, 24, 16)
        _put_fields(out, e, sm, shape, mode)
        _put_lo32(out, u, shape, mode)
    elif dtype == "F64":
        u = raw.view("<u8")
        hi = (u >> 48).astype(np.uint16)
        _put_stream(out, E.encode(hi), hi)
        planes = raw.reshape(-1, 8)
        for p in range(6):
            b = np.ascontiguousarray(planes[:, p])
            _put_stream(out, E.encode(b), b)
    else:  # fp8, ints, bools: byte planes
        width = DTYPES[dtype]
        planes = raw.reshape(-1, width)
        for p in range(width):
            b = np.ascontiguousarray(planes[:, p])
            _put_stream(out, E.encode(b), b)
    if len(out) > raw.size + 1:
        return bytes([RAW_TENSOR]) + raw.tobytes()
    return bytes(out)


def decode_tensor(blob: bytes | memoryview, dtype: str, numel: int, mode: str = "best",
                  what: str = "tensor", shape=None) -> np.ndarray:
    """Inverse of :func:`encode_tensor`: the raw little-endian bytes (uint8)."""
    t = start_tensor(blob, dtype, numel, mode, what, shape)
    if t.nblocks:
        on_pool(t.run, t.nblocks)
    return t.finish()


class Started:
    """A tensor's decode split at its kernel (:func:`start_tensor`): ``run(b0, b1)`` decodes blocks
    b0..b1 of ``nblocks`` (GIL-free C; any thread, any order; none where ``nblocks`` is 0), then
    ``finish()``, on the caller's thread once all ran, checks them and returns the raw bytes."""

    __slots__ = ("finish", "nblocks", "run")

    def __init__(self, nblocks: int, run, finish) -> None:
        self.nblocks, self.run, self.finish = nblocks, run, finish


def start_tensor(blob: bytes | memoryview, dtype: str, numel: int, mode: str = "best",
                 what: str = "tensor", shape=None) -> Started:
    """:func:`decode_tensor`'s parse and checks, the float layouts' main decode left to run (the
    joint layout's, where the C decoder takes it); every other layout decodes here."""
    r = Reader(blob, what)
    v = r.byte()
    if v == RAW_TENSOR:
        if len(r.data) - 1 != numel * DTYPES[dtype]:
            raise r.fail(f"holds {len(r.data) - 1} bytes, expected {numel * DTYPES[dtype]}")
        # a copy: the blob may be a view of the memory-mapped .nz, which the tensor must not outlive
        raw = np.frombuffer(r.rest(), dtype=np.uint8).copy()
        return Started(0, None, lambda: raw)
    if v != STREAM_VERSION:
        raise r.fail(f"weights stream version {v}; this nzip reads {STREAM_VERSION}")
    n = numel
    nblocks, run = 0, None
    if dtype in ("BF16", "F16") and _is_joint(r):
        r.byte()
        u = np.empty(n, dtype=np.uint16)
        nblocks, run, after = _start_joint(r, n, shape, 8 if dtype == "BF16" else 5, u)
        lo = _get_stream(r, np.uint8, n) if dtype == "F16" else None

        def finish():
            after()
            if lo is not None:
                u[...] |= lo
            return u.view(np.uint8)
    elif dtype == "F32" and _is_joint(r):
        r.byte()
        u32 = np.empty(n, dtype=np.uint32)
        nblocks, run, after = _start_joint(r, n, shape, 8, u32, lows=lambda: _get_lo32(r, n, shape))

        def finish():
            after()
            return u32.view(np.uint8)
    elif (mode == "fast" and dtype in ("BF16", "F16", "F32") and n >= LC.MIN_SYMBOLS and LC.simd
          and r.pos < len(r.data) and r.data[r.pos] == 0):  # order-0 exponents and sign+mantissa bytes
        r.byte()
        fields = [_start_stream(r, n), _start_stream(r, n)]  # exponents, sign+mantissa bytes
        lo = _get_stream(r, np.uint8, n) if dtype == "F16" else np.empty(0, np.uint8)
        b1, b0 = _get_lo32(r, n, shape) if dtype == "F32" else (None, None)
        u = np.empty(n, dtype=np.uint32 if dtype == "F32" else np.uint16)
        ebits = 5 if dtype == "F16" else 8
        jobs = [f for f in fields if isinstance(f, EC.StaticJob)]
        block = jobs[0].block if jobs else n
        # blocks aligned (as the encoder writes them): each decoded and joined on the pool
        nblocks = -(-n // block) if jobs and all(j.block == block for j in jobs) else 0

        def join(a: int, z: int) -> None:
            e, sm = (f[a:z] if not isinstance(f, EC.StaticJob) else
                     f.symbols[a:z] + np.uint8(f.offset) if f.offset else f.symbols[a:z] for f in fields)
            if dtype == "F32":
                _join32_part(e, sm, b1[a:z], b0[a:z], u[a:z])
            else:
                _join16_part(e, sm, lo[a:z] if lo.size else lo, ebits, u[a:z])

        def run(k0: int, k1: int) -> None:
            for j in jobs:
                j.run(k0, k1)
            join(k0 * block, min(k1 * block, n))

        def finish():
            if not nblocks:
                for j in jobs:
                    j.run(0, j.nblocks)
                join(0, n)
            for j in jobs:
                j.values()  # (the status of every block)
            return u.view(np.uint8)
    else:
        out = _decode_plain(r, dtype, n, mode, shape)

        def finish():
            return out
    if r.pos != len(r.data):
        raise r.fail(f"{len(r.data) - r.pos} trailing bytes")
    return Started(nblocks, run, finish)


def _start_stream(r: Reader, n: int):
    """A byte field (as :func:`_get_stream` reads it): a :class:`~nzip.entropy.coder.StaticJob`
    where the C decoder takes the blob (its blocks left to run), else the values, decoded here."""
    at = r.pos
    if r.byte() != CODED:
        r.pos = at
        return _get_stream(r, np.uint8, n)
    p = EC.parse(r.take(r.uvarint(len(r.data))), max_symbols=n, what=r.what)
    if p.n != n:
        raise r.fail(f"field holds {p.n} values, expected {n}")
    job = p.static_job() if p.dtype == np.uint8 else None
    return job if job is not None else p.decode().astype(np.uint8, copy=False)  # (parsed once)


def _decode_plain(r: Reader, dtype: str, n: int, mode: str, shape) -> np.ndarray:
    """The layouts other than the joint one, decoded at once (raw little-endian bytes)."""
    if dtype in ("BF16", "F16"):  # (little-endian hosts: the uint16 view is the file's byte order)
        e = _get_e(r, n, shape)
        u = np.empty(n, dtype=np.uint16)
        sm = _get_sm(r, e, n, mode, join=(u, 7, 0) if dtype == "BF16" else (u, 10, 3))
        lo = _get_stream(r, np.uint8, n) if dtype == "F16" else np.empty(0, np.uint8)
        if isinstance(sm, _FusedSM):
            sm.finish(lo if lo.size else None)
        else:
            _join16(e, sm, lo, 8 if dtype == "BF16" else 5, u)
        return u.view(np.uint8)
    if dtype == "F32":
        e = _get_e(r, n, shape)
        u = np.empty(n, dtype=np.uint32)
        sm = _get_sm(r, e, n, mode, join=(u, 7, 0))
        b1, b0 = _get_lo32(r, n, shape)
        if isinstance(sm, _FusedSM):
            sm.finish(b1, b0)
        else:
            _join32(e, sm, b1, b0, u)
        return u.view(np.uint8)
    if dtype == "F64":
        hi = _get_stream(r, np.uint16, n).astype("<u2")
        out = np.empty((n, 8), dtype=np.uint8)
        for p in range(6):
            out[:, p] = _get_stream(r, np.uint8, n)
        out[:, 6:] = hi.view(np.uint8).reshape(n, 2)
        return out.reshape(-1)
    width = DTYPES[dtype]
    out = np.empty((n, width), dtype=np.uint8)
    for p in range(width):
        out[:, p] = _get_stream(r, np.uint8, n)
    return out.reshape(-1)


def _get_fields(r: Reader, n: int, shape, mode: str, ebits: int, dev):
    """(exponents, sign+mantissa bytes) on a device, from either layout."""
    if _is_joint(r):
        r.byte()
        return _get_joint_device(r, n, shape, ebits, dev)
    e = _get_e(r, n, shape, dev)
    return e, _get_sm(r, e, n, mode, dev)


def decode_tensor_device(blob: bytes | memoryview, dtype: str, numel: int, mode: str, device,
                         what: str = "tensor", shape=None):
    """:func:`decode_tensor` on a device: bf16/fp16 and fp32 (plain low bytes) fields decode with
    the rANS lane kernel and join with the float kernel, into a torch tensor of ``dtype`` and
    ``shape``; the other layouts decode on the CPU and move. Bit-identical to the CPU path."""
    import torch

    from ..formats.checkpoint import torch_dtype
    from ..kernels import floats

    tdt = torch_dtype(dtype)
    dims = list(shape) if shape is not None else [numel]
    r = Reader(blob, what)
    v = r.byte()
    dev = _Device(device)
    if v == STREAM_VERSION and dtype in ("BF16", "F16"):
        e, sm = _get_fields(r, numel, shape, mode, 8 if dtype == "BF16" else 5, dev)
        lo = _get_stream(r, np.uint8, numel, dev) if dtype == "F16" else None
        bits = floats.join16(e, sm, lo, 8 if dtype == "BF16" else 5)
    elif v == STREAM_VERSION and dtype == "F32":
        e, sm = _get_fields(r, numel, shape, mode, 8, dev)
        if r.pos >= len(r.data) or r.data[r.pos] != 0:  # per-row precision (or corrupt): CPU
            b1, b0 = (torch.from_numpy(x).to(device) for x in _get_lo32(r, numel, shape))
        else:
            r.byte()
            b1, b0 = _get_stream(r, np.uint8, numel, dev), _get_stream(r, np.uint8, numel, dev)
        bits = floats.join32(e, sm, b1, b0)
    else:
        raw = decode_tensor(blob, dtype, numel, mode, what, shape)
        if raw.size == 0:
            return torch.empty(dims, dtype=tdt, device=device)
        return torch.from_numpy(raw.copy()).view(tdt).reshape(dims).to(device)
    if r.pos != len(r.data):
        raise r.fail(f"{len(r.data) - r.pos} trailing bytes")
    return bits.view(tdt).reshape(dims)


# ------------------------------------------------------------------------------------------------
# the codec
# ------------------------------------------------------------------------------------------------


def _tensor_array(i: int) -> str:
    return f"t{i:05d}"


def _bytes_array(buf: bytes) -> np.ndarray:
    return np.frombuffer(buf, dtype=np.uint8)


class CheckpointCodec(Codec):
    """Base of the weights codecs: checkpoint in, checkpoint out, one manifest entry per tensor.

    Subclasses code each tensor (:meth:`encode_tensors`) and rebuild its raw bytes
    (:meth:`decode_entry`); this class keeps names, dtypes, shapes, tied weights, safetensors
    headers, gaps and the other files of a model folder."""

    modality = "weights"
    suffixes = (".safetensors", *TORCH_SUFFIXES)
    folder_suffix = ".safetensors"  # a Hugging Face model folder

    def read(self, path: str) -> Checkpoint:
        return read_checkpoint(path)

    def write(self, item: Checkpoint, path: str, overwrite: bool = False) -> None:
        write_checkpoint(item, path, overwrite)

    def check_output(self, container: Item, path: str) -> None:
        """A checkpoint comes back in its own format: a name that promises another is refused."""
        kind, suffix = container.source.get("format"), os.path.splitext(os.fspath(path))[1].lower()
        wrong = ((kind == "safetensors" and suffix != ".safetensors") or (kind == "torch" and suffix not in TORCH_SUFFIXES)
                 or (kind == "folder" and suffix in (".safetensors", ".npy", ".nz", *TORCH_SUFFIXES)))
        if wrong:
            what = {"safetensors": "a .safetensors file", "torch": "a torch file (.pt, .bin, ...)",
                    "folder": "a folder"}[kind]
            raise InvalidInputError(f"{container.path} holds a {kind} checkpoint, restored as it was: name the "
                                    f"output as {what}, not {os.path.basename(os.fspath(path))}")

    def encode_tensors(self, ck: Checkpoint, params: dict[str, Any], progress=None):
        """(manifest entries in tensor order, arrays, params to record)."""
        raise NotImplementedError

    def decode_entry(self, container: Item, entry: dict[str, Any], shape: list[int], numel: int) -> np.ndarray:
        """The raw little-endian bytes (uint8) of one tensor."""
        raise NotImplementedError

    def encode(self, item: Any, progress=None, **params: Any) -> Encoded:
        ck = _as_checkpoint(item)
        manifest, arrays, recorded = self.encode_tensors(ck, params, progress)
        side = []  # [array, kind, file, offset]: listed in the manifest so a reader needs no zarr attrs

        def put(name, kind, rel, buf, offset=0):
            blob = zlib.compress(buf, 9)
            arrays[name] = ArraySpec(_bytes_array(blob), chunks=(max(1, len(blob)),), symbols=False,
                                     attrs={"file": rel, "offset": offset})
            side.append([name, kind, rel, offset])

        for j, (rel, header) in enumerate(sorted(ck.headers.items())):
            put(f"h{j:04d}", "header", rel, header)
        for j, (rel, gaps) in enumerate(sorted(ck.gaps.items())):
            for k, (off, g) in enumerate(gaps):
                put(f"g{j:04d}_{k}", "gap", rel, g, off)
        for j, (rel, buf) in enumerate(sorted(ck.files.items())):
            put(f"f{j:04d}", "file", rel, buf)
        n_params = sum(t.numel for t in ck.tensors if t.alias_of is None)
        source = {"modality": "weights", "format": ck.kind, "bytes": ck.nbytes, "n_params": n_params,
                  "tensors": manifest, "side": side}
        if ck.extras:
            source["extras"] = extras_to_json(ck.extras)
        return Encoded(arrays=arrays, params=recorded, source=source)

    def decode(self, container: Item, progress=None, device: str = "cpu", names=None) -> Checkpoint:
        return load_checkpoint(container, self, names=names, progress=progress)


PARALLEL_TENSOR = 1 << 20  # tensors this large use the kernels' own threads


def for_each_tensor(jobs, size, fn) -> None:
    """Run ``fn`` on every job: large tensors one by one (their kernels are multi-threaded), small
    ones on a thread pool (their kernels are serial and release the GIL). Errors propagate."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    big = [j for j in jobs if size(j) >= PARALLEL_TENSOR]
    small = [j for j in jobs if size(j) < PARALLEL_TENSOR]
    for j in big:
        fn(j)
    workers = min(len(small), os.cpu_count() or 1)
    if workers <= 1:
        for j in small:
            fn(j)
        return
    with ThreadPoolExecutor(workers) as pool:
        for f in [pool.submit(fn, j) for j in small]:
            f.result()


def pipelined(jobs, start, done) -> None:
    """Decode tensors with the parsing and the kernels overlapped: this thread parses each job in
    turn (``start(job)``: a :class:`Started`, Python and the GIL) and queues its blocks on the
    extensions' pool, whose threads run the kernels (GIL-free) meanwhile; then each job's
    ``finish()`` goes to ``done(job, data)`` in order. (The tensor pool of :func:`for_each_tensor`
    ran parse and kernel on each thread, and two threads parsing at once mostly waited on the GIL:
    no faster than one thread.) Every queued block has run before an error propagates."""
    from .._native import shared_pool, threads

    pool = shared_pool() if threads() > 1 else None
    queued = []
    try:
        for job in jobs:
            t = start(job)
            futs = []
            if t.nblocks and pool is None:
                t.run(0, t.nblocks)
            elif t.nblocks:  # several blocks: about one part per thread
                parts = min(t.nblocks, threads())
                cuts = [t.nblocks * i // parts for i in range(parts + 1)]
                futs = [pool.submit(t.run, cuts[i], cuts[i + 1]) for i in range(parts)]
            queued.append((job, t, futs))
    except BaseException:
        for _, _, futs in queued:
            for f in futs:
                f.exception()  # (wait: the kernels read the container's mapped bytes)
        raise
    for i, (job, t, futs) in enumerate(queued):
        try:
            for f in futs:
                f.result()
            data = t.finish()
        except BaseException:
            for _, _, rest in queued[i:]:
                for f in rest:
                    f.exception()
            raise
        done(job, data)


def base_entry(t: TensorRecord) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": t.name, "dtype": t.dtype, "shape": t.shape}
    if t.file:
        entry["file"] = t.file
    if t.alias_of is not None:
        entry["alias_of"] = t.alias_of
    return entry


def lossless_array(t: TensorRecord, mode: str = "best") -> ArraySpec:
    blob = encode_tensor(t.dtype, t.data, mode, t.shape)
    return ArraySpec(_bytes_array(blob), chunks=(len(blob),), symbols=False,
                     attrs={"tensor": t.name, "raw_bytes": int(t.data.size)})


def lossless_bytes(container: Item, entry: dict[str, Any], shape, numel: int, mode: str) -> np.ndarray:
    blob = container.read_blob(entry["array"])
    return decode_tensor(blob, entry["dtype"], numel, mode,
                         what=f"{container.path}: tensor {entry['name']!r}", shape=shape)


@register
class WeightsLossless(CheckpointCodec):
    name = "weights/lossless"
    version = 1
    description = "bit-exact checkpoints: float fields (exponent, sign+mantissa) entropy coded"

    def encode_tensors(self, ck: Checkpoint, params: dict[str, Any], progress=None):
        p = self.check_params(params, {"mode": str})
        mode = p.get("mode", "best")
        if mode not in MODES:
            raise InvalidInputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        arrays: dict[str, ArraySpec] = {}
        manifest = []
        todo = []
        for i, t in enumerate(ck.tensors):
            entry = base_entry(t)
            if t.alias_of is None:
                entry["array"] = _tensor_array(i)
                todo.append((entry["array"], t))
            manifest.append(entry)

        def one(job):
            name, t = job
            arrays[name] = lossless_array(t, mode)
            if progress is not None:
                progress(t.numel)

        for_each_tensor(todo, lambda job: job[1].numel, one)
        arrays = {name: arrays[name] for name, _ in todo}  # container order = tensor order
        return manifest, arrays, {"mode": mode}

    def decode_entry(self, container: Item, entry: dict[str, Any], shape: list[int], numel: int) -> np.ndarray:
        return lossless_bytes(container, entry, shape, numel, container.params.get("mode", "best"))

    def start_entry(self, container: Item, entry: dict[str, Any], shape: list[int], numel: int) -> Started:
        """:meth:`decode_entry` split at its kernel (:func:`start_tensor`)."""
        return start_tensor(container.read_blob(entry["array"]), entry["dtype"], numel,
                            container.params.get("mode", "best"), f"{container.path}: tensor {entry['name']!r}",
                            shape)


def _as_checkpoint(item: Any) -> Checkpoint:
    if isinstance(item, Checkpoint):
        return item
    if isinstance(item, dict):  # an in-memory state dict
        import os
        import tempfile

        import torch

        fd, tmp = tempfile.mkstemp(suffix=".pt")
        os.close(fd)
        try:
            torch.save(item, tmp)
            return read_checkpoint(tmp)
        finally:
            os.unlink(tmp)
    raise InvalidInputError(f"weights codecs encode checkpoints or state dicts, not {type(item).__name__}")


def entry_ident(m: dict[str, Any], name: str | None = None) -> tuple[str, str]:
    """(name, file) of a manifest entry (``name``: another tensor of the same file, e.g. its alias
    target): what ``checkpoint.tensor_keys`` maps to a state-dict key."""
    return (m["name"] if name is None else name), m.get("file", "")


def manifest_keys(container: Item) -> list[tuple[str, dict[str, Any]]]:
    """(state-dict key, manifest entry) of every tensor (keys: ``checkpoint.tensor_keys``)."""
    from ..formats.checkpoint import tensor_keys

    manifest = container.source.get("tensors")
    if not isinstance(manifest, list) or not all(isinstance(m, dict) and "name" in m for m in manifest):
        raise CorruptDataError(f"{container.path}: no tensor manifest")
    try:
        keys = tensor_keys(entry_ident(m) for m in manifest)
        return [(keys[entry_ident(m)], m) for m in manifest]
    except TypeError:
        raise CorruptDataError(f"{container.path}: malformed tensor manifest") from None


def select_tensors(container: Item, names=None) -> list[tuple[dict[str, Any], list[int], int]]:
    """Manifest entries to restore, as (entry, shape, numel): all, or ``names`` and the tensors
    their aliases point at."""
    manifest = manifest_keys(container)
    by_key = {k: m for k, m in manifest}
    want = None
    if names is not None:
        want = set(names)
        unknown = sorted(want - set(by_key))
        if unknown:
            raise InvalidInputError(f"{container.path}: no tensor named {unknown[0]!r}")
        keys = {entry_ident(m): k for k, m in manifest}
        want |= {keys[entry_ident(by_key[n], by_key[n]["alias_of"])] for n in list(want) if by_key[n].get("alias_of")}
    out = []
    for key, m in manifest:
        if want is not None and key not in want:
            continue
        shape = [int(s) for s in m["shape"]]
        if m["dtype"] not in DTYPES:
            raise CorruptDataError(f"{container.path}: tensor {m['name']!r} has unknown dtype {m['dtype']}")
        out.append((m, shape, int(np.prod(shape, dtype=np.int64)) if shape else 1))
    return out


def load_device(container: Item, names, device) -> dict[str, Any]:
    """weights/lossless straight to a device's memory: ``{name: tensor}`` decoded by the kernels
    (aliases share their target's tensor)."""
    mode = container.params.get("mode", "best")
    out: dict[str, Any] = {}
    keys = {entry_ident(m): k for k, m in manifest_keys(container)}
    chosen = select_tensors(container, names)
    for m, shape, numel in chosen:
        if not m.get("alias_of"):
            blob = container.read_blob(m["array"])
            out[keys[entry_ident(m)]] = decode_tensor_device(
                blob, m["dtype"], numel, mode, device, what=f"{container.path}: tensor {m['name']!r}",
                shape=shape)
    for m, _, _ in chosen:
        if m.get("alias_of"):
            out[keys[entry_ident(m)]] = out[keys[entry_ident(m, m["alias_of"])]]
    return out


def load_checkpoint(container: Item, codec: CheckpointCodec, names=None, progress=None) -> Checkpoint:
    """Rebuild a checkpoint (or, with ``names``, only those tensors and their aliases' targets)."""
    src = container.source
    tensors: list[TensorRecord] = []
    jobs = []
    for m, shape, numel in select_tensors(container, names):
        rec = TensorRecord(m["name"], m["dtype"], shape, np.empty(0, np.uint8), m.get("file", ""),
                           m.get("alias_of") or None)
        tensors.append(rec)
        if not m.get("alias_of"):
            jobs.append((m, rec, numel))

    def done(job, data):
        m, rec, numel = job
        if data.size != numel * DTYPES[m["dtype"]]:
            raise CorruptDataError(f"{container.path}: tensor {m['name']!r} decoded to the wrong size")
        rec.data = data
        if progress is not None:
            progress(numel)

    start = getattr(codec, "start_entry", None)
    if start is not None:
        pipelined(jobs, lambda job: start(container, job[0], job[1].shape, job[2]), done)
    else:
        for_each_tensor(jobs, lambda job: job[2], lambda job: done(job, codec.decode_entry(
            container, job[0], job[1].shape, job[2])))
    ck = Checkpoint(src.get("format", "safetensors"), tensors, extras=extras_from_json(src.get("extras", {}), container.path))
    if names is not None:
        return ck
    side = src.get("side")
    if not isinstance(side, list):
        raise CorruptDataError(f"{container.path}: no list of headers and files")
    for entry in side:
        try:
            name, kind, rel, offset = entry
            buf = zlib.decompress(container.read_blob(name))
        except (ValueError, TypeError):
            raise CorruptDataError(f"{container.path}: malformed side entry {entry!r}") from None
        except zlib.error:
            raise CorruptDataError(f"{container.path}: array {entry[0]!r} is corrupt") from None
        if kind == "header":
            ck.headers[rel] = buf
        elif kind == "gap":
            ck.gaps.setdefault(rel, []).append((int(offset), buf))
        elif kind == "file":
            ck.files[rel] = buf
        else:
            raise CorruptDataError(f"{container.path}: unknown side entry kind {kind!r}")
    if ck.kind in ("safetensors", "folder") and not ck.headers:
        raise CorruptDataError(f"{container.path}: safetensors header is missing")
    return ck
