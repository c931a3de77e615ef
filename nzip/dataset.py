"""Data sets: a folder of files encoded into one container of items, built in parallel with dask.

    nzip encode photos/ photos.nzip --codec image/vqgan --bpp 0.03 --workers 8
    nzip.dataset.build("arrays/", "s3://bucket/arrays.nzip", codec="array/rans", scheduler="tcp://…")
    ds = nzip.dataset.open_dataset("photos.nzip"); ds.keys[:3]; ds.read(0) -> (key, item)

Layout (a zarr v3 hierarchy in a directory or an object store; never a single .nz file, since many
processes write it at once)::

    photos.nzip/zarr.json                 {"nzip_dataset": {format, codec, codec_version, params,
                                            n_items, shard_size, keys_sha256, complete}}
    photos.nzip/items/00000/zarr.json     shard 0: {"nzip_shard": {"keys": [...], "raw_bytes": [...]}}
    photos.nzip/items/00000/00017/        item 17 of shard 0: an ordinary nzip item (any codec)

Items are sorted by relative path; item ``i`` lives in shard ``i // shard_size``. A shard is one dask
task: it encodes its items, then writes its own ``zarr.json``, which marks it done. Re-running the
same build skips finished shards (an interrupted build resumes; a shard cut off half-way is redone).
The root's ``complete`` flag is set once every shard is there.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import registry
from .errors import CorruptDataError, InvalidInputError, OutputExistsError
from .formats.container import open_item, write_item

FORMAT = 1
DEFAULT_SHARD = 64
_ROOT_KEY, _SHARD_KEY = "nzip_dataset", "nzip_shard"


def is_url(path: str) -> bool:
    return "://" in path


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts]) if is_url(base) else os.path.join(base, *parts)


def item_path(root: str, i: int, shard_size: int) -> str:
    return _join(root, "items", f"{i // shard_size:05d}", f"{i % shard_size:05d}")


def _fs(root: str):
    import fsspec

    return fsspec.core.url_to_fs(root) if is_url(root) else (fsspec.filesystem("file"), root)


def _read_json(root: str, *parts: str) -> dict[str, Any] | None:
    fs, base = _fs(root)
    p = "/".join([base.rstrip("/"), *parts, "zarr.json"]) if is_url(root) else os.path.join(base, *parts, "zarr.json")
    try:
        with fs.open(p, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CorruptDataError(f"{root}: cannot read {'/'.join(parts) or 'the root'} metadata ({exc})") from None


def _write_json(root: str, parts: tuple[str, ...], attrs: dict[str, Any]) -> None:
    """A zarr v3 group's zarr.json, written whole (object stores publish on close; locally a
    temporary file is renamed into place)."""
    doc = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": attrs}).encode()
    fs, base = _fs(root)
    if is_url(root):
        with fs.open("/".join([base.rstrip("/"), *parts, "zarr.json"]), "wb") as f:
            f.write(doc)
        return
    d = Path(base, *parts)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".zarr.json.{os.getpid()}.tmp"
    tmp.write_bytes(doc)
    os.replace(tmp, d / "zarr.json")


def list_inputs(folder: str, codec) -> list[str]:
    """Relative paths (posix) of the files in ``folder`` the codec reads, sorted."""
    suffixes = tuple(codec.suffixes) or tuple(codec.reads)  # a lossy codec's own inputs (image/vqgan's images)
    base = Path(folder)
    out = []
    for p in base.rglob("*"):
        rel = p.relative_to(base)
        if not p.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        if suffixes and not p.name.lower().endswith(suffixes):
            continue
        out.append(rel.as_posix())
    return sorted(out)


@dataclass
class ShardJob:
    root: str
    folder: str
    codec: str
    params: dict[str, Any]
    shard: int
    first: int
    keys: list[str]
    shard_size: int


def encode_shard(job: ShardJob) -> dict[str, Any]:
    """Encode one shard's items and then mark the shard done (a dask task; also run in-process)."""
    c = registry.get(job.codec)
    raw = []
    t0 = time.perf_counter()
    for j, key in enumerate(job.keys):
        src = os.path.join(job.folder, *key.split("/"))
        try:
            with warnings.catch_warnings(record=True) as said:
                warnings.simplefilter("always")
                item = c.read(src)
                enc = c.encode(item, **job.params)
            for w in said:  # each item's own warnings, naming it (Python would show one per message)
                warnings.warn(f"{key}: {w.message}", w.category, stacklevel=2)
        except Exception as exc:  # noqa: BLE001 - name the file whatever went wrong
            from .errors import NzipError

            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            err = type(exc) if isinstance(exc, NzipError) else InvalidInputError
            raise err(f"{key}: {msg}") from None
        attrs = {"codec": c.name, "codec_version": c.version, "params": enc.params, "source": enc.source,
                 "key": key}
        dst = item_path(job.root, job.first + j, job.shard_size)
        if not is_url(dst):
            Path(dst).parent.mkdir(parents=True, exist_ok=True)
        write_item(dst, attrs, enc.arrays, overwrite=True)
        raw.append(_raw_bytes(enc.source))
    _write_json(job.root, ("items", f"{job.shard:05d}"),
                {_SHARD_KEY: {"keys": job.keys, "raw_bytes": raw, "first": job.first}})
    return {"shard": job.shard, "items": len(job.keys), "raw": sum(raw), "seconds": time.perf_counter() - t0}


def _raw_bytes(source: dict[str, Any]) -> int:
    from .api import _raw_bytes as rb

    return int(rb(source))


@dataclass
class BuildReport:
    codec: str
    n_items: int
    n_shards: int
    skipped_shards: int
    raw_bytes: int
    stored_bytes: int
    seconds: float

    @property
    def ratio(self) -> float:
        return self.raw_bytes / self.stored_bytes if self.stored_bytes else float("inf")


def build(folder: str | os.PathLike, dst: str | os.PathLike, codec: str, *, workers: int = 0,
          scheduler: str | None = None, shard_size: int = DEFAULT_SHARD, overwrite: bool = False,
          progress: bool = False, **params: Any) -> BuildReport:
    """Encode every file of ``folder`` the codec reads into the data set ``dst``.

    ``workers`` > 0 starts a local dask cluster of that many processes; ``scheduler`` uses an
    existing dask.distributed cluster (its workers must see ``folder`` and ``dst``); neither runs
    the shards in this process. An existing ``dst`` built from the same files (names, sizes and
    modification times) with the same codec and parameters is resumed; anything else there is
    refused unless ``overwrite``, which rebuilds it whole."""
    t0 = time.perf_counter()
    folder, dst = os.fspath(folder), os.fspath(dst)
    if not os.path.isdir(folder):
        raise InvalidInputError(f"{folder} is not a folder")
    if dst.endswith(".nz"):
        raise InvalidInputError(f"{dst}: a data set is a directory or an object-store prefix (many "
                                "writers at once), not a .nz file; name it e.g. data.nzip")
    if not is_url(dst) and os.path.abspath(dst).startswith(os.path.abspath(folder) + os.sep):
        raise InvalidInputError(f"{dst} lies inside the input folder {folder}")
    if shard_size < 1:
        raise InvalidInputError("shard_size must be >= 1")
    c = registry.get(codec)
    try:
        json.dumps(params)
    except TypeError:
        raise InvalidInputError("data set parameters must be plain values (numbers, strings), as on "
                                "the command line") from None
    if not is_url(dst) and os.path.exists(dst) and not os.path.isdir(dst):
        if not overwrite:
            raise OutputExistsError(f"{dst} exists and is not a data set (pass overwrite / --force)")
        os.remove(dst)
    keys = list_inputs(folder, c)
    if not keys:
        raise InvalidInputError(f"{folder} holds no files that {c.name} reads")
    digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()
    stamps = hashlib.sha256()  # sizes and modification times: a changed file is not resumed past
    for k in keys:
        st = os.stat(os.path.join(folder, k))
        stamps.update(f"{k}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    meta = {"format": FORMAT, "codec": c.name, "codec_version": c.version, "params": params,
            "n_items": len(keys), "shard_size": shard_size, "keys_sha256": digest,
            "inputs_sha256": stamps.hexdigest()}
    old = _read_json(dst)
    replacing = None
    fresh = old is None and (is_url(dst) or not os.path.exists(dst) or not os.listdir(dst))
    if old is None and not is_url(dst) and os.path.isdir(dst) and os.listdir(dst):
        raise OutputExistsError(f"{dst} is a folder that is not an nzip data set; nzip will not replace it "
                                "(remove it or choose another name)")
    if old is not None:
        prev = old.get("attributes", {}).get(_ROOT_KEY)
        same = prev is not None and {k: prev.get(k) for k in meta} == meta
        if not same or overwrite:  # overwrite replaces, it never resumes
            if not overwrite:
                raise OutputExistsError(f"{dst} exists and was not built from these files with these "
                                        "settings (pass overwrite / --force to replace it)")
            if is_url(dst):
                fs, p = _fs(dst)
                fs.rm(p, recursive=True)
            else:  # built beside it and swapped in at the end: a failed rebuild keeps the old one
                replacing = dst
                dst = os.path.join(os.path.dirname(os.path.abspath(dst)), f".{os.path.basename(dst)}.rebuild")
                shutil.rmtree(dst, ignore_errors=True)
                fresh = True
    _write_json(dst, (), {_ROOT_KEY: {**meta, "complete": False}})
    n_shards = -(-len(keys) // shard_size)
    jobs = []
    for s in range(n_shards):
        if _read_json(dst, "items", f"{s:05d}") is not None:
            continue
        first = s * shard_size
        jobs.append(ShardJob(dst, folder, c.name, dict(params), s, first, keys[first:first + shard_size],
                             shard_size))
    try:
        _run(jobs, workers, scheduler, progress, len(keys))
    except BaseException:
        if replacing is not None or (
                fresh and not any(_read_json(dst, "items", f"{s:05d}") is not None for s in range(n_shards))):
            fs, p = _fs(dst)  # nothing finished (or a rebuild beside the old one): leave no half data
            fs.rm(p, recursive=True)  # set to block the corrected build
        raise
    _write_json(dst, (), {_ROOT_KEY: {**meta, "complete": True}})
    if replacing is not None:
        gone = os.path.join(os.path.dirname(dst), f".{os.path.basename(replacing)}.old")
        shutil.rmtree(gone, ignore_errors=True)
        os.replace(replacing, gone)
        os.replace(dst, replacing)
        shutil.rmtree(gone, ignore_errors=True)
        dst = replacing
    ds = open_dataset(dst)
    return BuildReport(c.name, len(keys), n_shards, n_shards - len(jobs), ds.raw_bytes(), ds.stored_bytes(),
                       time.perf_counter() - t0)


def _run(jobs: list[ShardJob], workers: int, scheduler: str | None, progress: bool, total: int) -> None:
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(len(j.keys) for j in jobs), desc="encode items", unit="item", leave=False)
    try:
        if not jobs:
            return
        if not workers and not scheduler:
            for j in jobs:
                encode_shard(j)
                if bar is not None:
                    bar.update(len(j.keys))
            return
        try:
            from dask.distributed import Client, LocalCluster, as_completed
        except ImportError:
            raise InvalidInputError("--workers / --scheduler need dask: pip install 'dask[distributed]'") from None
        cluster = None
        if scheduler:
            client = Client(scheduler)
        else:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None)
            client = Client(cluster)
        try:
            futures = client.map(encode_shard, jobs, pure=False)
            for fut in as_completed(futures):
                res = fut.result()  # re-raises a task's error here
                if bar is not None:
                    bar.update(res["items"])
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    finally:
        if bar is not None:
            bar.close()


class Dataset:
    """An opened data set: its keys and shards; items open lazily, one at a time."""

    def __init__(self, root: str) -> None:
        self.root = os.fspath(root)
        doc = _read_json(self.root)
        meta = (doc or {}).get("attributes", {}).get(_ROOT_KEY)
        if doc is None:
            raise InvalidInputError(f"{self.root} does not exist or is not an nzip data set")
        if not isinstance(meta, dict):
            raise CorruptDataError(f"{self.root}: not an nzip data set (no nzip_dataset attributes)")
        if meta.get("format") != FORMAT:
            from .errors import UnsupportedFormatError

            raise UnsupportedFormatError(f"{self.root}: data set format {meta.get('format')!r}; this "
                                         f"nzip reads {FORMAT}")
        if not meta.get("complete"):
            raise CorruptDataError(f"{self.root}: the build did not finish (re-run the same "
                                   "`nzip encode` to resume it)")
        self.meta = meta
        self.n = int(meta["n_items"])
        self.shard_size = int(meta["shard_size"])
        self.codec = str(meta["codec"])
        self._keys: list[str] | None = None
        self._raw: list[int] | None = None

    @property
    def n_shards(self) -> int:
        return -(-self.n // self.shard_size)

    def shard_range(self, s: int) -> range:
        return range(s * self.shard_size, min(self.n, (s + 1) * self.shard_size))

    def _load_index(self) -> None:
        keys, raw = [], []
        for s in range(self.n_shards):
            doc = _read_json(self.root, "items", f"{s:05d}")
            sh = (doc or {}).get("attributes", {}).get(_SHARD_KEY)
            if not isinstance(sh, dict) or len(sh.get("keys", [])) != len(self.shard_range(s)):
                raise CorruptDataError(f"{self.root}: shard {s} is missing or malformed")
            keys += sh["keys"]
            raw += sh.get("raw_bytes", [0] * len(sh["keys"]))
        self._keys, self._raw = keys, raw

    @property
    def keys(self) -> list[str]:
        if self._keys is None:
            self._load_index()
        return self._keys

    def raw_bytes(self) -> int:
        if self._raw is None:
            self._load_index()
        return int(sum(self._raw))

    def stored_bytes(self) -> int:
        fs, p = _fs(self.root)
        return int(fs.du(p, total=True))

    def path(self, i: int) -> str:
        if not 0 <= i < self.n:
            raise IndexError(f"item {i} of a data set of {self.n}")
        return item_path(self.root, i, self.shard_size)

    def open(self, i: int):
        """The item's container (an :class:`nzip.formats.container.Item`)."""
        return open_item(self.path(i))

    def read(self, i: int, device: str = "cpu") -> tuple[str, Any]:
        """(key, decoded item) of item ``i``: reads only that item's arrays."""
        with self.open(i) as it:
            key = it.meta.get("key", str(i))
            return key, registry.get(it.codec).decode(it, device=device)

    def __len__(self) -> int:
        return self.n


def open_dataset(root: str | os.PathLike) -> Dataset:
    return Dataset(os.fspath(root))


def is_dataset(path: str | os.PathLike) -> bool:
    path = os.fspath(path)
    if path.endswith(".nz") or (not is_url(path) and not os.path.isdir(path)):  # no read for files
        return False
    try:
        doc = _read_json(path)
    except Exception:  # noqa: BLE001
        return False
    return bool(doc and _ROOT_KEY in doc.get("attributes", {}))


def extract(root: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False,
            progress: bool = False) -> Dataset:
    """Decode every item of a data set into ``out_dir`` under its key; returns the data set."""
    ds = open_dataset(root)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    it = range(ds.n)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="decode items", unit="item", leave=False)
    for i in it:
        with ds.open(i) as item:
            key = item.meta.get("key", f"{i:08d}")
            if key.startswith("/") or ".." in key.split("/"):
                raise CorruptDataError(f"{ds.root}: item {i} has an unsafe key {key!r}")
            c = registry.get(item.codec)
            value = c.decode(item)
        dst = out_dir.joinpath(*key.split("/"))
        dst.parent.mkdir(parents=True, exist_ok=True)
        c.write(value, str(dst), overwrite=overwrite)
    return ds
