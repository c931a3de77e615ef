"""Integer probability models: frequency tables at precision 2**P.

A table is a vector of non-negative integer frequencies summing to exactly 2**P (1 <= P <= 16). A
symbol with frequency 0 cannot be coded; tables meant for data not yet seen (learned priors,
parametric families) keep every symbol >= 1. Everything the decoder touches is an integer, so every
machine and device decodes the same symbols.

Indexed tables (:class:`IndexedTables`) hold many small tables, selected per symbol by an integer
index, in the layout of compressai's ``GaussianConditional``: a CDF row per table, a per-table
length (the last symbol of each table is the escape for values outside its support) and a per-table
offset (value = symbol + offset). Families (Gaussian, Laplace) are quantised here, on the encode
side, once; the quantised integers travel with the data, so float rounding never reaches a decoder.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import CorruptDataError, InvalidInputError
from . import lanes_c as LC
from .lanes import fill_slots

MAX_PRECISION = 16
# Indexed families default to 2**15: with 32-bit states and 16-bit words, rANS's own loss grows with
# the precision, quantisation loss shrinks; 15 measured best on Gaussian scale grids (bench_entropy).
FAMILY_PRECISION = 15
GUIDE_BITS = 8


def quantize_counts(counts: np.ndarray, precision: int) -> np.ndarray:
    """Integer frequencies summing to 2**precision that minimise the coded size of ``counts``.

    Symbols with count 0 get frequency 0; every other symbol gets >= 1. Starts from the rounded
    proportional split and moves single units where they cost (or save) the fewest bits, so the
    result is the greedy optimum for the cross-entropy sum(c * -log2(f / 2**P)).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or np.any(counts < 0) or not np.all(np.isfinite(counts)):
        raise InvalidInputError("counts must be a 1-D array of finite non-negative numbers")
    if not 1 <= precision <= MAX_PRECISION:
        raise InvalidInputError(f"precision must be in 1..{MAX_PRECISION}, got {precision}")
    total_mass = 1 << precision
    used = counts > 0
    n_used = int(used.sum())
    if n_used == 0:
        raise InvalidInputError("counts are all zero: nothing to model")
    if n_used > total_mass:
        raise InvalidInputError(
            f"{n_used} used symbols do not fit at precision {precision} (at most {total_mass})"
        )
    freqs = np.zeros(counts.shape, dtype=np.int64)
    freqs[used] = np.maximum(1, np.rint(counts[used] * (total_mass / counts.sum()))).astype(np.int64)
    c = counts
    with np.errstate(divide="ignore", invalid="ignore"):
        return _settle(freqs, c, used, n_used, total_mass)


def _settle(freqs, c, used, n_used, total_mass):
    while True:
        diff = total_mass - int(freqs.sum())
        if diff == 0:
            return freqs
        if diff > 0:  # add units where one more unit saves the most bits
            gain = np.where(used, c * np.log2((freqs + 1) / np.maximum(freqs, 1)), -np.inf)
            k = min(diff, n_used)
            pick = np.argpartition(-gain, k - 1)[:k]
            freqs[pick] += 1
        else:  # remove units where one fewer unit costs the fewest bits
            can = freqs > 1
            loss = np.where(can, c * np.log2(freqs / np.maximum(freqs - 1, 1)), np.inf)
            k = min(-diff, int(can.sum()))
            pick = np.argpartition(loss, k - 1)[:k]
            freqs[pick] -= 1


def cross_entropy_bits(counts: np.ndarray, freqs: np.ndarray, precision: int) -> float:
    """Bits needed to code symbols with these counts under integer ``freqs`` at ``precision``."""
    counts = np.asarray(counts, dtype=np.float64)
    used = counts > 0
    if np.any(np.asarray(freqs)[used] <= 0):
        return math.inf
    return float(np.sum(counts[used] * (precision - np.log2(np.asarray(freqs, np.float64)[used]))))


def empirical_entropy_bits(counts: np.ndarray) -> float:
    """Total information of a sequence with these symbol counts under its own exact distribution."""
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum()
    used = counts > 0
    return float(-np.sum(counts[used] * np.log2(counts[used] / n)))


def cumulative(freqs: np.ndarray) -> np.ndarray:
    """Exclusive prefix sum: cum[s] is the first slot of symbol s."""
    cum = np.zeros(len(freqs) + 1, dtype=np.int64)
    np.cumsum(freqs, out=cum[1:])
    return cum


def decode_tables(freqs: np.ndarray, precision: int) -> tuple[np.ndarray, np.ndarray]:
    """Slot lookup tables for the decoder: symbol per slot, and (freq << 16 | slot - start) per slot."""
    freqs = np.asarray(freqs, dtype=np.int64)
    cum = cumulative(freqs)
    if cum[-1] != 1 << precision:
        raise CorruptDataError(f"frequency table sums to {cum[-1]}, not 2**{precision}")
    sym_dtype = np.uint8 if len(freqs) <= 256 else np.uint16 if len(freqs) <= 65536 else np.uint32
    symbols = np.empty(1 << precision, dtype=sym_dtype)
    packed = np.empty(1 << precision, dtype=np.uint32)
    (LC.fill_slots if LC.available else fill_slots)(freqs, symbols, packed)
    return symbols, packed


# ---------------------------------------------------------------------------------------------
# Indexed tables
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexedTables:
    """Many integer tables, one chosen per symbol by an index (compressai's indexed layout).

    ``cdfs[k, :lengths[k] + 1]`` is table k's CDF (0 .. 2**precision); symbol ``lengths[k] - 1`` is
    the escape. A value v coded with table k is symbol ``v - offsets[k]`` when that lies in
    ``0 .. lengths[k] - 2``, else the escape followed by v itself in a side stream.
    """

    cdfs: np.ndarray  # (K, max_len + 1) int32
    lengths: np.ndarray  # (K,) int32, number of symbols incl. escape (>= 2)
    offsets: np.ndarray  # (K,) int32
    precision: int = MAX_PRECISION
    fingerprint: bytes = field(init=False, repr=False, compare=False)
    guide: np.ndarray = field(init=False, repr=False, compare=False)
    guide_shift: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        cdfs = np.ascontiguousarray(self.cdfs, dtype=np.int32)
        lengths = np.ascontiguousarray(self.lengths, dtype=np.int32)
        raw = np.asarray(self.offsets)
        if raw.dtype.kind not in "iu":
            raise InvalidInputError("offsets must be integers")
        offsets = np.ascontiguousarray(raw, dtype=np.int32)
        if cdfs.ndim != 2 or lengths.shape != (cdfs.shape[0],) or offsets.shape != lengths.shape:
            raise InvalidInputError("indexed tables need cdfs (K, L+1), lengths (K,), offsets (K,)")
        wide = raw.astype(np.int64) if raw.dtype != np.uint64 else np.minimum(raw, 1 << 62).astype(np.int64)
        if raw.size and (int(wide.min()) <= -(1 << 31) or int((wide + lengths - 2).max()) >= 1 << 31):
            raise InvalidInputError("every table's support must lie in -2**31+1..2**31-1 (int32; "
                                    "-2**31 marks escapes)")
        if not 1 <= self.precision <= MAX_PRECISION:
            raise InvalidInputError(f"precision must be in 1..{MAX_PRECISION}")
        if np.any(lengths < 2) or np.any(lengths + 1 > cdfs.shape[1]):
            raise InvalidInputError("every table needs 2..max_len symbols (the last is the escape)")
        rows = np.arange(len(lengths))
        if np.any(cdfs[:, 0] != 0) or np.any(cdfs[rows, lengths] != 1 << self.precision):
            raise InvalidInputError("every CDF must run from 0 to 2**precision")
        cols = np.arange(cdfs.shape[1] - 1)[None, :]
        steps = np.diff(cdfs, axis=1)
        if np.any((steps < 1) & (cols < lengths[:, None])):
            raise InvalidInputError("every symbol of an indexed table needs frequency >= 1")
        object.__setattr__(self, "cdfs", cdfs)
        object.__setattr__(self, "lengths", lengths)
        object.__setattr__(self, "offsets", offsets)
        # guide[k, b]: the symbol of table k holding slot b << guide_shift, so a decoder starts its
        # search there and walks up a step or two instead of bisecting the whole CDF
        gbits = min(GUIDE_BITS, self.precision)
        starts = np.arange(1 << gbits, dtype=np.int64) << (self.precision - gbits)
        guide = np.stack([np.searchsorted(cdfs[k, : lengths[k] + 1], starts, side="right") - 1
                          for k in range(len(lengths))]).astype(np.int32)
        object.__setattr__(self, "guide", guide)
        object.__setattr__(self, "guide_shift", self.precision - gbits)
        h = hashlib.sha256()
        for a in (cdfs, lengths, offsets, np.int32(self.precision)):
            h.update(np.ascontiguousarray(a).astype("<i4").tobytes())
        object.__setattr__(self, "fingerprint", h.digest()[:8])

    @property
    def num_tables(self) -> int:
        return int(self.lengths.shape[0])

    def check_indexes(self, indexes) -> np.ndarray:
        """``indexes`` as a flat integer array, checked before any cast (a cast to int32 wraps):
        integers in 0..num_tables-1."""
        ix = np.asarray(indexes).reshape(-1)
        if ix.dtype.kind not in "iu":
            raise InvalidInputError("indexes must be integers")
        if ix.size and (int(ix.min()) < 0 or int(ix.max()) >= self.num_tables):
            raise InvalidInputError(f"indexes must lie in 0..{self.num_tables - 1}")
        return ix

    @classmethod
    def from_pmfs(
        cls, pmfs: list[np.ndarray], offsets: np.ndarray, tail_masses: np.ndarray | None = None,
        precision: int = MAX_PRECISION,
    ) -> IndexedTables:
        """Quantise float PMFs (one per table, over its support) plus an escape mass to integers.

        This is how a learned prior exports its tables: evaluate the model on each table's support,
        hand the PMFs here once, and store the resulting integers with the model.
        """
        k = len(pmfs)
        if k == 0:
            raise InvalidInputError("from_pmfs needs at least one PMF")
        pmfs = [np.asarray(p, dtype=np.float64) for p in pmfs]
        for p in pmfs:
            if p.ndim != 1 or not p.size or not np.all(np.isfinite(p)) or np.any(p < 0):
                raise InvalidInputError("every PMF must be a non-empty 1-D array of finite, non-negative numbers")
            if p.size + 1 > 1 << precision:
                raise InvalidInputError(f"a PMF over {p.size} values (plus the escape) does not fit "
                                        f"precision {precision}: every symbol needs a frequency >= 1")
        if tail_masses is None:
            tail_masses = [max(0.0, 1.0 - float(np.sum(p))) for p in pmfs]
        lengths = np.array([len(p) + 1 for p in pmfs], dtype=np.int32)
        cdfs = np.zeros((k, int(lengths.max()) + 1), dtype=np.int32)
        for i, (p, tail) in enumerate(zip(pmfs, tail_masses)):
            mass = np.append(np.asarray(p, dtype=np.float64), float(tail))
            # every symbol >= 1: the escape and far tails must stay codable on unseen data
            mass = np.maximum(mass, 1e-300) / max(mass.sum(), 1e-300) * 1e9
            freqs = quantize_counts(mass, precision)
            cdfs[i, : lengths[i] + 1] = cumulative(freqs)
            cdfs[i, lengths[i] + 1 :] = 1 << precision
        return cls(cdfs, lengths, np.asarray(offsets), precision)

    @classmethod
    def gaussian(
        cls, scales: np.ndarray | None = None, tail_mass: float = 1e-9, precision: int = FAMILY_PRECISION,
    ) -> IndexedTables:
        """Zero-mean discretised Gaussians (bins of width 1), one table per scale of a grid."""
        return cls._family("gaussian", scales, tail_mass, precision)

    @classmethod
    def laplace(
        cls, scales: np.ndarray | None = None, tail_mass: float = 1e-9, precision: int = FAMILY_PRECISION,
    ) -> IndexedTables:
        """Zero-mean discretised Laplace distributions, one table per scale of a grid."""
        return cls._family("laplace", scales, tail_mass, precision)

    @classmethod
    def _family(cls, kind: str, scales, tail_mass: float, precision: int) -> IndexedTables:
        scales = default_scale_grid() if scales is None else np.asarray(scales, dtype=np.float64)
        if scales.ndim != 1 or not scales.size or not np.all(np.isfinite(scales)) or np.any(scales <= 0):
            raise InvalidInputError("scales must be a non-empty 1-D array of finite positive numbers")
        try:
            tail_mass = float(tail_mass)
        except (TypeError, ValueError):
            tail_mass = math.nan
        if not 0 < tail_mass < 1:
            raise InvalidInputError("tail_mass must be a number strictly between 0 and 1")
        if not 1 <= precision <= MAX_PRECISION:
            raise InvalidInputError(f"precision must be in 1..{MAX_PRECISION}")
        pmfs, offsets, tails = [], [], []
        for s in scales:
            if kind == "gaussian":
                cdf = lambda v, s=s: 0.5 * _erfc(-v / (s * math.sqrt(2.0)))  # noqa: E731
                radius = int(math.ceil(s * _gaussian_quantile(tail_mass / 2)))
            else:
                cdf = lambda v, s=s: np.where(v < 0, 0.5 * np.exp(v / s), 1 - 0.5 * np.exp(-v / s))  # noqa: E731
                radius = int(math.ceil(-s * math.log(tail_mass)))
            radius = max(radius, 1)
            if 2 * radius + 2 > 1 << precision:
                raise InvalidInputError(f"scale {s:g} needs {2 * radius + 2} symbols, more than precision "
                                        f"{precision} gives every symbol (2**{precision}); use smaller scales")
            v = np.arange(-radius, radius + 1, dtype=np.float64)
            pmf = cdf(v + 0.5) - cdf(v - 0.5)
            pmfs.append(pmf)
            offsets.append(-radius)
            tails.append(max(float(cdf(np.array(-radius - 0.5))) * 2.0, 0.0))
        return cls.from_pmfs(pmfs, np.array(offsets), np.array(tails), precision)

    def index_for_scales(self, scales: np.ndarray, grid: np.ndarray | None = None) -> np.ndarray:
        """Index of the first grid scale >= each scale (compressai's build_indexes rule)."""
        grid = default_scale_grid() if grid is None else np.asarray(grid)
        idx = np.searchsorted(grid, np.asarray(scales, dtype=np.float64), side="left")
        return np.clip(idx, 0, len(grid) - 1).astype(np.int32)


def default_scale_grid(lo: float = 0.11, hi: float = 256.0, levels: int = 64) -> np.ndarray:
    """compressai's scale table: 64 log-spaced scales from 0.11 to 256."""
    return np.exp(np.linspace(math.log(lo), math.log(hi), levels))


def _erfc(x: np.ndarray) -> np.ndarray:
    from scipy.special import erfc

    return erfc(x)


def _gaussian_quantile(p: float) -> float:
    from scipy.special import ndtri

    return float(-ndtri(p))
