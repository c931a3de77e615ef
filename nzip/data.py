"""PyTorch datasets over nzip data sets (built by ``nzip encode DIR data.nzip --codec NAME``).

    from torch.utils.data import DataLoader
    from nzip.data import ContainerDataset, StreamingDataset, collate

    ds = ContainerDataset("train.nzip")                      # map-style: random access, one item read
    loader = DataLoader(ds, batch_size=32, num_workers=2, shuffle=True, collate_fn=collate)

    ds = StreamingDataset("s3://bucket/train.nzip", shuffle=True, seed=0, batch_size=32)
    loader = DataLoader(ds, batch_size=32, num_workers=2, collate_fn=collate)
    for epoch in range(10):
        ds.set_epoch(epoch)
        for step, batch in enumerate(loader): ...
        state = ds.state_dict(samples_seen=(step + 1) * 32)  # later: ds.load_state_dict(state)

Items come back as ``{"key": relative path, "data": value}``: torch tensors for arrays and images
(``collate`` stacks equal shapes and keeps lists otherwise), a ``{name: tensor}`` state
dict for checkpoints. ``transform`` applies to ``data``.

StreamingDataset splits the data set's shards (halved, never straddling a shard, until each rank
has at least 16 of them) over distributed ranks (every ``world_size``-th shard of the epoch's
shard order, from ``rank``), then over the rank's DataLoader workers the same way, shuffles twice
(the shard order, then a buffer of item indices), seeded by
``(seed, epoch)``, and yields every item exactly once per epoch. Resuming mid-epoch skips item
indices, not decoded items: the same ``num_workers`` and ``batch_size`` give the DataLoader's
exact order back.

``decode_device="cuda"``: workers send ``array/rans`` items still compressed and ``collate`` decodes
the whole batch on the GPU in one rANS kernel launch (other codecs decode in the workers).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset as _MapDataset
from torch.utils.data import IterableDataset, get_worker_info

from . import registry
from .dataset import Dataset, open_dataset
from .errors import CorruptDataError, InvalidInputError, NzipError

__all__ = ["ContainerDataset", "StreamingDataset", "collate", "Compressed"]
ON_ERROR = ("raise", "skip")
MIN_UNITS_PER_RANK = 16


@dataclass
class Compressed:
    """An array/rans item still compressed: chunk blobs for a batched GPU decode in :func:`collate`."""

    key: str
    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[int, ...]
    blobs: list[bytes] = field(default_factory=list)  # one per chunk, in C order of the chunk grid
    predict: str = "none"


def _natural(value: Any) -> Any:
    from .formats.checkpoint import Checkpoint, state_dict

    return state_dict(value) if isinstance(value, Checkpoint) else value


def _compressed(it, key: str) -> Compressed | None:
    """The item's chunk blobs when every chunk is a single rANS blob (else None: decode on the CPU)."""
    from .formats.zarr_codec import SINGLE

    if it.params.get("predict", "none") not in ("none", "delta"):  # med decodes serially: the CPU
        return None
    arr = it.array("symbols")
    grid = [range(-(-s // c)) for s, c in zip(arr.shape, arr.chunks)]
    blobs = []
    for idx in np.ndindex(*[len(g) for g in grid]):
        b = it.read_chunk_bytes("symbols", idx)
        if not len(b) or b[0] != SINGLE:
            return None
        blobs.append(bytes(b[1:]))
    src = it.source
    return Compressed(key, tuple(int(v) for v in arr.shape), src["dtype"], tuple(int(c) for c in arr.chunks),
                      blobs, it.params.get("predict", "none"))


class _Reader:
    """Reads and decodes one item by index, with the error policy; the data set opens lazily (in
    each DataLoader worker, after the fork)."""

    def __init__(self, path, transform, decode_device, on_error) -> None:
        if on_error not in ON_ERROR:
            raise InvalidInputError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.path = os.fspath(path)
        self.transform, self.decode_device, self.on_error = transform, decode_device, on_error
        self._ds: Dataset | None = None
        self.n = open_dataset(self.path).n  # checks the data set now, in the main process

    @property
    def ds(self) -> Dataset:
        if self._ds is None:
            self._ds = open_dataset(self.path)
        return self._ds

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_ds"] = None
        return state

    def get(self, i: int) -> dict[str, Any] | None:
        try:
            with self.ds.open(i) as it:
                key = it.meta.get("key", str(i))
                try:
                    if self.decode_device != "cpu" and it.codec == "array/rans":
                        packed = _compressed(it, key)
                        if packed is not None:
                            return {"key": key, "data": packed}
                    value = registry.get(it.codec).decode(it, device="cpu")
                except NzipError as exc:
                    raise CorruptDataError(f"item {i} ({key}): {exc}") from None
        except NzipError as exc:
            if self.on_error == "skip":
                warnings.warn(f"nzip: skipping {exc}", stacklevel=2)
                return None
            if isinstance(exc, CorruptDataError) and not str(exc).startswith("item "):
                raise CorruptDataError(f"item {i}: {exc}") from None
            raise
        value = _natural(value)
        if isinstance(value, np.ndarray):  # a tensor crosses from a DataLoader worker in shared memory
            value = torch.from_numpy(value if value.flags.writeable and value.flags.c_contiguous
                                     else np.array(value))
        if self.transform is not None:
            value = self.transform(value)
        return {"key": key, "data": value}


class ContainerDataset(_MapDataset):
    """Map-style dataset: ``ds[i]`` reads and decodes item i only. ``on_error="skip"`` returns None
    for a corrupt item (with a warning); :func:`collate` drops Nones."""

    def __init__(self, path: str | os.PathLike, transform: Callable | None = None,
                 decode_device: str = "cpu", on_error: str = "raise") -> None:
        self._r = _Reader(path, transform, decode_device, on_error)

    def __len__(self) -> int:
        return self._r.n

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        if not -self._r.n <= i < self._r.n:
            raise IndexError(f"item {i} of a data set of {self._r.n}")
        return self._r.get(int(i) % self._r.n)

    def keys(self) -> list[str]:
        return self._r.ds.keys


def _buffer_shuffle(seq: list[int], size: int, rng: np.random.Generator) -> list[int]:
    """A shuffle buffer over item indices (what a streaming loader does to items, done to indices
    so a resume can skip without decoding)."""
    out, buf = [], []
    for v in seq:
        if len(buf) < size:
            buf.append(v)
            continue
        j = int(rng.integers(len(buf)))
        out.append(buf[j])
        buf[j] = v
    rng.shuffle(buf)
    return out + buf


class StreamingDataset(IterableDataset):
    """Iterable dataset over a data set's shards: split across ranks and workers, shuffled by
    shard and by a buffer, every item once per epoch, resumable (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, shuffle: bool = True, seed: int = 0, *,
                 shuffle_buffer: int = 1024, batch_size: int = 1, rank: int | None = None,
                 world_size: int | None = None, transform: Callable | None = None,
                 decode_device: str = "cpu", on_error: str = "raise") -> None:
        self._r = _Reader(path, transform, decode_device, on_error)
        if rank is None or world_size is None:
            dist = torch.distributed
            on = dist.is_available() and dist.is_initialized()
            rank = dist.get_rank() if on else 0 if rank is None else rank
            world_size = dist.get_world_size() if on else 1 if world_size is None else world_size
        if not 0 <= rank < world_size:
            raise InvalidInputError(f"rank {rank} is outside 0..{world_size - 1}")
        if batch_size < 1 or shuffle_buffer < 1:
            raise InvalidInputError("batch_size and shuffle_buffer must be >= 1")
        self.shuffle, self.seed, self.buffer = shuffle, int(seed), int(shuffle_buffer)
        self.batch_size, self.rank, self.world_size = int(batch_size), int(rank), int(world_size)
        self.epoch = 0
        self._resume = 0  # samples of this epoch already consumed (applied by the next __iter__)
        self._yielded = 0
        ds = self._r.ds
        # the unit of the split: a shard, halved (staying chunk-aligned: units never straddle a
        # shard) until there are enough units to keep every rank's workers busy on small sets
        unit = ds.shard_size
        while unit > 1 and -(-ds.n // unit) < MIN_UNITS_PER_RANK * self.world_size:
            unit = -(-unit // 2)
        self._units = [range(u, min(sh.stop, u + unit)) for sh in map(ds.shard_range, range(ds.n_shards))
                       for u in range(sh.start, sh.stop, unit)]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._resume = 0

    def _rank_units(self, epoch: int) -> list[range]:
        perm = np.arange(len(self._units))
        if self.shuffle:
            np.random.default_rng([self.seed, epoch]).shuffle(perm)
        return [self._units[k] for k in perm[self.rank::self.world_size]]

    def _items(self, units) -> list[int]:
        return [i for u in units for i in u]

    def order(self, worker: int = 0, workers: int = 1, epoch: int | None = None) -> list[int]:
        """Item indices that DataLoader worker ``worker`` of ``workers`` yields on this rank in an
        epoch, in order."""
        epoch = self.epoch if epoch is None else epoch
        items = self._items(self._rank_units(epoch)[worker::workers])
        if self.shuffle:
            seq = np.random.default_rng([self.seed, epoch, self.rank, worker, workers])
            items = _buffer_shuffle(items, self.buffer, seq)
        return items

    def _skips(self, workers: int) -> list[int]:
        """Items each of this rank's workers had produced when the loader had handed out
        ``self._resume`` samples: the DataLoader takes batches from its workers in turn."""
        left = [len(self.order(w, workers)) for w in range(workers)]
        skip = [0] * workers
        todo = self._resume
        while todo > 0 and any(left):
            for w in range(workers):
                if todo <= 0:
                    break
                if left[w]:
                    b = min(self.batch_size, left[w])
                    if b > todo:
                        raise InvalidInputError(
                            f"samples_seen={self._resume} does not end on a batch of {self.batch_size}")
                    skip[w] += b
                    left[w] -= b
                    todo -= b
        return skip

    def __iter__(self):
        info = get_worker_info()
        workers, w = (info.num_workers, info.id) if info is not None else (1, 0)
        skip = self._skips(workers)[w] if self._resume else 0
        if info is None:
            self._yielded = self._resume
        for i in self.order(w, workers)[skip:]:
            item = self._r.get(i)
            if item is None:
                continue
            if info is None:
                self._yielded += 1
            yield item

    def __len__(self) -> int:
        """Items this rank yields per epoch (all its workers together)."""
        return len(self._items(self._rank_units(self.epoch)))

    def state_dict(self, samples_seen: int | None = None) -> dict[str, Any]:
        """Where this epoch stands. ``samples_seen``: samples this rank's loop has consumed (needed
        with DataLoader workers; without workers the dataset counts them itself)."""
        seen = self._yielded if samples_seen is None else int(samples_seen)
        return {"epoch": self.epoch, "seed": self.seed, "samples_seen": seen,
                "world_size": self.world_size, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state.get("seed", self.seed)) != self.seed:
            raise InvalidInputError(f"state was saved with seed {state['seed']}, this dataset has {self.seed}")
        for k in ("world_size", "batch_size"):
            if k in state and int(state[k]) != getattr(self, k):
                raise InvalidInputError(f"state was saved with {k}={state[k]}, this dataset has "
                                        f"{getattr(self, k)}")
        self.epoch = int(state["epoch"])
        self._resume = int(state["samples_seen"])


def _decode_compressed(items: list[Compressed], device) -> list[torch.Tensor]:
    """All chunks of all items in one rANS kernel launch (or the CPU decoder off a GPU)."""
    from .kernels import rans

    flat = [b for it in items for b in it.blobs]
    outs = rans.decode_blobs(flat, device, what="batch chunk")
    res, k = [], 0
    for it in items:
        grid = [-(-s // c) for s, c in zip(it.shape, it.chunks)]
        full = torch.empty([g * c for g, c in zip(grid, it.chunks)] or [1], dtype=outs[k].dtype, device=device)
        for idx in np.ndindex(*grid):
            sl = tuple(slice(i * c, (i + 1) * c) for i, c in zip(idx, it.chunks))
            full[sl] = outs[k].reshape(it.chunks)
            k += 1
        a = full[tuple(slice(0, s) for s in it.shape)]
        if it.predict == "delta" and a.ndim and a.dtype != torch.bool:
            a = _undelta(a)
        res.append(a)
    return res


def _undelta(d: torch.Tensor) -> torch.Tensor:
    """Inverse of array/rans's wrapping differences, in int64 then wrapped back to the width."""
    bits = torch.iinfo(d.dtype).bits
    v = torch.cumsum(d.to(torch.int64), dim=-1) & ((1 << bits) - 1)
    if d.dtype.is_signed:
        v = torch.where(v >= 1 << (bits - 1), v - (1 << bits), v)
    return v.to(d.dtype)


def collate(batch: list[dict[str, Any] | None], device: str | None = None) -> dict[str, Any]:
    """Batch items: drops Nones (skipped items), decodes :class:`Compressed` items on ``device``
    (default: CUDA when present) in one launch, stacks equal-shape arrays into a tensor and keeps
    a list otherwise."""
    batch = [b for b in batch if b is not None]
    keys = [b["key"] for b in batch]
    data = [b["data"] for b in batch]
    packed = [i for i, d in enumerate(data) if isinstance(d, Compressed)]
    if packed:
        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        for i, t in zip(packed, _decode_compressed([data[i] for i in packed], dev)):
            data[i] = t
    tensors = [torch.from_numpy(d if d.flags.c_contiguous and d.flags.writeable else np.array(d))
               if isinstance(d, np.ndarray) else d for d in data]
    if tensors and all(torch.is_tensor(t) for t in tensors) and len({tuple(t.shape) for t in tensors}) == 1 \
            and len({t.dtype for t in tensors}) == 1:
        # default_collate stacks straight into shared memory inside a DataLoader worker (one copy)
        return {"key": keys, "data": torch.utils.data.default_collate(tensors)}
    return {"key": keys, "data": tensors}
