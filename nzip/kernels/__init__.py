"""GPU kernels (Triton) for the hot decode steps, each beside its CPU twin.

Every kernel here has a twin written with numpy/numba/torch on the CPU that is both its reference
and the fallback: the dispatchers run the kernel when the data sit on a CUDA device and Triton is
importable, and the twin otherwise, with bit-identical results (integer arithmetic throughout;
float outputs are sums done in the same order on both sides).

    from nzip import kernels
    kernels.rans.decode_blobs(blobs, device="cuda")        # many entropy blobs, one launch
    kernels.gather.pq(codes, codebooks)                    # PQ / VQ / residual-VQ gathers
    kernels.pq_scan.topk(luts, codes, k)                   # asymmetric-distance top-k scan
    kernels.floats.join16(e, sm, lo, ebits)                # weight fields -> bf16/fp16 bits

Tests run each kernel under ``TRITON_INTERPRET=1`` on the CPU (``pytest -k kernel``); setting
``NZIP_KERNELS=0`` forces the twins everywhere, ``NZIP_KERNELS=1`` forces the kernels (on CPU
tensors only under the interpreter).
"""
from __future__ import annotations

import contextlib
import functools
import os

import torch


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # ImportError, or a broken install without its compiler
        return False
    return True


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def use_kernel(device, force: bool | None = None) -> bool:
    """Whether work for ``device`` goes to a Triton kernel (True) or the CPU twin (False)."""
    if force is None:
        env = os.environ.get("NZIP_KERNELS", "")
        force = None if env == "" else env not in ("0", "false", "no")
    if force is False or not triton_available():
        return False
    dev = torch.device(device)
    if dev.type == "cuda":
        return True
    return bool(force) and interpreting()


def on_device(device):
    """Triton launches on the current CUDA device: make it the data's for the launch, so tensors
    on ``cuda:1`` decode there (a no-op for CPU tensors under the interpreter)."""
    dev = torch.device(device)
    return torch.cuda.device(dev) if dev.type == "cuda" else contextlib.nullcontext()


from . import floats, gather, pq_scan, rans  # noqa: E402

__all__ = ["rans", "gather", "pq_scan", "floats", "use_kernel", "on_device", "triton_available", "interpreting"]
