"""Checkpoints as state dicts: lazy restore from an nzip container.

    sd = nzip.weights.load("model.nz")                         # every tensor
    sd = nzip.weights.load("model.nz", names=["lm_head.weight"])  # decodes only that one
    nzip.weights.tensors("model.nz")                           # names, dtypes, shapes, sizes

Works for any weights codec (``weights/lossless`` gives the exact tensors back; lossy codecs give
their reconstruction). Tied weights come back as one tensor under both names.
"""
from __future__ import annotations

import os
from typing import Any

from . import registry
from .errors import InvalidInputError
from .formats.checkpoint import state_dict
from .formats.container import open_item

__all__ = ["load", "tensors"]


def load(path: str | os.PathLike, names=None, device: str = "cpu") -> dict[str, Any]:
    """A ``{name: torch.Tensor}`` state dict, decoding only the tensors in ``names`` (all if None;
    one name may be given as a string). In a folder whose files share a tensor name, those tensors
    are keyed ``file:name`` (e.g. ``unet/diffusion_pytorch_model.safetensors:conv_in.weight``).

    On a CUDA ``device`` a weights/lossless container decodes on the GPU (rANS lane and float
    kernels, ``nzip.kernels``): the compressed bytes travel, the tensors are born on the device."""
    # (torch and the GPU kernels: imported when a load needs them, not by `import nzip`, so
    # `nzip decode` to a file starts faster)
    from .api import _check_device
    from .codecs.weights_lossless import entry_ident, manifest_keys
    from .kernels import use_kernel

    _check_device(device)
    if isinstance(names, str):
        names = [names]
    elif names is not None:
        names = list(names)  # a generator is read once, here
    with open_item(os.fspath(path)) as it:
        if it.source.get("modality") != "weights":
            raise InvalidInputError(f"{path}: holds {it.source.get('modality', 'no')} data, not weights")
        codec = registry.get(it.codec)
        if it.codec == "weights/lossless" and use_kernel(device):
            from .codecs.weights_lossless import load_device

            out = load_device(it, names, device)
            return out if names is None else {n: out[n] for n in names}
        keys = {entry_ident(m): k for k, m in manifest_keys(it)}
        ck = codec.decode(it, names=names)
    out = state_dict(ck, device, keys)
    if names is not None:
        out = {n: out[n] for n in names}
    return out


def tensors(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every tensor of a weights container: name, dtype, shape, raw and stored bytes."""
    with open_item(os.fspath(path)) as it:
        from .codecs.weights_lossless import manifest_keys

        rows = []
        for key, m in manifest_keys(it):
            raw = 0 if m.get("alias_of") else int(it.array_attrs(m["array"]).get("raw_bytes", 0))
            stored = int(it.array_summary(m["array"])["stored_bytes"]) if m.get("array") else 0
            rows.append({"name": m["name"], "key": key, "file": m.get("file", ""), "dtype": m["dtype"],
                         "shape": m["shape"], "raw_bytes": raw, "stored_bytes": stored,
                         "alias_of": m.get("alias_of")})
        return rows
