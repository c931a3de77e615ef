"""Atomic file output: write to a temporary sibling, rename into place on success."""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import InvalidInputError, OutputExistsError


def check_target(path: str | os.PathLike, overwrite: bool) -> tuple[Path, Path]:
    """(target, its folder) for an output, refusing an existing target unless ``overwrite``."""
    target = Path(path)
    if target.exists() and not overwrite:
        raise OutputExistsError(f"{target} exists (pass overwrite / --force to replace it)")
    parent = target.parent
    if not parent.is_dir():
        raise InvalidInputError(f"output folder {parent} does not exist")
    return target, parent


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, overwrite: bool = False) -> Iterator[BinaryIO]:
    target, parent = check_target(path, overwrite)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
