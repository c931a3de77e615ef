"""Checkpoints in and out: safetensors files, torch state dicts, Hugging Face model folders.

Everything becomes a :class:`Checkpoint`: tensors as raw little-endian bytes with a safetensors
dtype code, plus what is needed to give the same file back.

* safetensors: the header is kept verbatim, so a restored file is byte-identical to the original.
* torch (.pt/.pth/.bin): loaded with ``torch.load(weights_only=True)`` (nothing that needs pickle
  beyond plain tensors and containers is accepted); a flat ``{name: tensor}`` dict, optionally with
  JSON-able extras (ints, floats, strings). Tensors that share storage (tied weights) are recorded
  as aliases and restored sharing again; partial overlaps are refused.
* folder: every ``*.safetensors`` shard is read as above; every other file (config, tokenizer,
  index json) is stored as bytes.
"""
from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorruptDataError, InvalidInputError
from .atomic import atomic_file, check_target, publish_mode

# safetensors dtype code -> (bytes per element, numpy dtype used for the raw view or None)
DTYPES: dict[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
MAX_HEADER = 100 << 20


@dataclass
class TensorRecord:
    name: str
    dtype: str  # safetensors code
    shape: list[int]
    data: np.ndarray  # uint8, raw little-endian bytes (empty for an alias)
    file: str = ""  # shard (folder) the tensor lives in
    alias_of: str | None = None  # torch: shares storage with this tensor

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


@dataclass
class Checkpoint:
    kind: str  # "safetensors" | "torch" | "folder"
    tensors: list[TensorRecord]
    headers: dict[str, bytes] = field(default_factory=dict)  # safetensors file -> 8 + header bytes
    files: dict[str, bytes] = field(default_factory=dict)  # folder: other files
    extras: dict[str, Any] = field(default_factory=dict)  # torch: non-tensor JSON-able entries
    gaps: dict[str, list[tuple[int, bytes]]] = field(default_factory=dict)  # bytes no tensor covers
    path: str = ""  # where it was read from (a model folder gives calibration its model)

    @property
    def size(self) -> int:  # elements, for progress bars
        return sum(t.numel for t in self.tensors if t.alias_of is None)

    @property
    def nbytes(self) -> int:
        return (sum(int(t.data.size) for t in self.tensors) + sum(len(h) for h in self.headers.values())
                + sum(len(b) for b in self.files.values())
                + sum(len(g) for gs in self.gaps.values() for _, g in gs))


_NONFINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def extras_to_json(extras: dict[str, Any]) -> dict[str, Any]:
    """A torch checkpoint's non-tensor entries as strict JSON: a non-finite float (a ``best_loss``
    of inf) becomes ``{"float": "inf"}``, as JSON has no NaN or Infinity."""
    out: dict[str, Any] = {}
    for k, v in extras.items():
        if isinstance(v, float) and not math.isfinite(v):
            v = {"float": "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")}
        out[k] = v
    return out


def extras_from_json(obj: Any, where: str) -> dict[str, Any]:
    """The inverse of ``extras_to_json``; anything else in the metadata is corrupt."""
    if not isinstance(obj, dict):
        raise CorruptDataError(f"{where}: the checkpoint's extra entries are not a mapping")
    out: dict[str, Any] = {}
    for k, v in obj.items():
        if isinstance(v, dict) and set(v) == {"float"} and v["float"] in _NONFINITE:
            v = _NONFINITE[v["float"]]
        elif not (isinstance(v, (int, float, str, bool)) or v is None):
            raise CorruptDataError(f"{where}: the checkpoint's extra entry {k!r} is not a number or string")
        out[k] = v
    return out


# ------------------------------------------------------------------------------------------------
# safetensors
# ------------------------------------------------------------------------------------------------


def parse_safetensors(buf: bytes | memoryview, what: str, file: str = "") -> tuple[bytes, list[TensorRecord], list]:
    """(header bytes incl. the 8-byte length, tensors in file order, uncovered data bytes)."""
    mv = memoryview(buf)
    if len(mv) < 8:
        raise InvalidInputError(f"{what}: not a safetensors file (shorter than its length prefix)")
    (hlen,) = struct.unpack("<Q", mv[:8])
    if hlen > MAX_HEADER or 8 + hlen > len(mv):
        raise InvalidInputError(f"{what}: not a safetensors file (header length {hlen} is impossible)")
    try:
        header = json.loads(bytes(mv[8 : 8 + hlen]))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidInputError(f"{what}: not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise InvalidInputError(f"{what}: safetensors header is not a JSON object")
    base = 8 + hlen
    data_len = len(mv) - base
    out = []
    for name, v in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = v["dtype"], [int(s) for s in v["shape"]], v["data_offsets"]
            if not isinstance(dtype, str) or type(start) is not int or type(end) is not int:
                raise TypeError
        except (KeyError, TypeError, ValueError):
            raise InvalidInputError(f"{what}: tensor {name!r} has a malformed header entry") from None
        if dtype not in DTYPES:
            raise InvalidInputError(f"{what}: tensor {name!r} has dtype {dtype}, which nzip does not "
                                    f"support (supported: {', '.join(DTYPES)})")
        n = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if any(s < 0 for s in shape) or not 0 <= start <= end <= data_len or end - start != n * DTYPES[dtype]:
            raise InvalidInputError(f"{what}: tensor {name!r} declares {shape} {dtype} but its byte range "
                                    f"[{start}, {end}) does not fit (file truncated?)")
        out.append(TensorRecord(name, dtype, shape, np.frombuffer(mv[base + start : base + end], np.uint8),
                                file, None))
        out[-1].offset = start  # type: ignore[attr-defined]
    out.sort(key=lambda t: t.offset)  # type: ignore[attr-defined]
    gaps, pos = [], 0
    for t in out:
        if t.offset < pos:  # type: ignore[attr-defined]
            raise InvalidInputError(f"{what}: tensors overlap in the data section")
        if t.offset > pos:  # type: ignore[attr-defined]
            gaps.append((pos, bytes(mv[base + pos : base + t.offset])))  # type: ignore[attr-defined]
        pos = t.offset + t.data.size  # type: ignore[attr-defined]
    if pos < data_len:
        gaps.append((pos, bytes(mv[base + pos :])))
    return bytes(mv[:base]), out, gaps


def _safetensors_bytes(header: bytes, tensors: list[TensorRecord], gaps) -> list[bytes | np.ndarray]:
    """The pieces of a safetensors file, in order, from its verbatim header."""
    hlen = struct.unpack("<Q", header[:8])[0]
    meta = json.loads(header[8 : 8 + hlen])
    by_name = {t.name: t for t in tensors}
    pieces = [(int(v["data_offsets"][0]), by_name[k].data) for k, v in meta.items() if k != "__metadata__"]
    pieces += [(off, g) for off, g in gaps]
    pieces.sort(key=lambda p: p[0])
    return [header] + [p[1] for p in pieces]


# ------------------------------------------------------------------------------------------------
# torch
# ------------------------------------------------------------------------------------------------

_TORCH_TO_CODE = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint8": "U8", "uint16": "U16", "uint32": "U32", "uint64": "U64",
    "bool": "BOOL",
}


def torch_dtype(code: str):
    import torch

    for name, c in _TORCH_TO_CODE.items():
        if c == code:
            return getattr(torch, name)
    raise InvalidInputError(f"dtype {code} has no torch equivalent")


def _read_torch(path: str) -> Checkpoint:
    import pickle
    import re
    import warnings

    import torch

    def why(e: Exception) -> str:  # torch's first plain line, without its terminal colour codes
        lines = [re.sub(r"\x1b\[[0-9;]*m", "", x).strip() for x in str(e).splitlines()]
        return next((x for x in lines if x), type(e).__name__)

    try:
        with warnings.catch_warnings():  # torch's own warnings would add lines to nzip's one-line answer
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"WeightsUnpickler error: ([^\n]*?\.)(?: |$)", str(e))
        if found is None:  # not a refused class: the file is no checkpoint (torch says only its advice)
            raise InvalidInputError(f"{path}: not a readable torch checkpoint") from None
        raise InvalidInputError(f"{path}: refused: it needs pickle beyond plain tensors to load "
                                f"(nzip loads checkpoints with weights_only=True): {found.group(1)}") from None
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError/EOFError/zip errors for bad files
        raise InvalidInputError(f"{path}: not a readable torch checkpoint ({why(e)})") from None
    if hasattr(obj, "state_dict") and not isinstance(obj, dict):
        raise InvalidInputError(f"{path}: holds a whole module, not a state dict")
    if not isinstance(obj, dict):
        raise InvalidInputError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    tensors, extras, seen = [], {}, {}
    for name, v in obj.items():
        if not isinstance(name, str):
            raise InvalidInputError(f"{path}: state dict key {name!r} is not a string")
        if isinstance(v, torch.Tensor):
            if v.is_sparse or v.layout != torch.strided:
                raise InvalidInputError(f"{path}: tensor {name!r} is sparse; only dense tensors are supported")
            if v.device.type == "meta":
                raise InvalidInputError(f"{path}: tensor {name!r} is on the meta device: it has no values to store")
            code = _TORCH_TO_CODE.get(str(v.dtype).removeprefix("torch."))
            if code is None:
                raise InvalidInputError(f"{path}: tensor {name!r} has dtype {v.dtype}, which nzip does not support")
            st = v.untyped_storage()
            key = (st.data_ptr(), v.storage_offset(), tuple(v.shape), tuple(v.stride()), v.dtype)
            if v.numel() and key in seen:
                tensors.append(TensorRecord(name, code, list(v.shape), np.empty(0, np.uint8), "", seen[key]))
                continue
            for (ptr, *_), other in seen.items():
                if v.numel() and ptr == st.data_ptr():
                    raise InvalidInputError(f"{path}: tensors {other!r} and {name!r} share storage in "
                                            "different views; nzip restores only exact aliases")
            if v.numel():
                seen[key] = name
            raw = v.detach().contiguous().reshape(-1).view(torch.uint8).numpy().copy()
            tensors.append(TensorRecord(name, code, list(v.shape), raw))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            extras[name] = v
        else:
            raise InvalidInputError(f"{path}: entry {name!r} is a {type(v).__name__}; nzip stores flat "
                                    "state dicts (tensors plus ints, floats, strings)")
    return Checkpoint("torch", tensors, extras=extras)


def _write_torch(ck: Checkpoint, path: str, overwrite: bool) -> None:
    import torch

    sd: dict[str, Any] = {}
    for t in ck.tensors:
        if t.alias_of is not None:
            sd[t.name] = sd[t.alias_of]
        else:
            sd[t.name] = to_torch(t)
    sd.update(ck.extras)
    with atomic_file(path, overwrite) as f:
        torch.save(sd, f)


def to_torch(t: TensorRecord, device: str = "cpu"):
    import torch

    data = t.data if t.data.flags.writeable else t.data.copy()  # decoded arrays are ours: no copy
    buf = torch.from_numpy(data) if data.size else torch.empty(0, dtype=torch.uint8)
    return buf.view(torch_dtype(t.dtype)).reshape(t.shape).to(device)


def tensor_keys(entries) -> dict[tuple[str, str], str]:
    """State-dict keys of (name, file) pairs: the name, or ``file:name`` for a name that several
    files of a folder share (a diffusers folder's ``unet/`` and ``vae/`` both hold ``conv_in.weight``)."""
    entries = list(entries)
    files: dict[str, set[str]] = {}
    for name, file in entries:
        files.setdefault(name, set()).add(file)
    return {(name, file): f"{file}:{name}" if len(files[name]) > 1 else name for name, file in entries}


def state_dict(ck: Checkpoint, device: str = "cpu", keys: dict[tuple[str, str], str] | None = None) -> dict:
    """``{key: torch tensor}`` of a checkpoint (keys: :func:`tensor_keys`, of the whole checkpoint
    when ``ck`` holds a selection of it); tied names share their target's tensor."""
    if keys is None:
        keys = tensor_keys((t.name, t.file) for t in ck.tensors)
    out = {keys[t.name, t.file]: to_torch(t, device) for t in ck.tensors if t.alias_of is None}
    out.update({keys[t.name, t.file]: out[keys[t.alias_of, t.file]] for t in ck.tensors if t.alias_of is not None})
    return out


# ------------------------------------------------------------------------------------------------
# entry points
# ------------------------------------------------------------------------------------------------


def read_checkpoint(path: str) -> Checkpoint:
    ck = _read_checkpoint(path)
    ck.path = str(path)
    return ck


def _read_checkpoint(path: str) -> Checkpoint:
    p = Path(path)
    if p.is_dir():
        return _read_folder(p)
    if not p.exists():
        raise InvalidInputError(f"{path} does not exist")
    if p.suffix == ".safetensors":
        buf = p.read_bytes()
        header, tensors, gaps = parse_safetensors(buf, path)
        return Checkpoint("safetensors", tensors, headers={"": header}, gaps={"": gaps} if gaps else {})
    if p.suffix in TORCH_SUFFIXES:
        return _read_torch(path)
    raise InvalidInputError(f"{path}: not a checkpoint (expected .safetensors, {', '.join(TORCH_SUFFIXES)} "
                            "or a model folder)")


def _read_folder(root: Path) -> Checkpoint:
    ck = Checkpoint("folder", [])
    files = sorted(f for f in root.rglob("*") if f.is_file())
    if not any(f.suffix == ".safetensors" for f in files):
        raise InvalidInputError(f"{root}: a model folder needs at least one .safetensors file")
    for f in files:
        rel = f.relative_to(root).as_posix()
        if rel.startswith(".") or "/." in rel:
            continue  # .git, .cache: not part of the model
        buf = f.read_bytes()
        if f.suffix == ".safetensors":
            header, tensors, gaps = parse_safetensors(buf, str(f), rel)
            ck.headers[rel] = header
            ck.tensors += tensors
            if gaps:
                ck.gaps[rel] = gaps
        else:
            ck.files[rel] = buf
    _check_index(root, ck)
    return ck


def _check_index(root: Path, ck: Checkpoint) -> None:
    """A sharded model names its shards in *.index.json: every named shard must be there."""
    for rel, buf in ck.files.items():
        if rel.endswith(".safetensors.index.json"):
            try:
                wmap = json.loads(buf).get("weight_map", {})
            except (json.JSONDecodeError, AttributeError):
                raise InvalidInputError(f"{root / rel}: malformed shard index") from None
            missing = sorted(set(wmap.values()) - set(ck.headers))
            if missing:
                raise InvalidInputError(f"{root}: shard {missing[0]} named in {rel} is missing")


def _buffer(piece):
    """A piece of a file to write: bytes, or an array's own memory (no copy, as tobytes made)."""
    return piece if isinstance(piece, bytes) else memoryview(np.ascontiguousarray(piece)).cast("B")


def write_checkpoint(ck: Checkpoint, path: str, overwrite: bool = False) -> None:
    """Write a checkpoint back in its own format, atomically."""
    if ck.kind == "safetensors":
        with atomic_file(path, overwrite) as f:
            for piece in _safetensors_bytes(ck.headers[""], ck.tensors, ck.gaps.get("", [])):
                f.write(_buffer(piece))
    elif ck.kind == "torch":
        _write_torch(ck, path, overwrite)
    elif ck.kind == "folder":
        import shutil
        import tempfile

        _, parent = check_target(path, overwrite)
        tmp = tempfile.mkdtemp(prefix=".nzip-", dir=parent)
        publish_mode(tmp, folder=True)
        try:
            for rel, header in ck.headers.items():
                dst = Path(tmp) / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shard = [t for t in ck.tensors if t.file == rel]
                with open(dst, "wb") as f:
                    for piece in _safetensors_bytes(header, shard, ck.gaps.get(rel, [])):
                        f.write(_buffer(piece))
            for rel, buf in ck.files.items():
                dst = Path(tmp) / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(buf)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.unlink(path)
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    else:
        raise CorruptDataError(f"unknown checkpoint kind {ck.kind!r}")
