"""The lane-interleaved rANS coder: numba kernels for the CPU.

Format of one block (the unit of parallel decode):
  * ``lanes`` (a power of two, 1..32) independent rANS states, 32 bits each, range [2**16, 2**32);
  * symbol j of the block belongs to lane ``j % lanes``;
  * renormalisation moves 16-bit words; all lanes share one word stream, read strictly in symbol
    order, so a decoder that walks the symbols in order (the CPU) or a warp that decodes ``lanes``
    symbols at a time and hands out words by a prefix sum over the lanes that need one (the GPU)
    read the very same stream. With precision P <= 16 a step reads at most one word, so the CPU
    decoder runs without branches on the data.
  * the encoder starts every lane at 2**16, so a correct decode ends every lane there: a free
    integrity check on top of the container's checksums.

Kernels return a status (>= 0 ok, < 0 an error code) instead of raising, so they can run inside
``prange`` and be reported by the caller with the block's number.
"""
from __future__ import annotations

import numpy as np

from .._jit import nb

RANS_L = 1 << 16  # lower bound of the state interval
WORD_BITS = 16

ERR_ZERO_FREQ = -1  # encoder: a symbol whose frequency is 0 (or outside the alphabet)
ERR_OVERRUN = -2  # decoder: the block reads past its words
ERR_STATE = -3  # decoder: the final states are not the encoder's initial ones
ERR_SLOT = -4  # decoder: a slot maps outside the table (corrupt table)

_JIT = dict(cache=True, nogil=True, boundscheck=False)


# ------------------------------------------------------------------------------------------------
# static table
# ------------------------------------------------------------------------------------------------


@nb.njit(**_JIT)
def _encode_block(sym, start, stop, lanes, freq, cum, prec, states_out, words, wend):
    """Encode sym[start:stop] into words[..wend) (written backwards). Returns the first word index.

    States are uint32 (always below 2**32) and the word is written without a branch (see
    _put_word): a 32-bit division and no mispredicted branch instead of int64 and a branch,
    the same output."""
    st = np.empty(lanes, np.uint32)
    for lane in range(lanes):
        st[lane] = RANS_L
    pos = wend
    nalpha = freq.shape[0]
    mask = lanes - 1
    shift = np.uint64(32 - prec)
    p = np.uint32(prec)
    for j in range(stop - start - 1, -1, -1):
        s = np.int64(sym[start + j])
        if s < 0 or s >= nalpha:
            return ERR_ZERO_FREQ
        f = np.uint32(freq[s])
        if f == 0:
            return ERR_ZERO_FREQ
        lane = j & mask
        x, pos = _put_word(st[lane], f, shift, words, pos)
        q = x // f
        st[lane] = (q << p) + (x - q * f) + np.uint32(cum[s])
    for lane in range(lanes):
        states_out[lane] = st[lane]
    return pos


@nb.njit(inline="always", **_JIT)
def _put_word(x, f, shift, words, pos):
    """The encoder's renormalisation of state x (uint32) before coding a symbol of frequency f:
    where x >= f << (32 - P), its low word goes out and x drops 16 bits; returns (x, pos). The word
    is stored at pos - 1 either way and pos moves only where it went out: a word stored in vain
    lies below the block's words and is overwritten by the next one or never read (pos - 1 stays
    inside the block: a block of m symbols left to code has at least m slots below pos)."""
    need = np.uint32(np.uint64(x) >= (np.uint64(f) << shift))
    words[pos - 1] = x & np.uint32(0xFFFF)
    return x >> (need << np.uint32(4)), pos - np.int64(need)


@nb.njit(**_JIT)
def _renorm(x, m, words, ptr):
    """Refill the lanes x[:m] that fell below 2**16, one word each in lane order; returns ptr.
    Reads are clamped to the last word, so a corrupt block cannot read past the array; the caller
    sees the overrun in ptr."""
    last = np.uint64(words.shape[0] - 1)
    for lane in range(m):
        v = x[lane]
        need = np.uint32(v < np.uint32(RANS_L))
        w = np.uint32(words[min(ptr, last)])
        # branch-free: shift by 16 and or the word in only where needed
        x[lane] = (v << (need << np.uint32(4))) | (w & (np.uint32(0) - need))
        ptr += np.uint64(need)
    return ptr


@nb.njit(**_JIT)
def _end_status(x, lanes, ptr, end):
    """A block decoded right iff it used exactly its words and every lane is back at 2**16."""
    if ptr != end:
        return ERR_OVERRUN
    for lane in range(lanes):
        if x[lane] != RANS_L:
            return ERR_STATE
    return 0


@nb.njit(**_JIT)
def _decode_block(words, wstart, wend, states, out, start, stop, lanes, prec, slot_sym, slot_pack):
    """Decode one block into out[start:stop] from words[wstart:wend] (``words`` not empty).

    Each group of ``lanes`` symbols runs in two passes: the table step of every lane (independent,
    so the compiler vectorises it into gathers), then the renormalisation in lane order (the
    shared word stream makes it serial, but it is a few instructions per lane). States are uint32:
    f * (x >> P) + bias < 2**32 for any x < 2**32, so even corrupt input cannot overflow."""
    x = np.empty(lanes, np.uint32)
    for lane in range(lanes):
        x[lane] = np.uint32(states[lane])
    mask = np.uint32((1 << prec) - 1)
    p = np.uint32(prec)
    ptr = np.uint64(wstart)
    end = np.uint64(wend)
    j = np.uint64(start)
    stop_ = np.uint64(stop)
    while j < stop_:
        m = min(np.uint64(lanes), stop_ - j)
        for lane in range(m):
            s = x[lane] & mask
            out[j + np.uint64(lane)] = slot_sym[s]
            pk = slot_pack[s]
            x[lane] = (pk >> np.uint32(16)) * (x[lane] >> p) + (pk & np.uint32(0xFFFF))
        ptr = _renorm(x, m, words, ptr)
        if ptr > end:
            return ERR_OVERRUN
        j += m
    return _end_status(x, lanes, ptr, end)


@nb.njit(parallel=True, **_JIT)
def _encode_blocks_par(sym, block, lanes, freq, cum, prec, states, words, first):
    n = sym.shape[0]
    nblocks = first.shape[0]
    for b in nb.prange(nblocks):
        start = b * block
        stop = min(n, start + block)
        first[b] = _encode_block(sym, start, stop, lanes, freq, cum, prec,
                                 states[b * lanes:(b + 1) * lanes], words, stop)


@nb.njit(parallel=True, **_JIT)
def _decode_blocks_par(words, woffsets, states, out, block, lanes, prec, slot_sym, slot_pack, status):
    n = out.shape[0]
    nblocks = status.shape[0]
    for b in nb.prange(nblocks):
        start = b * block
        stop = min(n, start + block)
        status[b] = _decode_block(words, woffsets[b], woffsets[b + 1], states[b * lanes:(b + 1) * lanes],
                                  out, start, stop, lanes, prec, slot_sym, slot_pack)


# ------------------------------------------------------------------------------------------------
# indexed tables: symbol j uses table idx[j]; values outside a table's support become its escape
# ------------------------------------------------------------------------------------------------


@nb.njit(**_JIT)
def _encode_block_indexed(val, idx, start, stop, lanes, cdfs, lengths, offsets, prec, states_out,
                          words, wend):
    st = np.empty(lanes, np.int64)
    for lane in range(lanes):
        st[lane] = RANS_L
    pos = wend
    mask = lanes - 1
    shift = 32 - prec
    ntab = lengths.shape[0]
    for j in range(stop - start - 1, -1, -1):
        k = np.int64(idx[start + j])
        if k < 0 or k >= ntab:
            return ERR_ZERO_FREQ
        esc = np.int64(lengths[k]) - 1
        s = np.int64(val[start + j]) - offsets[k]
        if s < 0 or s > esc:
            s = esc
        c = np.int64(cdfs[k, s])
        f = np.int64(cdfs[k, s + 1]) - c
        lane = j & mask
        x = st[lane]
        if x >= (f << shift):
            pos -= 1
            words[pos] = x & 0xFFFF
            x >>= WORD_BITS
        st[lane] = ((x // f) << prec) + (x % f) + c
    for lane in range(lanes):
        states_out[lane] = st[lane]
    return pos


@nb.njit(**_JIT)
def _decode_block_indexed(words, wstart, wend, states, out, idx, start, stop, lanes, prec, cdfs,
                          lengths, offsets, guide, gshift):
    """Decodes values; escapes come out as the sentinel -2**31 (filled in by the caller).
    Same two passes per group as _decode_block; the table step walks up from a guide entry."""
    x = np.empty(lanes, np.uint32)
    for lane in range(lanes):
        x[lane] = np.uint32(states[lane])
    mask = np.uint32((1 << prec) - 1)
    p = np.uint32(prec)
    ptr = np.uint64(wstart)
    end = np.uint64(wend)
    ntab = lengths.shape[0]
    j = np.uint64(start)
    stop_ = np.uint64(stop)
    while j < stop_:
        m = min(np.uint64(lanes), stop_ - j)
        for lane in range(m):
            k = idx[j + np.uint64(lane)]
            if k < 0 or k >= ntab:
                return ERR_SLOT
            slot = x[lane] & mask
            lo = guide[k, slot >> gshift]
            while cdfs[k, lo + 1] <= slot:  # walk up from the guide to the slot's symbol
                lo += 1
            c = np.uint32(cdfs[k, lo])
            f = np.uint32(cdfs[k, lo + 1]) - c
            out[j + np.uint64(lane)] = (lo + offsets[k]) if lo != lengths[k] - 1 else -2147483648
            x[lane] = f * (x[lane] >> p) + (slot - c)
        ptr = _renorm(x, m, words, ptr)
        if ptr > end:
            return ERR_OVERRUN
        j += m
    return _end_status(x, lanes, ptr, end)


@nb.njit(parallel=True, **_JIT)
def _encode_blocks_indexed_par(val, idx, block, lanes, cdfs, lengths, offsets, prec, states, words, first):
    n = val.shape[0]
    nblocks = first.shape[0]
    for b in nb.prange(nblocks):
        start = b * block
        stop = min(n, start + block)
        first[b] = _encode_block_indexed(val, idx, start, stop, lanes, cdfs, lengths, offsets, prec,
                                         states[b * lanes:(b + 1) * lanes], words, stop)


@nb.njit(parallel=True, **_JIT)
def _decode_blocks_indexed_par(words, woffsets, states, out, idx, block, lanes, prec, cdfs, lengths,
                          offsets, guide, gshift, status):
    n = out.shape[0]
    nblocks = status.shape[0]
    for b in nb.prange(nblocks):
        start = b * block
        stop = min(n, start + block)
        status[b] = _decode_block_indexed(words, woffsets[b], woffsets[b + 1],
                                          states[b * lanes:(b + 1) * lanes], out, idx, start, stop,
                                          lanes, prec, cdfs, lengths, offsets, guide, gshift)


@nb.njit(**_JIT)
def fill_slots(freqs, sym, pack):
    """Slot tables of one frequency table: the symbol of every slot and (freq << 16 | slot - start),
    written straight into (slices of) the decoder's arrays. Returns the number of slots filled."""
    pos = 0
    for s in range(freqs.shape[0]):
        f = np.uint64(freqs[s])
        for k in range(freqs[s]):
            sym[pos] = s
            pack[pos] = np.uint32(((f << np.uint64(16)) | np.uint64(k)) & np.uint64(0xFFFFFFFF))
            pos += 1
    return pos


@nb.njit(**_JIT)
def histogram(sym, nalpha):
    """np.bincount(sym, minlength=nalpha) for unsigned symbols below nalpha, in one pass (numpy's
    converts a byte array to int64 first: ~10x the time)."""
    out = np.zeros(nalpha, np.int64)
    for i in range(sym.shape[0]):
        out[sym[i]] += 1
    return out


@nb.njit(**_JIT)
def histogram2(ctx, sym, nctx, nalpha):
    """The (context, symbol) counts: np.bincount(ctx * nalpha + sym).reshape(nctx, nalpha)."""
    out = np.zeros((nctx, nalpha), np.int64)
    for i in range(sym.shape[0]):
        out[ctx[i], sym[i]] += 1
    return out


@nb.njit(**_JIT)
def compact_words(words, first, block, n, out):
    """Concatenate each block's words (words[first[b] : end of block b]) into out; returns length."""
    pos = 0
    for b in range(first.shape[0]):
        end = min(n, (b + 1) * block)
        for i in range(first[b], end):
            out[pos] = words[i]
            pos += 1
    return pos


# ------------------------------------------------------------------------------------------------
# bit-level helpers for compact headers (exp-Golomb codes of frequency tables)
# ------------------------------------------------------------------------------------------------


@nb.njit(**_JIT)
def _eg_len(v, k):
    """Length in bits of the order-k exp-Golomb code of v >= 0."""
    u = (v >> k) + 1
    nb_ = 0
    while u > 0:
        nb_ += 1
        u >>= 1
    return 2 * nb_ - 1 + k


@nb.njit(**_JIT)
def table_code_bits(freqs, k):
    """Bits of the table code with exp-Golomb order k (see write_table)."""
    bits = 0
    run = 0
    for s in range(freqs.shape[0]):
        if freqs[s] == 0:
            run += 1
        else:
            bits += _eg_len(run, 0) + _eg_len(freqs[s] - 1, k)
            run = 0
    return bits


@nb.njit(**_JIT)
def best_table_order(freqs, prec):
    """(k, bits): the exp-Golomb order in 0..prec-1 whose table code is shortest (the first such)
    and its length, in one call instead of one per order."""
    best_k, best = 0, table_code_bits(freqs, 0)
    for k in range(1, prec):
        b = table_code_bits(freqs, k)
        if b < best:
            best_k, best = k, b
    return best_k, best


@nb.njit(**_JIT)
def _put(buf, bitpos, v, nbits):
    for i in range(nbits - 1, -1, -1):
        if (v >> i) & 1:
            buf[bitpos >> 3] |= np.uint8(0x80 >> (bitpos & 7))
        bitpos += 1
    return bitpos


@nb.njit(**_JIT)
def _put_eg(buf, bitpos, v, k):
    u = (v >> k) + 1
    nb_ = 0
    t = u
    while t > 0:
        nb_ += 1
        t >>= 1
    bitpos += nb_ - 1  # zeros
    bitpos = _put(buf, bitpos, u, nb_)
    return _put(buf, bitpos, v & ((1 << k) - 1), k)


@nb.njit(**_JIT)
def write_table(freqs, k, buf):
    """Each used symbol as (zero-run before it: EG0, frequency - 1: EGk). Returns bits written."""
    bitpos = 0
    run = 0
    for s in range(freqs.shape[0]):
        if freqs[s] == 0:
            run += 1
        else:
            bitpos = _put_eg(buf, bitpos, run, 0)
            bitpos = _put_eg(buf, bitpos, freqs[s] - 1, k)
            run = 0
    return bitpos


@nb.njit(**_JIT)
def _get(buf, bitpos, nbits):
    """nbits bits (MSB first) from bitpos: (value, next bitpos), value -1 past the end; whole
    bytes' worth at a time."""
    if (bitpos + nbits + 7) >> 3 > buf.shape[0]:
        return -1, bitpos
    v = np.int64(0)
    while nbits > 0:
        off = bitpos & 7
        take = min(nbits, 8 - off)
        v = (v << take) | ((np.int64(buf[bitpos >> 3]) >> (8 - off - take)) & ((np.int64(1) << take) - 1))
        bitpos += take
        nbits -= take
    return v, bitpos


@nb.njit(**_JIT)
def _get_eg(buf, bitpos, k):
    zeros = 0
    while True:
        b, bitpos = _get(buf, bitpos, 1)
        if b < 0 or zeros > 40:
            return -1, bitpos
        if b == 1:
            break
        zeros += 1
    rest, bitpos = _get(buf, bitpos, zeros)
    if rest < 0:
        return -1, bitpos
    low, bitpos = _get(buf, bitpos, k)
    if low < 0:
        return -1, bitpos
    return ((((np.int64(1) << zeros) | rest) - 1) << k) | low, bitpos


@nb.njit(**_JIT)
def read_table(buf, k, nalpha, total, freqs):
    """Inverse of write_table for a table of ``nalpha`` symbols summing to ``total``.

    Returns the bits read, or -1 if the code is malformed or does not sum to ``total``."""
    bitpos = 0
    s = 0
    acc = 0
    while acc < total:
        run, bitpos = _get_eg(buf, bitpos, 0)
        if run < 0:
            return -1
        s += run
        if s >= nalpha:
            return -1
        f, bitpos = _get_eg(buf, bitpos, k)
        if f < 0 or acc + f + 1 > total:
            return -1
        freqs[s] = f + 1
        acc += f + 1
        s += 1
    return bitpos


@nb.njit(**_JIT)
def _uvarint_at(buf, pos):
    """LEB128 at buf[pos]: (value, next pos); value -1 if the buffer ends first, -2 if malformed."""
    v = np.int64(0)
    shift = 0
    while True:
        if pos >= buf.shape[0]:
            return -1, pos
        b = np.int64(buf[pos])
        pos += 1
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            return v, pos
        shift += 7
        if shift > 56:
            return -2, pos


PARSE_TRUNCATED, PARSE_HEADER, PARSE_VARINT, PARSE_TABLE = -1, -2, -3, -4


@nb.njit(**_JIT)
def parse_ctx_tables(buf, pos, nctx, nalpha, prec, max_prec, slot_sym, slot_pack, freqs):
    """The per-context tables of a context blob, from buf[pos:], straight into the slot arrays
    (one call instead of a Python loop over contexts). Each context: a byte k (255: unused, else
    the exp-Golomb order), a uvarint length and that many bytes of table.

    Returns (status, pos after the tables, the failing context, largest frequency of any table);
    status 0 or one of the PARSE_* codes."""
    total = np.int64(1) << prec
    fmax = np.int64(0)
    for c in range(nctx):
        st, pos, has, fm = _next_table(buf, pos, nalpha, total, max_prec, freqs)
        if st < 0:
            return st, pos, c, fmax
        fmax = max(fmax, fm)
        if has:
            fill_slots(freqs, slot_sym[c << prec:(c + 1) << prec], slot_pack[c << prec:(c + 1) << prec])
    return 0, pos, 0, fmax


@nb.njit(**_JIT)
def _next_table(buf, pos, nalpha, total, max_prec, freqs):
    """One context's entry at buf[pos:] (a byte k: 255 unused, else the exp-Golomb order; a
    uvarint length; that many bytes of table), its frequencies into freqs: (status 0 or a PARSE_*
    code, pos after it, 1 if the context has a table else 0, its largest frequency)."""
    end = buf.shape[0]
    if pos >= end:
        return PARSE_TRUNCATED, pos, 0, 0
    k = np.int64(buf[pos])
    pos += 1
    if k == 255:
        return 0, pos, 0, 0
    if k > max_prec:
        return PARSE_HEADER, pos, 0, 0
    ln, pos = _uvarint_at(buf, pos)
    if ln == -1:
        return PARSE_TRUNCATED, pos, 0, 0
    if ln < 0 or ln > nalpha * 8:
        return PARSE_VARINT, pos, 0, 0
    if pos + ln > end:
        return PARSE_TRUNCATED, pos, 0, 0
    freqs[:] = 0
    if read_table(buf[pos:pos + ln], k, nalpha, total, freqs) < 0:
        return PARSE_TABLE, pos, 0, 0
    acc = np.int64(0)
    fmax = np.int64(0)
    for s in range(nalpha):
        acc += freqs[s]
        fmax = max(fmax, freqs[s])
    if acc != total:
        return PARSE_TABLE, pos + ln, 0, 0
    return 0, pos + ln, 1, fmax


UNUSED_PACKED = 0xFFFFFF00  # what pack_tables makes of an unused context's all-zero slots


@nb.njit(**_JIT)
def parse_ctx_packed(buf, pos, nctx, nalpha, prec, max_prec, table, used, freqs):
    """parse_ctx_tables for packable blobs (nalpha <= 256, prec <= PACKED_MAX_PRECISION), straight
    into the packed table (pack_tables' entries; an unused context's slots UNUSED_PACKED) with no
    slot arrays in between; used[c] = 1 for every context with a table. Same returns."""
    total = np.int64(1) << prec
    fmax = np.int64(0)
    for c in range(nctx):
        st, pos, has, fm = _next_table(buf, pos, nalpha, total, max_prec, freqs)
        if st < 0:
            return st, pos, c, fmax
        fmax = max(fmax, fm)
        lo = c << prec
        if not has:
            table[lo:lo + total] = np.uint32(UNUSED_PACKED)
            continue
        used[c] = 1
        at = lo
        for s in range(nalpha):
            f = freqs[s]
            if f:  # (a slice and an add: this form vectorises, ~3x the plain index loop)
                head = np.uint32(s | ((f - 1) << 8))
                seg = table[at:at + f]
                for b in range(f):
                    seg[b] = head + (np.uint32(b) << np.uint32(20))
                at += f
    return 0, pos, 0, fmax


@nb.njit(**_JIT)
def unpack_tables(table, used, prec, slot_sym, slot_pack):
    """The slot arrays of a packed table (inverse of pack_tables; unused contexts all zeros)."""
    total = 1 << prec
    for c in range(used.shape[0]):
        for i in range(c * total, (c + 1) * total):
            if used[c]:
                e = table[i]
                slot_sym[i] = e & np.uint32(0xFF)
                slot_pack[i] = ((((e >> np.uint32(8)) & np.uint32(0xFFF)) + np.uint32(1)) << np.uint32(16)) \
                    | (e >> np.uint32(20))
            else:
                slot_sym[i] = 0
                slot_pack[i] = 0


# ------------------------------------------------------------------------------------------------
# context tables: symbol j uses table ctx[j] of a small set built from the data (all one alphabet)
# ------------------------------------------------------------------------------------------------


@nb.njit(**_JIT)
def _encode_block_ctx(sym, ctx, start, stop, lanes, freq, cum, prec, states_out, words, wend):
    """freq/cum are (contexts, alphabet[+1]) tables; otherwise as _encode_block."""
    st = np.empty(lanes, np.uint32)
    for lane in range(lanes):
        st[lane] = RANS_L
    pos = wend
    nctx, nalpha = freq.shape
    mask = lanes - 1
    shift = np.uint64(32 - prec)
    p = np.uint32(prec)
    for j in range(stop - start - 1, -1, -1):
        s = np.int64(sym[start + j])
        c = np.int64(ctx[start + j])
        if s < 0 or s >= nalpha or c < 0 or c >= nctx:
            return ERR_ZERO_FREQ
        f = np.uint32(freq[c, s])
        if f == 0:
            return ERR_ZERO_FREQ
        lane = j & mask
        x, pos = _put_word(st[lane], f, shift, words, pos)
        q = x // f
        st[lane] = (q << p) + (x - q * f) + np.uint32(cum[c, s])
    for lane in range(lanes):
        states_out[lane] = st[lane]
    return pos


@nb.njit(**_JIT)
def _decode_block_ctx(words, wstart, wend, states, out, ctx, start, stop, lanes, prec, slot_sym,
                      slot_pack):
    """As _decode_block, with the slot tables of all contexts concatenated: context c's slot s is
    entry (c << P) | s."""
    x = np.empty(lanes, np.uint32)
    for lane in range(lanes):
        x[lane] = np.uint32(states[lane])
    mask = np.uint32((1 << prec) - 1)
    p = np.uint32(prec)
    nctx = np.uint32(slot_sym.shape[0] >> prec)
    ptr = np.uint64(wstart)
    end = np.uint64(wend)
    j = np.uint64(start)
    stop_ = np.uint64(stop)
    while j < stop_:
        m = min(np.uint64(lanes), stop_ - j)
        for lane in range(m):
            c = np.uint32(ctx[j + np.uint64(lane)])
            if c >= nctx:
                return ERR_SLOT
            s = (c << p) | (x[lane] & mask)
            out[j + np.uint64(lane)] = slot_sym[s]
            pk = slot_pack[s]
            x[lane] = (pk >> np.uint32(16)) * (x[lane] >> p) + (pk & np.uint32(0xFFFF))
        ptr = _renorm(x, m, words, ptr)
        if ptr > end:
            return ERR_OVERRUN
        j += m
    return _end_status(x, lanes, ptr, end)


@nb.njit(parallel=True, **_JIT)
def _encode_blocks_ctx_par(sym, ctx, block, lanes, freq, cum, prec, states, words, first):
    n = sym.shape[0]
    nblocks = first.shape[0]
    for b in nb.prange(nblocks):
        start = b * block
        stop = min(n, start + block)
        first[b] = _encode_block_ctx(sym, ctx, start, stop, lanes, freq, cum, prec,
                                     states[b * lanes:(b + 1) * lanes], words, stop)


@nb.njit(parallel=True, **_JIT)
def _decode_blocks_ctx_par(words, woffsets, states, out, ctx, block, lanes, prec, slot_sym, slot_pack,
                      status):
    n = out.shape[0]
    nblocks = status.shape[0]
    for b in nb.prange(nblocks):
        start = b * block
        stop = min(n, start + block)
        status[b] = _decode_block_ctx(words, woffsets[b], woffsets[b + 1],
                                      states[b * lanes:(b + 1) * lanes], out, ctx, start, stop,
                                      lanes, prec, slot_sym, slot_pack)


# ------------------------------------------------------------------------------------------------
# packed tables (precision <= 12, alphabet <= 256): one uint32 per slot, symbol | (freq - 1) << 8 |
# (slot - start) << 20, so a step makes one table load instead of two and the tables are 4/5 the
# size (16 contexts x 2**10 slots: 64 KiB). Decode-side only: the blobs are the same.
# ------------------------------------------------------------------------------------------------

PACKED_MAX_PRECISION = 12


@nb.njit(**_JIT)
def pack_tables(slot_sym, slot_pack, out):
    for i in range(out.shape[0]):
        pk = np.uint32(slot_pack[i])
        out[i] = (np.uint32(slot_sym[i]) | (((pk >> np.uint32(16)) - np.uint32(1)) << np.uint32(8))
                  | ((pk & np.uint32(0xFFF)) << np.uint32(20)))


@nb.njit(**_JIT)
def _decode_block_packed(words, wstart, wend, states, out, ctx, use_ctx, start, stop, lanes, prec,
                         table):
    """_decode_block / _decode_block_ctx with a packed table (``use_ctx``: context c's slot s is
    entry (c << P) | s)."""
    x = np.empty(lanes, np.uint32)
    for lane in range(lanes):
        x[lane] = np.uint32(states[lane])
    mask = np.uint32((1 << prec) - 1)
    p = np.uint32(prec)
    nctx = np.uint32(table.shape[0] >> prec)
    ptr = np.uint64(wstart)
    end = np.uint64(wend)
    j = np.uint64(start)
    stop_ = np.uint64(stop)
    while j < stop_:
        m = min(np.uint64(lanes), stop_ - j)
        if use_ctx:
            for lane in range(m):
                c = np.uint32(ctx[j + np.uint64(lane)])
                if c >= nctx:
                    return ERR_SLOT
                e = table[(c << p) | (x[lane] & mask)]
                out[j + np.uint64(lane)] = e & np.uint32(0xFF)
                x[lane] = (((e >> np.uint32(8)) & np.uint32(0xFFF)) + np.uint32(1)) * (x[lane] >> p) \
                    + (e >> np.uint32(20))
        else:
            for lane in range(m):
                e = table[x[lane] & mask]
                out[j + np.uint64(lane)] = e & np.uint32(0xFF)
                x[lane] = (((e >> np.uint32(8)) & np.uint32(0xFFF)) + np.uint32(1)) * (x[lane] >> p) \
                    + (e >> np.uint32(20))
        ptr = _renorm(x, m, words, ptr)
        if ptr > end:
            return ERR_OVERRUN
        j += m
    return _end_status(x, lanes, ptr, end)


@nb.njit(parallel=True, **_JIT)
def _decode_blocks_packed_par(words, woffsets, states, out, ctx, use_ctx, block, lanes, prec, table,
                              status):
    n = out.shape[0]
    nblocks = status.shape[0]
    for b in nb.prange(nblocks):
        start = b * block
        stop = min(n, start + block)
        status[b] = _decode_block_packed(words, woffsets[b], woffsets[b + 1],
                                         states[b * lanes:(b + 1) * lanes], out, ctx, use_ctx, start,
                                         stop, lanes, prec, table)


def decode_blocks_packed(words, woffsets, states, out, ctx, block, lanes, prec, table, status):
    """Static (``ctx`` None) or context blobs through a packed table; ``out`` uint8."""
    use_ctx = ctx is not None
    cx = ctx if use_ctx else np.zeros(1, np.uint16)
    if status.shape[0] == 1:
        status[0] = _decode_block_packed(words, woffsets[0], woffsets[1], states, out, cx, use_ctx, 0,
                                         out.shape[0], lanes, prec, table)
    else:
        _decode_blocks_packed_par(words, woffsets, states, out, cx, use_ctx, block, lanes, prec, table,
                                  status)


# ------------------------------------------------------------------------------------------------
# entry points: one block runs its kernel directly (launching numba's thread pool costs
# milliseconds on a busy host, more than a small block takes); several run in parallel
# ------------------------------------------------------------------------------------------------


def encode_blocks(sym, block, lanes, freq, cum, prec, states, words, first):
    """Block b writes words[b*block : (b+1)*block) from the end; first[b] gets its first word index
    (or an error code)."""
    if first.shape[0] == 1:
        n = sym.shape[0]
        first[0] = _encode_block(sym, 0, n, lanes, freq, cum, prec, states, words, n)
    else:
        _encode_blocks_par(sym, block, lanes, freq, cum, prec, states, words, first)


def decode_blocks(words, woffsets, states, out, block, lanes, prec, slot_sym, slot_pack, status):
    if status.shape[0] == 1:
        status[0] = _decode_block(words, woffsets[0], woffsets[1], states, out, 0, out.shape[0], lanes,
                                  prec, slot_sym, slot_pack)
    else:
        _decode_blocks_par(words, woffsets, states, out, block, lanes, prec, slot_sym, slot_pack, status)


def encode_blocks_indexed(val, idx, block, lanes, cdfs, lengths, offsets, prec, states, words, first):
    if first.shape[0] == 1:
        n = val.shape[0]
        first[0] = _encode_block_indexed(val, idx, 0, n, lanes, cdfs, lengths, offsets, prec, states,
                                         words, n)
    else:
        _encode_blocks_indexed_par(val, idx, block, lanes, cdfs, lengths, offsets, prec, states, words,
                                   first)


def decode_blocks_indexed(words, woffsets, states, out, idx, block, lanes, prec, cdfs, lengths,
                          offsets, guide, gshift, status):
    if status.shape[0] == 1:
        status[0] = _decode_block_indexed(words, woffsets[0], woffsets[1], states, out, idx, 0,
                                          out.shape[0], lanes, prec, cdfs, lengths, offsets, guide,
                                          gshift)
    else:
        _decode_blocks_indexed_par(words, woffsets, states, out, idx, block, lanes, prec, cdfs,
                                   lengths, offsets, guide, gshift, status)


def encode_blocks_ctx(sym, ctx, block, lanes, freq, cum, prec, states, words, first):
    if first.shape[0] == 1:
        n = sym.shape[0]
        first[0] = _encode_block_ctx(sym, ctx, 0, n, lanes, freq, cum, prec, states, words, n)
    else:
        _encode_blocks_ctx_par(sym, ctx, block, lanes, freq, cum, prec, states, words, first)


def decode_blocks_ctx(words, woffsets, states, out, ctx, block, lanes, prec, slot_sym, slot_pack,
                      status):
    if status.shape[0] == 1:
        status[0] = _decode_block_ctx(words, woffsets[0], woffsets[1], states, out, ctx, 0,
                                      out.shape[0], lanes, prec, slot_sym, slot_pack)
    else:
        _decode_blocks_ctx_par(words, woffsets, states, out, ctx, block, lanes, prec, slot_sym,
                               slot_pack, status)


# ------------------------------------------------------------------------------------------------
# small static blobs in one call: the header, table and streams parsed and decoded without the
# Python parse (~100 us a blob, which weights/lossless pays several times per tensor: row and
# column offsets, escape lists, small tensors' fields)
# ------------------------------------------------------------------------------------------------

SMALL_DECLINED = 1  # the blob is not one the fast path takes, or fails a check: parse it in Python


@nb.njit(**_JIT)
def decode_small_static(buf, max_symbols, version, kind_static, kind_max, ndtypes, max_lanes, max_prec,
                        max_block, max_alphabet):
    """A STATIC blob of a byte alphabet (<= 256 symbols) at precision <= 12, whole: returns (0,
    dtype code, offset, alphabet size, symbols) when every check of coder.parse and the decode
    pass, else (SMALL_DECLINED, ...) and the caller parses it the slow way, which names the fault.
    The same checks, in the same terms, as coder._parse_head, _parse_layout, parse and
    _parse_streams."""
    none = np.zeros(0, np.uint8)
    end = buf.shape[0]
    if end < 5 or buf[0] != 78 or buf[1] != 90:  # b"NZ"
        return SMALL_DECLINED, 0, 0, 0, none
    vk = np.int64(buf[2])
    if vk >> 4 != version or (vk & 15) > kind_max or (vk & 15) != kind_static:
        return SMALL_DECLINED, 0, 0, 0, none
    code = np.int64(buf[3])
    if code >= ndtypes:
        return SMALL_DECLINED, 0, 0, 0, none
    n, pos = _uvarint_at(buf, 4)
    if n < 0 or n > max_symbols or pos >= end:
        return SMALL_DECLINED, 0, 0, 0, none
    lp = np.int64(buf[pos])
    pos += 1
    lanes = np.int64(1) << (lp >> 5)
    prec = lp & 31
    if lanes > max_lanes or prec < 1 or prec > max_prec or prec > PACKED_MAX_PRECISION:
        return SMALL_DECLINED, 0, 0, 0, none
    block, pos = _uvarint_at(buf, pos)
    if block < lanes or block > max_block or block % lanes:
        return SMALL_DECLINED, 0, 0, 0, none
    nblocks = (n + block - 1) // block
    u, pos = _uvarint_at(buf, pos)  # the offset, zigzag
    if u < 0:
        return SMALL_DECLINED, 0, 0, 0, none
    offset = (u >> 1) if not u & 1 else -((u + 1) >> 1)
    nalpha, pos = _uvarint_at(buf, pos)
    if nalpha < 2 or nalpha > 256 or nalpha > max_alphabet or pos >= end:
        return SMALL_DECLINED, 0, 0, 0, none
    k = np.int64(buf[pos])
    pos += 1
    if k > max_prec:
        return SMALL_DECLINED, 0, 0, 0, none
    tlen, pos = _uvarint_at(buf, pos)
    if tlen < 0 or tlen > max_alphabet * 8 or pos + tlen > end:
        return SMALL_DECLINED, 0, 0, 0, none
    freqs = np.zeros(nalpha, np.int64)
    if read_table(buf[pos:pos + tlen], k, nalpha, np.int64(1) << prec, freqs) < 0:
        return SMALL_DECLINED, 0, 0, 0, none
    pos += tlen
    fmax = np.int64(0)
    for s in range(nalpha):
        fmax = max(fmax, freqs[s])
    if nblocks * lanes * 4 > end - pos:
        return SMALL_DECLINED, 0, 0, 0, none
    woff = np.zeros(nblocks + 1, np.int64)
    for b in range(nblocks):
        c, pos = _uvarint_at(buf, pos)
        if c < 0 or c > min(block, n - b * block):
            return SMALL_DECLINED, 0, 0, 0, none
        woff[b + 1] = woff[b] + c
    if pos + nblocks * lanes * 4 > end:
        return SMALL_DECLINED, 0, 0, 0, none
    states = np.empty(nblocks * lanes, np.uint32)
    for i in range(nblocks * lanes):
        p = pos + 4 * i
        v = (np.uint32(buf[p]) | (np.uint32(buf[p + 1]) << np.uint32(8)) | (np.uint32(buf[p + 2]) << np.uint32(16))
             | (np.uint32(buf[p + 3]) << np.uint32(24)))
        if v < RANS_L:
            return SMALL_DECLINED, 0, 0, 0, none
        states[i] = v
    pos += nblocks * lanes * 4
    total = woff[nblocks]
    if pos + total * 2 != end:  # (the words, then nothing: trailing bytes are refused)
        return SMALL_DECLINED, 0, 0, 0, none
    min_bits = prec - np.log2(np.float64(fmax))
    capacity_bits = 16.0 * (total + nblocks * lanes)
    if min_bits > 0 and n * min_bits > capacity_bits * 1.0001 + 64:
        return SMALL_DECLINED, 0, 0, 0, none
    words = np.zeros(max(total, 1), np.uint16)
    for i in range(total):
        words[i] = np.uint16(buf[pos + 2 * i]) | (np.uint16(buf[pos + 2 * i + 1]) << np.uint16(8))
    slot_sym = np.empty(np.int64(1) << prec, np.uint8)
    slot_pack = np.empty(np.int64(1) << prec, np.uint32)
    fill_slots(freqs, slot_sym, slot_pack)
    table = np.empty(np.int64(1) << prec, np.uint32)
    pack_tables(slot_sym, slot_pack, table)
    out = np.empty(n, np.uint8)
    cx = np.zeros(1, np.uint16)
    for b in range(nblocks):
        st = _decode_block_packed(words, woff[b], woff[b + 1], states[b * lanes:(b + 1) * lanes], out, cx, False,
                                  b * block, min(n, (b + 1) * block), lanes, prec, table)
        if st != 0:
            return SMALL_DECLINED, 0, 0, 0, none
    return 0, code, offset, nalpha, out
