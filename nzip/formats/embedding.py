"""Embedding matrices in and out: ``.npy`` (N x d, float32 / float16) or a safetensors file holding
one 2-D float tensor (or several, one named with ``tensor=``). Rows must be finite."""
from __future__ import annotations

import os

import numpy as np

from ..errors import InvalidInputError
from .array import read_npy, write_npy
from .atomic import atomic_file

def check_matrix(a, what: str = "embeddings") -> np.ndarray:
    """The matrix as C-contiguous float32, or a clear error: not 2-D, empty, not float, NaN/Inf."""
    a = np.asarray(a)
    if a.dtype.kind != "f":
        raise InvalidInputError(f"{what}: expected a float matrix, got dtype {a.dtype}")
    if a.ndim != 2:
        raise InvalidInputError(f"{what}: expected a 2-D matrix (vectors x dims), got shape {list(a.shape)}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InvalidInputError(f"{what}: the matrix is empty (shape {list(a.shape)})")
    x = np.ascontiguousarray(a, dtype=np.float32)
    bad = ~np.isfinite(x).all(1)
    if bad.any():
        rows = np.flatnonzero(bad)
        more = f" and {len(rows) - 1} more" if len(rows) > 1 else ""
        raise InvalidInputError(f"{what}: row {rows[0]}{more} holds NaN or Inf")
    return x


def read_embeddings(path: str | os.PathLike, tensor: str | None = None) -> np.ndarray:
    """The matrix in its own float dtype (validated by :func:`check_matrix`)."""
    p = os.fspath(path)
    if p.lower().endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            tensors = load_file(p)
        except (SafetensorError, OSError, ValueError) as exc:
            raise InvalidInputError(f"{p}: not a readable safetensors file ({str(exc).splitlines()[0]})") from None
        mats = {k: v for k, v in tensors.items() if v.ndim == 2 and v.dtype.kind == "f"}
        if tensor is not None:
            if tensor not in tensors:
                raise InvalidInputError(f"{p}: no tensor {tensor!r} (it holds {', '.join(sorted(tensors))})")
            a = tensors[tensor]
        elif len(mats) == 1:
            a = next(iter(mats.values()))
        else:
            raise InvalidInputError(f"{p}: holds {len(mats)} float matrices; name one with --param tensor=NAME")
    else:
        a = read_npy(p)
    check_matrix(a, p)
    return a


def write_embeddings(a: np.ndarray, path: str | os.PathLike, overwrite: bool = False) -> None:
    p = os.fspath(path)
    if p.lower().endswith(".safetensors"):
        from safetensors.numpy import save

        data = save({"embeddings": np.ascontiguousarray(a)})
        with atomic_file(p, overwrite) as f:
            f.write(data)
    else:
        write_npy(a, p, overwrite)
