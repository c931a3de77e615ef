"""Search an embedding container without decompressing it: asymmetric-distance lookup tables and a
top-k scan over the codes (numba, parallel over queries).

    ids, scores = nzip.search("passages.nz", queries, k=10)
    index = nzip.open_index("passages.nz")   # decode the codes once, search many times
    ids, scores = index.search(queries, k=10, rerank=vectors)   # exact re-rank of the candidates

Scores are inner products (``metric=ip``, the default for unit-norm vectors) or minus squared L2
distances; higher is better. ``rerank`` takes the float vectors the user kept (n x d) and re-scores
the best ``k * rerank_factor`` candidates exactly.
"""
from __future__ import annotations

import ctypes
import os
from typing import Any

import numpy as np

from ._jit import nb
from ._native import load, on_pool
from .errors import InvalidInputError
from .formats.container import open_item

_JIT = dict(cache=True, nogil=True, boundscheck=False)

# the C scan (nzip/_scan_c.c, AVX2: eight rows per gather, and an early exit for residual
# indexes; the same scores and ids as the numba scan below, which is the fallback: no compiler,
# no AVX2, or NZIP_NO_C=1)
_clib = load("nzip._scan_c")
if _clib is not None:
    _clib.nz_scan_simd.restype = ctypes.c_int
    _clib.nz_adc_topk.restype = ctypes.c_uint64
    _P, _U64 = ctypes.c_void_p, ctypes.c_uint64
    _clib.nz_adc_topk.argtypes = [_P, _P, _U64, _U64, _P, _P, _U64, _P, _U64, _P, _P, _P, _P, _U64, _U64, _U64,
                                  ctypes.c_int]
    if not _clib.nz_scan_simd():
        _clib = None  # the scalar C loop is no faster than numba's
c_scan = _clib is not None


@nb.njit(**_JIT)
def _insert(best_s, best_i, s, r):
    """Put score s of row r in place of the weakest kept one (lowest score, then highest id);
    returns the new weakest score. Rare after the first rows, so it scans the k kept."""
    k = best_s.shape[0]
    w = 0
    for t in range(1, k):
        if best_s[t] < best_s[w] or (best_s[t] == best_s[w] and best_i[t] > best_i[w]):
            w = t
    best_s[w] = s
    best_i[w] = r
    worst = best_s[0]
    for t in range(1, k):
        worst = min(worst, best_s[t])
    return worst


@nb.njit(**_JIT)
def _finish(best_s, best_i, out_i, out_s):
    """Selection sort of the kept (k is small): by score, then id."""
    k = best_s.shape[0]
    for t in range(k):
        b = t
        for u in range(t + 1, k):
            if best_s[u] > best_s[b] or (best_s[u] == best_s[b] and best_i[u] < best_i[b]):
                b = u
        best_s[t], best_s[b] = best_s[b], best_s[t]
        best_i[t], best_i[b] = best_i[b], best_i[t]
        out_i[t] = best_i[t]
        out_s[t] = best_s[t]


@nb.njit(**_JIT)
def _scan_one(codes, offs, lut, scale, k, out_i, out_s):
    """Top-k of sum_j lut[offs[j] + codes[n, j]] (times scale[n] when scale is not empty) over all
    n (ties: the lower id first). (Summing four rows side by side, for independent add chains,
    measured 4.5x slower than this loop.)"""
    n, m = codes.shape
    best_s = np.full(k, -np.inf, np.float32)
    best_i = np.full(k, -1, np.int64)
    worst = np.float32(-np.inf)
    scaled = scale.shape[0] > 0
    for r in range(n):
        s = np.float32(0)
        for j in range(m):
            s += lut[offs[j] + codes[r, j]]
        if scaled:
            s *= scale[r]
        if s > worst:
            worst = _insert(best_s, best_i, s, r)
    _finish(best_s, best_i, out_i, out_s)


@nb.njit(**_JIT)
def _scan_two(codes, offs, lut_a, lut_b, scale, k, ia, sa_out, ib, sb_out):
    """:func:`_scan_one` for two queries in one pass over the codes: each row's codes are read
    once, and the two sums are independent add chains (1.4-1.5x the speed of two passes). Each
    sum adds in the same order as ``_scan_one``'s, so the results are the same bits."""
    n, m = codes.shape
    bsa = np.full(k, -np.inf, np.float32)
    bia = np.full(k, -1, np.int64)
    bsb = np.full(k, -np.inf, np.float32)
    bib = np.full(k, -1, np.int64)
    wa = np.float32(-np.inf)
    wb = np.float32(-np.inf)
    scaled = scale.shape[0] > 0
    for r in range(n):
        sa = np.float32(0)
        sb = np.float32(0)
        for j in range(m):
            i = offs[j] + codes[r, j]
            sa += lut_a[i]
            sb += lut_b[i]
        if scaled:
            sa *= scale[r]
            sb *= scale[r]
        if sa > wa:
            wa = _insert(bsa, bia, sa, r)
        if sb > wb:
            wb = _insert(bsb, bib, sb, r)
    _finish(bsa, bia, ia, sa_out)
    _finish(bsb, bib, ib, sb_out)


@nb.njit(parallel=True, **_JIT)
def _scan(codes, offs, lut, scale, k, out_i, out_s):
    nq = lut.shape[0]
    for p in nb.prange((nq + 1) // 2):
        a = 2 * p
        if a + 1 < nq:
            _scan_two(codes, offs, lut[a], lut[a + 1], scale, k, out_i[a], out_s[a], out_i[a + 1], out_s[a + 1])
        else:
            _scan_one(codes, offs, lut[a], scale, k, out_i[a], out_s[a])


def adc_topk(codes: np.ndarray, offs: np.ndarray, lut: np.ndarray, k: int,
             scale: np.ndarray | None = None, codes_t: np.ndarray | None = None,
             force_numba: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(ids, scores), each (q, k): the k codes with the highest summed table entries per query
    (each sum multiplied by ``scale[n]`` in float32 when given: cosine scores of normalised
    indexes). ``codes_t``: the uint8 codes stage-major (m x n), for the C scan (made here when
    not given)."""
    q = lut.shape[0]
    ids = np.empty((q, k), np.int64)
    scores = np.empty((q, k), np.float32)
    if not q:
        return ids, scores
    sc = np.zeros(0, np.float32) if scale is None else np.ascontiguousarray(scale, np.float32)
    lut = np.ascontiguousarray(lut, np.float32)
    offs = np.ascontiguousarray(offs, np.int64)
    # (the C scan reads 256 table entries past every offset: byte codes, tables of 256 per column)
    if (c_scan and not force_numba and codes.dtype == np.uint8 and codes.shape[0] >= 8
            and int(offs.max(initial=0)) + 256 <= lut.shape[1]):
        _c_topk(codes, codes_t, offs, lut, k, sc, ids, scores)
    else:
        _scan(np.ascontiguousarray(codes), offs, lut, sc, k, ids, scores)
    return ids, scores


def _c_topk(codes, codes_t, offs, lut, k, sc, ids, scores, force_scalar: bool = False,
            prune_at: int | None = None) -> int:
    """The C scan; ``prune_at``: the early exit's check after that many columns (default three
    quarters of them, from 8 columns; off where the scale has negatives or no row-major codes are
    given). Returns how many (query, row) scores were computed in full."""
    ct = np.ascontiguousarray(codes.T if codes_t is None else codes_t, np.uint8)
    m, n = ct.shape
    if (len(offs) != m or (sc.size and sc.size != n) or offs.min(initial=0) < 0
            or int(offs.max(initial=0)) + 256 > lut.shape[1]):
        raise ValueError("codes, offsets, tables and scale do not match")
    rows = None if codes is None else np.ascontiguousarray(codes, np.uint8)
    if rows is not None and rows.shape != (n, m):
        raise ValueError("row-major and stage-major codes differ")
    cut = (3 * m // 4 if m >= 8 else m) if prune_at is None else int(prune_at)
    if rows is None or (sc.size and not (sc >= 0).all()):
        cut = m  # (the bound times a negative or NaN scale bounds nothing)
    nq = lut.shape[0]
    full = [0] * nq

    def run(q0: int, q1: int) -> None:
        ws, wi = np.empty(k + m, np.float32), np.empty(k, np.int64)
        full[q0] = _clib.nz_adc_topk(ct.ctypes.data, None if rows is None else rows.ctypes.data, n, m,
                                     offs.ctypes.data, lut.ctypes.data, lut.shape[1],
                                     sc.ctypes.data if sc.size else None, k, ids.ctypes.data, scores.ctypes.data,
                                     ws.ctypes.data, wi.ctypes.data, q0, q1, min(max(cut, 0), m),
                                     int(force_scalar))

    on_pool(run, nq)
    return sum(full)


def adc_topk_reference(codes, offs, lut, k, scale=None):
    """The numpy twin of :func:`adc_topk` (tests; small inputs)."""
    s = np.zeros((lut.shape[0], codes.shape[0]), np.float32)
    for j in range(codes.shape[1]):
        s += lut[:, offs[j] + codes[:, j].astype(np.int64)]
    if scale is not None:
        s *= np.asarray(scale, np.float32)[None, :]
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(s, order, 1)


class Index:
    """An embedding container's codes decoded once, for repeated searches."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu") -> None:
        from .api import _check_device
        from .codecs.embedding_pq import load_index
        from .kernels import use_kernel

        _check_device(device)
        self.path = os.fspath(path)
        self.device = device
        self._codes_dev = None
        self._codes_t = None
        self._kernel = use_kernel(device)
        with open_item(self.path) as it:
            if it.source.get("modality") != "embedding":
                raise InvalidInputError(f"{self.path}: not an embedding container (codec {it.codec})")
            self.pq = load_index(it)

    @property
    def n(self) -> int:
        return self.pq.n

    @property
    def dim(self) -> int:
        return self.pq.dim

    def search(self, queries, k: int = 10, *, rerank: Any = None, rerank_factor: int = 10):
        q = np.asarray(queries)
        if q.ndim == 1:
            q = q[None]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise InvalidInputError(f"queries of shape {list(np.shape(queries))} do not match the index's "
                                    f"{self.dim}-d vectors")
        if q.dtype.kind != "f" or not np.isfinite(q).all():
            raise InvalidInputError("queries must be finite floats")
        for name, v in (("k", k), ("rerank_factor", rerank_factor)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise InvalidInputError(f"{name} must be a positive int, got {v!r}")
        k_eff = min(k, self.n)
        depth = k_eff if rerank is None else min(self.n, k_eff * rerank_factor)
        with np.errstate(over="ignore", invalid="ignore"):
            q32 = q.astype(np.float32)
            lut, offs = self.pq.tables(q32) if np.isfinite(q32).all() else (None, None)
        # a score sums one table entry per stage: it must stay finite in float32, or the scan ranks
        # inf/NaN rows as missing (id -1)
        if lut is None or not np.isfinite(lut).all() or \
                float(np.abs(lut).max(initial=0)) * len(offs) >= float(np.finfo(np.float32).max) / 4:
            raise InvalidInputError("queries too large: their scores overflow float32 (scale them down)")
        if self._kernel:
            ids, scores = self._scan_device(lut, offs, depth)
        else:
            if self._codes_t is None and c_scan and self.pq.codes.dtype == np.uint8:
                self._codes_t = np.ascontiguousarray(self.pq.codes.T)  # stage-major, for the C scan
            ids, scores = adc_topk(self.pq.codes, offs, lut, depth, self.pq.scale, self._codes_t)
        if rerank is not None:
            ids, scores = self._rerank(q.astype(np.float32), ids, rerank, k_eff)
        return ids[:, :k_eff], scores[:, :k_eff]

    def _scan_device(self, lut, offs, depth):
        """The PQ scan kernel (``nzip.kernels.pq_scan``): codes stay on the device between
        searches; the tables are the CPU's, so the ranking is the CPU scan's exactly."""
        import torch

        from .kernels import pq_scan

        if self._codes_dev is None:
            self._codes_dev = torch.from_numpy(np.ascontiguousarray(self.pq.codes)).to(self.device)
        scale = None if self.pq.scale is None else torch.from_numpy(self.pq.scale).to(self.device)
        ids, scores = pq_scan.topk(self._codes_dev, offs, torch.from_numpy(lut).to(self.device), depth,
                                   kernel=True, scale=scale)
        return ids.cpu().numpy(), scores.cpu().numpy()

    def _rerank(self, q, ids, vectors, k):
        v = np.asarray(vectors)
        if v.shape != (self.n, self.dim):
            raise InvalidInputError(f"rerank vectors of shape {list(v.shape)}; the index holds "
                                    f"{[self.n, self.dim]}")
        cand = v[ids].astype(np.float32)  # (q, depth, d)
        s = np.einsum("qd,qcd->qc", q, cand)
        if self.pq.metric == "l2":
            s = 2 * s - (cand * cand).sum(2) - (q * q).sum(1)[:, None]
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(ids, order, 1), np.take_along_axis(s, order, 1).astype(np.float32)


def open_index(path: str | os.PathLike, device: str = "cpu") -> Index:
    """An :class:`Index`; on a CUDA ``device`` its codes live there and the scan runs as a kernel."""
    return Index(path, device)


def search(path: str | os.PathLike, queries, k: int = 10, *, rerank: Any = None,
           rerank_factor: int = 10, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Top-k (ids, scores) of each query over an embedding container's compressed codes."""
    return Index(path, device).search(queries, k, rerank=rerank, rerank_factor=rerank_factor)
