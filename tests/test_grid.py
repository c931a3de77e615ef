"""nzip.entropy.grid: causal 2-D context coding with fixed integer tables."""
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
