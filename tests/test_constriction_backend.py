"""nzip.entropy.constriction_backend: symbol-by-symbol models on constriction's coders."""
import numpy as np
import pytest

from nzip import entropy as E
from nzip.entropy import constriction_backend as CB
from nzip.errors import CorruptDataError, InvalidInputError


def _markov(rng, n, trans):
    """A first-order Markov chain: the model of each symbol depends on the one before it."""
    x = np.empty(n, dtype=np.int64)
    x[0] = 0
    for i in range(1, n):
        x[i] = rng.choice(trans.shape[1], p=trans[x[i - 1]])
    return x


def test_range_coder_with_a_context_model():
    rng = np.random.default_rng(0)
    trans = rng.dirichlet(np.full(6, 0.4), size=6)
    freqs = np.stack([E.quantize_counts(np.maximum(np.rint(t * 1e6), 1).astype(np.int64), 12)
                      for t in trans])
    x = _markov(rng, 3000, trans)
    enc = CB.RangeEncoder()
    enc.encode(x[:1], freqs[0])
    enc.encode(x[1:], freqs[x[:-1]])  # batch: the encoder knows every context
    data = enc.finish()
    dec = CB.RangeDecoder(data)
    out = [int(dec.decode(freqs[0], 1)[0])]
    for _ in range(len(x) - 1):  # the decoder learns each context from what it decoded
        out.append(int(dec.decode(freqs[out[-1]], 1)[0]))
    assert np.array_equal(out, x)
    ideal = -sum(np.log2(freqs[a, b] / 4096) for a, b in zip(x[:-1], x[1:])) - np.log2(freqs[0, x[0]] / 4096)
    assert len(data) * 8 <= ideal * 1.01 + 64
    # order-0 coding of the same data costs clearly more: the context model is doing work
    order0 = E.empirical_entropy_bits(np.bincount(x, minlength=6))
    assert len(data) * 8 < 0.97 * order0


def test_ans_stack_reads_calls_in_reverse():
    rng = np.random.default_rng(1)
    f = E.quantize_counts(np.array([5, 1, 1, 9]), 8)
    a, b = rng.integers(0, 4, 500), rng.integers(0, 4, 70)
    enc = CB.AnsEncoder()
    enc.encode(a, f)
    enc.encode(b, f)
    dec = CB.AnsDecoder(enc.finish())
    assert np.array_equal(dec.decode(f, len(b)), b)
    assert np.array_equal(dec.decode(f, len(a)), a)


@pytest.mark.parametrize("coder", ["range", "ans"])
def test_indexed_tables(coder):
    tables = E.IndexedTables.gaussian()
    rng = np.random.default_rng(2)
    idx = rng.integers(0, 40, 4000)
    s = E.default_scale_grid()[idx]
    v = np.rint(rng.normal(size=idx.size) * s).astype(np.int32)
    Enc, Dec = (CB.RangeEncoder, CB.RangeDecoder) if coder == "range" else (CB.AnsEncoder, CB.AnsDecoder)
    enc = Enc()
    enc.encode_indexed(v, idx, tables)
    data = enc.finish()
    assert np.array_equal(Dec(data).decode_indexed(idx, tables), v)
    # the lane coder under the same tables lands within a few percent (it adds lane states)
    lane = E.encode_indexed(v, idx, tables)
    assert abs(len(data) - len(lane)) < 0.05 * len(lane) + 200


def test_bad_input_is_refused():
    f = np.array([1, 3])
    enc = CB.RangeEncoder()
    with pytest.raises(InvalidInputError):
        enc.encode([0, 2], f)  # outside the alphabet
    with pytest.raises(InvalidInputError):
        enc.encode([0, 1], np.array([1, 2]))  # does not sum to a power of two
    with pytest.raises(InvalidInputError):
        enc.encode([0, 1], np.array([0.5, 0.5]))
    with pytest.raises(InvalidInputError):
        enc.encode([0, 1, 1], np.array([[1, 3], [2, 2]]))  # 3 symbols, 2 tables
    with pytest.raises(InvalidInputError):
        enc.encode_indexed([10_000], [0], E.IndexedTables.gaussian())  # no escapes here
    with pytest.raises(CorruptDataError):
        CB.RangeDecoder(b"abc")
    with pytest.raises(InvalidInputError):
        CB.RangeDecoder(b"").decode(f)  # one table needs n


def test_one_shared_table_codes_without_a_row_per_symbol_and_bad_streams_are_corrupt():
    # a 1-D table is one model for all symbols (a row per symbol took 4.9 GiB here)
    sym = np.arange(10000) % 65536
    enc = CB.RangeEncoder()
    enc.encode(sym, np.ones(1 << 16, np.int64))
    assert np.array_equal(CB.RangeDecoder(enc.finish()).decode(np.ones(1 << 16, np.int64), 10000), sym)
    with pytest.raises(CorruptDataError):
        CB.RangeDecoder(b"\xff" * 8).decode(np.array([1 << 14, 1 << 14, 1 << 15]), 10)
    with pytest.raises(InvalidInputError, match="non-negative"):
        CB.RangeDecoder(b"").decode(np.array([1 << 14, 1 << 14, 1 << 15]), -1)


@pytest.mark.parametrize("coders", [(CB.RangeEncoder, CB.RangeDecoder), (CB.AnsEncoder, CB.AnsDecoder)])
def test_indexed_values_are_coded_in_slices_with_the_same_bytes(coders, monkeypatch):
    rng = np.random.default_rng(3)
    T = E.IndexedTables.gaussian()
    ix = rng.integers(0, T.num_tables, 5000)
    vals = np.clip(np.rint(rng.normal(0, 3, ix.size)).astype(np.int64), T.offsets[ix], T.offsets[ix] + T.lengths[ix] - 2)
    blobs = []
    for rows_bytes in (CB.ROWS_BYTES, 8 * T.cdfs.shape[1] * 333):  # one slice, then 16 slices
        monkeypatch.setattr(CB, "ROWS_BYTES", rows_bytes)
        enc = coders[0]()
        enc.encode(np.array([1, 0]), np.array([2, 2]))
        enc.encode_indexed(vals, ix, T)
        blobs.append(enc.finish())
        dec = coders[1](blobs[-1])
        if coders[0] is CB.RangeEncoder:
            assert list(dec.decode(np.array([2, 2]), 2)) == [1, 0]
            assert np.array_equal(dec.decode_indexed(ix, T), vals)
        else:  # a stack: the last call first
            assert np.array_equal(dec.decode_indexed(ix, T), vals)
            assert list(dec.decode(np.array([2, 2]), 2)) == [1, 0]
    assert blobs[0] == blobs[1]
