"""The entropy layer: tables, the lane rANS coder, indexed tables, corruption and forged headers."""
import math
import os

import constriction
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nzip import entropy as E
from nzip.entropy import coder
from nzip.errors import CorruptDataError, InvalidInputError, UnsupportedFormatError


def _skewed(rng, alphabet, n, alpha=0.3):
    p = rng.dirichlet(np.full(alphabet, alpha))
    return rng.choice(alphabet, size=n, p=p)


@pytest.mark.parametrize("dtype", ["bool", "int8", "uint8", "int16", "uint16", "int32", "uint32",
                                   "int64", "uint64"])
def test_roundtrip_every_dtype(dtype):
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype) if dtype != "bool" else None
    if info is None:
        a = rng.random(5000) < 0.1
    else:
        lo = max(info.min, -1000) if info.min < 0 else info.max - 3000
        a = (rng.integers(0, 2000, 5000).astype(dtype) + np.array(lo).astype(dtype)).astype(dtype)
    out = E.decode(E.encode(a))
    assert out.dtype == a.dtype and np.array_equal(out, a)


@pytest.mark.parametrize("n", [0, 1, 2, 31, 32, 33, 1000, 70001])
def test_roundtrip_lengths(n):
    a = np.random.default_rng(n).integers(0, 5, n).astype(np.uint8)
    assert np.array_equal(E.decode(E.encode(a)), a)


def test_constant_and_extremes():
    for a in (np.full(10, -7, np.int64), np.array([np.iinfo(np.uint64).max] * 3, dtype=np.uint64),
              np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).min + 5], dtype=np.int64)):
        out = E.decode(E.encode(a))
        assert out.dtype == a.dtype and np.array_equal(out, a)


@given(alphabet=st.integers(1, 65536), n=st.integers(0, 20000), alpha=st.floats(0.05, 5.0),
       seed=st.integers(0, 2**32 - 1), lanes=st.sampled_from([None, 1, 4, 32]),
       block=st.sampled_from([None, 64, 4096]))
def test_property_roundtrip_and_size(alphabet, n, alpha, seed, lanes, block):
    rng = np.random.default_rng(seed)
    a = _skewed(rng, alphabet, n, alpha).astype(np.int32)
    lanes_ok = lanes or coder.default_lanes(n)
    blk = block if block and block % lanes_ok == 0 else None
    blob = E.encode(a, lanes=lanes, block=blk)
    out = E.decode(blob)
    assert np.array_equal(out, a)
    if n:
        # never much worse than the order-0 entropy: table + states + a small coding loss
        counts = np.bincount(a - a.min())
        bound = E.empirical_entropy_bits(counts) / 8
        nblocks = -(-n // (blk or coder.DEFAULT_BLOCK))
        table = 4 * np.count_nonzero(counts) + 16
        assert len(blob) <= bound * 1.02 + table + nblocks * lanes_ok * 4 + 64


def test_large_alphabet_and_million_symbols():
    rng = np.random.default_rng(7)
    a = rng.integers(0, 65536, 1_000_000).astype(np.uint16)
    blob = E.encode(a)
    assert np.array_equal(E.decode(blob), a)
    assert len(blob) < a.size * 2 * 1.01 + 200_000  # uniform over 65536: ~16 bits + table


def test_size_close_to_entropy_on_large_input():
    rng = np.random.default_rng(3)
    a = _skewed(rng, 256, 2_000_000).astype(np.uint8)
    blob = E.encode(a)
    h = E.empirical_entropy_bits(np.bincount(a, minlength=256)) / 8
    assert len(blob) / h - 1 < 0.002
    assert np.array_equal(E.decode(blob), a)


def test_matches_constriction_on_the_same_table():
    """Same integer model: both coders decode the same symbols and cost the same bits (±0.5%)."""
    rng = np.random.default_rng(11)
    a = _skewed(rng, 64, 200_000).astype(np.int32)
    counts = np.bincount(a, minlength=64)
    freqs = E.quantize_counts(counts, 14)
    blob = E.encode(a, freqs)
    assert np.array_equal(E.decode(blob), a)
    model = constriction.stream.model.Categorical(freqs / freqs.sum(), perfect=False)
    enc = constriction.stream.stack.AnsCoder()
    enc.encode_reverse(a, model)
    comp = enc.get_compressed()
    dec = constriction.stream.stack.AnsCoder(comp)
    assert np.array_equal(dec.decode(model, a.size), a)
    ours, theirs = len(blob), comp.nbytes
    assert abs(ours - theirs) / theirs < 0.005


def test_given_table_and_zero_frequency():
    freqs = np.array([1 << 11, 1 << 11, 0, 0], dtype=np.int64)
    a = np.array([0, 1, 1, 0, 1], dtype=np.uint8)
    assert np.array_equal(E.decode(E.encode(a, freqs)), a)
    with pytest.raises(InvalidInputError, match="frequency 0"):
        E.encode(np.array([0, 2], dtype=np.uint8), freqs)
    with pytest.raises(InvalidInputError, match="power of two"):
        E.encode(a, np.array([3, 4]))


def test_quantize_counts_properties():
    rng = np.random.default_rng(5)
    for _ in range(20):
        k = int(rng.integers(1, 3000))
        c = rng.integers(0, 1000, k) * (rng.random(k) < 0.7)
        if c.sum() == 0:
            continue
        used = np.count_nonzero(c)
        prec = max(1, math.ceil(math.log2(used)))
        for p in range(prec, 17):
            f = E.quantize_counts(c, p)
            assert f.sum() == 1 << p
            assert np.all((f > 0) == (c > 0))


def test_rejects_float_symbols():
    with pytest.raises(InvalidInputError):
        E.encode(np.zeros(4, np.float32))


# --- indexed --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gauss():
    return E.IndexedTables.gaussian()


def test_indexed_roundtrip_with_escapes(gauss):
    rng = np.random.default_rng(2)
    scales = np.exp(rng.uniform(np.log(0.1), np.log(100), 50_000))
    v = np.rint(rng.normal(size=scales.size) * scales).astype(np.int32)
    v[::997] = rng.integers(-(2**31), 2**31 - 1, v[::997].size)  # far outside every table
    idx = gauss.index_for_scales(scales)
    blob = E.encode_indexed(v, idx, gauss)
    assert np.array_equal(E.decode_indexed(blob, idx, gauss), v)


def test_indexed_size_near_model_cross_entropy(gauss):
    rng = np.random.default_rng(4)
    scales = np.exp(rng.uniform(np.log(0.2), np.log(30), 200_000))
    idx = gauss.index_for_scales(scales)
    grid = E.default_scale_grid()
    s = grid[idx]
    v = np.rint(rng.normal(size=s.size) * s).astype(np.int32)
    from scipy.stats import norm
    p = norm.cdf((v + 0.5) / s) - norm.cdf((v - 0.5) / s)
    ideal = -np.log2(p).sum() / 8
    blob = E.encode_indexed(v, idx, gauss)
    assert len(blob) / ideal - 1 < 0.005


def test_indexed_refuses_other_tables(gauss):
    v = np.zeros(100, np.int32)
    idx = np.zeros(100, np.int32)
    blob = E.encode_indexed(v, idx, gauss)
    with pytest.raises(InvalidInputError, match="other tables"):
        E.decode_indexed(blob, idx, E.IndexedTables.laplace())
    with pytest.raises(CorruptDataError, match="indexes"):
        E.decode_indexed(blob, idx[:50], gauss)
    with pytest.raises(InvalidInputError):
        E.encode_indexed(v, idx + 1000, gauss)


def test_tables_need_nonzero_frequencies():
    with pytest.raises(InvalidInputError):
        E.IndexedTables(np.array([[0, 0, 65536]]), np.array([2]), np.array([0]))


# --- corruption and forged headers ---------------------------------------------------------------

def _blob():
    rng = np.random.default_rng(9)
    return E.encode(_skewed(rng, 40, 3000).astype(np.uint8))


def test_every_truncation_is_an_error():
    blob = _blob()
    for cut in range(len(blob)):
        with pytest.raises(CorruptDataError):
            E.decode(blob[:cut])


def test_bit_flips_never_crash():
    blob = bytearray(_blob())
    ref = E.decode(bytes(blob))
    rng = np.random.default_rng(0)
    detected = 0
    for _ in range(300):
        b = bytearray(blob)
        pos = int(rng.integers(0, len(b)))
        b[pos] ^= 1 << int(rng.integers(0, 8))
        try:
            out = E.decode(bytes(b))
        except (CorruptDataError, UnsupportedFormatError):
            detected += 1
            continue
        assert out.shape == ref.shape or out.size != ref.size
    assert detected > 250  # the final-state check catches nearly every flip; crc32c the rest


def test_forged_size_is_refused_before_allocation():
    blob = bytearray(_blob())
    r = coder.Reader(bytes(blob))
    coder._parse_head(r)
    head_end = r.pos
    forged = bytes(blob[:4]) + bytes([0xFF] * 7 + [0x7F]) + bytes(blob[head_end:])
    with pytest.raises(CorruptDataError):
        E.decode(forged)
    const = E.encode(np.zeros(10, np.uint8))
    forged_const = const[:4] + bytes([0xFF] * 7 + [0x7F]) + const[5:]
    with pytest.raises(CorruptDataError, match="more than"):
        E.decode(forged_const)


def test_unknown_version():
    blob = bytearray(_blob())
    blob[2] = (9 << 4) | (blob[2] & 15)
    with pytest.raises(UnsupportedFormatError):
        E.decode(bytes(blob))


def test_context_blobs_round_trip_and_cap_their_precision():
    """encode_context / decode_context: one data-built table per context; the contexts may come as
    uint8 (used as they are) or any integer type; ``max_precision`` caps the table search."""
    rng = np.random.default_rng(3)
    ctx = rng.integers(0, 6, 200_000).astype(np.uint8)
    sym = np.clip(ctx.astype(np.int64) * 40 + rng.geometric(0.05, ctx.size), 0, 255).astype(np.uint8)
    blob = E.encode_context(sym, ctx, 6)
    assert np.array_equal(E.decode_context(blob, ctx), sym)
    assert np.array_equal(E.decode_context(blob, ctx.astype(np.int64)), sym)
    assert len(blob) < 0.9 * len(E.encode(sym))  # the contexts carry information
    capped = E.encode_context(sym, ctx, 6, max_precision=10)
    assert coder.parse_context(capped, ctx.size).prec <= 10 < coder.parse_context(blob, ctx.size).prec
    assert np.array_equal(E.decode_context(capped, ctx), sym)
    with pytest.raises(InvalidInputError):
        E.decode_context(blob, np.full(ctx.size, 6, np.uint8))
    with pytest.raises(InvalidInputError):
        E.decode_context(blob, -ctx.astype(np.int16))


# ------------------------------------------------------------------------------------------------
# the C lane decoder (AVX2) against the numba kernel it replaces on packed tables
# ------------------------------------------------------------------------------------------------

from nzip.entropy import lanes as K  # noqa: E402
from nzip.entropy import lanes_c as LC  # noqa: E402
from nzip.entropy.tables import quantize_counts  # noqa: E402


def _decode_all_ways(ls, cx):
    """Every decoder for the blob: numba (packed and unpacked tables where both apply) and C (its
    widest SIMD path here, AVX2 and scalar, the same two layouts). Statuses must agree block by
    block, and symbols in the blocks that decode."""
    runs = []
    if ls.packable:
        table = ls.packed()
        runs.append(lambda o, s: K.decode_blocks_packed(ls.words, ls.woff, ls.states, o, cx, ls.block, ls.lanes,
                                                        ls.prec, table, s))
        for fs in (0, 1, 2):  # (the widest SIMD path here, scalar, AVX2)
            runs.append(lambda o, s, fs=fs: LC.decode_blocks_packed(ls.words, ls.woff, ls.states, o, cx, ls.block,
                                                                    ls.lanes, ls.prec, table, s, force_scalar=fs))
    if cx is None:
        runs.append(lambda o, s: K.decode_blocks(ls.words, ls.woff, ls.states, o, ls.block, ls.lanes, ls.prec,
                                                 ls.slot_sym, ls.slot_pack, s))
    else:
        runs.append(lambda o, s: K.decode_blocks_ctx(ls.words, ls.woff, ls.states, o, cx, ls.block, ls.lanes,
                                                     ls.prec, ls.slot_sym, ls.slot_pack, s))
    for fs in (0, 1, 2):
        runs.append(lambda o, s, fs=fs: LC.decode_blocks(ls.words, ls.woff, ls.states, o, cx, ls.block, ls.lanes,
                                                         ls.prec, ls.slot_sym, ls.slot_pack, s, force_scalar=fs))
    outs, stats = [], []
    for f in runs:
        o, s = np.zeros(ls.n, ls.slot_sym.dtype), np.empty(ls.nblocks, np.int64)
        f(o, s)
        outs.append(o)
        stats.append(s)
    for s in stats[1:]:
        assert np.array_equal(s, stats[0])
    for b in np.flatnonzero(stats[0] >= 0):  # a block that failed stops part-way: compare good ones
        part = slice(b * ls.block, (b + 1) * ls.block)
        for o in outs[1:]:
            assert np.array_equal(o[part], outs[0][part])
    return stats[0]


@pytest.mark.skipif(not LC.available, reason="the C extension was not built")
@pytest.mark.parametrize("n,nctx,lanes,block,prec,alphabet", [
    (5, 3, 8, 1 << 20, 12, 256), (1000, 0, 8, 256, 12, 256), (40_001, 300, 32, 4096, 12, 256),
    (100_000, 16, 16, 8192, 12, 256), (70_000, 0, 32, 1 << 20, 12, 256), (70_001, 0, 32, 8192, 15, 256),
    (50_000, 0, 16, 4096, 16, 3000), (30_000, 5, 32, 4096, 14, 256), (20_000, 4, 8, 2048, 15, 1000),
    (60_003, 0, 32, 4096, 14, 3000)])
def test_c_decoder_matches_numba_also_on_corrupt_streams(n, nctx, lanes, block, prec, alphabet):
    rng = np.random.default_rng(n + nctx)
    sym = np.minimum(rng.geometric(0.06 if alphabet == 256 else 0.002, n), alphabet - 1)
    sym = sym.astype(np.uint8 if alphabet <= 256 else np.uint16)
    if nctx:
        cx = rng.integers(0, nctx, n).astype(np.uint8 if nctx <= 256 else np.uint16)
        ls = coder.parse_context(coder.encode_context(sym, cx, nctx, lanes=lanes, block=block, max_precision=prec), n)
    else:
        cx = None
        ls = coder.parse(coder.encode(sym, quantize_counts(np.bincount(sym, minlength=alphabet), prec),
                                      lanes=lanes, block=block))
    assert ls.packable == (ls.prec <= 12 and alphabet <= 256)
    status = _decode_all_ways(ls, cx)
    assert (status == 0).all()
    got = ls.decode(cx) if nctx else ls.decode()
    assert np.array_equal(got.astype(sym.dtype), sym)
    failures = 0
    for trial in range(24):  # flipped words and forged states: the same status, block by block
        w, s = ls.words.copy(), ls.states.copy()
        if trial % 3 == 0:
            s[rng.integers(len(s))] = rng.integers(1 << 16, 1 << 32)
        else:
            i = rng.integers(len(w))
            w[i] ^= np.uint16(rng.integers(1, 1 << 16))
        failures += int((_decode_all_ways(coder.LaneStreams(**{**ls.__dict__, "words": w, "states": s}), cx)
                         < 0).any())
    assert failures > 0
    if nctx:  # a context past the tables is refused by both
        bad = cx.copy()
        bad[-1] = ls.nctx if nctx < 256 else min(ls.nctx, 65535)
        if bad[-1] >= ls.nctx:
            assert (_decode_all_ways(ls, bad) == K.ERR_SLOT).any()


def _corrupted(ls, rng, trials: int):
    """Copies of parsed streams with one flaw each: a bad final state (every third), else a
    flipped word."""
    for trial in range(trials):
        w, st = ls.words.copy(), ls.states.copy()
        if trial % 3 == 0:
            st[rng.integers(len(st))] = rng.integers(1 << 16, 1 << 32)
        else:
            w[rng.integers(len(w))] ^= np.uint16(rng.integers(1, 1 << 16))
        yield coder.LaneStreams(**{**ls.__dict__, "words": w, "states": st})


def _status_and_symbols(streams, cx, stats):
    """A fused decode's check: every status in ``stats`` (SIMD, scalar) equals the plain decoders'
    block by block; returns that status and the symbols of numba's packed decode, the reference."""
    plain = _decode_all_ways(streams, cx)
    assert all(np.array_equal(st, plain) for st in stats)
    sym, st = np.zeros(streams.n, np.uint8), np.empty(streams.nblocks, np.int64)
    K.decode_blocks_packed(streams.words, streams.woff, streams.states, sym, cx, streams.block, streams.lanes,
                           streams.prec, streams.packed(), st)
    return plain, sym


@pytest.mark.skipif(not LC.simd, reason="the C decoder does not run here")
@pytest.mark.parametrize("n,lanes,block,width", [(40_000, 32, 4096, 2), (70_001, 16, 8192, 4),
                                                 (33_333, 8, 1 << 20, 2), (50_000, 32, 1 << 20, 4)])
def test_fused_float_decode_matches_decode_then_join(n, lanes, block, width):
    """``decode_join`` (the sign+mantissa blob decoded with its exponent contexts and written
    joined) gives the plain decode's symbols joined with the exponents, SIMD and scalar alike, and
    the same status block by block on corrupt streams."""
    rng = np.random.default_rng(n)
    e = np.clip(np.rint(rng.normal(120, 2.5, n)), 0, 255).astype(np.uint8)
    e[::97] = 0  # values outside the run of top exponents: context 0
    sm = rng.integers(0, 256, n).astype(np.uint8)
    emin, ecount = 114, 12
    cx = np.where((e >= emin) & (e < emin + ecount), e.astype(np.int64) - emin + 1, 0).astype(np.uint8)
    ls = coder.parse_context(coder.encode_context(sm, cx, ecount + 1, lanes=lanes, block=block, max_precision=12), n)
    eshift, mshift = (10, 3) if width == 2 else (7, 0)
    dt = np.uint16 if width == 2 else np.uint32

    def joined(s):
        s = s.astype(np.uint32)
        v = ((s & 0x80) << 8) | (e.astype(np.uint32) << eshift) | ((s & 0x7F) << mshift)
        return (v << 16 if width == 4 else v).astype(dt)

    def both(streams):
        outs, stats = [], []
        for fs in (False, True):
            o, st = np.zeros(n, dt), np.empty(streams.nblocks, np.int64)
            LC.decode_join(streams.words, streams.woff, streams.states, o, e, emin, ecount, eshift, mshift,
                           streams.block, streams.lanes, streams.prec, streams.packed(), st, force_scalar=fs)
            outs.append(o)
            stats.append(st)
        plain, sym = _status_and_symbols(streams, cx, stats)
        want = joined(sym)  # (a rare flipped word decodes cleanly to other symbols: compare decoders)
        for b in np.flatnonzero(plain >= 0):
            part = slice(b * streams.block, (b + 1) * streams.block)
            assert np.array_equal(outs[0][part], want[part]) and np.array_equal(outs[1][part], want[part])
        return plain

    assert (both(ls) == 0).all()
    out = np.empty(n, dt)
    ls.decode_join(e, emin, ecount, out, eshift, mshift)
    assert np.array_equal(out, joined(sm))
    lo = rng.integers(0, 8 if width == 2 else 256, (2, n)).astype(np.uint8)  # the low bits ORed in
    ls.decode_join(e, emin, ecount, out, eshift, mshift, lo[0], None if width == 2 else lo[1])
    low = lo[0].astype(np.uint32) if width == 2 else (lo[0].astype(np.uint32) << 8) | lo[1]
    assert np.array_equal(out, joined(sm) | low.astype(dt))
    scalar, st = np.zeros(n, dt), np.empty(ls.nblocks, np.int64)
    LC.decode_join(ls.words, ls.woff, ls.states, scalar, e, emin, ecount, eshift, mshift, ls.block, ls.lanes,
                   ls.prec, ls.packed(), st, lo[0], None if width == 2 else lo[1], force_scalar=True)
    assert (st == 0).all() and np.array_equal(scalar, out)
    assert ls.joinable(e, ecount, out) and not ls.joinable(e, ls.nctx, out)  # contexts past the tables
    assert sum(int((both(c) < 0).any()) for c in _corrupted(ls, rng, 12)) > 0


@pytest.mark.skipif(not LC.simd, reason="the C decoder does not run here")
@pytest.mark.parametrize("n,lanes,block,ebits", [(40_001, 32, 4096, 8), (70_002, 16, 8192, 5),
                                                 (33_333, 8, 1 << 20, 8), (65_536, 32, 1 << 20, 8)])
def test_joint_float_decode_matches_decode_then_join(n, lanes, block, ebits):
    """``decode_joint`` (weights/lossless's joint symbols joined with their raw 6-bit fields in the
    decode loop) gives the plain decode's symbols joined by the numba kernels, SIMD and scalar
    alike, with the escapes (symbols below 4) counted per block and left with exponent and top
    bits 0; the same status block by block on corrupt streams. Sizes not a multiple of 4 or 8
    put groups of eight across the planes' seam."""
    from nzip.codecs import weights_lossless as W

    rng = np.random.default_rng(n)
    sym = rng.integers(4, 4 * 20, n).astype(np.uint8)
    sym[::101] = 0  # escapes
    cx = rng.integers(0, 16, n).astype(np.uint8)
    sm = rng.integers(0, 256, n).astype(np.uint8)
    planes = W._pack6(sm)
    base, eshift, mshift = (100, 7, 0) if ebits == 8 else (0, 10, 3)
    ls = coder.parse_context(coder.encode_context(sym, cx, 16, lanes=lanes, block=block, max_precision=12), n)
    want = np.empty(n, np.uint16)
    spans = W._joint_join(sym, planes, base, eshift, mshift, want)
    assert sum(c for _, _, c in spans) == int((sym < 4).sum())
    r = ((sm >> 7).astype(np.uint32) << 5) | (sm & 31)  # the twin, spelled out
    keep = sym >= 4
    ev = np.where(keep, (sym >> 2).astype(np.uint32) + base - 1, 0)
    m7 = np.where(keep, (sym & 3).astype(np.uint32) << 5, 0) | (r & 31)
    assert np.array_equal(want, (((r >> 5) << 15) | (ev << eshift) | (m7 << mshift)).astype(np.uint16))

    def both(streams):
        outs, stats, losts = [], [], []
        for fs in (False, True):
            o, st, lost = np.zeros(n, np.uint16), np.empty(streams.nblocks, np.int64), np.zeros(streams.nblocks, np.int64)
            LC.decode_joint(streams.words, streams.woff, streams.states, o, cx, base, eshift, mshift, planes,
                            streams.block, streams.lanes, streams.prec, streams.packed(), st, lost, force_scalar=fs)
            outs.append(o)
            stats.append(st)
            losts.append(lost)
        plain, got = _status_and_symbols(streams, cx, stats)
        ref = np.empty(n, np.uint16)
        W._joint_join(got, planes, base, eshift, mshift, ref)
        for b in np.flatnonzero(plain >= 0):
            part = slice(b * streams.block, (b + 1) * streams.block)
            assert np.array_equal(outs[0][part], ref[part]) and np.array_equal(outs[1][part], ref[part])
            assert losts[0][b] == losts[1][b] == int((got[part] < 4).sum())
        return plain

    assert (both(ls) == 0).all()
    out = np.empty(n, np.uint16)
    spans = ls.decode_joint(cx, base, eshift, mshift, planes, out)
    assert np.array_equal(out, want) and sum(c for _, _, c in spans) == int((sym < 4).sum())
    assert ls.jointable(cx, out) and not ls.jointable(cx.astype(np.uint16), out)
    assert sum(int((both(c) < 0).any()) for c in _corrupted(ls, rng, 9)) > 0

@pytest.mark.skipif(not LC.simd, reason="the C decoder does not run here")
@pytest.mark.parametrize("rows,cols,lanes,block", [(301, 133, 32, 4096), (97, 701, 16, 8192), (64, 1536, 32, 1 << 20),
                                                   (4100, 9, 8, 2048), (2101, 16, 32, 4096), (2000, 17, 32, 2048)])
def test_joint_decode_computes_scale_contexts(rows, cols, lanes, block):
    """The joint decode with the matrix's row and column offsets instead of a context array gives
    the same values, escape counts and status on every path (the widest here, AVX-512 where the
    CPU has it and the blob has 32 lanes and >= 16 columns; AVX2; scalar), good or corrupt: rows
    whose length is not a multiple of 8 or 16, so vectors cross row ends (17 columns: nearly
    every one), blocks that start mid-row; and it refuses contexts beyond the tables."""
    from nzip.codecs import weights_lossless as W

    n = rows * cols
    rng = np.random.default_rng(n)
    a = rng.integers(-14, 14, rows).astype(np.int16)
    b = rng.integers(-14, 14, cols).astype(np.int16)
    cx = W._scale_contexts(a, b)
    assert cx.min() == 0 and cx.max() == 15  # both clips are exercised
    sym = rng.integers(4, 80, n).astype(np.uint8)
    sym[::89] = 1
    planes = W._pack6(rng.integers(0, 256, n).astype(np.uint8))
    blob = coder.encode_context(sym, cx, 16, lanes=lanes, block=block, max_precision=12)
    ls = coder.parse_context(blob, n)
    scale = (a, b, 8, 15)
    assert ls.jointable(scale, np.empty(n, np.uint16))
    want = np.empty(n, np.uint16)
    assert ls.decode_joint(cx, 100, 7, 0, planes, want)

    def paths(streams):  # (out, status, lost) of the widest, the scalar and the AVX2 path
        got = []
        for fs in (0, 1, 2):
            o, st, lost = np.zeros(n, np.uint16), np.empty(streams.nblocks, np.int64), np.zeros(streams.nblocks, np.int64)
            LC.decode_joint(streams.words, streams.woff, streams.states, o, scale, 100, 7, 0, planes, streams.block,
                            streams.lanes, streams.prec, streams.packed(), st, lost, force_scalar=fs)
            got.append((o, st, lost))
        return got

    for o, stat, lost in paths(ls):
        assert (stat == 0).all() and np.array_equal(o, want) and lost.sum() == int((sym < 4).sum())
    lows = rng.integers(0, 256, (2, n)).astype(np.uint8)  # fp32: the low 16 bits joined in, uint32 out
    want32 = want.astype(np.uint32) << 16 | lows[0].astype(np.uint32) << 8 | lows[1]
    assert ls.jointable(scale, want32, lows) and not ls.jointable(scale, want32)
    for fs in (0, 1, 2):
        o, st, lost = np.zeros(n, np.uint32), np.empty(ls.nblocks, np.int64), np.zeros(ls.nblocks, np.int64)
        LC.decode_joint(ls.words, ls.woff, ls.states, o, scale, 100, 7, 0, planes, ls.block, ls.lanes, ls.prec,
                        ls.packed(), st, lost, force_scalar=fs, lows=(lows[0], lows[1]))
        assert (st == 0).all() and np.array_equal(o, want32) and lost.sum() == int((sym < 4).sum())
    caught = 0
    for bad in _corrupted(ls, rng, 6):
        (o0, s0, l0), *rest = paths(bad)
        caught += int((s0 < 0).any())  # (a flipped word can go unseen: rANS has no checksum)
        for o, stat, lost in rest:
            assert np.array_equal(stat, s0)
            for k in np.flatnonzero(s0 == 0):  # (a corrupt block's partial output is not compared)
                part = slice(k * ls.block, (k + 1) * ls.block)
                assert np.array_equal(o[part], o0[part]) and lost[k] == l0[k]
    assert caught > 0
    # tables for 12 contexts, contexts up to 15: every block that meets one is refused (as a
    # context array would be), on every path
    few = coder.parse_context(coder.encode_context(sym, np.minimum(cx, 11), 12, lanes=lanes, block=block,
                                                   max_precision=12), n)
    for fs in (0, 1, 2):
        st, lost = np.empty(few.nblocks, np.int64), np.zeros(few.nblocks, np.int64)
        LC.decode_joint(few.words, few.woff, few.states, np.zeros(n, np.uint16), scale, 100, 7, 0, planes,
                        few.block, few.lanes, few.prec, few.packed(), st, lost, force_scalar=fs)
        hit = [bool((cx[i * few.block:(i + 1) * few.block] > 11).any()) for i in range(few.nblocks)]
        assert [s == K.ERR_SLOT for s in st] == hit
    with pytest.raises(ValueError, match="columns"):
        LC.decode_joint(ls.words, ls.woff, ls.states, np.zeros(n, np.uint16), (a, b[:-1], 8, 15), 100, 7, 0,
                        planes, ls.block, ls.lanes, ls.prec, ls.packed(), np.empty(ls.nblocks, np.int64),
                        np.zeros(ls.nblocks, np.int64))


def test_c_decoder_is_built_where_a_compiler_is():
    """The extensions are optional, so a broken build would only show as skipped tests: where the
    machine has a C compiler (CI does), they must have been built and loaded (the lane decoder and
    the top-k scan)."""
    import platform
    import shutil

    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler on this machine")
    assert LC.available, "nzip/entropy/_lanes_c.c was not built (see pip's build output)"
    if platform.machine() in ("x86_64", "AMD64") and os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            has_avx2 = " avx2" in f.read()
        assert LC.simd == has_avx2
        import importlib

        search = importlib.import_module("nzip.search")
        assert search.c_scan == has_avx2, "nzip/_scan_c.c was not built (see pip's build output)"


@pytest.mark.skipif(not LC.simd or not hasattr(os, "fork"), reason="the C decoder does not run here")
def test_c_decoder_threads_survive_fork():
    """A DataLoader worker forked after the parent decoded multi-block blobs on the C decoder's
    thread pool inherits the pool without its threads: the child must make its own, not hang."""
    import time

    a = np.random.default_rng(1).integers(0, 200, 3_000_000).astype(np.uint8)
    blob = E.encode(a)
    from nzip import _native

    assert np.array_equal(E.decode(blob), a) and _native._pool is not None  # the parent's pool is up
    pid = os.fork()
    if pid == 0:  # the child: exit code 0 iff it decodes right
        try:
            os._exit(0 if np.array_equal(E.decode(blob), a) else 1)
        finally:
            os._exit(2)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung decoding on the inherited thread pool")


def _one_call(blob: bytes, max_symbols: int = coder.DEFAULT_MAX_SYMBOLS, impl=K):
    """coder.decode's fast path, called directly: (status, dtype code, offset, alphabet, symbols);
    ``impl`` the numba function's module (K) or its C twin's (LC)."""
    return impl.decode_small_static(np.frombuffer(blob, np.uint8), max_symbols, coder.VERSION, coder.STATIC,
                                    coder.CONTEXT, len(coder._DTYPES), coder.MAX_LANES, coder.MAX_PRECISION,
                                    coder.MAX_BLOCK, coder.MAX_ALPHABET)


def _same_small(blob: bytes, max_symbols: int = coder.DEFAULT_MAX_SYMBOLS):
    """The numba fast path's result, checked equal to its C twin's where the extension is built."""
    want = _one_call(blob, max_symbols)
    if LC.available:
        got = _one_call(blob, max_symbols, LC)
        assert got[0] == want[0] and (got[0] != 0 or (got[1:4] == tuple(int(v) for v in want[1:4])
                                                       and np.array_equal(got[4], want[4]))), blob.hex()
    return want


def test_small_static_blobs_decode_in_one_call_exactly_as_parsed():
    """Small static blobs decode in one numba call (coder.decode's fast path) with the same values
    as the parse-then-decode path, over dtypes, offsets, lanes, blocks and empty streams; on
    truncated, extended and byte-flipped blobs the fast path never succeeds where the parse
    refuses (it declines, and the parse names the fault)."""
    rng = np.random.default_rng(11)
    blobs = []
    for dt, lo, hi in (("int16", -40, 30), ("uint8", 0, 200), ("int8", -128, -100), ("bool", 0, 2),
                       ("int64", 10**12, 10**12 + 50), ("uint16", 60000, 60200), ("int32", -3, 3)):
        for n, lanes, block in ((384, None, None), (1536, 8, 512), (3000, 32, 1024), (5, 1, 4), (2000, 4, 2000)):
            v = np.clip(np.rint(rng.normal((lo + hi) / 2, (hi - lo) / 6, n)), lo, hi - 1).astype(dt)
            blob = E.encode(v, lanes=lanes, block=block)
            assert len(blob) <= coder.SMALL_BLOB
            st_, *_ = _same_small(blob)
            if coder.parse(blob).kind == coder.STATIC:
                assert st_ == 0, (dt, n, lanes, block)  # the fast path takes every valid static blob
            got = E.decode(blob)
            assert got.dtype == v.dtype and np.array_equal(got, v)
            blobs.append(blob)
    assert _same_small(blobs[0], 383)[0] != 0  # max_symbols is kept
    with pytest.raises(CorruptDataError, match="more than the 383 expected"):
        E.decode(blobs[0], max_symbols=383)

    def slow(b):
        try:
            return coder.parse(b).decode()
        except CorruptDataError:
            return None
        except UnsupportedFormatError:
            return None

    for blob in blobs:
        for trial in range(60):
            b = bytearray(blob)
            if trial < 8:
                b = b[: rng.integers(0, len(b))]
            elif trial < 12:
                b += bytes(rng.integers(0, 256, trial - 7).astype(np.uint8))
            else:
                i = int(rng.integers(0, len(b)))
                b[i] ^= int(rng.integers(1, 256))
            b = bytes(b)
            want = slow(b)
            st_, code, offset, nalpha, out = _same_small(b)
            lo, hi = coder._DTYPE_RANGE[code]
            if st_ == 0 and lo <= offset and offset + nalpha - 1 <= hi:  # (the range is checked after)
                assert want is not None and np.array_equal(coder._unshift(out, offset, want.dtype), want)
            if want is None:
                with pytest.raises((CorruptDataError, UnsupportedFormatError)):
                    E.decode(b)
            else:
                assert np.array_equal(E.decode(b), want)


# the C twins of the parse functions (a restore the C decoder runs loads no numba): the same
# results as the numba functions on good and damaged tables


@pytest.mark.skipif(not LC.available, reason="the C extension was not built")
def test_c_table_parsers_match_numba_on_good_and_damaged_tables():
    rng = np.random.default_rng(5)
    for trial in range(300):
        nalpha = int(rng.integers(2, 300))
        prec = int(rng.integers(1, 13))
        freqs = np.zeros(nalpha, np.int64)
        used = rng.choice(nalpha, size=min(nalpha, int(rng.integers(1, 1 << prec) if prec > 1 else 2)),
                          replace=False)
        cuts = np.sort(rng.choice(np.arange(1, 1 << prec), size=len(used) - 1, replace=False)) \
            if len(used) > 1 else np.zeros(0, np.int64)
        freqs[np.sort(used)] = np.diff(np.concatenate([[0], cuts, [1 << prec]]))
        k = int(rng.integers(0, 6))
        buf = np.zeros(nalpha * 8 + 8, np.uint8)
        nbytes = (K.write_table(freqs, k, buf) + 7) >> 3
        code = buf[:nbytes].copy()
        if trial % 3:  # damaged: a flipped byte, or cut short
            if trial % 3 == 1:
                code[int(rng.integers(0, nbytes))] ^= np.uint8(rng.integers(1, 256))
            else:
                code = code[:int(rng.integers(0, nbytes))]
        got, want = np.zeros(nalpha, np.int64), np.zeros(nalpha, np.int64)
        rc, rn = LC.read_table(code, k, nalpha, 1 << prec, got), K.read_table(code, k, nalpha, 1 << prec, want)
        assert rc == rn and np.array_equal(got, want), (trial, rc, rn)
        if trial % 3 == 0:
            assert np.array_equal(got, freqs)
            for sym_dtype in ((np.uint8, np.uint16, np.uint32) if nalpha <= 256 else (np.uint16, np.uint32)):
                sc, pc = np.empty(1 << prec, sym_dtype), np.empty(1 << prec, np.uint32)
                sn, pn = np.empty(1 << prec, sym_dtype), np.empty(1 << prec, np.uint32)
                assert LC.fill_slots(freqs, sc, pc) == K.fill_slots(freqs, sn, pn) == 1 << prec
                assert np.array_equal(sc, sn) and np.array_equal(pc, pn)
            if nalpha <= 256:
                tc, tn = np.empty(1 << prec, np.uint32), np.empty(1 << prec, np.uint32)
                LC.pack_tables(sn.astype(np.uint8), pn, tc)
                K.pack_tables(sn.astype(np.uint8), pn, tn)
                assert np.array_equal(tc, tn)


@pytest.mark.skipif(not LC.available, reason="the C extension was not built")
def test_c_context_table_parse_matches_numba_on_good_and_damaged_blobs():
    """parse_ctx_packed's twin: statuses, positions, failing context, largest frequency, the packed
    table and the used flags, on context blobs cut short and byte-flipped."""
    rng = np.random.default_rng(6)
    for nctx, n in ((3, 2000), (17, 5000), (40, 800)):
        ctx = rng.integers(0, nctx, n).astype(np.uint8)
        ctx[ctx == 1] = 2  # (an unused context)
        sym = np.clip(rng.normal(100 + ctx * 3, 4 + ctx), 0, 255).astype(np.uint8)
        blob = E.encode_context(sym, ctx, nctx)
        p = coder.parse_context(blob, n)
        r = coder.Reader(blob, "t")
        coder._parse_head(r)
        coder._parse_layout(r, n)
        nalpha, nctx_ = r.uvarint(1 << 16), r.uvarint(coder.MAX_CONTEXTS)
        start = r.pos
        for trial in range(80):
            b = bytearray(blob)
            if trial >= 2:
                i = int(rng.integers(start, min(len(b), start + 400)))
                b[i] ^= int(rng.integers(1, 256))
            if trial == 1:
                b = b[:start + int(rng.integers(0, 300))]
            buf = np.frombuffer(bytes(b), np.uint8)
            outs = []
            for impl in (K, LC):
                table, used = np.zeros(nctx_ << p.prec, np.uint32), np.zeros(nctx_, np.uint8)
                ret = impl.parse_ctx_packed(buf, start, nctx_, nalpha, p.prec, coder.MAX_PRECISION, table, used,
                                            np.zeros(nalpha, np.int64))
                outs.append((tuple(int(v) for v in ret), table, used))
            assert outs[0][0] == outs[1][0], trial
            if outs[0][0][0] == 0:
                assert np.array_equal(outs[0][1], outs[1][1]) and np.array_equal(outs[0][2], outs[1][2])


def test_numba_is_imported_on_first_kernel_call_and_swapped_in_everywhere():
    """nzip._jit: `import nzip` does not import numba; the first kernel call does, and every nzip
    module then holds the real dispatchers and numba itself (so kernels calling kernels, and
    prange, compile as before); without the C extension a round trip runs on numba alone."""
    import subprocess
    import sys

    code = """
import sys, numpy as np, nzip
assert 'numba' not in sys.modules
from nzip.entropy import lanes as K, coder
from nzip.codecs import weights_lossless as W
from nzip import _jit
assert isinstance(K._renorm, _jit.LazyDispatcher) and K.nb is _jit.nb
v = (np.arange(100_000) % 13).astype(np.int16)
assert np.array_equal(coder.decode(coder.encode(v)), v)
import numba
from numba.core.registry import CPUDispatcher
assert isinstance(K._renorm, CPUDispatcher) and isinstance(W._join16_nb, CPUDispatcher)
assert K.nb is numba and W.nb is numba and _jit.nb is not numba
late = _jit.njit(cache=False)(lambda x: x + 1)
assert isinstance(late, CPUDispatcher) and late(1) == 2
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "NZIP_NO_C": "1"})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_varint_runs_match_one_at_a_time():
    """Block word counts are read and written as whole runs (numpy); the bytes, values, positions
    and errors must be those of put_uvarint / Reader.uvarint called once per value."""
    from nzip.entropy._varint import Reader, put_uvarint, put_uvarints
    from nzip.errors import CorruptDataError

    rng = np.random.default_rng(7)
    for _ in range(50):
        v = rng.integers(0, 2 ** int(rng.integers(1, 62)), int(rng.integers(0, 300)))
        one = bytearray()
        for x in v:
            put_uvarint(one, int(x))
        run = bytearray()
        put_uvarints(run, v)
        assert run == one
        r = Reader(bytes(run) + b"\x07")
        assert np.array_equal(r.uvarints(len(v)), v) and r.pos == len(run)

    def outcome(read):
        try:
            return read()
        except CorruptDataError as e:
            return str(e)

    cases = [(b"\x81\x01\x05", 3, 1000), (b"\xff\xff\x03\x01", 2, 100), (b"\x80" * 12, 1, 1 << 62),
             (b"\x80\x80\x00\x07", 2, 10), (b"\x05\x06", 2, 5)]
    for data, count, limit in cases:
        r = Reader(data, "blob")
        one = outcome(lambda r=r, c=count, lim=limit: [r.uvarint(lim) for _ in range(c)])
        run = outcome(lambda d=data, c=count, lim=limit: Reader(d, "blob").uvarints(c, lim).tolist())
        assert run == one, (data, run, one)


def test_given_tables_and_indexed_values_are_checked_before_coding():
    """What encode accepts, decode accepts: tables longer than the dtype holds, frequencies that
    overflow int64, values outside int32 and supports holding the escape marker are refused."""
    with pytest.raises(InvalidInputError, match="int8 holds values up to 127"):
        E.encode(np.array([0, 1, 2], np.int8), np.ones(256, np.int64))
    with pytest.raises(InvalidInputError, match="bool holds"):
        E.encode(np.array([True, False]), np.array([1, 1, 1, 1]))
    with pytest.raises(InvalidInputError, match="one frequency alone"):
        E.encode(np.array([0, 1] * 50), np.array([2**63 + 2**15] * 2, np.uint64))
    # trailing zeros are symbols that never occur: trimmed, and the blob decodes
    f = np.r_[np.full(4, 1 << 14), np.zeros(252, np.int64)]
    assert np.array_equal(E.decode(E.encode(np.array([0, 1, 3], np.int8), f)), [0, 1, 3])
    T = E.IndexedTables.gaussian()
    with pytest.raises(InvalidInputError, match="int32"):
        E.encode_indexed(np.array([2**40, 5], np.int64), np.array([5, 5]), T)
    with pytest.raises(InvalidInputError, match="indexes"):
        E.encode_indexed(np.array([1]), np.array([2**32 + 1]), T)
    big = np.array([-2**31 + 1, 2**31 - 1, 0], np.int64)
    assert np.array_equal(E.decode_indexed(E.encode_indexed(big, np.array([5, 5, 0]), T), np.array([5, 5, 0]), T), big)
    for offsets in ([-2**31], [2**40]):
        with pytest.raises(InvalidInputError, match="support"):
            E.IndexedTables.from_pmfs([np.array([.5, .5])], np.array(offsets))
    with pytest.raises(InvalidInputError, match="num_contexts"):
        E.encode_context(np.array([0, 1, 1]), np.array([0, 1, 0]), 2.0)
    bad = [lambda: E.IndexedTables.gaussian(np.array([])), lambda: E.IndexedTables.gaussian(np.array([np.nan])),
           lambda: E.IndexedTables.gaussian(None, 0.0), lambda: E.IndexedTables.laplace(None, 1.5),
           lambda: E.IndexedTables.from_pmfs([np.array([[.5, .5]])], np.array([0])),
           lambda: E.IndexedTables.from_pmfs([], np.array([], np.int64)),
           lambda: E.IndexedTables.gaussian(np.array([1e8]))]  # (asked for 9 GiB)
    for make in bad:
        with pytest.raises(InvalidInputError):
            make()
