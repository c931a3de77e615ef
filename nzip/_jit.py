"""numba, imported on first use.

Importing numba costs ~0.3 s and its first call in a process ~0.5-1 s more (its compiler's
registries load even for cached functions), while a restore that the C extensions decode never
runs a numba kernel. So nzip's modules write ``from .._jit import nb`` and decorate with
``@nb.njit(...)`` as usual: until a kernel is first called, ``nb.njit`` only records the function
(a :class:`LazyDispatcher`). The first call of any of them imports numba, makes the real
dispatchers of every recorded function, and puts them and the numba module in place of the
stand-ins in every ``nzip`` module's globals, before anything compiles, so kernels that call each
other (and ``nb.prange``) resolve to the real objects when numba compiles them. Functions decorated
once numba is loaded get real dispatchers directly.
"""
from __future__ import annotations

import os
import sys
import threading

_numba = None
_pending: list[LazyDispatcher] = []
_lock = threading.Lock()


class LazyDispatcher:
    """A stand-in for ``numba.njit(**opts)(py_func)`` until numba is loaded; calls and attribute
    reads (``.py_func`` aside) go to the real dispatcher, made on first use."""

    def __init__(self, py_func, opts: dict) -> None:
        self.py_func, self.opts, self.real = py_func, opts, None
        self.__name__, self.__qualname__ = py_func.__name__, py_func.__qualname__
        self.__module__, self.__doc__ = py_func.__module__, py_func.__doc__

    def __call__(self, *args, **kwargs):
        if self.real is None:
            load()
        return self.real(*args, **kwargs)

    def __getattr__(self, name: str):
        if name == "real":  # (read before __init__ set it, e.g. while copying)
            raise AttributeError(name)
        if self.real is None:
            load()
        return getattr(self.real, name)

    def __repr__(self) -> str:
        return f"<lazy numba kernel {self.__module__}.{self.__qualname__}>"


def njit(*args, **opts):
    """``numba.njit``, deferred: ``@njit(**opts)`` or ``@njit``."""
    if args and callable(args[0]) and not opts:
        return njit()(args[0])

    def decorate(fn):
        with _lock:
            if _numba is not None:
                return _numba.njit(**opts)(fn)
            d = LazyDispatcher(fn, opts)
            _pending.append(d)
            return d

    return decorate


class _LazyNumba:
    """What nzip's modules call ``nb``: ``nb.njit`` defers; any other attribute loads numba."""

    njit = staticmethod(njit)

    def __getattr__(self, name: str):
        return getattr(load(), name)

    def __repr__(self) -> str:
        return "<numba, not imported yet>"


nb = _LazyNumba()


def load():
    """numba, imported now if it was not: every recorded kernel's dispatcher made and swapped in."""
    global _numba
    if _numba is not None:
        return _numba
    with _lock:
        if _numba is None:
            import numba

            stand_in = nb
            for d in _pending:
                d.real = numba.njit(**d.opts)(d.py_func)
            for name, mod in list(sys.modules.items()):
                if mod is None or name == __name__ or not (name == "nzip" or name.startswith("nzip.")):
                    continue
                g = vars(mod)
                for k, v in list(g.items()):
                    if v is stand_in:
                        g[k] = numba
                    elif isinstance(v, LazyDispatcher) and v.real is not None:
                        g[k] = v.real
            _pending.clear()
            _numba = numba
    return _numba


def loaded() -> bool:
    """Whether numba has been imported (by nzip or anyone else in this process)."""
    return _numba is not None or sys.modules.get("numba") is not None


def num_threads() -> int:
    """numba's thread count, without importing numba where nothing has: its default (the CPUs
    this process may run on, or ``NUMBA_NUM_THREADS``)."""
    numba = sys.modules.get("numba")
    if numba is not None:
        return max(1, int(numba.get_num_threads()))
    env = os.environ.get("NUMBA_NUM_THREADS", "")
    if env.strip().isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)
