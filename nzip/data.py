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

For the most items per second, use ``nzip.data.DataLoader`` (a drop-in subclass of torch's): its
workers build each batch in one of a ring of shared-memory buffers that they reuse once the main
process has let go of the batch, instead of torch's fresh shared memory per batch (a new segment,
page faults on both sides, a copy to stack the items); with fast codecs that transport costs as
much as the decode. A batch stays valid for as long as anything refers to it (tensor, view, numpy
array, storage): only then is its buffer reused. Small batches travel several to a message (up to
32 items and 8 MiB; for a StreamingDataset from the second epoch on): the loop still gets them one
at a time, in torch's order, and ``len(loader)`` counts them, but torch's per-message cost is paid
once per group.

    loader = nzip.data.DataLoader(ContainerDataset("train.nzip"), batch_size=32, num_workers=2,
                                  shuffle=True)

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
the whole batch on the GPU in one rANS kernel launch (other codecs decode in the workers). With
``nzip.data.DataLoader`` that decode runs in the main process; with torch's DataLoader, ``collate``
runs in the workers, where CUDA cannot start after a fork: there, pass ``collate_fn=lambda b: b``
and call ``collate`` on each batch in the loop.
"""
from __future__ import annotations

import math
import os
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset as _MapDataset
from torch.utils.data import IterableDataset, get_worker_info

from . import registry
from .dataset import Dataset, open_dataset
from .errors import CorruptDataError, InvalidInputError, NzipError

__all__ = ["ContainerDataset", "StreamingDataset", "DataLoader", "collate", "Compressed"]
ON_ERROR = ("raise", "skip")
MIN_UNITS_PER_RANK = 16
RING_SLOTS = 16  # batch buffers per DataLoader worker; more batches held at once fall back to copies
# nzip.data.DataLoader sends small batches of a ContainerDataset several to a message, up to
# GROUP_ITEMS items and GROUP_BYTES decoded bytes (torch's per-message cost is paid once per group)
GROUP_ITEMS = 32
GROUP_BYTES = 8 << 20


@dataclass
class Compressed:
    """An array/rans item still compressed: chunk blobs for a batched GPU decode in :func:`collate`."""

    key: str
    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[int, ...]
    blobs: list[bytes] = field(default_factory=list)  # one per chunk, in C order of the chunk grid
    predict: str = "none"
    source_shape: tuple[int, ...] | None = None  # the item's own shape (a 0-d array is stored as (1,))
    device: str | None = None  # the data set's decode_device ("cuda:1"), which collate decodes on


def _natural(value: Any) -> Any:
    from .formats.checkpoint import Checkpoint, state_dict

    return state_dict(value) if isinstance(value, Checkpoint) else value


def _compressed(it, key: str, device: str | None = None) -> Compressed | None:
    """The item's chunk blobs when every chunk is a single rANS blob (else None: decode on the CPU)."""
    from .formats.rans_chunk import SINGLE

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
                      blobs, it.params.get("predict", "none"), tuple(int(v) for v in src.get("shape", arr.shape)),
                      device)


_WARM = False


def _warm() -> None:
    """Load the entropy layer's compiled decoders now, in the main process: DataLoader workers
    forked from it inherit them, instead of each spending ~0.4 s (numba's cache loading and the
    imports it pulls in) on its first item, every epoch. Single-block work only, so no numba
    thread pool is started before the fork."""
    global _WARM
    if not _WARM:
        from . import entropy

        entropy.decode(entropy.encode(np.arange(64, dtype=np.uint8) % 7))
        _WARM = True


def _tensor(value: Any) -> Any:
    """A numpy array as a torch tensor over its memory (copied only when read-only or not
    C-contiguous); anything else as it is."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value if value.flags.writeable and value.flags.c_contiguous else np.array(value))
    return value


def _stackable(values: list[Any]) -> bool:
    """Whether the values are tensors of one shape and dtype (a batch stacks them)."""
    return bool(values) and all(torch.is_tensor(t) for t in values) \
        and len({(tuple(t.shape), t.dtype) for t in values}) == 1


class _Reader:
    """Reads and decodes one item by index, with the error policy; the data set opens lazily (in
    each DataLoader worker, after the fork)."""

    def __init__(self, path, transform, decode_device, on_error) -> None:
        if on_error not in ON_ERROR:
            raise InvalidInputError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        if decode_device != "cpu" and (transform is not None or on_error != "raise"):
            raise InvalidInputError("decode_device decodes array/rans items in collate, after the workers: a "
                                    "transform or on_error='skip' cannot act on them there; decode on the CPU "
                                    "(decode_device='cpu') to use either")
        self.path = os.fspath(path)
        self.transform, self.decode_device, self.on_error = transform, decode_device, on_error
        self._ds: Dataset | None = None
        self.n = open_dataset(self.path).n  # checks the data set now, in the main process
        _warm()

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
                        packed = _compressed(it, key, str(self.decode_device))
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
        value = _tensor(_natural(value))  # a tensor crosses from a DataLoader worker in shared memory
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
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise TypeError(f"data set items are indexed by int, got {type(i).__name__}")
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
        # epoch, and samples of it already consumed (applied by the next __iter__), in shared
        # memory: persistent DataLoader workers see set_epoch / load_state_dict of the main process
        self._where = torch.zeros(2, dtype=torch.int64).share_memory_()
        self._yielded = 0
        ds = self._r.ds
        # the unit of the split: a shard, halved (staying chunk-aligned: units never straddle a
        # shard) until there are enough units to keep every rank's workers busy on small sets
        unit = ds.shard_size
        while unit > 1 and -(-ds.n // unit) < MIN_UNITS_PER_RANK * self.world_size:
            unit = -(-unit // 2)
        self._units = [range(u, min(sh.stop, u + unit)) for sh in map(ds.shard_range, range(ds.n_shards))
                       for u in range(sh.start, sh.stop, unit)]

    @property
    def epoch(self) -> int:
        return int(self._where[0])

    @epoch.setter
    def epoch(self, value: int) -> None:
        self._where[0] = int(value)

    @property
    def _resume(self) -> int:
        return int(self._where[1])

    @_resume.setter
    def _resume(self, value: int) -> None:
        self._where[1] = int(value)

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch`` (seen by persistent DataLoader workers too)."""
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

    def _skips(self, workers: int) -> tuple[list[int], int]:
        """Items each of this rank's workers had produced when the loader had handed out
        ``self._resume`` samples (the DataLoader takes batches from its workers in turn), and the
        worker whose turn came next."""
        left = [len(self.order(w, workers)) for w in range(workers)]
        skip = [0] * workers
        todo, last = self._resume, -1
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
                    last = w
        return skip, (last + 1) % workers

    def __iter__(self):
        info = get_worker_info()
        workers, w = (info.num_workers, info.id) if info is not None else (1, 0)
        skip = 0
        if self._resume:  # a new loader polls worker 0 first: worker w takes the part of the worker
            skips, turn = self._skips(workers)  # whose turn it was w places later, so the order goes on
            w = (w + turn) % workers
            skip = skips[w]
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
    limits = [math.prod(it.chunks) for it in items for _ in it.blobs]
    outs = rans.decode_blobs(flat, device, what="batch chunk", limits=limits)
    res, k = [], 0
    for it in items:
        target = torch.from_numpy(np.empty(0, np.dtype(it.dtype).newbyteorder("="))).dtype
        out_shape = it.shape if it.source_shape is None else it.source_shape
        if math.prod(it.shape) == 0:  # no chunks stored
            res.append(torch.empty(out_shape, dtype=target, device=device))
            continue
        grid = [-(-s // c) for s, c in zip(it.shape, it.chunks)]
        full = torch.empty([g * c for g, c in zip(grid, it.chunks)] or [1], dtype=outs[k].dtype, device=device)
        for idx in np.ndindex(*grid):
            sl = tuple(slice(i * c, (i + 1) * c) for i, c in zip(idx, it.chunks))
            full[sl] = outs[k].reshape(it.chunks)
            k += 1
        a = full[tuple(slice(0, s) for s in it.shape)]
        if it.predict == "delta" and a.ndim and a.dtype != torch.bool:
            a = _undelta(a, target)
        elif a.dtype != target:  # the stored symbols' type of the same width (e.g. signed)
            a = a.view(target)
        res.append(a.reshape(out_shape))
    return res


def _undelta(d: torch.Tensor, target: torch.dtype | None = None) -> torch.Tensor:
    """Inverse of array/rans's wrapping differences (stored as the same-width signed type), as
    ``target`` (default: d's type): summed in int64, wrapped to the width."""
    target = d.dtype if target is None else target
    bits = 8 * d.element_size()
    v = torch.cumsum(d.to(torch.int64), dim=-1)  # 64 bits: int64's own wrap-around is the width's
    if bits < 64:
        v = v & ((1 << bits) - 1)
        v = torch.where(v >= 1 << (bits - 1), v - (1 << bits), v)
    signed = {8: torch.int8, 16: torch.int16, 32: torch.int32, 64: torch.int64}[bits]
    return v.to(signed).view(target)


def collate(batch: list[dict[str, Any] | None], device: str | None = None) -> dict[str, Any]:
    """Batch items: drops Nones (skipped items), decodes :class:`Compressed` items on ``device``
    (default: the data set's ``decode_device`` where CUDA is present, else the CPU) in one launch,
    stacks equal-shape arrays into a tensor and keeps a list otherwise."""
    batch = [b for b in batch if b is not None]
    keys = [b["key"] for b in batch]
    data = [b["data"] for b in batch]
    packed = [i for i, d in enumerate(data) if isinstance(d, Compressed)]
    if packed:
        dev = device or ((data[packed[0]].device or "cuda") if torch.cuda.is_available() else "cpu")
        for i, t in zip(packed, _decode_compressed([data[i] for i in packed], dev)):
            data[i] = t
    tensors = [_tensor(d) for d in data]
    if _stackable(tensors):
        # default_collate stacks straight into shared memory inside a DataLoader worker (one copy)
        return {"key": keys, "data": torch.utils.data.default_collate(tensors)}
    return {"key": keys, "data": tensors}


# ------------------------------------------------------------------------------------------------
# the batch ring: DataLoader workers build batches in reused shared-memory buffers
# ------------------------------------------------------------------------------------------------


SHM_DIR = "/dev/shm"


def _unlink(paths) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


class _Ring:
    """One DataLoader worker's batch buffers: files in ``/dev/shm`` (named ``prefix``..., which the
    loader chose) mapped shared, reused once the main process has let go of the batch built in
    them. A buffer starts with a 64-byte header whose first int32 is 1 while its batch is out; the
    main process maps each buffer once, then unlinks its name (the mappings stay), and sets the
    flag back to 0 when nothing refers to the batch any more (:func:`_lease`). A batch crosses the
    queue as a few numbers: no fresh shared memory, no file descriptor passed, no mapping made per
    batch. Names the main process never mapped (batches dropped unread) are unlinked by the loader
    (:meth:`DataLoader.__iter__`): a worker may exit before its last batch is read."""

    HEADER = 64

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.bufs: list[tuple[str, torch.Tensor] | None] = [None] * RING_SLOTS

    def flag(self, s: int) -> int:
        buf = self.bufs[s]
        return 0 if buf is None else int(buf[1][:4].view(torch.int32)[0])

    def stack(self, tensors: list[torch.Tensor]) -> dict[str, Any] | None:
        """The tensors stacked into a free buffer, as a message for :func:`_lease` (None when every
        buffer is out)."""
        import tempfile

        s = next((s for s in range(RING_SLOTS) if self.flag(s) == 0), None)
        if s is None:
            return None
        first = tensors[0]
        nbytes = len(tensors) * first.numel() * first.element_size()
        drop = None
        if self.bufs[s] is None or self.bufs[s][1].numel() < self.HEADER + nbytes:
            if self.bufs[s] is not None:
                drop = self.bufs[s][0]  # mapped and unlinked by the main process already
            fd, path = tempfile.mkstemp(dir=SHM_DIR, prefix=self.prefix)
            try:  # claim the pages now: a full /dev/shm fails here, not as SIGBUS on first write
                os.posix_fallocate(fd, 0, self.HEADER + nbytes)
            except OSError:
                _unlink([path])
                return None  # torch's own transport takes this batch
            finally:
                os.close(fd)
            self.bufs[s] = (path, torch.from_file(path, shared=True, size=self.HEADER + nbytes, dtype=torch.uint8))
        path, buf = self.bufs[s]
        out = buf[self.HEADER:self.HEADER + nbytes].view(first.dtype).view(len(tensors), *first.shape)
        torch.stack(tensors, out=out)
        buf[:4].view(torch.int32)[0] = 1
        return {"path": path, "size": buf.numel(), "nbytes": nbytes, "dtype": str(first.dtype).split(".")[1],
                "shape": (len(tensors), *first.shape), "drop": drop}


_RING: _Ring | None = None  # this worker process's ring (None in the main process)


def _batch(items: list[dict[str, Any] | None], prefix: str, ring_only: bool = False) -> dict[str, Any] | None:
    """A batch from decoded items, inside a DataLoader worker: equal-shape tensors go into a ring
    buffer (the batch carries ``"_ring"``, where to find them, instead of ``"data"``); anything
    else through :func:`collate` (``ring_only``: None instead)."""
    global _RING
    items = [b for b in items if b is not None]
    data = [b["data"] for b in items]
    in_worker = get_worker_info() is not None
    if in_worker and any(isinstance(d, Compressed) for d in data):
        # decoded on the GPU by the main process (a forked worker cannot use CUDA)
        return None if ring_only else {"_items": items}
    tensors = [_tensor(d) for d in data]
    if in_worker and os.path.isdir(SHM_DIR) and _stackable(tensors) \
            and all(t.device.type == "cpu" for t in tensors):
        if _RING is None or _RING.prefix != prefix:
            _RING = _Ring(prefix)
        msg = _RING.stack(tensors)
        if msg is not None:
            return {"key": [b["key"] for b in items], "_ring": msg}
    return None if ring_only else collate(items)


def _unlink_unread(prefix: str) -> None:
    """Buffers the main process never mapped (their batches were dropped unread)."""
    import glob

    _unlink(glob.glob(os.path.join(SHM_DIR, glob.escape(prefix) + "*")))


def _release(flag: torch.Tensor) -> None:
    flag[0] = 0


def _lease(batch: Any, maps: dict[str, torch.Tensor], pin: bool = False) -> Any:
    """In the main process: a ring batch becomes ``"data"``, a tensor over the worker's buffer
    (mapped once, kept in ``maps``) through a numpy array whose death (when no tensor, view, array
    or storage refers to it any more) hands the buffer back to the worker."""
    if isinstance(batch, dict) and "_items" in batch:
        return collate(batch["_items"])
    if not isinstance(batch, dict) or "_ring" not in batch:
        return batch
    msg = batch.pop("_ring")
    if msg["drop"] is not None:
        maps.pop(msg["drop"], None)
    buf = maps.get(msg["path"])
    if buf is None:
        buf = maps[msg["path"]] = torch.from_file(msg["path"], shared=True, size=msg["size"], dtype=torch.uint8)
        _unlink([msg["path"]])  # both mappings outlive the name; nothing is left behind in /dev/shm
    flag = buf[:4].view(torch.int32)
    data = buf[_Ring.HEADER:_Ring.HEADER + msg["nbytes"]].view(getattr(torch, msg["dtype"])).view(msg["shape"])
    if pin:  # pinned memory is a copy: the buffer goes back at once
        batch["data"] = data.pin_memory()
        _release(flag)
        return batch
    base = data.flatten().view(torch.uint8).numpy()
    batch["data"] = torch.from_numpy(base).view(data.dtype).view(data.shape)
    weakref.finalize(base, _release, flag)
    return batch


def _split(batch: dict[str, Any], sizes: list[int]):
    """The batches of a group sent as one (see :class:`_Groups`): views of its data."""
    s = 0
    for k in sizes:
        yield {"key": batch["key"][s:s + k], "data": batch["data"][s:s + k]} if k else collate([])
        s += k


def _as_is(batch):
    return batch


class _BatchMap(_MapDataset):
    """A map-style dataset whose ``__getitems__`` returns a whole batch (built by :func:`_batch`),
    or, given the indices of several batches of ``split`` (a :class:`_Groups` message), all of
    them: in one ring buffer with their sizes (``"_sizes"``) when they stack together, else as
    ``"_parts"``, one batch each."""

    def __init__(self, ds, prefix: str, split: int | None = None) -> None:
        self.ds, self.prefix, self.split = ds, prefix, split

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i):
        return self.ds[i]

    def __getitems__(self, indices):
        items = [self.ds[i] for i in indices]
        if self.split is None or len(items) <= self.split:
            return _batch(items, self.prefix)
        return _group([items[s:s + self.split] for s in range(0, len(items), self.split)], self.prefix)


def _group(chunks: list[list[dict[str, Any] | None]], prefix: str) -> dict[str, Any]:
    """Several batches as one message: one ring buffer and their sizes (``"_sizes"``) when all
    their items stack together, else ``"_parts"``, one batch each (:meth:`DataLoader._unpack`)."""
    whole = _batch([it for c in chunks for it in c], prefix, ring_only=True)
    if whole is None:
        return {"_parts": [_batch(c, prefix) for c in chunks]}
    whole["_sizes"] = [sum(b is not None for b in c) for c in chunks]
    return whole


def _group_size(item_bytes: float, batch_size: int) -> int:
    """Batches per message: up to GROUP_ITEMS items and GROUP_BYTES decoded bytes."""
    return max(1, min(GROUP_ITEMS // batch_size, int(GROUP_BYTES // max(1.0, item_bytes * batch_size))))


class _Groups(torch.utils.data.Sampler):
    """A batch sampler for the DataLoader's workers: the index lists of ``group`` consecutive
    batches of ``batches`` (a BatchSampler) joined, so a worker builds and sends them as one
    message; the main process hands them out one batch at a time, in the same order. ``group``
    starts at 1 and is set from the first batches' decoded size (:meth:`fit`)."""

    def __init__(self, batches: torch.utils.data.BatchSampler) -> None:
        self.batches, self.group = batches, 1

    def fit(self, item_bytes: float) -> None:
        self.group = _group_size(item_bytes, self.batches.batch_size)

    def __len__(self) -> int:
        return -(-len(self.batches) // self.group)

    def __iter__(self):
        buf, k = [], 0
        for b in self.batches:
            buf.extend(b)
            k += 1
            if k >= self.group:
                yield buf
                buf, k = [], 0
        if buf:
            yield buf


class _BatchStream(IterableDataset):
    """A StreamingDataset's items, batched inside each worker as torch's DataLoader would; with
    ``group`` > 1 (shared memory, set by the loader between epochs), each worker sends its
    batches ``group`` to a message tagged with its round (``"_round"``), and the main process puts
    them back in torch's order (:func:`_by_round`)."""

    def __init__(self, ds: StreamingDataset, batch_size: int, drop_last: bool, prefix: str) -> None:
        self.ds, self.batch_size, self.drop_last, self.prefix = ds, batch_size, drop_last, prefix
        self.workers = 1
        self.group = torch.ones(1, dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        """Batches per epoch: each worker batches its own items (``workers``: the loader's)."""
        sizes = [len(self.ds.order(w, self.workers)) for w in range(self.workers)]
        bs = self.batch_size
        return sum(n // bs if self.drop_last else -(-n // bs) for n in sizes)

    def __iter__(self):
        info = get_worker_info()
        g = int(self.group[0]) if info is not None else 1
        batches, buf = [], []
        for item in self.ds:
            buf.append(item)
            if len(buf) == self.batch_size:
                batches.append(buf)
                buf = []
            if len(batches) == g:
                yield self._message(batches, g, info)
                batches = []
        if buf and not self.drop_last:
            batches.append(buf)
        if batches:
            yield self._message(batches, g, info)

    def _message(self, batches, g: int, info) -> dict[str, Any]:
        if g == 1:
            return _batch(batches[0], self.prefix)
        msg = _group(batches, self.prefix)
        msg["_round"] = info.id
        return msg


def _by_round(groups: list[list[Any]]):
    """One round of grouped StreamingDataset messages (a group of batches from each worker still
    going, in worker order) in torch's order: batch i of every worker, then batch i + 1."""
    for i in range(max(map(len, groups), default=0)):
        for g in groups:
            if i < len(g):
                yield g[i]


class DataLoader(torch.utils.data.DataLoader):
    """torch's DataLoader over a :class:`ContainerDataset` or :class:`StreamingDataset`, with batches
    built in reused shared-memory buffers (see the module docstring). Takes torch's arguments;
    batches are ``{"key": [...], "data": tensor}`` (or a list where items differ in shape), as with
    :func:`collate`. A ``collate_fn`` of your own gets torch's own path (no buffer reuse). A loop
    left early with persistent workers leaves the buffers of the batches then in flight busy for
    the workers' lifetime (up to ``prefetch_factor`` per worker); past that, batches are copies."""

    def __init__(self, dataset, batch_size: int | None = None, shuffle: bool | None = None, *,
                 collate_fn=None, drop_last: bool = False, **kwargs) -> None:
        if not isinstance(dataset, (ContainerDataset, StreamingDataset)):
            raise InvalidInputError("nzip.data.DataLoader takes a ContainerDataset or StreamingDataset; "
                                    "use torch.utils.data.DataLoader for other datasets")
        import uuid

        prefix = self._prefix = f"nzip-batch-{os.getpid()}-{uuid.uuid4().hex[:12]}-"
        self.nzip_dataset = dataset
        self._groups: _Groups | None = None  # map-style: the batch sampler that groups batches
        self._stream: _BatchStream | None = None
        self._stream_group = 1  # batches per message for the StreamingDataset's next epoch
        if collate_fn is not None:
            super().__init__(dataset, batch_size=batch_size or 1, shuffle=shuffle, collate_fn=collate_fn,
                             drop_last=drop_last, **kwargs)
            return
        if isinstance(dataset, StreamingDataset):
            if batch_size is not None and batch_size != dataset.batch_size:
                raise InvalidInputError(f"batch_size={batch_size} differs from the StreamingDataset's "
                                        f"batch_size={dataset.batch_size} (which its state_dict counts in)")
            if shuffle:
                raise InvalidInputError("a StreamingDataset shuffles itself (StreamingDataset(shuffle=True))")
            for k in ("sampler", "batch_sampler"):
                if kwargs.get(k) is not None:
                    raise InvalidInputError(f"a StreamingDataset takes no {k}")
            stream = self._stream = _BatchStream(dataset, dataset.batch_size, drop_last, prefix)
            stream.workers = max(1, int(kwargs.get("num_workers", 0)))
            super().__init__(stream, batch_size=None, collate_fn=_as_is, **kwargs)
        else:
            bs = 1 if batch_size is None else batch_size
            if kwargs.get("num_workers", 0) > 0 and kwargs.get("batch_sampler") is None and bs < GROUP_ITEMS \
                    and not (shuffle and kwargs.get("sampler") is not None):
                # small batches travel several to a message (see _Groups), in the sampler's order
                from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

                sampler = kwargs.pop("sampler", None)
                if sampler is None:
                    sampler = (RandomSampler(dataset, generator=kwargs.get("generator")) if shuffle
                               else SequentialSampler(dataset))
                self._groups = _Groups(BatchSampler(sampler, bs, drop_last))
                super().__init__(_BatchMap(dataset, prefix, bs), batch_sampler=self._groups, collate_fn=_as_is,
                                 **kwargs)
                for k, v in (("batch_size", bs), ("drop_last", drop_last), ("sampler", sampler)):
                    object.__setattr__(self, k, v)  # what the caller asked for, not the groups'
            else:
                super().__init__(_BatchMap(dataset, prefix), batch_size=bs, shuffle=shuffle, collate_fn=_as_is,
                                 drop_last=drop_last, **kwargs)
        weakref.finalize(self, _unlink_unread, prefix)  # persistent workers' last unread batches

    def __len__(self) -> int:
        if self._groups is not None:
            return len(self._groups.batches)
        return super().__len__()

    def _unpack(self, batch, pin: bool):
        if not isinstance(batch, dict):
            yield batch
        elif "_parts" in batch:
            for part in batch["_parts"]:
                yield _lease(part, self._maps, pin)
        else:
            sizes = batch.pop("_sizes", None)
            if "_ring" in batch:  # learn the decoded item size: how many batches fit a message
                msg = batch["_ring"]
                item_bytes = msg["nbytes"] / max(1, msg["shape"][0])
                if self._groups is not None:
                    self._groups.fit(item_bytes)
                elif self._stream is not None:  # (applied from the next epoch on, to all workers at once)
                    self._stream_group = _group_size(item_bytes, self._stream.batch_size)
            batch = _lease(batch, self._maps, pin)
            if sizes is None:
                yield batch
            else:
                yield from _split(batch, sizes)

    def _rounds(self, it, pin: bool):
        """A StreamingDataset's messages: grouped ones come a round at a time (one from each worker
        still going, in worker order: a worker id not above the last one starts the next round)."""
        pending, last = [], -1
        for msg in it:
            w = msg.pop("_round", None) if isinstance(msg, dict) else None
            if w is None:
                yield from self._unpack(msg, pin)
                continue
            if w <= last:
                yield from _by_round(pending)
                pending = []
            last = w
            pending.append(list(self._unpack(msg, pin)))
        yield from _by_round(pending)

    def __iter__(self):
        if not self.persistent_workers or not hasattr(self, "_maps"):
            self._maps: dict[str, torch.Tensor] = {}  # new workers: their buffers are new files
        pin = self.pin_memory and torch.cuda.is_available()
        if self._stream is not None:
            self._stream.group[0] = self._stream_group if self.num_workers > 0 else 1
        it = super().__iter__()
        try:
            if self._stream is None:
                for batch in it:
                    yield from self._unpack(batch, pin)
            else:
                yield from self._rounds(it, pin)
        finally:
            if not self.persistent_workers and hasattr(it, "_shutdown_workers"):
                it._shutdown_workers()  # a loop left early: no worker writes another buffer
            _unlink_unread(self._prefix)
