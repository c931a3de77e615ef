"""``array/rans``: lossless integer arrays (.npy in, .npy out), chunked along the first axis.

``predict=delta`` codes differences along the last axis (wrapping in the same-width signed type, so
it is exact for every dtype): smooth data such as elevation maps or sorted ids shrink a lot more.
``predict=med`` codes what LOCO-I's median edge detector (JPEG-LS) misses, predicting each value
from its left, upper and upper-left neighbours over axes 0 and 1 (rows and columns of an image,
``H x W`` or ``H x W x C``, each channel on its own): the predictor for pictures. Each chunk of
rows predicts its first row from the left only, so chunks still decode alone.

Each chunk is coded by the zarr codec ``nzip.rans`` with its own frequency table (byte planes for
values spanning more than 2**16 integers), so any chunk decodes alone and plain ``zarr.open`` reads
the array.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._jit import nb as numba
from ..errors import InvalidInputError
from ..formats.array import read_npy, write_npy
from ..formats.container import ArraySpec, Item
from ..registry import Codec, Encoded, register

DEFAULT_CHUNK = 1 << 22  # elements per chunk
PREDICTORS = ("none", "delta", "med")


@register
class ArrayRans(Codec):
    name = "array/rans"
    modality = "array"
    version = 1
    suffixes = (".npy",)
    out_suffixes = (".npy",)
    description = "lossless integer/bool arrays; chunked lane-rANS, one table per chunk"

    def read(self, path: str) -> np.ndarray:
        return read_npy(path)

    def write(self, item: np.ndarray, path: str, overwrite: bool = False) -> None:
        write_npy(item, path, overwrite)

    def encode(self, item: Any, progress=None, **params: Any) -> Encoded:
        p = self.check_params(params, {"chunk": int, "predict": str})
        predict = p.get("predict", "none")
        if predict not in PREDICTORS:
            raise InvalidInputError(f"predict must be one of {', '.join(PREDICTORS)}, got {predict!r}")
        a = np.asarray(item)
        if a.dtype.kind not in "iub":
            raise InvalidInputError(
                f"array/rans codes integer and bool arrays, not {a.dtype} (floats: use a weights or "
                "embedding codec, e.g. --codec embedding/opq --bytes 16)")
        chunk = p.get("chunk", DEFAULT_CHUNK)
        if chunk < 1:
            raise InvalidInputError("chunk must be >= 1 element")
        shape, dtype = a.shape, a.dtype  # before ascontiguousarray, which makes a 0-d array 1-d
        if not a.dtype.isnative:  # big-endian input: code the values in native order, give the order back
            a = a.astype(a.dtype.newbyteorder("="))
        a = np.ascontiguousarray(a)
        if predict == "med" and (a.ndim < 2 or a.dtype == np.bool_ or a.dtype.itemsize > 4):
            raise InvalidInputError("predict=med needs integers of up to 32 bits in an array of at least 2 "
                                    "dimensions (rows, columns, ...)")
        row = math.prod(a.shape[1:]) or 1
        rows = max(1, min(a.shape[0], chunk // row)) if a.ndim and a.shape[0] else 1
        if predict == "delta" and a.ndim and a.dtype != np.bool_:
            a = _delta(a)
        elif predict == "med" and a.size:
            a = _med(a, rows)
        if a.ndim == 0:
            a = a.reshape(1)
        chunks = (rows, *a.shape[1:]) if a.ndim > 1 else (rows,)
        return Encoded(
            arrays={"symbols": ArraySpec(a, chunks=tuple(max(1, c) for c in chunks))},
            params={"chunk": chunk, "predict": predict},
            source={"modality": "array", "shape": list(shape),
                    "dtype": dtype.str if not dtype.isnative else dtype.str.lstrip("<>|=")},
        )

    def read_rows(self, container: Item, selection: Any) -> np.ndarray:
        """Decoded rows, reading only the chunks they touch: with ``predict=med`` from the first row
        of their chunk of rows, with ``predict=delta`` on a 1-d array from its start (the running sum
        is along the only axis)."""
        shape, dtype = self._source(container)
        if not shape:
            raise InvalidInputError(f"{container.path}: a 0-d array has no rows")
        n = shape[0]
        if selection is Ellipsis:
            selection = slice(None)
        if isinstance(selection, (int, np.integer)):
            if not -n <= selection < n:
                raise InvalidInputError(f"{container.path}: row {selection} is out of range for {n} rows")
            return self.read_rows(container, slice(selection % n, selection % n + 1))[0]
        if not isinstance(selection, slice):
            raise InvalidInputError(f"{container.path}: rows are selected by an int or a slice, "
                                    f"got {selection!r}")
        try:
            want = range(*selection.indices(n))
        except (TypeError, ValueError) as exc:  # a zero step, float bounds
            raise InvalidInputError(f"{container.path}: bad row selection {selection!r} ({exc})") from None
        if not want:
            return np.empty((0, *shape[1:]), dtype)
        lo, hi = min(want[0], want[-1]), max(want[0], want[-1]) + 1
        predict = container.params.get("predict", "none")
        start = lo
        if predict == "med" and len(shape) >= 2:
            start = lo - lo % self._med_rows(container, shape)
        elif predict == "delta" and len(shape) == 1:
            start = 0
        part = container.read("symbols", (slice(start, hi),)).reshape(hi - start, *shape[1:])
        part = self._unpredict(container, part, shape, dtype)
        return part[np.asarray(want) - start]

    def _source(self, container: Item, layout=None) -> tuple[tuple[int, ...], np.dtype]:
        """The item's shape and dtype, checked against the stored array's ``layout`` (shape,
        dtype; read from its metadata when not given) and the codec's params (a forged or damaged
        metadata is a CorruptDataError, never a wrong array)."""
        from ..errors import CorruptDataError

        src, params = container.source, container.params
        stored, stored_dtype = layout or container.array_layout("symbols")
        stored = tuple(int(n) for n in stored)
        try:
            shape = tuple(int(n) for n in src.get("shape", stored))
            dtype = np.dtype(src.get("dtype", stored_dtype))
            chunk = int(params.get("chunk", DEFAULT_CHUNK))
        except (TypeError, ValueError, OverflowError):
            raise CorruptDataError(f"{container.path}: bad source shape, dtype or chunk in the metadata") from None
        if min(shape, default=0) < 0 or stored != (shape or (1,)):
            raise CorruptDataError(f"{container.path}: source shape {list(shape)} does not match the stored "
                                   f"array's {list(stored)}")
        if dtype.kind not in "biu" or dtype.itemsize != np.dtype(stored_dtype).itemsize:  # (signedness may differ)
            raise CorruptDataError(f"{container.path}: source dtype {dtype} does not match the stored {stored_dtype}")
        if params.get("predict", "none") not in PREDICTORS or chunk < 1:
            raise CorruptDataError(f"{container.path}: unknown predictor {params.get('predict')!r} or "
                                   f"chunk {chunk} in the metadata")
        return shape, dtype

    @staticmethod
    def _med_rows(container: Item, shape: tuple[int, ...]) -> int:
        """Rows per chunk (each chunk's first row is predicted from the left only); the chunk param
        was checked by ``_source``."""
        return max(1, min(shape[0], int(container.params.get("chunk", DEFAULT_CHUNK)) // (math.prod(shape[1:]) or 1)))

    def _unpredict(self, container: Item, out: np.ndarray, shape, dtype: np.dtype) -> np.ndarray:
        """The values of stored symbols ``out`` (whole rows, starting at a chunk's first row for med)."""
        native = dtype.newbyteorder("=")
        predict = container.params.get("predict", "none")
        if predict == "delta" and out.ndim and out.dtype != np.bool_:
            out = _undelta(out, native)
        elif predict == "med" and out.ndim >= 2 and out.size:
            out = _unmed(out, self._med_rows(container, shape), native)
        return out if dtype.isnative else out.astype(dtype)  # the input's byte order back

    def decode(self, container: Item, progress=None, device: str = "cpu") -> np.ndarray:
        out = container.read("symbols")
        shape, dtype = self._source(container, (out.shape, out.dtype))
        if progress is not None:
            progress(out.size)
        return self._unpredict(container, out.reshape(shape), shape, dtype)


def _delta(a: np.ndarray) -> np.ndarray:
    """Differences along the last axis in the same-width signed type (wrapping, so exact)."""
    s = a.view(f"i{a.dtype.itemsize}")
    d = np.empty_like(s)
    d[..., :1] = s[..., :1]
    np.subtract(s[..., 1:], s[..., :-1], out=d[..., 1:])
    return d


@numba.njit(cache=True, nogil=True)
def _undelta_rows(u):
    """In place: running sums along each row (unsigned, wrapping like the encoder's differences)."""
    for r in range(u.shape[0]):
        acc = u[r, 0]
        for j in range(1, u.shape[1]):
            acc += u[r, j]
            u[r, j] = acc


def _undelta(d: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if not d.size:
        return d.view(dtype)
    u = np.ascontiguousarray(d).view(f"u{d.dtype.itemsize}")
    if not u.flags.writeable:
        u = u.copy()
    _undelta_rows(u.reshape(-1, u.shape[-1]))
    return u.view(dtype)


def _med(x: np.ndarray, rows: int) -> np.ndarray:
    """Residuals of the MED predictor over axes 0/1, in the same-width signed type (wrapping).
    Row 0 of every block of ``rows`` rows has no upper neighbour: predicted from the left (the
    first value from 0). One pass in the array's own width: memory of the input and the output."""
    h, w = x.shape[:2]
    size = x.dtype.itemsize
    v = np.ascontiguousarray(x).reshape(h, w, -1).view(f"u{size}")
    out = np.empty_like(v)
    _med_kernel(v, rows, (1 << (8 * size)) - 1, out)
    return out.view(f"i{size}").reshape(x.shape)


@numba.njit(cache=True, nogil=True)
def _med_at(src, i, j, k, top):
    """The MED prediction of src[i, j, k] from its decoded (or original) neighbours, as int64."""
    a = np.int64(src[i, j - 1, k]) if j > 0 else np.int64(0)
    if top:
        return a
    b = np.int64(src[i - 1, j, k])
    cc = np.int64(src[i - 1, j - 1, k]) if j > 0 else np.int64(0)
    lo, hi = min(a, b), max(a, b)
    return lo if cc >= hi else (hi if cc <= lo else a + b - cc)


@numba.njit(cache=True, nogil=True)
def _med_kernel(v, rows, mask, out):
    h, w, c = v.shape
    for i in range(h):
        top = i % rows == 0
        for j in range(w):
            for k in range(c):
                out[i, j, k] = (np.int64(v[i, j, k]) - _med_at(v, i, j, k, top)) & mask


@numba.njit(cache=True, nogil=True)
def _unmed_kernel(r, rows, mask, out):
    h, w, c = r.shape
    for i in range(h):
        top = i % rows == 0
        for j in range(w):
            for k in range(c):
                out[i, j, k] = (np.int64(r[i, j, k]) + _med_at(out, i, j, k, top)) & mask


def _unmed(r: np.ndarray, rows: int, dtype: np.dtype) -> np.ndarray:
    h, w = r.shape[:2]
    size = np.dtype(dtype).itemsize
    u = np.ascontiguousarray(r).reshape(h, w, -1).view(f"u{size}")
    out = np.empty_like(u)
    _unmed_kernel(u, rows, (1 << (8 * size)) - 1, out)
    return out.view(dtype).reshape(r.shape)
