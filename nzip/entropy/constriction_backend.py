"""constriction as the backend for symbol-by-symbol models.

The lane coder wants every symbol's model before it starts. Models that condition a symbol on the
ones decoded before it (context models, autoregressive priors) need a coder that goes one symbol
or one batch at a time; that is constriction's range coder (a queue: decode in encode order, so
the decoder can compute each model from what it has already decoded) or its ANS coder (a stack:
encode in reverse). Both take nzip's integer models:

    enc = RangeEncoder()
    enc.encode(symbols, freqs)                 # one table (ints summing to 2**P) for all
    enc.encode(symbols, per_symbol_freqs)      # 2-D (n, alphabet): a table per symbol
    enc.encode_indexed(values, indexes, tables)
    data = enc.finish()
    dec = RangeDecoder(data)
    dec.decode(freqs, n); dec.decode(per_symbol_freqs); dec.decode_indexed(indexes, tables)

Determinism: a table reaches constriction as freqs / 2**P, which float64 holds exactly, and
constriction quantises it with plain IEEE arithmetic (no transcendental functions), so every
machine builds the same model. constriction quantises to its own 24-bit precision and gives every
symbol a non-zero probability ("leaky"), so symbols outside a table's support still code (at a
cost); values outside an indexed table's range are refused here rather than escaped.
"""
from __future__ import annotations

import numpy as np

from ..errors import CorruptDataError, InvalidInputError
from .tables import IndexedTables

__all__ = ["RangeEncoder", "RangeDecoder", "AnsEncoder", "AnsDecoder"]


def _constriction():
    import constriction  # a hard dependency; imported late to keep `import nzip` fast

    return constriction


def _probabilities(freqs) -> np.ndarray:
    """float64 probabilities (exact) from a 1-D or 2-D integer table whose rows sum to 2**P."""
    f = np.asarray(freqs)
    if f.dtype.kind not in "iu" or f.ndim not in (1, 2) or f.shape[-1] < 2 or np.any(f < 0):
        raise InvalidInputError("freqs must be a 1-D or 2-D array of non-negative integers "
                                "with at least two symbols")
    total = f.sum(axis=-1, dtype=np.int64)
    if np.any(total <= 0) or np.any(total & (total - 1)) or np.any(total > 1 << 24):
        raise InvalidInputError("every table must sum to a power of two 2**P with P <= 24")
    return f.astype(np.float64) / np.asarray(total, dtype=np.float64)[..., None]


ROWS_BYTES = 32 << 20  # per-symbol probability rows are built (and coded) this many bytes at a time


def _shared_model(probs: np.ndarray):
    """One concrete model for every symbol of a call (the same bytes as a row per symbol)."""
    return _constriction().stream.model.Categorical(probs, perfect=False)


def _indexed_rows(ix: np.ndarray, tables: IndexedTables):
    """(start, probability rows) of the symbols with table indexes ``ix``, a slice at a time (one
    row per symbol would be n x max_len float64 at once)."""
    pmf = np.diff(tables.cdfs.astype(np.int64), axis=1)
    pmf[np.arange(pmf.shape[1])[None, :] >= tables.lengths[:, None]] = 0
    probs = pmf.astype(np.float64) / float(1 << tables.precision)
    step = max(1, ROWS_BYTES // (8 * probs.shape[1]))
    return [(i, probs[ix[i:i + step]]) for i in range(0, ix.size, step)]


def _symbols(symbols, alphabet: int) -> np.ndarray:
    s = np.asarray(symbols).reshape(-1)
    if s.dtype.kind not in "iu":
        raise InvalidInputError("symbols must be integers")
    if s.size and (int(s.min()) < 0 or int(s.max()) >= alphabet):
        raise InvalidInputError(f"symbols must lie in 0..{alphabet - 1}")
    return s.astype(np.int32)


def _indexed_symbols(values, ix: np.ndarray, tables: IndexedTables) -> np.ndarray:
    v = np.asarray(values).reshape(-1)
    if v.shape != ix.shape:
        raise InvalidInputError(f"{v.size} values but {ix.size} indexes")
    s = v.astype(np.int64) - tables.offsets[ix]
    if np.any((s < 0) | (s >= tables.lengths[ix] - 1)):
        raise InvalidInputError("a value lies outside its table's range (this backend has no escapes)")
    return s.astype(np.int32)


class _Encoder:
    _reverse = False

    def __init__(self) -> None:
        c = _constriction()
        self._model = c.stream.model.Categorical(perfect=False)
        self._coder = self._make(c)

    def _put(self, sym: np.ndarray, probs: np.ndarray) -> None:
        put = self._coder.encode_reverse if self._reverse else self._coder.encode
        if probs.ndim == 1:
            put(sym, _shared_model(probs))
        else:
            put(sym, self._model, np.ascontiguousarray(probs))

    def encode(self, symbols, freqs) -> None:
        """Code symbols under one table (1-D freqs) or a table per symbol (2-D, one row each)."""
        probs = _probabilities(freqs)
        sym = _symbols(symbols, probs.shape[-1])
        if probs.ndim == 2 and probs.shape[0] != sym.size:
            raise InvalidInputError(f"{sym.size} symbols but {probs.shape[0]} tables")
        if sym.size:
            self._put(sym, probs)

    def encode_indexed(self, values, indexes, tables: IndexedTables) -> None:
        """Code values[i] with table indexes[i] (values must lie inside the table's range)."""
        ix = tables.check_indexes(indexes)
        sym = _indexed_symbols(values, ix, tables)
        parts = _indexed_rows(ix, tables)
        # a stack codes each call in reverse: slices go last first, so the whole reads back in order
        for i, probs in reversed(parts) if self._reverse else parts:
            self._put(sym[i:i + len(probs)], probs)

    def finish(self) -> bytes:
        return self._coder.get_compressed().astype("<u4").tobytes()


class _Decoder:
    def __init__(self, data: bytes | memoryview) -> None:
        if len(data) % 4:
            raise CorruptDataError("constriction stream: length is not a multiple of 4 bytes")
        c = _constriction()
        self._model = c.stream.model.Categorical(perfect=False)
        words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
        self._coder = self._make(c, words)

    def _get(self, probs: np.ndarray, n: int | None = None) -> np.ndarray:
        try:
            if n is not None:
                return np.asarray(self._coder.decode(_shared_model(probs), n))
            return np.asarray(self._coder.decode(self._model, np.ascontiguousarray(probs)))
        except (ValueError, RuntimeError, AssertionError) as e:  # constriction reports exhausted or
            raise CorruptDataError(f"constriction stream is corrupt ({e})") from None  # invalid streams so

    def decode(self, freqs, n: int | None = None) -> np.ndarray:
        """Decode n symbols under one table, or one symbol per row of a 2-D table."""
        probs = _probabilities(freqs)
        if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0):
            raise InvalidInputError(f"n must be a non-negative integer, got {n!r}")
        if probs.ndim == 1:
            if n is None:
                raise InvalidInputError("decode with one table needs the number of symbols n")
            if n == 0:
                return np.empty(0, dtype=np.int32)
            return self._get(probs, int(n)).astype(np.int32)
        if n is not None and n != probs.shape[0]:
            raise InvalidInputError(f"n={n} but {probs.shape[0]} tables")
        if probs.shape[0] == 0:
            return np.empty(0, dtype=np.int32)
        return self._get(probs).astype(np.int32)

    def decode_indexed(self, indexes, tables: IndexedTables) -> np.ndarray:
        ix = tables.check_indexes(indexes)
        if ix.size == 0:
            return np.empty(0, dtype=np.int32)
        sym = np.concatenate([self._get(probs).astype(np.int64) for _, probs in _indexed_rows(ix, tables)])
        return (sym + tables.offsets[ix]).astype(np.int32)


class RangeEncoder(_Encoder):
    """constriction's range coder (a queue): decode in the order of encoding."""

    @staticmethod
    def _make(c):
        return c.stream.queue.RangeEncoder()


class RangeDecoder(_Decoder):
    @staticmethod
    def _make(c, words):
        return c.stream.queue.RangeDecoder(words)


class AnsEncoder(_Encoder):
    """constriction's ANS coder (a stack). Every call codes its symbols in reverse, so a decoder
    reads the calls back in *reverse call order*, each call's symbols in their own order."""

    _reverse = True

    @staticmethod
    def _make(c):
        return c.stream.stack.AnsCoder()


class AnsDecoder(_Decoder):
    @staticmethod
    def _make(c, words):
        return c.stream.stack.AnsCoder(words)
