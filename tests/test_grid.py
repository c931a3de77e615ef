"""nzip.entropy.grid: causal 2-D context coding with fixed integer tables."""
import itertools

import numpy as np
import pytest

from nzip.entropy.grid import GridModel
from nzip.errors import CorruptDataError, InvalidInputError


def _model(K=64, C=4, seed=0, prec=16):
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, C, K)
    counts = rng.integers(0, 40, ((C + 1) ** 2, K)) * (rng.random(((C + 1) ** 2, K)) < 0.5)
    return GridModel.from_counts(counts, classes, prec)


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (7, 1), (5, 13), (32, 48)])
def test_round_trip_and_size(shape):
    m = _model()
    g = np.random.default_rng(1).integers(0, m.alphabet, shape)
    blob = m.encode(g)
    assert np.array_equal(m.decode(blob, shape), g)
    # within 32 bits (the final state) + a 16-bit word of the ideal code length
    assert len(blob) * 8 <= m.bits(g) + 48


def test_context_helps_on_structured_grids():
    # symbols equal to their left neighbour's class mostly: a context model must beat order-0
    rng = np.random.default_rng(2)
    K, C = 16, 4
    classes = np.arange(K) % C
    g = np.zeros((40, 40), np.int64)
    for i in range(40):
        for j in range(40):
            g[i, j] = (g[i, j - 1] + 4) % K if j and rng.random() < 0.9 else rng.integers(K)
    counts = np.zeros(((C + 1) ** 2, K))
    for i in range(40):
        for j in range(40):
            left = classes[g[i, j - 1]] if j else C
            up = classes[g[i - 1, j]] if i else C
            counts[left * (C + 1) + up, g[i, j]] += 1
    m = GridModel.from_counts(counts, classes, 16, smoothing=0.1)
    flat = GridModel.from_counts(np.tile(counts.sum(0), ((C + 1) ** 2, 1)), classes, 16)
    assert len(m.encode(g)) < 0.75 * len(flat.encode(g))
    assert np.array_equal(m.decode(m.encode(g), g.shape), g)


def test_corruption_and_truncation_are_caught():
    m = _model()
    g = np.random.default_rng(3).integers(0, m.alphabet, (16, 16))
    blob = m.encode(g)
    with pytest.raises(CorruptDataError):
        m.decode(blob[:-2], g.shape)
    with pytest.raises(CorruptDataError):
        m.decode(blob + b"\0\0", g.shape)
    with pytest.raises(CorruptDataError):
        m.decode(blob[:-1], g.shape)
    bad = 0
    for i in range(0, len(blob), max(1, len(blob) // 20)):
        b = bytearray(blob)
        b[i] ^= 0x10
        try:
            out = m.decode(bytes(b), g.shape)
        except CorruptDataError:
            bad += 1
            continue
        assert not np.array_equal(out, g) or bytes(b) == blob
    assert bad >= 1


def test_bad_models_and_symbols_are_refused():
    m = _model(K=8)
    with pytest.raises(InvalidInputError):
        m.encode(np.array([[8]]))
    with pytest.raises(InvalidInputError):
        m.encode(np.zeros((0, 3), int))
    with pytest.raises(InvalidInputError):
        GridModel(np.ones((25, 8), int), np.zeros(8, int), 16)  # rows do not sum to 2**16
    with pytest.raises(InvalidInputError):
        GridModel(m.freqs, np.full(8, 9), 16)  # classes out of range


MIX = (6000, 14000, 4, 3, 1, 1)


def _repetitive(shape=(24, 40), K=64, seed=4):
    """Grids like VQ index maps of photos: runs of a few codes, copied from the left or above."""
    rng = np.random.default_rng(seed)
    palette = rng.choice(K, 6, replace=False)
    g = np.zeros(shape, np.int64)
    for i in range(shape[0]):
        for j in range(shape[1]):
            r = rng.random()
            if j and r < 0.4:
                g[i, j] = g[i, j - 1]
            elif i and r < 0.6:
                g[i, j] = g[i - 1, j]
            elif r < 0.9:
                g[i, j] = rng.choice(palette)
            else:
                g[i, j] = rng.integers(K)
    return g


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (7, 1), (5, 13), (24, 40)])
@pytest.mark.parametrize("prec", [12, 16])
def test_adaptive_mixing_round_trips_and_tables_are_exact(shape, prec):
    from nzip.entropy.grid import _mix_table

    m = _model(prec=prec)
    mix = (300, 700, 4, 3, 1, 1) if prec == 12 else MIX
    for g in (np.random.default_rng(5).integers(0, m.alphabet, shape), _repetitive(shape)):
        blob = m.encode(g, mix)
        assert np.array_equal(m.decode(blob, shape, mix=mix), g)
        assert len(blob) * 8 <= 1.01 * m.bits(g, mix) + 48  # 32-bit rANS at 16-bit precision: ~0.5 % loss
        # every table the coder builds sums to exactly 2**prec and gives every symbol a slot
        hist = np.zeros(m.alphabet, np.int64)
        freq = np.empty(m.alphabet, np.int64)
        sym = np.ascontiguousarray(g, np.int32)
        for k in range(g.size):
            i, j = divmod(k, shape[1])
            _mix_table(sym, i, j, m.classes, m.freqs, m.freqs.argmax(1), prec, m.C, np.array(mix, np.int64),
                       hist, k, freq)
            assert freq.sum() == 1 << prec and freq.min() >= 1
            hist[g[i, j]] += 1


def test_adaptive_mixing_pays_on_repetitive_grids_and_is_not_the_fixed_code():
    m = _model()
    g = _repetitive()
    fixed, mixed = m.encode(g), m.encode(g, MIX)
    assert len(mixed) < 0.8 * len(fixed)
    # a stream decoded with the other model's tables fails its final check or differs
    for blob, mix in ((mixed, None), (fixed, MIX)):
        try:
            assert not np.array_equal(m.decode(blob, g.shape, mix=mix), g)
        except CorruptDataError:
            pass


def test_adaptive_mixing_catches_corruption_and_refuses_bad_parameters():
    m = _model()
    g = _repetitive((16, 16))
    blob = m.encode(g, MIX)
    for bad in (blob[:-2], blob + b"\0\0", blob[:-1]):
        with pytest.raises(CorruptDataError):
            m.decode(bad, g.shape, mix=MIX)
    caught = 0
    for i in range(0, len(blob), max(1, len(blob) // 20)):
        b = bytearray(blob)
        b[i] ^= 0x10
        try:
            assert not np.array_equal(m.decode(bytes(b), g.shape, mix=MIX), g)
        except CorruptDataError:
            caught += 1
    assert caught >= 1
    for mix in ((1, 2, 3), (-1, 0, 1, 1, 1, 1), (40000, 30000, 1, 1, 1, 1), ("a", 0, 1, 1, 1, 1), 7,
                (6000.5, 14000, 4, 3, 1, 1), (True, 14000, 4, 3, 1, 1), (6000, 14000, 4, 3, 1, 1 << 17)):
        with pytest.raises(CorruptDataError, match="mixing"):
            m.decode(blob, g.shape, mix=mix)


def test_choose_trades_score_for_rate():
    m = _model()
    rng = np.random.default_rng(6)
    score = rng.random((12, 20, m.alphabet)).astype(np.float32)
    assert np.array_equal(m.choose(score, 0.0), score.argmax(2))
    assert np.array_equal(m.choose(score, 0.0, MIX), score.argmax(2))
    picks = [m.choose(score, lam, MIX) for lam in (0.0, 0.01, 0.05, 0.5)]
    bits = [m.bits(p, MIX) for p in picks]
    kept = [float(np.take_along_axis(score, p[..., None].astype(np.int64), 2).sum()) for p in picks]
    assert all(a > b for a, b in itertools.pairwise(bits))  # a larger rate weight, fewer bits
    assert all(a >= b for a, b in itertools.pairwise(kept))  # paid for with score
    for p in picks:
        assert np.array_equal(m.decode(m.encode(p, MIX), p.shape, mix=MIX), p)
    fixed = m.choose(score, 0.05)
    assert m.bits(fixed) < m.bits(picks[0])
    with pytest.raises(InvalidInputError):
        m.choose(score, -1.0)
    with pytest.raises(InvalidInputError):
        m.choose(score[..., :5], 0.1)
