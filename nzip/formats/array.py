"""Arrays: .npy files in and out (never pickled objects)."""
from __future__ import annotations

import os

import numpy as np

from ..errors import InvalidInputError
from .atomic import atomic_file


def read_npy(path: str | os.PathLike) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InvalidInputError(f"{path} does not exist") from None
    except (ValueError, OSError, EOFError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        try:
            with open(path, "rb") as f:
                if f.read(6) != b"\x93NUMPY":  # numpy calls any other file "pickled data"
                    why = "no NumPy header: not a .npy file"
        except OSError:
            pass
        raise InvalidInputError(f"{path}: not a readable .npy array ({why})") from None


def write_npy(a: np.ndarray, path: str | os.PathLike, overwrite: bool = False) -> None:
    with atomic_file(path, overwrite) as f:
        np.save(f, a, allow_pickle=False)
