"""The nzip container: one encoded item is a zarr v3 group.

The group's attributes say everything needed to decode it::

    {"nzip": {"format": 1, "codec": "array/rans", "codec_version": 1, "params": {...},
              "source": {"modality": "array", "shape": [...], "dtype": "int16"}}}

Its arrays hold entropy-coded symbols (codec ``nzip.rans`` then ``crc32c``) and raw side arrays
(``bytes`` then ``crc32c``). Stores: a local path ending in ``.nz`` is one zip file (JSON entries
deflated, chunks stored), another local path a directory, a URL with ``://`` goes through fsspec.

Writes are atomic: the item is built in memory (``.nz``) or in a temporary sibling directory and
renamed into place, so a crash never leaves a half-written container under the real name.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorruptDataError, InvalidInputError, OutputExistsError, UnsupportedFormatError
from .atomic import atomic_file, check_target, publish_mode

if TYPE_CHECKING:
    import zarr

FORMAT = 1
_ZIP_LOCK = __import__("threading").Lock()
READABLE_FORMATS = (1,)
_JSON_SUFFIX = "zarr.json"
_DIRECT_DTYPES = {"bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
                  "float16", "float32", "float64"}


@dataclass
class ArraySpec:
    """One array of an item: its data, chunking and whether it holds symbols or raw values."""

    data: np.ndarray
    chunks: tuple[int, ...] | None = None
    symbols: bool = True  # entropy coded with nzip.rans; False stores raw bytes (floats etc.)
    attrs: dict[str, Any] = field(default_factory=dict)
    # a small uint8 stream (a codec's own coded bytes) kept in the group's attributes, base64,
    # instead of as an array node: saves ~370 bytes of array metadata and zip entries, which is a
    # fifth of an extreme-rate image (see INLINE_MAX)
    inline: bool = False


INLINE_MAX = 16384  # bytes; larger streams are arrays whatever the codec asks
_INLINE_KEY = "inline"


def _is_url(path: str) -> bool:
    return "://" in path


def _zarr():
    """zarr, imported on first use (~0.4 s; reading a local .nz item's streams needs none of it),
    with the ``nzip.rans`` codec registered (an installed nzip also registers it by entry point)."""
    import zarr

    from . import zarr_codec  # noqa: F401 - registers nzip.rans

    return zarr


def _array_codecs(symbols: bool):
    from zarr.codecs import BytesCodec, Crc32cCodec

    from .zarr_codec import RansCodec

    if symbols:
        return {"serializer": RansCodec(), "compressors": [Crc32cCodec()]}
    return {"serializer": BytesCodec(endian="little"), "compressors": [Crc32cCodec()]}


def _fill_group(store, attrs: dict[str, Any], arrays: dict[str, ArraySpec], progress=None) -> None:
    import base64

    inline = {name: spec for name, spec in arrays.items()
              if spec.inline and np.asarray(spec.data).dtype == np.uint8 and np.asarray(spec.data).ndim == 1
              and np.asarray(spec.data).size <= INLINE_MAX}
    if inline:
        attrs = {**attrs, _INLINE_KEY: {n: base64.b64encode(np.asarray(s.data).tobytes()).decode()
                                        for n, s in inline.items()}}
    root = _zarr().create_group(store=store, zarr_format=3, attributes={"nzip": attrs}, overwrite=True)
    for name, spec in arrays.items():
        if name in inline:
            continue
        a = np.asarray(spec.data)
        chunks = tuple(spec.chunks) if spec.chunks else tuple(max(1, s) for s in a.shape) or (1,)
        if a.ndim == 0:
            a, chunks = a.reshape(1), (1,)
        arr = root.create_array(name, shape=a.shape, dtype=a.dtype, chunks=chunks, fill_value=0,
                                attributes=spec.attrs or None, config={"write_empty_chunks": True},
                                **_array_codecs(spec.symbols))
        if a.size:
            if progress is not None and a.ndim >= 1 and chunks[0] < a.shape[0]:
                for start in range(0, a.shape[0], chunks[0]):  # chunk rows one by one: progress
                    arr[start : start + chunks[0]] = a[start : start + chunks[0]]
                    progress(min(chunks[0], a.shape[0] - start) * int(np.prod(a.shape[1:])))
            else:
                arr[...] = a
                if progress is not None:
                    progress(a.size)


def _store_items(mem) -> list[tuple[str, bytes]]:
    """Every (key, bytes) of a memory store, sorted."""
    import asyncio

    zarr = _zarr()

    async def items():
        out = []
        async for key in mem.list():
            buf = await mem.get(key, prototype=zarr.core.buffer.default_buffer_prototype())
            out.append((key, buf.to_bytes()))
        return sorted(out)

    return asyncio.run(items())


def _zip_bytes(mem) -> bytes:
    """Pack a memory store into zip bytes: JSON deflated, chunks stored (they are incompressible)."""
    import io

    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w") as zf:
        for key, data in _store_items(mem):
            if key.endswith(_JSON_SUFFIX):
                data = _minify(data)
            info = zipfile.ZipInfo(key, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED if key.endswith(_JSON_SUFFIX) else zipfile.ZIP_STORED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            zf.writestr(info, data, compresslevel=9 if key.endswith(_JSON_SUFFIX) else None)
    return bio.getvalue()


def _minify(data: bytes) -> bytes:
    """zarr metadata without whitespace and without empty optional fields (small items matter)."""
    meta = json.loads(data)
    for k in ("attributes", "storage_transformers"):
        if meta.get(k) in ({}, []):
            del meta[k]
    return json.dumps(meta, separators=(",", ":")).encode()


def nz_size(attrs: dict[str, Any], arrays: dict[str, ArraySpec]) -> int:
    """Bytes of the .nz file that :func:`write_item` would write (codecs fitting a size budget)."""
    _zarr()
    from zarr.storage import MemoryStore

    mem = MemoryStore()
    _fill_group(mem, {"format": FORMAT, **attrs}, arrays)
    return len(_zip_bytes(mem))


def write_item(dst: str | os.PathLike, attrs: dict[str, Any], arrays: dict[str, ArraySpec],
               overwrite: bool = False, progress=None) -> None:
    """Write one item atomically. ``attrs`` is the ``nzip`` attribute dict (format is added)."""
    attrs = {"format": FORMAT, **attrs}
    dst = os.fspath(dst)
    _zarr()
    from zarr.storage import FsspecStore, MemoryStore

    if _is_url(dst):
        import fsspec

        fs, path = fsspec.core.url_to_fs(dst)
        if fs.exists(path) and not overwrite:
            raise OutputExistsError(f"{dst} exists (pass overwrite / --force to replace it)")
        if dst.endswith(".nz"):
            mem = MemoryStore()
            _fill_group(mem, attrs, arrays, progress)
            with fs.open(path, "wb") as f:  # object stores publish a file only when it is closed
                f.write(_zip_bytes(mem))
        else:
            if fs.exists(path):
                fs.rm(path, recursive=True)
            _fill_group(FsspecStore.from_url(dst), attrs, arrays, progress)
        return
    if dst.endswith(".nz"):
        with atomic_file(dst, overwrite) as f:
            mem = MemoryStore()
            _fill_group(mem, attrs, arrays, progress)
            f.write(_zip_bytes(mem))
        return
    target, parent = check_target(dst, overwrite)
    if target.is_dir() and not (target / "zarr.json").is_file() and any(target.iterdir()):
        raise OutputExistsError(f"{target} is a folder that is not an nzip item; nzip will not replace it "
                                "(remove it or choose another name)")
    if target.exists() and not target.is_dir():
        raise OutputExistsError(f"{target} is a file; an item without the .nz suffix is a folder "
                                "(remove it or choose another name)")
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
    publish_mode(tmpdir, folder=True)
    old = target.with_name(f".{target.name}.old")
    if old.exists():  # left by a replacement interrupted while deleting the item it replaced
        shutil.rmtree(old, ignore_errors=True)
    try:
        mem = MemoryStore()  # filled by zarr's own writer threads, then written here, in this thread:
        _fill_group(mem, attrs, arrays, progress)  # an interrupt cannot leave writes going on after it
        for key, data in _store_items(mem):
            f = tmpdir.joinpath(*key.split("/"))
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(data)
        if target.exists():
            os.replace(target, old)
            os.replace(tmpdir, target)
        else:
            os.replace(tmpdir, target)
    except BaseException:
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)  # the new item is in place; an interrupt here leaves only .old


def _plain_selection(selection: Any, shape: tuple[int, ...], what: str) -> tuple[Any, Any]:
    """(what to ask zarr for, what to apply to its answer after) for a numpy-style selection:
    a selection numpy would refuse is an InvalidInputError (not a damaged file), and slices with a
    negative step, which zarr does not take, are read forwards and stepped through afterwards."""
    try:
        np.broadcast_to(np.empty((), np.bool_), shape)[selection]  # numpy's own checks, nothing read
    except (IndexError, TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what}: bad selection {selection!r} for shape {list(shape)} ({exc})") from None
    sel = selection if isinstance(selection, tuple) else (selection,)
    if not any(isinstance(s, slice) and s.step is not None and s.step < 0 for s in sel):
        return selection, None
    if any(s is Ellipsis for s in sel):
        at = next(i for i, s in enumerate(sel) if s is Ellipsis)
        rest = sum(1 for s in sel if s is not None and s is not Ellipsis)
        sel = (*sel[:at], *[slice(None)] * (len(shape) - rest), *sel[at + 1:])
    ask, then = [], []
    for s, n in zip(sel, shape):
        if isinstance(s, slice) and s.step is not None and s.step < 0:
            idx = range(*s.indices(n))
            if not idx:
                ask.append(slice(0, 0))
                then.append(slice(None))
            else:
                ask.append(slice(idx[-1], idx[0] + 1))
                then.append(slice(None, None, s.step))
        else:
            ask.append(s)
            then.append(slice(None) if isinstance(s, slice) else ())
    then = tuple(t for t in then if t != ())  # integer indices drop their axis in zarr's answer
    return tuple(ask), then


class Item:
    """An opened nzip item: its attributes and lazily read arrays. ``kind``: "zip" (a local .nz
    file), "dir" (a local folder) or "store" (any other zarr store, e.g. remote); the zarr store of
    a local item is made on first use (:attr:`store`), as its streams read without one."""

    def __init__(self, group: zarr.Group | None, path: str, store, attrs: dict[str, Any] | None = None,
                 kind: str = "store") -> None:
        self._group = group  # opened on first use when the item came from its zarr.json alone
        self.path = path
        self._store = store
        self._kind = kind
        self._docs: dict[str, dict | None] = {}  # arrays' parsed zarr.json (local items)
        self._entry_sizes: dict[str, int] | None = None  # a .nz file's bytes per array (array_summary)
        meta = (dict(group.attrs) if attrs is None else attrs).get("nzip")
        if not isinstance(meta, dict) or "codec" not in meta:
            raise CorruptDataError(f"{path}: not an nzip container (no nzip attributes)")
        fmt = meta.get("format")
        if fmt not in READABLE_FORMATS:
            raise UnsupportedFormatError(
                f"{path}: container format {fmt!r}; this nzip reads formats {list(READABLE_FORMATS)}")
        src = meta.get("source", {})
        if (not isinstance(meta["codec"], str) or type(meta.get("codec_version", 1)) is not int
                or not isinstance(meta.get("params", {}), dict) or not isinstance(src, dict)
                or ("shape" in src and not (isinstance(src["shape"], list)
                                            and all(type(n) is int and n >= 0 for n in src["shape"])))):
            raise CorruptDataError(f"{path}: malformed nzip attributes (codec, version, params or source)")
        self.meta = meta
        self._zip: zipfile.ZipFile | None = None  # a .nz file's zip directory (see read_blob)
        self._mm: memoryview | None = None  # and its memory mapping

    def __getstate__(self) -> dict[str, Any]:
        """A local item pickles (DataLoader workers under 'spawn') without its open file handles:
        they are made again on first use."""
        state = dict(self.__dict__)
        if self._kind in ("zip", "dir"):
            state.update(_zip=None, _mm=None, _store=None, _group=None)
        return state

    @property
    def store(self):
        """The item's zarr store (made on first use for a local item)."""
        if self._store is None:
            _zarr()
            from zarr.storage import LocalStore, ZipStore

            with _ZIP_LOCK:
                if self._store is None:
                    self._store = (ZipStore(self.path, mode="r") if self._kind == "zip"
                                   else LocalStore(self.path, read_only=True))
        return self._store

    @property
    def group(self) -> zarr.Group:
        if self._group is None:
            try:
                self._group = _zarr().open_group(store=self.store, mode="r", zarr_format=3)
            except Exception as exc:  # noqa: BLE001
                raise CorruptDataError(f"{self.path}: not an nzip container ({_first_line(exc)})") from None
        return self._group

    def _get(self, key: str) -> bytes | None:
        """The stored bytes under ``key`` (None when absent)."""
        if self._kind == "dir":
            return _file_bytes(self.path, key)
        if self._kind == "zip":
            zf = self._zip_file()
            if key not in zf.NameToInfo:
                return None
            try:
                return zf.read(key)
            except Exception as exc:  # noqa: BLE001 - zipfile raises many types on a damaged entry
                raise CorruptDataError(f"{self.path}: entry {key} is corrupt ({exc})") from None
        return _store_get(self.store, key)

    @property
    def codec(self) -> str:
        return self.meta["codec"]

    @property
    def params(self) -> dict[str, Any]:
        return self.meta.get("params", {})

    @property
    def source(self) -> dict[str, Any]:
        return self.meta.get("source", {})

    def array_names(self) -> list[str]:
        """Names of the zarr arrays (inline streams not included: see :meth:`inline_names`)."""
        names = self._local_children()
        if names is not None:
            return names
        try:
            return sorted(name for name, _ in self.group.arrays())
        except Exception as exc:  # noqa: BLE001 - zarr and zipfile raise many types on damaged metadata
            raise CorruptDataError(f"{self.path}: its arrays cannot be listed ({_first_line(exc)})") from None

    def _local_children(self) -> list[str] | None:
        """The arrays of a local item from its listing and their zarr.json files alone (zarr's own
        walk costs its import and a metadata read per array through its async machinery); None
        where anything is unusual (a child group, metadata that does not parse): zarr then says."""
        if self._kind == "zip":
            keys = self._zip_file().NameToInfo
            kids = [k[:-len(_JSON_SUFFIX) - 1] for k in keys if k.endswith("/" + _JSON_SUFFIX) and k.count("/") == 1]
        elif self._kind == "dir":
            kids = [p.name for p in Path(self.path).iterdir() if (p / _JSON_SUFFIX).is_file()]
        else:
            return None
        for name in kids:
            doc = self._array_doc(name)
            if doc is None or doc.get("zarr_format") != 3 or doc.get("node_type") != "array":
                return None
        return sorted(kids)

    def _array_doc(self, name: str) -> dict | None:
        """An array's zarr.json of a local item, parsed (once); None if absent or not JSON."""
        if self._kind not in ("zip", "dir"):
            return None
        if name not in self._docs:
            try:
                doc = json.loads(self._get(f"{name}/{_JSON_SUFFIX}") or b"")
            except (ValueError, TypeError, CorruptDataError):
                doc = None
            if isinstance(doc, dict) and doc.get("node_type") == "array":
                try:
                    shape = doc["shape"]
                    chunks = doc["chunk_grid"]["configuration"]["chunk_shape"]
                    good = (all(type(n) is int and n >= 0 for n in shape) and len(chunks) == len(shape)
                            and all(type(c) is int and c >= 1 for c in chunks))
                except (KeyError, TypeError):
                    good = True  # not a regular grid: zarr's path reads (and judges) it
                if not good:
                    raise CorruptDataError(f"{self.path}: array {name!r} has a bad shape or chunk shape")
            self._docs[name] = doc if isinstance(doc, dict) else None
        return self._docs[name]

    def array_attrs(self, name: str) -> dict[str, Any]:
        """An array's attributes (from its zarr.json alone for a local item)."""
        doc = self._array_doc(name)
        if doc is not None and doc.get("node_type") == "array" and isinstance(doc.get("attributes", {}), dict):
            return dict(doc.get("attributes", {}))
        return dict(self.array(name).attrs)

    def array_summary(self, name: str) -> dict[str, Any]:
        """Shape, dtype, chunks, number of chunks, stored and raw bytes of an array (what ``nzip
        info`` lists): from its zarr.json and the sizes of its stored keys for a local item,
        through zarr otherwise or where its metadata is anything but a plain regular grid."""
        local = self._local_summary(name)
        if local is not None:
            shape, chunks, dtype, stored = local
            raw = math.prod(shape) * dtype.itemsize
        else:
            a = self.array(name)
            try:
                stored = int(a.nbytes_stored())
            except Exception as exc:  # noqa: BLE001 - a damaged store
                raise CorruptDataError(f"{self.path}: array {name!r} cannot be measured ({_first_line(exc)})") from None
            shape, chunks, dtype, raw = tuple(a.shape), tuple(a.chunks), a.dtype, int(a.nbytes)
        return {"shape": list(shape), "dtype": str(dtype), "chunks": list(chunks),
                "n_chunks": math.prod(-(-s // c) for s, c in zip(shape, chunks)) if shape else 1,
                "stored_bytes": stored, "raw_bytes": raw}

    def _local_summary(self, name: str):
        """(shape, chunks, dtype, stored bytes) of a local item's array with a plain regular grid,
        from its zarr.json and the listing (zarr's ZipStore sizes are the entries' uncompressed
        sizes); None otherwise, and for an array inside a subgroup."""
        doc = self._array_doc(name) if "/" not in name else None
        if doc is None or doc.get("node_type") != "array":
            return None
        try:
            shape = tuple(int(v) for v in doc["shape"])
            chunks = tuple(int(v) for v in doc["chunk_grid"]["configuration"]["chunk_shape"])
            if (doc["data_type"] not in _DIRECT_DTYPES or doc["chunk_grid"]["name"] != "regular"
                    or len(chunks) != len(shape) or min(chunks, default=1) < 1):
                return None
            dtype = np.dtype(doc["data_type"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        if self._kind == "dir":
            return shape, chunks, dtype, _folder_bytes(Path(self.path) / name)
        if self._entry_sizes is None:  # every array's entries summed in one pass over the directory
            sizes: dict[str, int] = {}
            for key, info in self._zip_file().NameToInfo.items():
                top = key.split("/", 1)[0]
                if "/" in key:
                    sizes[top] = sizes.get(top, 0) + info.file_size
            self._entry_sizes = sizes
        return shape, chunks, dtype, self._entry_sizes.get(name, 0)

    def inline_names(self) -> list[str]:
        return sorted(self.meta.get(_INLINE_KEY, {}))

    def _inline(self, name: str) -> bytes | None:
        import base64
        import binascii

        text = self.meta.get(_INLINE_KEY, {}).get(name)
        if text is None:
            return None
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise CorruptDataError(f"{self.path}: inline stream {name!r} is not valid base64") from None

    def array(self, name: str) -> zarr.Array:
        try:
            node = self.group[name]
        except KeyError:
            raise CorruptDataError(f"{self.path}: array {name!r} is missing") from None
        except Exception as exc:  # noqa: BLE001 - zarr's metadata errors
            raise CorruptDataError(f"{self.path}: array {name!r} has bad metadata "
                                   f"({_first_line(exc)})") from None
        if not isinstance(node, _zarr().Array):
            raise CorruptDataError(f"{self.path}: {name!r} is not an array")
        return node

    def read(self, name: str, selection: Any = Ellipsis) -> np.ndarray:
        """Read (part of) an array; a corrupt chunk is reported by its index."""
        if not isinstance(name, str):
            raise InvalidInputError(f"{self.path}: arrays are named by str (see array_names()), got {name!r}")
        data = self._inline(name)
        if data is not None:
            return np.frombuffer(data, np.uint8)[selection]
        if selection is Ellipsis:
            layout = self._direct_layout(name)
            if layout is not None:
                return self._read_direct(name, *layout)
        arr = self.array(name)
        selection, then = _plain_selection(selection, arr.shape, f"{self.path}: array {name!r}")
        parts = selection if isinstance(selection, tuple) else (selection,)
        if any(p is None or (np.asarray(p).dtype == np.bool_ and np.ndim(p)) for p in parts
               if not isinstance(p, slice) and p is not Ellipsis):
            return self.read(name)[selection]  # new axes and masks, which zarr does not take: numpy's
        try:
            out = np.asarray(arr[selection])
        except Exception as exc:  # noqa: BLE001 - zarr raises many types; find the chunk
            raise self._locate(arr, name, exc) from None
        return out if then is None else out[then]

    def rows(self, selection: Any = Ellipsis) -> np.ndarray:
        """The decoded item's rows (an int, a slice or ``...`` over its first axis), reading only
        the chunks they need, for codecs that decode rows alone (array/rans, with any predictor);
        :meth:`read` gives the stored arrays as they are (for a predictor: its residuals)."""
        from ..registry import get

        return get(self.codec).read_rows(self, selection)

    def array_layout(self, name: str) -> tuple[tuple[int, ...], np.dtype]:
        """(shape, dtype) of a stored array: from its zarr.json where nzip reads it directly (no
        zarr array is opened), else zarr's."""
        layout = self._direct_layout(name)
        if layout is not None:
            return layout[0], layout[2]
        a = self.array(name)
        return tuple(int(v) for v in a.shape), np.dtype(a.dtype)

    def _direct_layout(self, name: str) -> tuple[tuple[int, ...], tuple[int, ...], np.dtype] | None:
        """(shape, chunks, dtype) of an array :meth:`_read_direct` can read (nzip.rans + crc32c,
        regular grid, default keys), from its zarr.json alone; None sends the read through zarr
        (which also says what is missing or wrong)."""
        try:
            raw = self._get(f"{name}/{_JSON_SUFFIX}")
        except Exception:  # noqa: BLE001 - a store error: zarr's path reports it
            return None
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
            if (doc.get("zarr_format") != 3 or doc.get("node_type") != "array"
                    or [c.get("name") for c in doc["codecs"]] != ["nzip.rans", "crc32c"]
                    or any(c.get("configuration") for c in doc["codecs"][1:])
                    or doc.get("storage_transformers") or doc["chunk_grid"]["name"] != "regular"
                    or doc["chunk_key_encoding"]["name"] != "default"
                    or doc["chunk_key_encoding"].get("configuration", {}).get("separator", "/") != "/"
                    or not isinstance(doc["data_type"], str) or doc["data_type"] not in _DIRECT_DTYPES):
                return None
            shape = tuple(int(v) for v in doc["shape"])
            chunks = tuple(int(v) for v in doc["chunk_grid"]["configuration"]["chunk_shape"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        if len(chunks) == len(shape) and (min(chunks, default=1) < 1 or min(shape, default=0) < 0):
            raise CorruptDataError(f"{self.path}: array {name!r} has a bad shape or chunk shape")
        if not shape or len(chunks) != len(shape):
            return None
        return shape, chunks, np.dtype(doc["data_type"])

    def _locate(self, arr: zarr.Array, name: str, exc: Exception) -> Exception:
        import itertools

        if min(arr.chunks, default=1) < 1:
            return CorruptDataError(f"{self.path}: array {name!r} has a bad chunk shape {list(arr.chunks)}")
        grid = [range(-(-s // c)) for s, c in zip(arr.shape, arr.chunks)]
        for idx in itertools.product(*grid):
            sel = tuple(slice(i * c, (i + 1) * c) for i, c in zip(idx, arr.chunks))
            try:
                arr[sel]
            except Exception as inner:  # noqa: BLE001
                why = str(inner).split("\n")[0]
                if "checksum" in why.lower():
                    why = "checksum mismatch"
                return CorruptDataError(f"{self.path}: array {name!r} chunk {'.'.join(map(str, idx))} "
                                        f"is corrupt ({why})")
        return CorruptDataError(f"{self.path}: array {name!r} cannot be read ({exc})")

    def _read_direct(self, name: str, shape, chunks, dtype) -> np.ndarray:
        """A whole nzip.rans array chunk by chunk, straight from the store: the same bytes and
        checks as zarr's pipeline, without its per-chunk async machinery (several times faster
        per small item, which is what data loaders read)."""
        from .rans_chunk import decode_chunk

        out = np.empty(shape, dtype=dtype)
        size = int(np.prod(chunks))
        for idx in np.ndindex(*[-(-s // c) for s, c in zip(shape, chunks)]):
            where = f"{self.path}: array {name!r} chunk {'.'.join(map(str, idx))}"
            try:
                full = decode_chunk(self.read_chunk_bytes(name, idx), dtype, size, "chunk").reshape(chunks)
            except CorruptDataError as exc:  # as zarr's path reports it (see _locate)
                msg = str(exc).removeprefix("chunk: ")
                raise CorruptDataError(msg if msg.startswith(where) else f"{where} is corrupt ({msg})") from None
            if tuple(chunks) == tuple(shape):  # one chunk: the decoded array is the result
                return full
            sl = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(idx, chunks, shape))
            out[sl] = full[tuple(slice(0, x.stop - x.start) for x in sl)]
        return out

    def read_chunk_bytes(self, name: str, index: tuple[int, ...]) -> bytes | memoryview:
        """The stored bytes of one chunk of an array (its codec's output, crc32c checked and
        stripped) without decoding it: what a batched GPU decode collects."""
        where = f"{self.path}: array {name!r} chunk {'.'.join(map(str, index))}"
        try:
            buf = self._get("/".join([name, "c", *map(str, index)]))
        except Exception as exc:  # noqa: BLE001
            raise CorruptDataError(f"{where} cannot be read ({exc})") from None
        if buf is None:
            raise CorruptDataError(f"{where} is missing")
        return _strip_crc(buf, where)

    def read_blob(self, name: str, verify: bool = True) -> bytes | memoryview:
        """The bytes of a raw, one-chunk uint8 array (a codec's own stream), read straight from the
        store with its crc32c checked (``verify=False``: not checked, for a codec that finds damage
        stream by stream): no zarr machinery per array, which matters for checkpoints with hundreds
        of tensors. Other stores fall back to :meth:`read`."""
        data = self._inline(name)
        if data is not None:  # the zip entry's CRC-32 (or zarr.json's own parse) covered it
            return memoryview(data)
        key = f"{name}/c/0"
        where = f"{self.path}: array {name!r} chunk 0"
        if self._kind == "zip":
            zf = self._zip_file()
            info = zf.NameToInfo.get(key)
            view = self._mapped(info) if info is not None else None
            if view is not None:  # a stored entry, checked by its own crc32c: no copy
                return _strip_crc(view, where, verify)
            try:
                data = zf.read(key) if info is not None else None
            except Exception as exc:  # noqa: BLE001 - zipfile raises many types on a damaged entry
                raise CorruptDataError(f"{where} is corrupt ({exc})") from None
        elif self._kind == "dir":
            f = Path(self.path) / name / "c" / "0"
            data = f.read_bytes() if f.is_file() else None
        if data is None:
            return self.read(name).tobytes()
        if self._kind == "zip":
            return memoryview(data)[:-4]  # zipfile checked the entry's CRC-32 over these very bytes
        return _strip_crc(data, where, verify)

    def _zip_file(self) -> zipfile.ZipFile:
        """The .nz file's zip directory, parsed once per item (open_item's check keeps its own)."""
        with _ZIP_LOCK:  # tensors decode on several threads; one handle per item
            if self._zip is None:
                try:
                    self._zip = zipfile.ZipFile(self.path)
                except Exception as exc:  # noqa: BLE001 - zipfile raises many types on a damaged file
                    raise CorruptDataError(f"{self.path}: not a readable .nz file ({exc})") from None
            return self._zip

    def _mapped(self, info: zipfile.ZipInfo) -> memoryview | None:
        """A stored (uncompressed) zip entry's bytes as a view of the memory-mapped file, or None
        where it cannot be (a compressed entry, a local header that disagrees with the directory):
        zipfile then reads it. Reading from the mapping skips zipfile's copy and its CRC-32 (the
        chunk's own crc32c, hardware-computed, is checked instead) and shares no file offset, so
        it is safe on threads and in forked data-loader workers."""
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 1:
            return None
        with _ZIP_LOCK:
            if self._mm is None:
                import mmap

                try:
                    with open(self.path, "rb") as f:
                        self._mm = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
                except (OSError, ValueError):
                    return None
            mm = self._mm
        h = info.header_offset
        head = mm[h:h + 30]
        if len(head) < 30 or head[:4] != b"PK\x03\x04":
            return None
        name_len = int.from_bytes(head[26:28], "little")
        start = h + 30 + name_len + int.from_bytes(head[28:30], "little")
        end = start + info.compress_size
        if end > len(mm) or mm[h + 30:h + 30 + name_len] != info.orig_filename.encode():
            return None
        return mm[start:end]

    def stored_bytes(self) -> int:
        """Bytes of the container (the whole file for .nz)."""
        if self._kind == "zip":
            return os.path.getsize(self.path)
        if self._kind == "dir":
            return _folder_bytes(Path(self.path))
        return sum(getattr(a, "nbytes_stored", lambda: 0)() for _, a in self.group.arrays())

    def close(self) -> None:
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()
        if self._zip is not None:
            self._zip.close()
            self._zip = None
        if self._mm is not None:
            mm, self._mm = self._mm, None
            mapping = mm.obj
            with contextlib.suppress(BufferError):  # views of it still held: the GC closes it
                mm.release()
                mapping.close()

    def __enter__(self) -> Item:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _first_line(exc: BaseException) -> str:
    """An exception's message, first line only (its type's name where it has none)."""
    lines = str(exc).splitlines()
    return lines[0] if lines else type(exc).__name__


def _strip_crc(data: bytes, where: str, verify: bool = True) -> memoryview:
    """A stored chunk without its trailing crc32c, once the checksum is verified (if ``verify``)."""
    import crc32c

    if len(data) < 4 or verify and crc32c.crc32c(data[:-4]) != int.from_bytes(data[-4:], "little"):
        raise CorruptDataError(f"{where} is corrupt (checksum mismatch)")
    return memoryview(data)[:-4]


def _folder_bytes(folder: Path) -> int:
    """Bytes of every file under a local folder."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _file_bytes(folder: str, key: str) -> bytes | None:
    """The bytes of ``key`` under a local folder, None when absent."""
    try:
        return (Path(folder) / key).read_bytes()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def _store_get(store, key: str) -> bytes | None:
    """The stored bytes under ``key`` of a zarr store (None when absent)."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    buf = sync(store.get(key, prototype=default_buffer_prototype()))
    return None if buf is None else buf.to_bytes()


def _unchecked_entry(path: str, info: zipfile.ZipInfo) -> bytes:
    """A zip entry's bytes without its CRC-32 check (a damaged entry may still inflate whole)."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        head = f.read(30)
        if len(head) < 30 or head[:4] != b"PK\x03\x04":
            raise ValueError("bad local header")
        f.seek(info.header_offset + 30 + int.from_bytes(head[26:28], "little") + int.from_bytes(head[28:30], "little"))
        data = f.read(info.compress_size)
    if info.compress_type == zipfile.ZIP_STORED:
        return data
    if info.compress_type != zipfile.ZIP_DEFLATED:
        raise ValueError("unsupported compression")
    return zlib.decompressobj(-15).decompress(data)


def open_item(path: str | os.PathLike, lenient: bool = False) -> Item:
    """Open an item for reading; missing, truncated or foreign files raise an NzipError.
    ``lenient``: a local .nz whose metadata entry fails its CRC-32 is still read if it inflates
    and parses (the codec then finds which of its streams are damaged: image/vqgan's restore)."""
    path = os.fspath(path)
    zf = store = None
    kind = "store"
    if _is_url(path):
        _zarr()
        import fsspec
        from zarr.storage import FsspecStore

        fs, p = fsspec.core.url_to_fs(path)
        if not fs.exists(p):
            raise InvalidInputError(f"{path} does not exist")
        if path.endswith(".nz"):
            store = _memory_from_zip(fs.cat_file(p), path)
        else:
            store = FsspecStore.from_url(path, read_only=True)
    else:
        if not os.path.exists(path):
            raise InvalidInputError(f"{path} does not exist")
        if os.path.isdir(path):
            kind = "dir"
        else:
            try:
                zf = zipfile.ZipFile(path)  # the central directory must be intact
            except Exception as exc:  # noqa: BLE001 - zipfile raises many types on a damaged file
                raise CorruptDataError(f"{path}: not a readable .nz file ({exc})") from None
            kind = "zip"
    if not (_is_url(path) and path.endswith(".nz")):  # (a remote .nz is read into a memory store)
        # a .nz file, a directory or a remote folder: the group's zarr.json is the whole of what
        # opening needs (zarr's own open costs a few async round trips and, for a .nz, a second
        # parse of the zip directory per item, which data loaders and checkpoints feel)
        try:
            if zf is not None:
                try:
                    raw = zf.read(_JSON_SUFFIX) if _JSON_SUFFIX in zf.NameToInfo else None
                except zipfile.BadZipFile:
                    if not lenient:
                        raise
                    raw = _unchecked_entry(path, zf.NameToInfo[_JSON_SUFFIX])
            elif kind == "dir":
                raw = _file_bytes(path, _JSON_SUFFIX)
            else:
                raw = _store_get(store, _JSON_SUFFIX)
            doc = json.loads(raw) if raw is not None else None
        except Exception:  # noqa: BLE001 - zarr's open below reports what is wrong
            doc = None
        if isinstance(doc, dict) and doc.get("zarr_format") == 3 and doc.get("node_type") == "group" \
                and isinstance(doc.get("attributes", {}), dict):
            try:
                item = Item(None, path, store, doc.get("attributes", {}), kind)
            except BaseException:
                if zf is not None:
                    zf.close()
                raise
            item._zip = zf  # read_blob reuses it
            return item
    if zf is not None:
        zf.close()
    zarr = _zarr()
    if store is None:
        from zarr.storage import LocalStore, ZipStore

        store = ZipStore(path, mode="r") if kind == "zip" else LocalStore(path, read_only=True)
    try:
        group = zarr.open_group(store=store, mode="r", zarr_format=3)
    except Exception as exc:  # noqa: BLE001
        raise CorruptDataError(f"{path}: not an nzip container ({_first_line(exc)})") from None
    return Item(group, path, store, kind=kind)


def _memory_from_zip(data: bytes, what: str):
    import io

    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import MemoryStore

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            entries = {n: zf.read(n) for n in zf.namelist()}
    except Exception as exc:  # noqa: BLE001 - zipfile raises many types on a damaged file
        raise CorruptDataError(f"{what}: not a readable .nz file ({exc})") from None
    proto = default_buffer_prototype()
    return MemoryStore({k: proto.buffer.from_bytes(v) for k, v in entries.items()}, read_only=True)
