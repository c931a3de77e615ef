"""Causal context coding of 2-D symbol grids (a learned index prior for VQ codes).

The table of each symbol is chosen by the classes of its left and upper neighbours, which the
decoder already has: ``context = class(left) * (C + 1) + class(up)``, class ``C`` meaning "outside
the grid". The tables are fixed integer frequencies (shipped with a model, learned from training
data), so nothing but the coded words travels with the data.

One rANS lane in the same arithmetic as the lane coder (32-bit state in [2**16, 2**32), 16-bit
words, precision <= 16); symbols in raster order; the encoder runs backwards. The final state must
come back to 2**16, which catches corrupt or truncated streams. Grids of VQ indices are small
(1,536 symbols for a 768x512 image at 16x downsampling), so one sequential lane is plenty.
"""
from __future__ import annotations

import numpy as np

from .._jit import nb as numba
from ..errors import CorruptDataError, InvalidInputError

_L = 1 << 16


@numba.njit(cache=True, nogil=True)
def _ctx(sym, cls, i, j, C):
    left = cls[sym[i, j - 1]] if j > 0 else C
    up = cls[sym[i - 1, j]] if i > 0 else C
    return left * (C + 1) + up


@numba.njit(cache=True, nogil=True)
def _encode(sym, cls, freq, cum, prec, C):
    h, w = sym.shape
    out = np.empty(2 * h * w + 2, np.uint16)
    n = 0
    x = np.uint64(_L)
    for k in range(h * w - 1, -1, -1):
        i, j = k // w, k % w
        c = _ctx(sym, cls, i, j, C)
        s = sym[i, j]
        f = np.uint64(freq[c, s])
        if f == 0:
            return out[:0], -1 - k
        if x >= (f << np.uint64(32 - prec)):
            out[n] = np.uint16(x & np.uint64(0xFFFF))
            n += 1
            x >>= np.uint64(16)
        x = ((x // f) << np.uint64(prec)) + (x % f) + np.uint64(cum[c, s])
    out[n] = np.uint16(x & np.uint64(0xFFFF))
    out[n + 1] = np.uint16(x >> np.uint64(16))
    n += 2
    return out[:n][::-1].copy(), 0


@numba.njit(cache=True, nogil=True)
def _decode(words, h, w, cls, freq, cum, prec, C):
    sym = np.zeros((h, w), np.int32)
    if len(words) < 2:
        return sym, 1
    x = (np.uint64(words[0]) << np.uint64(16)) | np.uint64(words[1])
    pos = 2
    mask = np.uint64((1 << prec) - 1)
    K = cum.shape[1] - 1
    for k in range(h * w):
        i, j = k // w, k % w
        c = _ctx(sym, cls, i, j, C)
        slot = np.int64(x & mask)
        lo, hi = 0, K  # largest s with cum[c, s] <= slot
        while hi - lo > 1:
            mid = (lo + hi) >> 1
            if cum[c, mid] <= slot:
                lo = mid
            else:
                hi = mid
        s = lo
        f = np.uint64(freq[c, s])
        if f == 0:
            return sym, 2
        sym[i, j] = s
        x = f * (x >> np.uint64(prec)) + np.uint64(slot - cum[c, s])
        if x < np.uint64(_L):
            if pos >= len(words):
                return sym, 1
            x = (x << np.uint64(16)) | np.uint64(words[pos])
            pos += 1
    if x != np.uint64(_L) or pos != len(words):
        return sym, 3
    return sym, 0


class GridModel:
    """Fixed context tables: ``freqs`` ((C+1)**2, K) integers summing to 2**precision per row,
    ``classes`` (K,) the class in [0, C) of each symbol."""

    def __init__(self, freqs: np.ndarray, classes: np.ndarray, precision: int) -> None:
        freqs = np.ascontiguousarray(freqs, dtype=np.int64)
        classes = np.ascontiguousarray(classes, dtype=np.int32)
        C = int(round(np.sqrt(freqs.shape[0]))) - 1
        if freqs.ndim != 2 or (C + 1) ** 2 != freqs.shape[0] or classes.shape != (freqs.shape[1],):
            raise InvalidInputError("grid model: freqs must be ((C+1)**2, K) and classes (K,)")
        if not 1 <= precision <= 16 or np.any(freqs.sum(1) != 1 << precision):
            raise InvalidInputError(f"grid model: every table must sum to 2**{precision} (precision <= 16)")
        if classes.min() < 0 or classes.max() >= C:
            raise InvalidInputError(f"grid model: classes must lie in [0, {C})")
        self.freqs, self.classes, self.precision, self.C = freqs, classes, precision, C
        self.cum = np.zeros((freqs.shape[0], freqs.shape[1] + 1), np.int64)
        np.cumsum(freqs, axis=1, out=self.cum[:, 1:])

    @property
    def alphabet(self) -> int:
        return self.freqs.shape[1]

    @classmethod
    def from_counts(cls, counts: np.ndarray, classes: np.ndarray, precision: int = 16,
                    smoothing: float = 1.0) -> "GridModel":
        """Tables from training counts ((C+1)**2, K): each context's counts mixed with the
        order-0 distribution (``smoothing`` pseudo-observations per symbol) so unseen symbols stay
        codable, then quantised to integers."""
        from .tables import quantize_counts

        counts = np.asarray(counts, np.float64)
        p0 = (counts.sum(0) + 0.5) / (counts.sum() + 0.5 * counts.shape[1])
        K = counts.shape[1]
        freqs = np.empty(counts.shape, np.int64)
        for c in range(counts.shape[0]):
            pseudo = counts[c] + smoothing * K * p0 + 1e-3
            freqs[c] = quantize_counts(pseudo, precision)
        return cls(freqs, classes, precision)

    def bits(self, grid: np.ndarray) -> float:
        """Ideal code length of a grid under the model (for reporting and tests)."""
        g = np.asarray(grid, np.int64)
        h, w = g.shape
        left = np.full_like(g, self.C)
        left[:, 1:] = self.classes[g[:, :-1]]
        up = np.full_like(g, self.C)
        up[1:] = self.classes[g[:-1]]
        f = self.freqs[left * (self.C + 1) + up, g]
        return float(np.sum(self.precision - np.log2(f)))

    def encode(self, grid: np.ndarray) -> bytes:
        g = np.ascontiguousarray(grid, dtype=np.int32)
        if g.ndim != 2 or g.size == 0:
            raise InvalidInputError("grid coder: expected a non-empty 2-D grid of symbols")
        if g.min() < 0 or g.max() >= self.alphabet:
            raise InvalidInputError(f"grid coder: symbols must lie in [0, {self.alphabet})")
        words, status = _encode(g, self.classes, self.freqs, self.cum, self.precision, self.C)
        if status:
            raise InvalidInputError("grid coder: a symbol has zero probability in its context")
        return words.astype("<u2").tobytes()

    def decode(self, data: bytes | memoryview, shape: tuple[int, int], what: str = "index grid") -> np.ndarray:
        h, w = (int(v) for v in shape)
        if h <= 0 or w <= 0 or len(data) % 2:
            raise CorruptDataError(f"{what}: stream of {len(data)} bytes cannot hold a {h}x{w} grid")
        words = np.frombuffer(data, dtype="<u2").astype(np.uint16)
        sym, status = _decode(words, h, w, self.classes, self.freqs, self.cum, self.precision, self.C)
        if status:
            why = {1: "truncated", 2: "invalid slot", 3: "final state check failed"}[int(status)]
            raise CorruptDataError(f"{what}: corrupt entropy stream ({why})")
        return sym
