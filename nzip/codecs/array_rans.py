"""``array/rans``: lossless integer arrays (.npy in, .npy out), chunked along the first axis.

``predict=delta`` codes differences along the last axis (wrapping in the same-width signed type, so
it is exact for every dtype): smooth data such as elevation maps or sorted ids shrink a lot more.

Each chunk is coded by the zarr codec ``nzip.rans`` with its own frequency table (byte planes for
values spanning more than 2**16 integers), so any chunk decodes alone and plain ``zarr.open`` reads
the array.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..formats.array import read_npy, write_npy
from ..formats.container import ArraySpec, Item
from ..registry import Codec, Encoded, register

DEFAULT_CHUNK = 1 << 22  # elements per chunk
PREDICTORS = ("none", "delta")


@register
class ArrayRans(Codec):
    name = "array/rans"
    modality = "array"
    version = 1
    suffixes = (".npy",)
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
        a = np.ascontiguousarray(a)
        shape, dtype = a.shape, a.dtype
        if predict == "delta" and a.ndim and a.dtype != np.bool_:
            a = _delta(a)
        if a.ndim == 0:
            a = a.reshape(1)
        row = math.prod(a.shape[1:]) or 1
        rows = max(1, min(a.shape[0], chunk // row)) if a.shape[0] else 1
        chunks = (rows, *a.shape[1:]) if a.ndim > 1 else (rows,)
        return Encoded(
            arrays={"symbols": ArraySpec(a, chunks=tuple(max(1, c) for c in chunks))},
            params={"chunk": chunk, "predict": predict},
            source={"modality": "array", "shape": list(shape), "dtype": dtype.str.lstrip("<>|=")},
        )

    def decode(self, container: Item, progress=None, device: str = "cpu") -> np.ndarray:
        src = container.source
        out = container.read("symbols")
        shape = tuple(src.get("shape", out.shape))
        if math.prod(shape) != out.size:
            from ..errors import CorruptDataError

            raise CorruptDataError(f"{container.path}: source shape {list(shape)} does not match the "
                                   f"stored {out.size} values")
        if progress is not None:
            progress(out.size)
        out = out.reshape(shape)
        if container.params.get("predict", "none") == "delta" and out.ndim and out.dtype != np.bool_:
            out = _undelta(out, np.dtype(src["dtype"]))
        return out


def _delta(a: np.ndarray) -> np.ndarray:
    """Differences along the last axis in the same-width signed type (wrapping, so exact)."""
    s = a.view(f"i{a.dtype.itemsize}")
    d = np.empty_like(s)
    d[..., :1] = s[..., :1]
    np.subtract(s[..., 1:], s[..., :-1], out=d[..., 1:])
    return d


def _undelta(d: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return np.cumsum(d, axis=-1, dtype=d.dtype).view(dtype)
