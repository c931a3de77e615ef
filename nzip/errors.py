"""nzip's errors: one base class and a few subclasses a user can act on.

Every message names the problem (and, for corrupt data, where it is). The CLI prints the message on
one line and exits non-zero; it never prints a traceback for these.
"""
from __future__ import annotations


class NzipError(Exception):
    """Base class of every error nzip raises on purpose."""

    exit_code = 1


class InvalidInputError(NzipError, ValueError):
    """The input is not something this operation or codec accepts (type, dtype, shape, values)."""

    exit_code = 2


class CorruptDataError(NzipError):
    """Stored data is truncated, bit-flipped or forged: it fails a checksum or a consistency check."""

    exit_code = 3


class UnsupportedFormatError(NzipError):
    """The container or blob was written by a format version this nzip cannot read."""

    exit_code = 4


class UnknownCodecError(NzipError, KeyError):
    """No codec of that name is registered."""

    exit_code = 5

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class OutputExistsError(NzipError, FileExistsError):
    """The output path exists and overwriting was not asked for (or it is the input itself)."""

    exit_code = 6
