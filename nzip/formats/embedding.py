"""Embedding matrices in and out: ``.npy`` (N x d, float32 / float16) or a safetensors file holding
one 2-D float tensor (or several, one named with ``tensor=``; bfloat16 is read as float32). Rows
must be finite."""
from __future__ import annotations

import os

import numpy as np

from ..errors import InvalidInputError
from .array import read_npy, write_npy
from .atomic import atomic_file


def as_matrix(item) -> np.ndarray:
    """An in-memory matrix as numpy: a bfloat16 torch tensor (numpy has no bfloat16) as float32,
    which holds every bfloat16 value exactly."""
    if hasattr(item, "detach") and str(getattr(item, "dtype", "")) == "torch.bfloat16":
        import torch

        return item.detach().to(torch.float32).cpu().numpy()
    return np.asarray(item)


def check_matrix(a, what: str = "embeddings") -> np.ndarray:
    """The matrix as C-contiguous float32, or a clear error: not 2-D, empty, not float, NaN/Inf."""
    a = np.asarray(a)
    if a.dtype.kind != "f":
        raise InvalidInputError(f"{what}: expected a float matrix, got dtype {a.dtype}")
    if a.ndim != 2:
        raise InvalidInputError(f"{what}: expected a 2-D matrix (vectors x dims), got shape {list(a.shape)}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InvalidInputError(f"{what}: the matrix is empty (shape {list(a.shape)})")
    _refuse_rows(~np.isfinite(a).all(1), what, "NaN or Inf")
    with np.errstate(over="ignore"):
        x = np.ascontiguousarray(a, dtype=np.float32)
    _refuse_rows(~np.isfinite(x).all(1), what, "values beyond float32's range (~3.4e38)")  # (finite in a's dtype)
    return x


def _refuse_rows(bad: np.ndarray, what: str, holds: str) -> None:
    if bad.any():
        rows = np.flatnonzero(bad)
        more = f" and {len(rows) - 1} more" if len(rows) > 1 else ""
        raise InvalidInputError(f"{what}: row {rows[0]}{more} holds {holds}")


def read_embeddings(path: str | os.PathLike, tensor: str | None = None) -> np.ndarray:
    """The matrix in its own float dtype (validated by :func:`check_matrix`)."""
    p = os.fspath(path)
    if p.lower().endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            tensors = load_file(p)
        except TypeError:  # a dtype numpy lacks (bfloat16): read through torch, bfloat16 as float32
            from safetensors.torch import load_file as load_torch

            tensors = {k: as_matrix(v) for k, v in load_torch(p).items()}
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
