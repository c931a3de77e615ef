"""The optional C extensions (``nzip/entropy/_lanes_c.c``, ``nzip/_scan_c.c``): one loader and one
thread pool for both.

setup.py builds them where a compiler is; each is a plain shared library called through ctypes
(which releases the GIL during a call), so work splits over a small persistent pool of threads,
as many as numba's. ``NZIP_NO_C=1`` turns both off (the numba kernels are the fallback).
"""
from __future__ import annotations

import ctypes
import importlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from ._jit import num_threads


def load(module: str) -> ctypes.CDLL | None:
    """The built extension ``module`` (e.g. ``nzip._scan_c``) as a ctypes library; None where it
    was not built, does not load, or ``NZIP_NO_C`` is set."""
    if os.environ.get("NZIP_NO_C", "") not in ("", "0"):
        return None
    try:
        return ctypes.CDLL(importlib.import_module(module).__file__)
    except (ImportError, OSError):
        return None


_pool: ThreadPoolExecutor | None = None
_pool_pid = 0  # a forked child (a DataLoader worker) inherits the pool without its threads
_pool_lock = threading.Lock()  # several callers (tensors, searches) use the pool at once


def threads() -> int:
    return num_threads()


def shared_pool(t: int | None = None) -> ThreadPoolExecutor:
    """The extensions' thread pool, with at least ``t`` (default: numba's count) workers. Work on it
    must not wait on other work on it (callers that queue several calls wait from outside)."""
    global _pool, _pool_pid
    t = threads() if t is None else t
    with _pool_lock:
        if _pool is None or _pool._max_workers < t or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(max_workers=t, thread_name_prefix="nzip-c")
            _pool_pid = os.getpid()
        return _pool


def on_pool(run, n: int) -> None:
    """run(i0, i1) over items 0..n, split in contiguous parts across the thread pool (one call
    where one thread); exceptions propagate."""
    t = min(threads(), n)
    if t <= 1:
        run(0, n)
        return
    pool = shared_pool(t)
    cuts = [n * i // t for i in range(t + 1)]
    for f in [pool.submit(run, cuts[i], cuts[i + 1]) for i in range(t)]:
        f.result()
