"""Blobs of the lane-interleaved rANS coder: header, tables, block index, states, words.

Layout (little-endian; varints are LEB128, svarints zigzag):

    b"NZ"  byte version<<4 | kind  byte dtype  uvarint n
    kind EMPTY    -
    kind CONSTANT svarint value
    kind STATIC   byte log2(lanes)<<5 | precision   uvarint block   svarint offset   uvarint alphabet
                  byte exp-Golomb order   uvarint table bytes   table bits
                  uvarint words per block (x blocks)   states (blocks x lanes x u32)   words (u16)
    kind INDEXED  byte log2(lanes)<<5 | precision   uvarint block   8 bytes table fingerprint
                  uvarint escapes   uvarint words per block (x blocks)   states   words
                  escaped values as svarints
    kind CONTEXT  byte log2(lanes)<<5 | precision   uvarint block   uvarint alphabet
                  uvarint contexts   per context: byte exp-Golomb order (255: unused)
                  [uvarint table bytes   table bits]   words per block   states   words

The table of a STATIC blob is built from the data's own counts by default, at the precision that
makes table plus data smallest, so the blob's size sits within a hair of the empirical entropy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._native import on_pool
from ..errors import CorruptDataError, InvalidInputError, UnsupportedFormatError
from . import lanes as K
from . import lanes_c as LC
from ._varint import Reader, put_svarint, put_uvarint, put_uvarints
from .tables import (
    MAX_PRECISION,
    IndexedTables,
    cross_entropy_bits,
    decode_tables,
    quantize_counts,
)

# the parse and small-blob functions: their C twins where the extension is built (a restore then
# needs no numba), else the numba originals
_PARSE = LC if LC.available else K

MAGIC = b"NZ"
VERSION = 1
EMPTY, CONSTANT, STATIC, INDEXED, CONTEXT = 0, 1, 2, 3, 4
MAX_CONTEXTS = 1 << 12
MAX_LANES = 32
DEFAULT_BLOCK = 1 << 20
MAX_BLOCK = 1 << 26
MAX_ALPHABET = 1 << 24
DEFAULT_MAX_SYMBOLS = 1 << 34
SAMPLE = 1 << 18  # symbols per precision candidate when choosing a table
MIN_SEARCH_PRECISION = 10  # below this the quantisation loss of any useful table dominates

_DTYPES = ["bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"]
_DTYPE_CODE = {np.dtype(d): i for i, d in enumerate(_DTYPES)}


def _check_symbols(symbols) -> np.ndarray:
    a = np.asarray(symbols)
    if a.dtype not in _DTYPE_CODE:
        raise InvalidInputError(f"symbols must be an integer or bool array, got dtype {a.dtype}")
    return np.ascontiguousarray(a.reshape(-1))


def default_lanes(n: int) -> int:
    """Fewer lanes for short inputs: every lane costs 4 bytes of state per block."""
    target = max(1, n // 256)
    return min(MAX_LANES, 1 << (target.bit_length() - 1))


def _layout(n: int, lanes: int | None, block: int | None) -> tuple[int, int, int]:
    lanes = default_lanes(n) if lanes is None else int(lanes)
    if lanes < 1 or lanes > MAX_LANES or lanes & (lanes - 1):
        raise InvalidInputError(f"lanes must be a power of two in 1..{MAX_LANES}, got {lanes}")
    block = DEFAULT_BLOCK if block is None else int(block)
    if block < lanes or block > MAX_BLOCK or block % lanes:
        raise InvalidInputError(f"block must be a multiple of lanes ({lanes}) in {lanes}..{MAX_BLOCK}")
    return lanes, block, -(-n // block)


def choose_table(sym: np.ndarray, counts: np.ndarray, lanes: int) -> tuple[int, np.ndarray, int, int]:
    """(precision, freqs, exp-Golomb order, table bits) minimising table + coded data size.

    Higher precision quantises the distribution more finely but, with 32-bit states and 16-bit
    words, rANS itself loses more (the state is only 2**16 times the table's range). The trade-off
    depends on the distribution, so each candidate is measured on a strided sample of the data;
    a larger precision must win by more than 0.01 % to be taken: smaller decode tables stay in
    the L1 cache (measured: 2**14 instead of 2**15 decodes ~25 % faster for +0.003 % size)."""
    used = int(np.count_nonzero(counts))
    pmin = max(1, math.ceil(math.log2(used)))
    n = sym.size
    step = max(1, n // SAMPLE)
    sample = np.ascontiguousarray(sym[::step])
    scounts = K.histogram(sample, len(counts))
    scale = n / sample.size
    best, worse = None, 0
    for prec in range(max(pmin, MIN_SEARCH_PRECISION), MAX_PRECISION + 1):
        if worse >= 2:
            break  # the total is unimodal in P: two worse candidates in a row end the search
        freqs = quantize_counts(counts, prec)
        k, kbits = (int(v) for v in K.best_table_order(freqs, prec))
        ideal = cross_entropy_bits(counts, freqs, prec)
        if best is not None and ideal + kbits > best[0] * 1.01:
            worse += 1
            continue  # quantisation plus table alone already lose: no need to measure
        states, _, words = _encode_words(sample, freqs, lanes, DEFAULT_BLOCK)
        # the sample's information sits in its words and in the final states above 2**16
        sample_bits = 16 * words.size + float(np.sum(np.log2(states.astype(np.float64)) - 16))
        loss = sample_bits - cross_entropy_bits(scounts, freqs, prec)  # rANS's own loss
        total = ideal + max(loss, 0.0) * scale + kbits
        if best is None or total < best[0] * (1 - 1e-4) - 1:
            best, worse = (total, prec, freqs, k, kbits), 0
        else:
            worse += 1
    _, prec, freqs, k, tbits = best
    return prec, freqs, k, tbits


def _encode_words(sym: np.ndarray, freqs: np.ndarray, lanes: int, block: int):
    """Run the block encoder; returns (states, words per block, packed words) or raises."""
    n = sym.size
    nblocks = -(-n // block)
    freq = freqs.astype(np.int64)
    cum = np.concatenate([[0], np.cumsum(freq)]).astype(np.int64)
    states = np.empty(nblocks * lanes, dtype=np.int64)
    words = np.empty(n, dtype=np.uint16)
    first = np.empty(nblocks, dtype=np.int64)
    prec = int(freqs.sum()).bit_length() - 1
    K.encode_blocks(sym, block, lanes, freq, cum, prec, states, words, first)
    packed = _run_encoder(first, words, n, block, "a symbol has frequency 0 in the table")
    return states, _block_words(first, n, block), packed


def _header(kind: int, dtype: np.dtype, n: int) -> bytearray:
    out = bytearray(MAGIC)
    out.append(VERSION << 4 | kind)
    out.append(_DTYPE_CODE[dtype])
    put_uvarint(out, n)
    return out


def _run_encoder(first: np.ndarray, words: np.ndarray, n: int, block: int, err_msg: str) -> np.ndarray:
    if np.any(first < 0):
        b = int(np.argmax(first < 0))
        raise InvalidInputError(f"{err_msg} (in block {b})")
    packed = np.empty(int(np.sum(np.minimum(n, (np.arange(len(first)) + 1) * block) - first)),
                      dtype=np.uint16)
    K.compact_words(words, first, block, n, packed)
    return packed


def _block_words(first: np.ndarray, n: int, block: int) -> np.ndarray:
    ends = np.minimum(n, (np.arange(len(first), dtype=np.int64) + 1) * block)
    return ends - first


def _append_streams(out: bytearray, counts: np.ndarray, states: np.ndarray, packed: np.ndarray) -> None:
    put_uvarints(out, counts)
    out += states.astype("<u4").tobytes()
    out += packed.astype("<u2").tobytes()


def encode(symbols, freqs=None, *, lanes: int | None = None, block: int | None = None) -> bytes:
    """Code an integer array under one frequency table; the table travels in the blob.

    ``freqs`` None builds the table from the data (best size). Otherwise it is the model: integer
    frequencies over symbols 0..len-1 summing to a power of two 2**P (P <= 16), every coded symbol
    >= 1. The array's dtype and length come back from :func:`decode`; shape is the caller's.
    """
    a = _check_symbols(symbols)
    n = a.size
    if n == 0:
        return bytes(_header(EMPTY, a.dtype, 0))
    if freqs is None:
        lo, hi = int(a.min()), int(a.max())
        if lo == hi:
            out = _header(CONSTANT, a.dtype, n)
            put_svarint(out, lo)
            return bytes(out)
        if hi - lo + 1 > MAX_ALPHABET:
            raise InvalidInputError(
                f"values span {hi - lo + 1} integers; at most {MAX_ALPHABET} fit one table "
                "(split wide integers into byte planes, as array/rans does)")
        sym = _shift(a, lo, hi - lo + 1)
        counts = K.histogram(sym, hi - lo + 1)
        if np.count_nonzero(counts) > 1 << MAX_PRECISION:
            raise InvalidInputError(
                f"{np.count_nonzero(counts)} distinct values; at most {1 << MAX_PRECISION} fit one table")
        lanes, block, _ = _layout(n, lanes, block)
        prec, table, k, tbits = choose_table(sym, counts, lanes)
        offset = lo
    else:
        table = np.asarray(freqs)
        if table.ndim != 1 or table.dtype.kind not in "iu" or np.any(table < 0):
            raise InvalidInputError("freqs must be a 1-D array of non-negative integers")
        if table.size and int(table.max()) > 1 << MAX_PRECISION:
            raise InvalidInputError(f"freqs must sum to a power of two 2**P with P in 1..{MAX_PRECISION}; "
                                    f"one frequency alone is {int(table.max())}")
        table = np.trim_zeros(table.astype(np.int64), "b")  # symbols past the last nonzero never occur
        top = _DTYPE_RANGE[_DTYPE_CODE[a.dtype]][1]
        if len(table) - 1 > min(top, MAX_ALPHABET - 1):
            raise InvalidInputError(f"freqs gives symbol {len(table) - 1} a frequency, but "
                                    + (f"{a.dtype} holds values up to {top}" if len(table) - 1 > top
                                       else f"a table holds at most {MAX_ALPHABET} symbols"))
        total = int(table.sum())
        prec = total.bit_length() - 1
        if total != 1 << prec or not 1 <= prec <= MAX_PRECISION:
            raise InvalidInputError(f"freqs must sum to a power of two 2**P with P in 1..{MAX_PRECISION}, "
                                    f"got {total}")
        if np.count_nonzero(table) < 2:
            raise InvalidInputError("freqs must give at least two symbols a nonzero frequency")
        sym, offset = (a.view(np.uint8) if a.dtype == np.bool_ else a), 0
        k, tbits = (int(v) for v in K.best_table_order(table, prec))
        lanes, block, _ = _layout(n, lanes, block)
    states, wcounts, packed = _encode_words(sym, table, lanes, block)

    out = _header(STATIC, a.dtype, n)
    out.append((lanes.bit_length() - 1) << 5 | prec)
    put_uvarint(out, block)
    put_svarint(out, offset)
    put_uvarint(out, len(table))
    out.append(k)
    tbuf = np.zeros((tbits + 7) // 8 + 1, dtype=np.uint8)
    written = K.write_table(table.astype(np.int64), k, tbuf)
    put_uvarint(out, (written + 7) // 8)
    out += tbuf[: (written + 7) // 8].tobytes()
    _append_streams(out, wcounts, states, packed)
    return bytes(out)


def _shift(a: np.ndarray, lo: int, span: int) -> np.ndarray:
    """Symbols a - lo in the narrowest unsigned dtype that holds span values."""
    dt = np.uint8 if span <= 1 << 8 else np.uint16 if span <= 1 << 16 else np.uint32
    if a.dtype == np.bool_:
        return a.view(np.uint8)
    if lo == 0 and a.dtype == dt:
        return a
    if a.dtype.kind == "u":
        return (a - a.dtype.type(lo)).astype(dt)
    return (a.astype(np.int64) - lo).astype(dt)


def _parse_head(r: Reader) -> tuple[int, np.dtype, int]:
    if bytes(r.take(2)) != MAGIC:
        raise r.fail("not an nzip entropy blob (bad magic)")
    vk = r.byte()
    if vk >> 4 != VERSION:
        raise UnsupportedFormatError(f"{r.what}: entropy blob version {vk >> 4}; this nzip reads {VERSION}")
    kind = vk & 15
    if kind > CONTEXT:
        raise r.fail(f"unknown blob kind {kind}")
    code = r.byte()
    if code >= len(_DTYPES):
        raise r.fail(f"unknown dtype code {code}")
    return kind, np.dtype(_DTYPES[code]), r.uvarint()


def _parse_layout(r: Reader, n: int) -> tuple[int, int, int, int]:
    lp = r.byte()
    lanes, prec = 1 << (lp >> 5), lp & 31
    if lanes > MAX_LANES or not 1 <= prec <= MAX_PRECISION:
        raise r.fail(f"bad lanes/precision byte {lp:#x}")
    block = r.uvarint(MAX_BLOCK)
    if block < lanes or block % lanes:
        raise r.fail(f"bad block size {block} for {lanes} lanes")
    return lanes, prec, block, -(-n // block)


def _parse_streams(r: Reader, n: int, lanes: int, block: int, nblocks: int, bits_per_symbol_min: float):
    """Block word counts, states and words; checks every declared size against the blob first."""
    if nblocks * lanes * 4 > len(r.data) - r.pos:
        raise r.fail(f"declares {n} symbols in {nblocks} blocks, more than the blob can hold")
    counts = r.uvarints(nblocks, block)
    over = np.flatnonzero(counts > np.minimum(block, n - np.arange(nblocks, dtype=np.int64) * block))
    if len(over):
        b = int(over[0])
        raise r.fail(f"block {b} declares {counts[b]} words, more than its symbols")
    states = np.frombuffer(r.take(nblocks * lanes * 4), dtype="<u4").astype(np.int64)
    if np.any(states < K.RANS_L):
        raise r.fail("a lane state is below 2**16 (corrupt block states)")
    total = int(counts.sum())
    raw = r.take(total * 2)
    # An information bound: no symbol costs less than bits_per_symbol_min, and the stream holds at
    # most 16 bits per word plus 16 per lane state. A forged n beyond it is refused before any
    # allocation.
    capacity_bits = 16.0 * (total + nblocks * lanes)
    if bits_per_symbol_min > 0 and n * bits_per_symbol_min > capacity_bits * 1.0001 + 64:
        raise r.fail(f"declares {n} symbols but holds at most {capacity_bits:.0f} bits of them")
    # zero-copy where the blob's bytes are little-endian already; never empty (reads are clamped)
    words = np.frombuffer(raw, dtype="<u2").astype(np.uint16, copy=False) if total else np.zeros(1, np.uint16)
    woff = np.zeros(nblocks + 1, dtype=np.int64)
    np.cumsum(counts, out=woff[1:])
    return words, woff, states


def _raise_status(status: np.ndarray, what: str) -> None:
    bad = np.flatnonzero(status < 0)
    if len(bad):
        b = int(bad[0])
        why = {K.ERR_OVERRUN: "its words do not match its symbols",
               K.ERR_STATE: "final lane states are wrong",
               K.ERR_SLOT: "a table index is out of range"}.get(int(status[b]), "decode failed")
        raise CorruptDataError(f"{what}: block {b} is corrupt ({why})")


@dataclass
class LaneStreams:
    """A parsed static or context blob, ready for a lane decoder (the CPU's or a GPU kernel).

    ``slot_sym``/``slot_pack`` hold the decode tables (all contexts side by side for a context
    blob: context c's slot s is entry ``(c << prec) | s``), or, for packable blobs, :meth:`packed`
    does (one uint32 per slot; a context blob's parse builds only that, the slot arrays follow
    from it when asked for, e.g. by the GPU kernels); ``words[woff[b]:woff[b+1]]`` and
    ``states[b*lanes:(b+1)*lanes]`` are block b's. Static blobs also carry how to turn the decoded
    symbols back into values (``offset``, ``dtype``, ``nalpha``); EMPTY/CONSTANT blobs have
    ``constant`` set (None for an empty blob) and no streams.
    """

    kind: int
    n: int
    dtype: np.dtype
    lanes: int = 1
    prec: int = 1
    block: int = 1
    nblocks: int = 0
    words: np.ndarray | None = None
    woff: np.ndarray | None = None
    states: np.ndarray | None = None
    _slot_sym: np.ndarray | None = None
    _slot_pack: np.ndarray | None = None
    offset: int = 0
    nalpha: int = 0
    nctx: int = 0
    constant: int | None = None
    what: str = "entropy blob"
    table: np.ndarray | None = None  # the packed table, where built
    used: np.ndarray | None = None  # with a table parsed straight to packed form: contexts with tables

    @property
    def packable(self) -> bool:
        """Whether the CPU decoder can use one packed uint32 per slot (see lanes.pack_tables)."""
        return self.table is not None or (self.prec <= K.PACKED_MAX_PRECISION and self._slot_sym.dtype == np.uint8)

    def packed(self) -> np.ndarray:
        if self.table is None:
            self.table = np.empty(self._slot_sym.shape[0], np.uint32)
            (LC if LC.available and self._slot_sym.dtype == np.uint8 else K).pack_tables(
                self._slot_sym, self._slot_pack, self.table)
        return self.table

    def _unpacked(self) -> None:
        if self._slot_sym is None and self.table is not None:
            sym, pack = np.empty(self.table.shape[0], np.uint8), np.empty(self.table.shape[0], np.uint32)
            K.unpack_tables(self.table, self.used, self.prec, sym, pack)
            self._slot_sym, self._slot_pack = sym, pack

    @property
    def slot_sym(self) -> np.ndarray | None:
        self._unpacked()
        return self._slot_sym

    @property
    def slot_pack(self) -> np.ndarray | None:
        self._unpacked()
        return self._slot_pack

    def finish(self, out: np.ndarray) -> np.ndarray:
        """Decoded symbols -> values of the blob's dtype (static blobs; range checked by parse)."""
        return _unshift(out, self.offset, self.dtype)

    def decode(self, contexts: np.ndarray | None = None) -> np.ndarray:
        """The CPU decode: values of a static blob, symbols of a context blob (``contexts``: one
        integer per symbol, checked here)."""
        if self.kind == EMPTY:
            return np.empty(0, dtype=self.dtype)
        if self.kind == CONSTANT:
            return np.full(self.n, self.constant, dtype=self.dtype)
        cx = None
        if self.kind == CONTEXT:
            # the kernels take uint8 or uint16 contexts as they are (no converted copy) and check
            # their range themselves (ERR_SLOT): a range error is told apart from corrupt data
            # after the fact, so the good path pays no extra pass over the contexts
            if contexts.dtype in (np.uint8, np.uint16):
                cx = contexts
            else:
                check_contexts(contexts, self.nctx)
                cx = contexts.astype(np.uint16)
        out = np.empty(self.n, dtype=np.uint8 if self.packable else self.slot_sym.dtype)
        status = np.empty(self.nblocks, dtype=np.int64)
        # the C decoder (same output as the numba kernels): across the pool for large blobs where
        # it has SIMD paths, on this thread for small ones (so a restore need not load numba)
        pool = self.n >= LC.MIN_SYMBOLS
        use_c = LC.available and (LC.simd or not pool)
        if self.packable and use_c:
            LC.decode_blocks_packed(self.words, self.woff, self.states, out, cx, self.block, self.lanes,
                                    self.prec, self.packed(), status, pool=pool)
        elif self.packable:
            K.decode_blocks_packed(self.words, self.woff, self.states, out, cx, self.block, self.lanes,
                                   self.prec, self.packed(), status)
        elif use_c and self.slot_sym.dtype in (np.uint8, np.uint16):
            LC.decode_blocks(self.words, self.woff, self.states, out, cx, self.block, self.lanes, self.prec,
                             self.slot_sym, self.slot_pack, status, pool=pool)
        elif cx is None:
            K.decode_blocks(self.words, self.woff, self.states, out, self.block, self.lanes, self.prec,
                            self.slot_sym, self.slot_pack, status)
        else:
            K.decode_blocks_ctx(self.words, self.woff, self.states, out, cx, self.block, self.lanes,
                                self.prec, self.slot_sym, self.slot_pack, status)
        if cx is not None and (status == K.ERR_SLOT).any():
            check_contexts(contexts, self.nctx)  # the caller's contexts, or else the blob's tables
        _raise_status(status, self.what)
        return out if cx is not None else self.finish(out)

    def static_job(self) -> StaticJob | None:
        """The C decode of a static blob of byte symbols (>= 32K; else None), to run block by block
        on any thread (see :class:`StaticJob`)."""
        if not (self.kind == STATIC and LC.simd and self.n >= LC.MIN_SYMBOLS and self.slot_sym.dtype == np.uint8):
            return None
        out = np.empty(self.n, dtype=np.uint8)
        status = np.full(self.nblocks, K.ERR_STATE, dtype=np.int64)  # (a block never run is not good)
        if self.packable:
            run = LC.blocks_runner(self.words, self.woff, self.states, out, self.block, self.lanes, self.prec,
                                   self.packed(), status)
        else:  # (precision 13..: the symbol table beside the frequency | bias one)
            run = LC.blocks_runner(self.words, self.woff, self.states, out, self.block, self.lanes, self.prec,
                                   self.slot_pack, status, symtab=self.slot_sym)
        return StaticJob(self, run, out, status)

    def joinable(self, exponents: np.ndarray, ecount: int, out: np.ndarray) -> bool:
        """Whether :meth:`decode_join` runs here: the C decoder (AVX2), a packed context blob of
        >= 32K symbols, one uint8 exponent per symbol, contexts 0..ecount within the tables."""
        return (self.kind == CONTEXT and LC.simd and self.n >= LC.MIN_SYMBOLS and self.packable
                and exponents.dtype == np.uint8 and len(exponents) == self.n == len(out) and ecount < self.nctx)

    def decode_join(self, exponents: np.ndarray, emin: int, ecount: int, out: np.ndarray, eshift: int,
                    mshift: int, lo1: np.ndarray | None = None, lo0: np.ndarray | None = None) -> None:
        """The fused float decode (where :meth:`joinable`): the sign+mantissa byte s of value i has
        context ``e - emin + 1`` for its exponent ``e = exponents[i]`` in ``emin .. emin + ecount -
        1``, else 0; ``out`` receives ``(s & 0x80) << 8 | e << eshift | (s & 0x7F) << mshift``
        ORed with ``lo1`` (uint16 out: fp16's low bits), or that << 16 ORed with ``lo1 << 8 | lo0``
        (uint32 out: fp32). One pass instead of a context pass, the decode and a join pass."""
        if not self.joinable(exponents, ecount, out):
            raise ValueError("the fused float decode does not apply to this blob here")
        status = np.empty(self.nblocks, dtype=np.int64)
        LC.decode_join(self.words, self.woff, self.states, out, exponents, emin, ecount, eshift, mshift,
                       self.block, self.lanes, self.prec, self.packed(), status, lo1, lo0)
        _raise_status(status, self.what)

    def jointable(self, contexts, out: np.ndarray, lows=None) -> bool:
        """Whether :meth:`decode_joint` runs here: the C decoder (AVX2), a packed context blob of
        >= 32K symbols, uint8 contexts, one per symbol (or a matrix's scale offsets, see
        :func:`nzip.entropy.lanes_c.decode_joint`), into uint16 (uint32 with fp32's ``lows``)."""
        if isinstance(contexts, tuple):
            ok = len(contexts[0]) * len(contexts[1]) == self.n and len(contexts[1]) >= 8
        else:
            ok = contexts.dtype == np.uint8 and len(contexts) == self.n
        return (self.kind == CONTEXT and LC.simd and self.n >= LC.MIN_SYMBOLS and self.packable and ok
                and self.n == len(out) and out.dtype == (np.uint16 if lows is None else np.uint32))

    def decode_joint(self, contexts, base: int, eshift: int, mshift: int, planes: np.ndarray,
                     out: np.ndarray, lows=None) -> list[tuple[int, int, int]]:
        """weights/lossless's joint float decode (where :meth:`jointable`; see
        :func:`nzip.entropy.lanes_c.decode_joint`): one pass from symbols and raw fields to the
        floats' bits; ``contexts`` an array or a matrix's scale offsets (rows, cols, bias, hi).
        Returns (start, stop, count) of the blocks holding escaped values (symbols below 4)."""
        nblocks, run, spans, _ = self.joint_job(contexts, base, eshift, mshift, planes, out, lows)
        on_pool(run, nblocks)
        return spans()

    def joint_job(self, contexts, base: int, eshift: int, mshift: int, planes: np.ndarray, out: np.ndarray,
                  lows=None):
        """:meth:`decode_joint` as ``(nblocks, run, spans, lost)``: ``run(b0, b1)`` decodes blocks
        b0..b1 on any thread (GIL-free), ``lost[b]`` then counts block b's escapes, and
        ``spans()``, once all ran, raises for a corrupt block or returns the spans."""
        if not self.jointable(contexts, out, lows):
            raise ValueError("the joint float decode does not apply to this blob here")
        status = np.full(self.nblocks, K.ERR_STATE, dtype=np.int64)  # (a block never run is not good)
        lost = np.zeros(self.nblocks, dtype=np.int64)
        run = LC.joint_runner(self.words, self.woff, self.states, out, contexts, base, eshift, mshift, planes,
                              self.block, self.lanes, self.prec, self.packed(), status, lost, lows=lows)

        def spans() -> list[tuple[int, int, int]]:
            _raise_status(status, self.what)
            return [(int(b) * self.block, min((int(b) + 1) * self.block, self.n), int(lost[b]))
                    for b in np.flatnonzero(lost)]

        return self.nblocks, run, spans, lost


class StaticJob:
    """A static blob's C decode split up (:meth:`LaneStreams.static_job`): ``run(b0, b1)`` decodes
    blocks b0..b1 (values ``b0 * block`` ..) into ``symbols`` on any thread, GIL-free; the values are
    ``symbols + offset`` (uint8, wrapping); ``values()``, once every block ran, raises for a corrupt
    block or returns them (as :meth:`LaneStreams.decode`)."""

    def __init__(self, streams: LaneStreams, run, symbols: np.ndarray, status: np.ndarray) -> None:
        self.nblocks, self.block, self.run = streams.nblocks, streams.block, run
        self.symbols, self.offset = symbols, streams.offset
        self._streams, self._status = streams, status

    def values(self) -> np.ndarray:
        _raise_status(self._status, self._streams.what)
        return self._streams.finish(self.symbols)


def parse(data: bytes | memoryview, *, max_symbols: int = DEFAULT_MAX_SYMBOLS,
          what: str = "entropy blob") -> LaneStreams:
    """Parse and check a static blob from :func:`encode` (every size checked before allocation)."""
    r = Reader(data, what)
    kind, dtype, n = _parse_head(r)
    if n > max_symbols:
        raise r.fail(f"declares {n} symbols, more than the {max_symbols} expected")
    if kind == EMPTY:
        return LaneStreams(EMPTY, 0, dtype, what=what)
    if kind == CONSTANT:
        v = r.svarint()
        try:
            np.array(v, dtype=dtype)
        except OverflowError:
            raise r.fail(f"constant {v} does not fit {dtype}") from None
        return LaneStreams(CONSTANT, n, dtype, constant=v, what=what)
    if kind != STATIC:
        raise r.fail("this is an indexed or context blob: decode it with decode_indexed / "
                     "decode_context")
    lanes, prec, block, nblocks = _parse_layout(r, n)
    offset = r.svarint()
    nalpha = r.uvarint(MAX_ALPHABET)
    k = r.byte()
    if nalpha < 2 or k > MAX_PRECISION:
        raise r.fail("bad table header")
    _check_range(offset, dtype, nalpha, r)
    tbytes = r.take(r.uvarint(MAX_ALPHABET * 8))
    freqs = np.zeros(nalpha, dtype=np.int64)
    if _PARSE.read_table(np.frombuffer(tbytes, dtype=np.uint8), k, nalpha, 1 << prec, freqs) < 0:
        raise r.fail("frequency table is malformed")
    min_bits = prec - math.log2(int(freqs.max()))
    words, woff, states = _parse_streams(r, n, lanes, block, nblocks, min_bits)
    if r.pos != len(r.data):
        raise r.fail(f"{len(r.data) - r.pos} trailing bytes")
    slot_sym, slot_pack = decode_tables(freqs, prec)
    return LaneStreams(STATIC, n, dtype, lanes, prec, block, nblocks, words, woff, states, slot_sym,
                       slot_pack, offset, nalpha, 1, what=what)


SMALL_BLOB = 1 << 14  # bytes: blobs up to this size try the one-call decode first


def decode(data: bytes | memoryview, *, max_symbols: int = DEFAULT_MAX_SYMBOLS,
           what: str = "entropy blob") -> np.ndarray:
    """Decode a blob from :func:`encode` to a 1-D array of the original dtype."""
    if len(data) <= SMALL_BLOB:  # a small static blob: parsed and decoded in one call (C, else numba)
        st, code, offset, nalpha, out = _PARSE.decode_small_static(
            np.frombuffer(data, np.uint8), max_symbols, VERSION, STATIC, CONTEXT, len(_DTYPES), MAX_LANES,
            MAX_PRECISION, MAX_BLOCK, MAX_ALPHABET)
        if st == 0:
            lo, hi = _DTYPE_RANGE[code]
            if lo <= offset and offset + nalpha - 1 <= hi:  # (_check_range)
                return _unshift(out, offset, np.dtype(_DTYPES[code]))
    return parse(data, max_symbols=max_symbols, what=what).decode()


_DTYPE_RANGE = [(0, 1) if d == "bool" else (int(np.iinfo(d).min), int(np.iinfo(d).max)) for d in _DTYPES]


def _check_range(offset: int, dtype: np.dtype, nalpha: int, r: Reader) -> None:
    """Symbols offset..offset+nalpha-1 must all be values of ``dtype``."""
    lo, hi = _DTYPE_RANGE[_DTYPE_CODE[dtype]]
    if offset < lo or offset + nalpha - 1 > hi:
        raise r.fail("bool values out of range" if dtype == np.bool_ else f"values out of range of {dtype}")


def _unshift(out: np.ndarray, offset: int, dtype: np.dtype) -> np.ndarray:
    if dtype == np.bool_:
        return (out.astype(np.uint8) + offset).view(np.bool_)
    if offset == 0 and out.dtype == dtype:
        return out
    if dtype.kind == "u":
        return out.astype(dtype) + dtype.type(offset)
    return (out.astype(np.int64) + offset).astype(dtype)


# ------------------------------------------------------------------------------------------------
# indexed variant
# ------------------------------------------------------------------------------------------------


def encode_indexed(values, indexes, tables: IndexedTables, *, lanes: int | None = None,
                   block: int | None = None) -> bytes:
    """Code ``values[i]`` with table ``indexes[i]`` of ``tables``. Values outside a table's support
    are coded as its escape symbol plus the exact value in a side stream (any int32 but -2**31).

    The tables do not travel in the blob (they are the model's); their fingerprint does, so
    decoding with other tables is refused instead of producing garbage."""
    v = np.asarray(values)
    ix = np.asarray(indexes)
    if v.dtype.kind not in "iu" or ix.dtype.kind not in "iu":
        raise InvalidInputError("values and indexes must be integer arrays")
    if v.shape != ix.shape:
        raise InvalidInputError(f"values {v.shape} and indexes {ix.shape} differ in shape")
    if v.size and (int(v.min()) <= -(1 << 31) or int(v.max()) >= 1 << 31):
        raise InvalidInputError("values must lie in -2**31+1..2**31-1 (int32; -2**31 marks escapes)")
    ix = np.ascontiguousarray(tables.check_indexes(ix).astype(np.int32, copy=False))
    v = np.ascontiguousarray(v.reshape(-1).astype(np.int32, copy=False))
    n = v.size
    lanes, block, nblocks = _layout(n, lanes, block)
    states = np.empty(nblocks * lanes, dtype=np.int64)
    words = np.empty(max(n, 1), dtype=np.uint16)
    first = np.empty(nblocks, dtype=np.int64)
    K.encode_blocks_indexed(v, ix, block, lanes, tables.cdfs, tables.lengths, tables.offsets,
                            tables.precision, states, words, first)
    packed = _run_encoder(first, words, n, block, "a table index is out of range")
    s = v.astype(np.int64) - tables.offsets[ix]
    escaped = v[(s < 0) | (s >= tables.lengths[ix] - 1)]

    out = _header(INDEXED, np.dtype(np.int32), n)
    out.append((lanes.bit_length() - 1) << 5 | tables.precision)
    put_uvarint(out, block)
    out += tables.fingerprint
    put_uvarint(out, len(escaped))
    _append_streams(out, _block_words(first, n, block), states, packed)
    for e in escaped.tolist():
        put_svarint(out, e)
    return bytes(out)


def decode_indexed(data: bytes | memoryview, indexes, tables: IndexedTables, *,
                   what: str = "entropy blob") -> np.ndarray:
    """Decode a blob from :func:`encode_indexed` with the same indexes and tables (int32 values)."""
    r = Reader(data, what)
    kind, _, n = _parse_head(r)
    ix = np.ascontiguousarray(tables.check_indexes(indexes).astype(np.int32, copy=False))
    if kind != INDEXED:
        raise r.fail("not an indexed blob: decode it with decode(data)")
    if n != ix.size:
        raise r.fail(f"holds {n} symbols but {ix.size} indexes were given")
    lanes, prec, block, nblocks = _parse_layout(r, n)
    if bytes(r.take(8)) != tables.fingerprint or prec != tables.precision:
        raise InvalidInputError(f"{what}: was coded with other tables than the ones given")
    n_esc = r.uvarint(n)
    words, woff, states = _parse_streams(r, n, lanes, block, nblocks, 0.0)
    out = np.empty(n, dtype=np.int32)
    status = np.empty(nblocks, dtype=np.int64)
    K.decode_blocks_indexed(words, woff, states, out, ix, block, lanes, prec, tables.cdfs,
                            tables.lengths, tables.offsets, tables.guide, tables.guide_shift, status)
    _raise_status(status, what)
    holes = np.flatnonzero(out == np.int32(-(2**31)))
    if len(holes) != n_esc:
        raise r.fail(f"{len(holes)} escapes decoded but {n_esc} declared")
    if n_esc:
        esc = [r.svarint() for _ in range(n_esc)]
        try:
            out[holes] = np.array(esc, dtype=np.int32)
        except OverflowError:
            raise r.fail("an escaped value does not fit int32") from None
    if r.pos != len(r.data):
        raise r.fail(f"{len(r.data) - r.pos} trailing bytes")
    return out


# ------------------------------------------------------------------------------------------------
# context variant: a table per context, built from the data, all tables in the blob
# ------------------------------------------------------------------------------------------------


def _ctx_tables(counts: np.ndarray, prec: int):
    """Per-context quantised tables (zero rows for unused contexts) and their code bits/orders."""
    freqs = np.zeros(counts.shape, dtype=np.int64)
    orders, bits = [], 0
    for c in range(counts.shape[0]):
        if counts[c].any():
            freqs[c] = quantize_counts(counts[c], prec)
            k, kbits = K.best_table_order(freqs[c], prec)
            orders.append(int(k))
            bits += int(kbits) + 8
        else:
            orders.append(255)
            bits += 8
    return freqs, orders, bits


def _encode_words_ctx(sym, ctx, freqs, prec, lanes, block):
    n = sym.size
    nblocks = -(-n // block)
    cum = np.zeros((freqs.shape[0], freqs.shape[1] + 1), dtype=np.int64)
    np.cumsum(freqs, axis=1, out=cum[:, 1:])
    states = np.empty(nblocks * lanes, dtype=np.int64)
    words = np.empty(n, dtype=np.uint16)
    first = np.empty(nblocks, dtype=np.int64)
    K.encode_blocks_ctx(sym, ctx, block, lanes, freqs, cum, prec, states, words, first)
    packed = _run_encoder(first, words, n, block, "a symbol has frequency 0 in its context's table")
    return states, _block_words(first, n, block), packed


def encode_context(symbols, contexts, num_contexts: int, *, lanes: int | None = None,
                   block: int | None = None, max_precision: int = MAX_PRECISION) -> bytes:
    """Code ``symbols[i]`` (integers 0..alphabet-1, alphabet <= 2**16) with the table of context
    ``contexts[i]`` (0..num_contexts-1). Each context's table is built from the data and travels in
    the blob; the contexts do not (the decoder computes them, e.g. from a field decoded earlier).

    This is how a codec conditions one field on another at the speed of the static decoder: the
    decoder's slot tables of all contexts sit side by side and the context only offsets the lookup.
    ``max_precision`` caps the table precision the size search may pick (12 keeps byte alphabets
    on the CPU's packed tables: one uint32 per slot, a quarter of the cache of precision 14).
    """
    a = np.ascontiguousarray(np.asarray(symbols).reshape(-1))
    cx = np.ascontiguousarray(np.asarray(contexts).reshape(-1))
    if a.dtype.kind not in "iu" or cx.dtype.kind not in "iu":
        raise InvalidInputError("symbols and contexts must be integer arrays")
    if a.shape != cx.shape:
        raise InvalidInputError(f"{a.size} symbols but {cx.size} contexts")
    if isinstance(num_contexts, bool) or not isinstance(num_contexts, (int, np.integer)) \
            or not 1 <= num_contexts <= MAX_CONTEXTS:
        raise InvalidInputError(f"num_contexts must be an integer in 1..{MAX_CONTEXTS}")
    num_contexts = int(num_contexts)
    n = a.size
    if n == 0:
        return bytes(_header(EMPTY, np.dtype(np.uint16), 0))
    amax = int(a.max())  # (unsigned arrays need no minimum: a pass less over a large field)
    if (a.dtype.kind == "i" and int(a.min()) < 0) or amax >= 1 << 16:
        raise InvalidInputError("context-coded symbols must lie in 0..65535")
    if (cx.dtype.kind == "i" and int(cx.min()) < 0) or int(cx.max()) >= num_contexts:
        raise InvalidInputError(f"contexts must lie in 0..{num_contexts - 1}")
    nalpha = max(2, amax + 1)
    sym = a.astype(np.uint16 if nalpha > 256 else np.uint8, copy=False)
    cxs = cx if cx.dtype in (np.uint8, np.uint16) else cx.astype(np.uint16)  # (the kernels take either)
    counts = K.histogram2(cxs, sym, num_contexts, nalpha)
    lanes, block, _ = _layout(n, lanes, block)
    pmin = max(1, math.ceil(math.log2(max(2, int(np.count_nonzero(counts, axis=1).max())))))
    step = max(1, n // (SAMPLE // 4))  # a smaller sample: contexts are for large fields, searched often
    ssym, sctx = np.ascontiguousarray(sym[::step]), np.ascontiguousarray(cxs[::step])
    scounts = K.histogram2(sctx, ssym, num_contexts, nalpha)
    best, worse = None, 0
    top = max(pmin, min(int(max_precision), MAX_PRECISION))
    for prec in range(min(max(pmin, MIN_SEARCH_PRECISION), top), top + 1):
        if worse >= 2:
            break
        freqs, orders, tbits = _ctx_tables(counts, prec)
        ideal = sum(cross_entropy_bits(counts[c], freqs[c], prec) for c in range(num_contexts)
                    if counts[c].any())
        sfreqs = freqs.copy()
        states, _, words = _encode_words_ctx(ssym, sctx, sfreqs, prec, lanes, DEFAULT_BLOCK)
        sample_bits = 16 * words.size + float(np.sum(np.log2(states.astype(np.float64)) - 16))
        sideal = sum(cross_entropy_bits(scounts[c], freqs[c], prec) for c in range(num_contexts)
                     if scounts[c].any())
        total = ideal + max(sample_bits - sideal, 0.0) * (n / ssym.size) + tbits
        if best is None or total < best[0] * (1 - 1e-4) - 1:
            best, worse = (total, prec, freqs, orders), 0
        else:
            worse += 1
    _, prec, freqs, orders = best
    states, wcounts, packed = _encode_words_ctx(sym, cxs, freqs, prec, lanes, block)

    out = _header(CONTEXT, np.dtype(np.uint16), n)
    out.append((lanes.bit_length() - 1) << 5 | prec)
    put_uvarint(out, block)
    put_uvarint(out, nalpha)
    put_uvarint(out, num_contexts)
    for c in range(num_contexts):
        out.append(orders[c])
        if orders[c] != 255:
            tbuf = np.zeros(int(K.table_code_bits(freqs[c], orders[c])) // 8 + 2, dtype=np.uint8)
            written = K.write_table(freqs[c], orders[c], tbuf)
            put_uvarint(out, (written + 7) // 8)
            out += tbuf[: (written + 7) // 8].tobytes()
    _append_streams(out, wcounts, states, packed)
    return bytes(out)


class _TableArena:
    """Packed decode tables carved out of shared 4 MiB blocks instead of one fresh allocation each.
    A context blob's table (16 contexts x 4096 slots: 256 KiB) was a fresh mapping of 64 small
    pages, and its first-touch page faults cost ~290 us on this project's VM, more than building
    it; numpy asks for huge pages on allocations of 4 MiB and up, so a block faults in as two. A
    block is freed when no table cut from it is referenced (and this arena has moved on)."""

    BLOCK = 1 << 20  # uint32 entries: 4 MiB

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._block = np.empty(0, np.uint32)
        self._pos = 0

    def take(self, n: int) -> np.ndarray:
        if n > self.BLOCK // 4:
            return np.empty(n, np.uint32)
        with self._lock:
            if self._pos + n > self._block.shape[0]:
                self._block, self._pos = np.empty(self.BLOCK, np.uint32), 0
            out = self._block[self._pos:self._pos + n]
            self._pos += (n + 15) & ~15  # (each table starts a multiple of 64 bytes into its block)
            return out


_tables = _TableArena()


def parse_context(data: bytes | memoryview, n_contexts_given: int, *,
                  what: str = "entropy blob") -> LaneStreams:
    """Parse and check a blob from :func:`encode_context` that ``n_contexts_given`` contexts (one
    per symbol) will decode."""
    r = Reader(data, what)
    kind, _, n = _parse_head(r)
    if kind == EMPTY and n_contexts_given == 0:
        return LaneStreams(EMPTY, 0, np.dtype(np.uint16), what=what)
    if kind != CONTEXT:
        raise r.fail("not a context-coded blob")
    if n != n_contexts_given:
        raise r.fail(f"holds {n} symbols but {n_contexts_given} contexts were given")
    lanes, prec, block, nblocks = _parse_layout(r, n)
    nalpha = r.uvarint(1 << 16)
    nctx = r.uvarint(MAX_CONTEXTS)
    if nalpha < 2 or nctx < 1:
        raise r.fail("bad context table header")
    # every context's table in one call, C or numba (a Python loop cost ~1 ms per 16-context blob);
    # packable blobs straight to the packed table (the slot arrays and their packing cost ~110 us
    # of a 16-context blob's ~150)
    buf, freqs = np.frombuffer(r.data, dtype=np.uint8), np.zeros(nalpha, dtype=np.int64)
    slot_sym = slot_pack = table = used = None
    if prec <= K.PACKED_MAX_PRECISION and nalpha <= 256:
        table, used = _tables.take(nctx << prec), np.zeros(nctx, dtype=np.uint8)
        st, pos, c, fmax = _PARSE.parse_ctx_packed(buf, r.pos, nctx, nalpha, prec, MAX_PRECISION, table, used, freqs)
    else:
        slot_sym = np.zeros(nctx << prec, dtype=np.uint8 if nalpha <= 256 else np.uint16)
        slot_pack = np.zeros(nctx << prec, dtype=np.uint32)
        st, pos, c, fmax = K.parse_ctx_tables(buf, r.pos, nctx, nalpha, prec, MAX_PRECISION, slot_sym, slot_pack,
                                              freqs)
    r.pos = int(pos)
    if st < 0:
        raise r.fail({K.PARSE_TRUNCATED: "truncated (header ends early)",
                      K.PARSE_HEADER: "bad table header",
                      K.PARSE_VARINT: "malformed table length in header"}.get(
                          int(st), f"frequency table of context {c} is malformed"))
    min_bits = prec - math.log2(int(fmax)) if fmax > 0 else float(prec)
    words, woff, states = _parse_streams(r, n, lanes, block, nblocks, min_bits)
    if r.pos != len(r.data):
        raise r.fail(f"{len(r.data) - r.pos} trailing bytes")
    return LaneStreams(CONTEXT, n, np.dtype(np.uint16), lanes, prec, block, nblocks, words, woff,
                       states, slot_sym, slot_pack, 0, nalpha, nctx, what=what, table=table, used=used)


def check_contexts(cx: np.ndarray, nctx: int) -> None:
    if cx.dtype.kind not in "iu":
        raise InvalidInputError(f"contexts must be integers in 0..{nctx - 1}")
    if not cx.size or (cx.dtype == np.uint8 and nctx >= 256):
        return
    if (cx.dtype.kind == "i" and int(cx.min()) < 0) or int(cx.max()) >= nctx:
        raise InvalidInputError(f"contexts must be integers in 0..{nctx - 1}")


def decode_context(data: bytes | memoryview, contexts, *, what: str = "entropy blob") -> np.ndarray:
    """Decode a blob from :func:`encode_context` given the same contexts: uint8 symbols where the
    alphabet fits a byte, else uint16 (cast as needed)."""
    cx = np.ascontiguousarray(np.asarray(contexts).reshape(-1))
    p = parse_context(data, cx.size, what=what)
    return np.empty(0, dtype=np.uint16) if p.kind == EMPTY else p.decode(cx)
