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


def _umask() -> int:
    try:  # Linux says it without changing it (os.umask would, for a moment, for every thread)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish_mode(path: str | os.PathLike, folder: bool = False) -> None:
    """Give a temporary output the permissions a plain ``open`` would have (mkstemp makes 0600,
    mkdtemp 0700), so the file renamed into place is readable as the user's umask allows."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, overwrite: bool = False) -> Iterator[BinaryIO]:
    target, parent = check_target(path, overwrite)
    if target.is_dir():
        raise OutputExistsError(f"{target} is a folder; nzip will not replace a folder with a file "
                                "(remove it or choose another name)")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    try:
        publish_mode(tmp)
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
