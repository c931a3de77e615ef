"""The codec registry: a small Codec base, a one-line ``@register`` decorator, entry points.

A codec turns an in-memory item (numpy array, image, state dict, ...) into named arrays plus params
(:meth:`Codec.encode`) and back (:meth:`Codec.decode`). It never opens files nor writes bits by
hand: ``nzip.formats`` reads and writes the user's files and the container, ``nzip.entropy`` codes.

Third-party codecs register through the entry-point group ``nzip.codecs``::

    [project.entry-points."nzip.codecs"]
    "image/mine" = "mypkg.codec:MyCodec"
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, ClassVar

from .errors import InvalidInputError, UnknownCodecError
from .formats.container import ArraySpec, Item

ENTRY_POINT_GROUP = "nzip.codecs"


@dataclass
class Encoded:
    """What a codec's encode returns: arrays to store, the params to record, source metadata."""

    arrays: dict[str, ArraySpec]
    params: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)


class Codec(ABC):
    """Base of every codec. Subclasses set ``name``, ``modality``, ``version`` and ``suffixes``."""

    name: ClassVar[str]
    modality: ClassVar[str]
    version: ClassVar[int] = 1
    suffixes: ClassVar[tuple[str, ...]] = ()  # input file suffixes this codec is the default for
    reads: ClassVar[tuple[str, ...]] = ()  # suffixes it reads only on request (lossy): named in errors
    folder_suffix: ClassVar[str | None] = None  # default for folders holding files with this suffix
    description: ClassVar[str] = ""
    read_params: ClassVar[dict[str, type]] = {}  # parameters of read(), not of encode()
    restores: ClassVar[bool] = False  # decode(..., restore=True) rebuilds lost parts (image/vqgan)

    @abstractmethod
    def read(self, path: str, **read_params: Any) -> Any:
        """Read the user's input file into the codec's in-memory item (``read_params``: the
        parameters named in the class's ``read_params``, e.g. which tensor of a file)."""

    @abstractmethod
    def write(self, item: Any, path: str, overwrite: bool = False) -> None:
        """Write a decoded item to the user's output file (atomically)."""

    @abstractmethod
    def encode(self, item: Any, progress=None, **params: Any) -> Encoded:
        """Turn an item into arrays to store."""

    @abstractmethod
    def decode(self, container: Item, progress=None, device: str = "cpu") -> Any:
        """Rebuild the item from an opened container."""

    out_suffixes: ClassVar[tuple[str, ...]] = ()  # what write() writes: other output names are refused

    def check_output(self, container: Item, path: str) -> None:
        """Refuse an output path the decoded item cannot be written to, before decoding it."""
        import os

        path = os.fspath(path)
        if self.out_suffixes and not path.lower().endswith(self.out_suffixes):
            raise InvalidInputError(f"{self.name} writes {' or '.join(self.out_suffixes)} files: name the output "
                                    f"so, not {os.path.basename(path) or path}")

    def read_rows(self, container: Item, selection: Any) -> Any:
        """Rows of the decoded item (a selection over its first axis), decoding only what they
        need (``Item.rows``); codecs that cannot say so."""
        raise InvalidInputError(f"{self.name} items do not decode by rows; decode the whole item")

    def check_params(self, params: dict[str, Any], allowed: dict[str, type]) -> dict[str, Any]:
        """Coerce ``k=v`` strings from the CLI to the declared types; unknown keys are errors."""
        out = {}
        for k, v in params.items():
            if v is None:
                continue
            if k not in allowed:
                raise InvalidInputError(
                    f"codec {self.name} has no parameter {k!r} (it takes: {', '.join(sorted(allowed)) or 'none'})")
            try:
                if allowed[k] is int and isinstance(v, float) and not v.is_integer():
                    raise ValueError(v)  # int(1.5) would silently truncate
                out[k] = allowed[k](v)
            except (TypeError, ValueError):
                raise InvalidInputError(f"parameter {k}={v!r} is not a valid {allowed[k].__name__}") from None
        return out


_REGISTRY: dict[str, type[Codec]] = {}
_entry_points_loaded = False


def register(cls: type[Codec]) -> type[Codec]:
    """Class decorator: make a codec available by its ``name``."""
    if not getattr(cls, "name", None) or "/" not in cls.name:
        raise TypeError("a codec needs a name like 'modality/family'")
    _REGISTRY[cls.name] = cls
    return cls


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    import_module("nzip.codecs")  # the built-ins register on import

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _REGISTRY:
            continue
        try:
            cls = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break nzip
            import warnings

            warnings.warn(f"nzip: codec entry point {ep.name!r} failed to load: {exc}", stacklevel=2)
            continue
        _REGISTRY.setdefault(ep.name, cls)


def available() -> dict[str, type[Codec]]:
    """All registered codecs by name (built-ins and entry points)."""
    _load_entry_points()
    return dict(sorted(_REGISTRY.items()))


def get(name: str) -> Codec:
    """An instance of the codec called ``name``."""
    codecs = available()
    if name not in codecs:
        raise UnknownCodecError(f"unknown codec {name!r}; registered: {', '.join(codecs)}")
    return codecs[name]()


def for_path(path: str) -> Codec:
    """The default codec for an input file, from its suffix (for a folder: from what it holds)."""
    import os
    from pathlib import Path

    if os.path.isdir(path):
        for codec_cls in available().values():
            if codec_cls.folder_suffix and any(Path(path).rglob(f"*{codec_cls.folder_suffix}")):
                return codec_cls()
        raise InvalidInputError(f"cannot tell which codec fits the folder {path}; pass --codec")
    lower = path.lower()
    for codec_cls in available().values():
        if any(lower.endswith(s) for s in codec_cls.suffixes):
            return codec_cls()
    able = [name for name, codec_cls in available().items() if any(lower.endswith(s) for s in codec_cls.reads)]
    if able:  # lossy codecs are never the default: name them
        raise InvalidInputError(f"cannot tell which codec fits {path}: pass "
                                f"{' or '.join(f'--codec {n}' for n in able)} (lossy, so never chosen by default)")
    raise InvalidInputError(
        f"cannot tell which codec fits {path}; pass --codec (see `nzip codecs`)")
