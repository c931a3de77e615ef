"""The Python API, mirrored by the CLI: encode, decode, open, codecs."""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import dataset, registry
from .errors import CorruptDataError, InvalidInputError, OutputExistsError
from .formats.container import Item, open_item, write_item


@dataclass
class Report:
    """What an encode or decode did: sizes, ratio and time."""

    codec: str
    raw_bytes: int
    stored_bytes: int
    seconds: float

    @property
    def ratio(self) -> float:
        return self.raw_bytes / self.stored_bytes if self.stored_bytes else math.inf


class _Progress:
    """A tqdm bar over items' elements, shown only when asked for and worth showing."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self.bar = None
        self.enabled = enabled
        if enabled and total >= 1 << 22:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="el", unit_scale=True, leave=False)

    def __call__(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def steps(self, total: int, desc: str):
        """A bar over a codec's own long loop (``update(n)``, ``close()``), whatever the item's size;
        a silent one when bars are off."""
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, leave=False, disable=not self.enabled)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _same_file(a: str, b: str) -> bool:
    if "://" in a or "://" in b:
        return a == b
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def _check_not_input(src: str, dst: str, may_hold: bool = False) -> None:
    """Refuse an output that is the input, holds it (replacing a folder would delete the input in
    it; ``may_hold``: the output folder is written into, never replaced) or lies inside an input
    folder (it would be read back as input, or delete it)."""
    if _same_file(src, dst):
        raise OutputExistsError(f"output {dst} is the input; choose another name")
    if "://" in src or "://" in dst:
        return
    s, d = os.path.realpath(src), os.path.realpath(dst)
    if not may_hold and s.startswith(d.rstrip(os.sep) + os.sep):
        raise OutputExistsError(f"output {dst} holds the input {src}; choose another name")
    if os.path.isdir(s) and d.startswith(s.rstrip(os.sep) + os.sep):
        raise OutputExistsError(f"output {dst} lies inside the input folder {src}; choose another place")


def _check_device(device: Any) -> None:
    """A torch device name nzip decodes on ('cpu', 'cuda', 'cuda:1'): others refused up front."""
    import re

    if not re.fullmatch(r"cpu|cuda(:\d+)?", str(device)):  # a name, or a torch.device (its str is one)
        raise InvalidInputError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if str(device) != "cpu":
        import torch

        if not torch.cuda.is_available():
            raise InvalidInputError(f"device {str(device)!r}: CUDA is not available here (use 'cpu')")
        index = torch.device(device).index
        if index is not None and index >= torch.cuda.device_count():
            raise InvalidInputError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} GPU(s)")


def _raw_bytes(source: dict[str, Any]) -> int:
    try:
        return math.prod(source["shape"]) * np.dtype(source["dtype"]).itemsize
    except (KeyError, TypeError):
        return int(source.get("bytes", 0))


def encode(src: Any, dst: str | os.PathLike, codec: str | None = None, *, overwrite: bool = False,
           progress: bool = False, **params: Any) -> Report:
    """Encode a file (or an in-memory item, with ``codec``) into a container at ``dst``.

    ``codec`` None picks the codec from the input's suffix. Parameters go to the codec; unknown
    ones are refused. The container is written atomically; ``dst`` must not be ``src``."""
    t0 = time.perf_counter()
    dst = os.fsdecode(dst)
    if isinstance(src, bytes):
        src = os.fsdecode(src)
    if isinstance(src, (str, os.PathLike)) and os.path.isdir(src) and (
            dst.rstrip("/").endswith(DATASET_SUFFIX) or {"workers", "scheduler"} & set(params)):
        _check_not_input(os.fspath(src), dst)
        return _build_dataset(os.fspath(src), dst, codec, overwrite, progress, params)
    if isinstance(src, (str, os.PathLike)):
        src = os.fspath(src)
        if not os.path.exists(src) and "://" not in src:
            raise InvalidInputError(f"{src} does not exist")
        _check_not_input(src, dst)
        c = registry.get(codec) if codec else registry.for_path(src)
        wanted = {k: params.pop(k) for k in c.read_params if k in params}
        item = c.read(src, **c.check_params(wanted, c.read_params))
    else:
        if codec is None:
            raise InvalidInputError("pass codec= when encoding an in-memory item")
        c, item = registry.get(codec), src
    size = item.numel() if hasattr(item, "numel") else getattr(item, "size", 0)  # torch's size is a method
    size = size if isinstance(size, int) else 0
    bar = _Progress(size, f"encode {c.name}", progress)
    try:
        enc = c.encode(item, progress=bar, **params)
        attrs = {"codec": c.name, "codec_version": c.version, "params": enc.params, "source": enc.source}
        write_item(dst, attrs, enc.arrays, overwrite=overwrite, progress=bar)
    finally:
        bar.close()
    with open_item(dst) as it:
        stored = it.stored_bytes()
    budget = params.get("bpp")
    if budget is not None and enc.source.get("modality") == "image" and not dst.endswith(".nz"):
        bpp = stored * 8 / max(1, math.prod(enc.source["shape"][:2]))
        if bpp > float(budget):
            import warnings

            warnings.warn(f"{c.name}: {dst} takes {bpp:.4f} bpp, over --bpp {budget}: the budget counts a "
                          ".nz file, and a folder or remote item stores more metadata (write a .nz)", stacklevel=2)
    return Report(c.name, _raw_bytes(enc.source), stored, time.perf_counter() - t0)


def decode(src: str | os.PathLike, dst: str | os.PathLike | None = None, *, overwrite: bool = False,
           device: str = "cpu", progress: bool = False, restore: bool = False) -> Any:
    """Decode a container. With ``dst``, write the item there (atomically) and return a
    :class:`Report`; without, return the item itself (e.g. a numpy array). A data set decodes
    into the folder ``dst``, every item under its key. ``restore``: a codec that can rebuild lost
    parts (image/vqgan: damaged index tiles) does so, with a warning, instead of failing."""
    t0 = time.perf_counter()
    src = os.fsdecode(src)
    _check_device(device)
    if dataset.is_dataset(src):
        if dst is None:
            raise InvalidInputError(f"{src} is a data set: decode it into a folder, or read it with "
                                    "nzip.data.ContainerDataset / nzip.dataset.open_dataset")
        _check_not_input(src, os.fspath(dst), may_hold=True)  # items are written into the folder
        ds = dataset.extract(src, dst, overwrite=overwrite, progress=progress)
        return Report(ds.codec, ds.raw_bytes(), ds.stored_bytes(), time.perf_counter() - t0)
    if dst is not None:
        dst = os.fspath(dst)
        _check_not_input(src, dst)
        if os.path.exists(dst) and not overwrite:
            raise OutputExistsError(f"{dst} exists (pass overwrite / --force to replace it)")
    with open_item(src, lenient=restore) as it:
        c = registry.get(it.codec)
        if it.meta.get("codec_version", 1) > c.version:
            from .errors import UnsupportedFormatError

            raise UnsupportedFormatError(
                f"{src}: written by {c.name} version {it.meta['codec_version']}; this nzip has {c.version}")
        if restore and not c.restores:
            raise InvalidInputError(f"{src}: {c.name} cannot restore lost data (only image/vqgan can)")
        if dst is not None:
            c.check_output(it, dst)
        bar = _Progress(math.prod(it.source.get("shape", [0])), f"decode {c.name}", progress)
        try:
            item = c.decode(it, progress=bar, device=device, **({"restore": True} if restore else {}))
        finally:
            bar.close()
        if dst is None:
            return item
        c.write(item, dst, overwrite=overwrite)
        return Report(c.name, _raw_bytes(it.source), it.stored_bytes(), time.perf_counter() - t0)


def open(path: str | os.PathLike) -> Item:  # noqa: A001 - mirrors zarr.open / nzip's CLI
    """Open a container for inspection or partial reads (``item.read(name, selection)``)."""
    return open_item(path)


def info(path: str | os.PathLike) -> dict[str, Any]:
    """Codec, params, source, sizes, ratio and per-array chunking of a container (for a data set:
    its codec, items, shards and sizes)."""
    path = os.fspath(path)
    if dataset.is_dataset(path):
        ds = dataset.open_dataset(path)
        raw, stored = ds.raw_bytes(), ds.stored_bytes()
        return {"path": path, "format": ds.meta.get("format"), "codec": ds.codec, "dataset": True,
                "codec_version": ds.meta.get("codec_version"), "params": ds.meta.get("params", {}),
                "source": {"modality": "dataset", "n_items": ds.n, "shard_size": ds.shard_size,
                           "n_shards": ds.n_shards},
                "stored_bytes": stored, "raw_bytes": raw, "ratio": raw / stored if stored else None,
                "arrays": []}
    with open_item(path) as it:
        arrays = []
        for name in it.array_names():
            arrays.append({"name": name, **it.array_summary(name)})
        for name in it.inline_names():
            n = len(it.read_blob(name))
            arrays.append({"name": name, "shape": [n], "dtype": "uint8", "chunks": [n], "n_chunks": 1,
                           "stored_bytes": n, "raw_bytes": n, "inline": True})
        stored = it.stored_bytes()
        raw = _raw_bytes(it.source)
        extra = {}
        if it.source.get("modality") == "embedding" and it.source.get("shape"):
            n = max(1, int(it.source["shape"][0]))
            codes = sum(a["stored_bytes"] for a in arrays if a["name"] in ("codes", "codes_by_stage"))
            extra = {"bytes_per_vector": stored / n, "code_bytes_per_vector": codes / n}
        elif it.source.get("modality") == "image" and len(it.source.get("shape", [])) >= 2:
            pixels = max(1, int(it.source["shape"][0]) * int(it.source["shape"][1]))
            extra = {"bits_per_pixel": stored * 8 / pixels}  # the whole file, as --bpp counts it
        source = it.source
        if isinstance(source.get("extras"), dict):  # a checkpoint's entries as torch gives them back
            from .formats.checkpoint import extras_from_json
            try:
                source = {**source, "extras": extras_from_json(source["extras"], path)}
            except CorruptDataError:
                pass  # info shows what is stored; decoding reports the damage
        return {**extra, "path": path, "format": it.meta.get("format"), "codec": it.codec,
                "codec_version": it.meta.get("codec_version"), "params": it.params,
                "source": source, "stored_bytes": stored, "raw_bytes": raw,
                "ratio": raw / stored if stored else None, "arrays": arrays}


DATASET_SUFFIX = ".nzip"


def _build_dataset(src: str, dst: str, codec: str | None, overwrite: bool, progress: bool,
                   params: dict[str, Any]) -> Report:
    if codec is None:
        raise InvalidInputError(f"pass --codec to build a data set from the folder {src} (see `nzip codecs`)")
    workers = int(params.pop("workers", 0) or 0)
    scheduler = params.pop("scheduler", None)
    shard = int(params.pop("shard_size", dataset.DEFAULT_SHARD))
    r = dataset.build(src, dst, codec, workers=workers, scheduler=scheduler, shard_size=shard,
                      overwrite=overwrite, progress=progress, **params)
    return Report(r.codec, r.raw_bytes, r.stored_bytes, r.seconds)


def list_codecs() -> dict[str, str]:
    """Registered codecs: name -> modality."""
    return {name: cls.modality for name, cls in registry.available().items()}
