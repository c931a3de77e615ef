"""Causal context coding of 2-D symbol grids (a learned index prior for VQ codes).

The table of each symbol is chosen by the classes of its left and upper neighbours, which the
decoder already has: ``context = class(left) * (C + 1) + class(up)``, class ``C`` meaning "outside
the grid". The tables are fixed integer frequencies (shipped with a model, learned from training
data), so nothing but the coded words travels with the data.

One rANS lane in the same arithmetic as the lane coder (32-bit state in [2**16, 2**32), 16-bit
words, precision <= 16); symbols in raster order; the encoder runs backwards. The final state must
come back to 2**16, which catches corrupt or truncated streams. Grids of VQ indices are small
(1,536 symbols for a 768x512 image at 16x downsampling), so one sequential lane is plenty.

Adaptive mixing (``mix``): a fixed table knows the classes of the neighbours but not the grid in
hand, whose codes repeat (on image/vqgan's dev photos 21-45 % of the indices equal one of their
four decoded neighbours' and 51-96 % were already used earlier in the grid, 4096 down to 64 codes). With ``mix = (mn, mh, a_left, a_up, a_upleft, a_upright)`` each
symbol's table is rebuilt from three parts, in integers only, summing to exactly ``2**precision``:

- every symbol gets 1, and the context's fixed table, scaled to what ``mn`` and ``mh`` leave;
- ``mn`` split among the codes of the four decoded neighbours by the weights ``a`` (neighbours
  outside the grid drop out and the others share their weight);
- ``mh`` split among the codes decoded so far in proportion to how often each came;

and the rounding remainder goes to the fixed table's most probable symbol. The encoder and the
decoder build the same table from the same decoded symbols, so coding stays exact on every machine.
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
def _rans_encode(fs, cs, prec):
    """rANS words of symbols given, in raster order, their frequencies and cumulative starts."""
    n_sym = len(fs)
    out = np.empty(2 * n_sym + 2, np.uint16)
    n = 0
    x = np.uint64(_L)
    for k in range(n_sym - 1, -1, -1):  # the encoder runs backwards
        f = np.uint64(fs[k])
        if x >= (f << np.uint64(32 - prec)):
            out[n] = np.uint16(x & np.uint64(0xFFFF))
            n += 1
            x >>= np.uint64(16)
        x = ((x // f) << np.uint64(prec)) + (x % f) + np.uint64(cs[k])
    out[n] = np.uint16(x & np.uint64(0xFFFF))
    out[n + 1] = np.uint16(x >> np.uint64(16))
    n += 2
    return out[:n][::-1].copy()


@numba.njit(cache=True, nogil=True)
def _rans_start(words):
    """The decoder's first state (the encoder's last two words) and the next word's position;
    pos -1 when the stream is too short to hold a state."""
    if len(words) < 2:
        return np.uint64(0), -1
    return (np.uint64(words[0]) << np.uint64(16)) | np.uint64(words[1]), 2


@numba.njit(cache=True, nogil=True)
def _rans_end(x, pos, words):
    """Status of a stream decoded to its last symbol: 0, or 3 when the state is not the encoder's
    initial one or words are left over."""
    return 3 if x != np.uint64(_L) or pos != len(words) else 0


@numba.njit(cache=True, nogil=True)
def _rans_step(x, f, offset, prec, words, pos):
    """The decoder's state after a symbol of frequency f found ``offset`` into its slot range, and
    the next word's position; pos -1 when the stream ran out."""
    x = np.uint64(f) * (x >> np.uint64(prec)) + np.uint64(offset)
    if x < np.uint64(_L):
        if pos >= len(words):
            return x, -1
        x = (x << np.uint64(16)) | np.uint64(words[pos])
        pos += 1
    return x, pos


@numba.njit(cache=True, nogil=True)
def _encode(sym, cls, freq, cum, prec, C):
    h, w = sym.shape
    fs = np.empty(h * w, np.int64)
    cs = np.empty(h * w, np.int64)
    for k in range(h * w):
        i, j = k // w, k % w
        c = _ctx(sym, cls, i, j, C)
        s = sym[i, j]
        if freq[c, s] == 0:
            return np.empty(0, np.uint16), -1 - k
        fs[k] = freq[c, s]
        cs[k] = cum[c, s]
    return _rans_encode(fs, cs, prec), 0


@numba.njit(cache=True, nogil=True)
def _decode(words, h, w, cls, freq, cum, prec, C):
    sym = np.zeros((h, w), np.int32)
    x, pos = _rans_start(words)
    if pos < 0:
        return sym, 1
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
        if freq[c, s] == 0:
            return sym, 2
        sym[i, j] = s
        x, pos = _rans_step(x, freq[c, s], slot - cum[c, s], prec, words, pos)
        if pos < 0:
            return sym, 1
    return sym, _rans_end(x, pos, words)


MIX_FIELDS = 6  # mn, mh, a_left, a_up, a_upleft, a_upright


@numba.njit(cache=True, nogil=True)
def _mix_table(sym, i, j, cls, freqs, amax, prec, C, mix, hist, cnt, freq):
    """Fill ``freq`` (K,) with the adaptive table of position (i, j): see the module's docstring."""
    w = sym.shape[1]
    K = freqs.shape[1]
    P = np.int64(1) << prec
    ctx = _ctx(sym, cls, i, j, C)
    nbs = np.empty(4, np.int64)
    nbs[0] = sym[i, j - 1] if j > 0 else -1
    nbs[1] = sym[i - 1, j] if i > 0 else -1
    nbs[2] = sym[i - 1, j - 1] if i > 0 and j > 0 else -1
    nbs[3] = sym[i - 1, j + 1] if i > 0 and j < w - 1 else -1
    A = np.int64(0)
    for t in range(4):
        if nbs[t] >= 0:
            A += mix[2 + t]
    mn = mix[0] if A > 0 else np.int64(0)
    mh = mix[1] if cnt > 0 else np.int64(0)
    S = P - K - mn - mh
    total = np.int64(0)
    for k in range(K):
        f = 1 + ((freqs[ctx, k] * S) >> prec)
        if mh > 0 and hist[k] > 0:
            f += mh * hist[k] // cnt
        freq[k] = f
        total += f
    if A > 0:
        for t in range(4):
            if nbs[t] >= 0:
                d = mix[2 + t] * mn // A
                freq[nbs[t]] += d
                total += d
    freq[amax[ctx]] += P - total


@numba.njit(cache=True, nogil=True)
def _mix_fc(sym, cls, freqs, amax, prec, C, mix):
    """Each symbol's frequency and cumulative start in its adaptive table, in raster order (each
    table depends on the symbols before it)."""
    h, w = sym.shape
    K = freqs.shape[1]
    fs = np.empty(h * w, np.int64)
    cs = np.empty(h * w, np.int64)
    hist = np.zeros(K, np.int64)
    freq = np.empty(K, np.int64)
    for k in range(h * w):
        i, j = k // w, k % w
        _mix_table(sym, i, j, cls, freqs, amax, prec, C, mix, hist, k, freq)
        s = sym[i, j]
        c = np.int64(0)
        for t in range(s):
            c += freq[t]
        fs[k] = freq[s]
        cs[k] = c
        hist[s] += 1
    return fs, cs


@numba.njit(cache=True, nogil=True)
def _decode_mix(words, h, w, cls, freqs, amax, prec, C, mix):
    K = freqs.shape[1]
    sym = np.zeros((h, w), np.int32)
    x, pos = _rans_start(words)
    if pos < 0:
        return sym, 1
    mask = np.uint64((1 << prec) - 1)
    hist = np.zeros(K, np.int64)
    freq = np.empty(K, np.int64)
    for k in range(h * w):
        i, j = k // w, k % w
        _mix_table(sym, i, j, cls, freqs, amax, prec, C, mix, hist, k, freq)
        slot = np.int64(x & mask)
        s = 0
        c = np.int64(0)
        while c + freq[s] <= slot:  # the tables sum to 2**prec > slot: this stops at s < K
            c += freq[s]
            s += 1
        sym[i, j] = s
        hist[s] += 1
        x, pos = _rans_step(x, freq[s], slot - c, prec, words, pos)
        if pos < 0:
            return sym, 1
    return sym, _rans_end(x, pos, words)


@numba.njit(cache=True, nogil=True)
def _choose(score, h, w, cls, freqs, amax, prec, C, mix, adaptive, lam):
    """Raster-order greedy: at each position the symbol maximising score - lam * bits, where bits is
    its code length in the table the decoder will use there (given the choices before it)."""
    K = freqs.shape[1]
    sym = np.zeros((h, w), np.int32)
    hist = np.zeros(K, np.int64)
    freq = np.empty(K, np.int64)
    for k in range(h * w):
        i, j = k // w, k % w
        if adaptive:
            _mix_table(sym, i, j, cls, freqs, amax, prec, C, mix, hist, k, freq)
        else:
            c = _ctx(sym, cls, i, j, C)
            for t in range(K):
                freq[t] = freqs[c, t]
        best, arg = -np.inf, 0
        for t in range(K):
            if freq[t] > 0:
                v = score[k, t] - lam * (prec - np.log2(freq[t]))
                if v > best:
                    best, arg = v, t
        sym[i, j] = arg
        hist[arg] += 1
    return sym


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
        self.amax = freqs.argmax(1).astype(np.int64)  # where the adaptive tables put their remainder
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

    def check_mix(self, mix, what: str = "grid model") -> np.ndarray | None:
        """``mix`` as the coders take it (int64 array), or None for the fixed tables; a mix that
        could not make a valid table is refused (``CorruptDataError``: it comes from a file)."""
        if mix is None:
            return None
        ok = isinstance(mix, (list, tuple, np.ndarray)) and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in mix)
        if not ok:
            raise CorruptDataError(f"{what}: mixing parameters must be {MIX_FIELDS} integers, got {mix!r}")
        m = np.array(mix, np.int64)
        if (m.shape != (MIX_FIELDS,) or m.min() < 0 or m[2:].max() > 1 << 16
                or self.alphabet + m[0] + m[1] >= 1 << self.precision):
            raise CorruptDataError(f"{what}: invalid mixing parameters {mix!r} for {self.alphabet} symbols "
                                   f"at precision {self.precision}")
        return m

    def _args(self):
        return self.classes, self.freqs, self.amax, self.precision, self.C

    def bits(self, grid: np.ndarray, mix=None) -> float:
        """Ideal code length of a grid under the model (for reporting and tests)."""
        g = np.asarray(grid, np.int64)
        m = self.check_mix(mix)
        if m is not None:
            fs, _ = _mix_fc(np.ascontiguousarray(g, np.int32), *self._args(), m)
            return float(np.sum(self.precision - np.log2(fs)))
        left = np.full_like(g, self.C)
        left[:, 1:] = self.classes[g[:, :-1]]
        up = np.full_like(g, self.C)
        up[1:] = self.classes[g[:-1]]
        f = self.freqs[left * (self.C + 1) + up, g]
        return float(np.sum(self.precision - np.log2(f)))

    def encode(self, grid: np.ndarray, mix=None) -> bytes:
        """The rANS words of a grid; ``mix`` turns on adaptive mixing (module docstring)."""
        g = np.ascontiguousarray(grid, dtype=np.int32)
        if g.ndim != 2 or g.size == 0:
            raise InvalidInputError("grid coder: expected a non-empty 2-D grid of symbols")
        if g.min() < 0 or g.max() >= self.alphabet:
            raise InvalidInputError(f"grid coder: symbols must lie in [0, {self.alphabet})")
        m = self.check_mix(mix)
        if m is not None:
            return _rans_encode(*_mix_fc(g, *self._args(), m), self.precision).astype("<u2").tobytes()
        words, status = _encode(g, self.classes, self.freqs, self.cum, self.precision, self.C)
        if status:
            raise InvalidInputError("grid coder: a symbol has zero probability in its context")
        return words.astype("<u2").tobytes()

    def decode(self, data: bytes | memoryview, shape: tuple[int, int], what: str = "index grid",
               mix=None) -> np.ndarray:
        h, w = (int(v) for v in shape)
        if h <= 0 or w <= 0 or len(data) % 2:
            raise CorruptDataError(f"{what}: stream of {len(data)} bytes cannot hold a {h}x{w} grid")
        m = self.check_mix(mix, what)
        words = np.frombuffer(data, dtype="<u2").astype(np.uint16)
        if m is not None:
            sym, status = _decode_mix(words, h, w, *self._args(), m)
        else:
            sym, status = _decode(words, h, w, self.classes, self.freqs, self.cum, self.precision, self.C)
        if status:
            why = {1: "truncated", 2: "invalid slot", 3: "final state check failed"}[int(status)]
            raise CorruptDataError(f"{what}: corrupt entropy stream ({why})")
        return sym

    def choose(self, score: np.ndarray, lam: float, mix=None) -> np.ndarray:
        """Rate-aware choice of a grid: ``score`` (h, w, K) says how good each symbol is at each
        position (higher is better, e.g. the cosine to each code); in raster order each position
        takes the symbol maximising ``score - lam * bits`` under the table the decoder will use
        there. ``lam = 0`` is the plain argmax."""
        sc = np.asarray(score)
        if sc.ndim != 3 or sc.shape[2] != self.alphabet or sc.shape[0] * sc.shape[1] == 0:
            raise InvalidInputError(f"grid chooser: scores must be (h, w, {self.alphabet})")
        if not lam >= 0:
            raise InvalidInputError(f"grid chooser: the rate weight must be >= 0, got {lam}")
        h, w = sc.shape[:2]
        m = self.check_mix(mix)
        flat = np.ascontiguousarray(sc.reshape(h * w, -1), np.float32)
        return _choose(flat, h, w, *self._args(), np.zeros(MIX_FIELDS, np.int64) if m is None else m,
                       m is not None, float(lam))
