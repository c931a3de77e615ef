"""``weights/lr2vq``: low-rank subvector quantisation of checkpoints, after LR²VQ.

After "Learning Low-Rank Representations for Model Compression" (Zhu, Zhou, Zhong, 2022): the
rows of a weight matrix are cut into subvectors of ``m`` values; subvectors are projected to a
``rank``-dimensional space, clustered there into ``k`` centroids, and mapped back by a
``rank x m`` projection. Per subvector only the centroid's index is stored (entropy coded)::

    W[r, j*m:(j+1)*m] = s_r * (C[code[r, j]] @ U + mu)

``C`` (k x rank), ``U`` (rank x m) and ``mu`` (m) are float16 and shared by a group of tensors
(the same role in every layer, e.g. all ``attention.self.query.weight``); ``s_r`` is a float16
scale per row (its RMS at encode). Encode: rows divided by their RMS, the group's subvectors
pooled, PCA gives the down-projection, k-means (seeded, k-means++-free random-sample start,
Lloyd iterations) clusters the projections, then ``U`` and ``mu`` are refitted by least squares
to the assigned centroids. With a calibration object (:mod:`nzip.calib`) and ``calib_steps``,
codebooks, projections, means and row scales are fine-tuned by distillation, codes frozen.

Where it departs from the paper: no low-rank pre-training and no end-to-end training on the task
(a compressor gets a trained model), so the map is PCA of the trained weights, ``U`` a
least-squares refit, the rank defaults to ``m`` (full; lower ranks lost accuracy on
all-MiniLM-L6-v2), codebooks are shared across layers, per-row scales are added and the codes
are entropy coded. Measured on all-MiniLM-L6-v2 it is far below ``weights/quant`` at the same
rate (scripts/research/lossy/NOTES.md): use it for very low rates (<= 2 bpw), where scalar codes
cannot go.

Reconstruction is deterministic: ``C @ U + mu`` is accumulated in float64 term by term from the
float16 values (no BLAS), then gathered and scaled in float32.
"""
from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from ..errors import CorruptDataError, InvalidInputError
from ..formats.checkpoint import Checkpoint
from ..formats.container import ArraySpec, Item
from ..registry import register
from .weights_lossless import CheckpointCodec, base_entry
from .weights_quant import (
    ARRAY_OVERHEAD_BITS,
    F16_MIN_NORMAL,
    FLOATS,
    MIN_NUMEL,
    as_float32,
    codable,
    from_float32,
    kept_decode,
    kept_entry,
    kept_tensors,
    lossy_preflight,
    resolve_calib,
)

MAX_K = 4096


def default_group(name: str) -> str:
    """Tensors with the same role in every layer share a codebook."""
    return re.sub(r"layer\.\d+\.", "layer.*.", name)


def kmeans(x, k: int, iters: int = 15, seed: int = 0, chunk: int = 1 << 16):
    """Lloyd's k-means on the rows of ``x`` (torch, float32): (centroids, assignment)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    k = min(k, n)
    c = x[torch.randperm(n, generator=g)[:k]].clone()
    assign = torch.empty(n, dtype=torch.int64)
    for _ in range(iters):
        cn = (c * c).sum(1)
        for i in range(0, n, chunk):
            xb = x[i : i + chunk]
            assign[i : i + chunk] = torch.argmin(cn[None, :] - 2 * xb @ c.T, dim=1)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        empty = counts == 0
        c = torch.where(empty[:, None], c, sums / counts.clamp(min=1)[:, None])
        if empty.any():  # re-seed empty clusters on random points
            c[empty] = x[torch.randint(0, n, (int(empty.sum()),), generator=g)]
    return c, assign


def effective_codebook(cb: np.ndarray, up: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """C @ U + mu in float64, accumulated term by term (the same on every machine), as float32."""
    cb, up = cb.astype(np.float64), up.astype(np.float64)
    acc = np.broadcast_to(mu.astype(np.float64), (cb.shape[0], up.shape[1])).copy()
    for r in range(cb.shape[1]):
        acc += cb[:, r : r + 1] * up[r][None, :]
    return acc.astype(np.float32)


def fit_group(ws: list[np.ndarray], m: int, k: int, rank: int, seed: int):
    """Codebook (cb, up, mu as float16), codes and float16 row scales for the tensors of a group."""
    import torch

    xs, scales = [], []
    for w in ws:
        w2 = w.reshape(w.shape[0], -1).astype(np.float32)
        s = np.sqrt(np.mean(w2.astype(np.float64) ** 2, axis=1, keepdims=True))
        s = np.maximum(s, F16_MIN_NORMAL).astype(np.float16)  # a zero row: scale > 0 in float16 too
        scales.append(s.reshape(-1))
        xs.append((w2 / s.astype(np.float32)).reshape(-1, m))
    x = torch.from_numpy(np.concatenate(xs))
    mu = x.mean(0)
    xc = x - mu
    evals, evecs = torch.linalg.eigh((xc.T.double() @ xc.double()) / len(xc))
    proj = evecs[:, torch.argsort(evals, descending=True)[:rank]].float()
    c, assign = kmeans(xc @ proj, k, seed=seed)
    a = torch.cat([c[assign], torch.ones(len(x), 1)], 1).double()
    sol = torch.linalg.lstsq(a.T @ a, a.T @ x.double()).solution.float()
    cb, up, mu2 = c.numpy().astype(np.float16), sol[:-1].numpy().astype(np.float16), sol[-1].numpy().astype(np.float16)
    codes, off = [], 0
    for w in ws:
        cnt = w.size // m
        codes.append(assign[off : off + cnt].numpy().reshape(w.shape[0], -1).astype(np.int16))
        off += cnt
    return (cb, up, mu2), codes, scales


def calibrate(groups, members, codes, scales, raw16, calib, steps: int, lr: float = 1e-3,
              batch_size: int = 16, seed: int = 0):
    """Distillation with frozen codes: codebooks, projections, means, row scales, float16 tensors."""
    import torch

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    books = {gi: [torch.tensor(a.astype(np.float32), requires_grad=True) for a in groups[gi]] for gi in groups}
    logs = {n: torch.zeros(scales[n].shape[0], 1, requires_grad=True) for n in codes}
    s0 = {n: torch.from_numpy(scales[n].astype(np.float32))[:, None] for n in codes}
    cd = {n: torch.from_numpy(codes[n].astype(np.int64)) for n in codes}
    raw = {k: torch.tensor(v.astype(np.float32), requires_grad=True) for k, v in raw16.items()}
    opt = torch.optim.Adam([p for b in books.values() for p in b] + list(logs.values()) + list(raw.values()), lr=lr)
    for _ in range(steps):
        params = dict(raw)
        for gi, names in members.items():
            cb, up, mu = books[gi]
            eff = cb @ up + mu
            for n, shape in names:
                params[n] = (eff[cd[n]].reshape(cd[n].shape[0], -1) * s0[n] * torch.exp(logs[n])).reshape(shape)
        idx = torch.randint(0, calib.n, (batch_size,), generator=g)
        loss = calib.loss(params, idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        groups = {gi: tuple(p.numpy().astype(np.float16) for p in books[gi]) for gi in books}
        scales = {n: (s0[n] * torch.exp(logs[n])).reshape(-1).numpy().astype(np.float16) for n in codes}
        raw16 = {k: v.numpy().astype(np.float16) for k, v in raw.items()}
    return groups, scales, raw16


@register
class WeightsLR2VQ(CheckpointCodec):
    name = "weights/lr2vq"
    version = 1
    suffixes = ()  # lossy: only on request
    description = "lossy checkpoints at very low rates: low-rank subvector VQ with shared k-means codebooks"

    def encode_tensors(self, ck: Checkpoint, params: dict[str, Any], progress=None):
        calib = resolve_calib(params.pop("calib", None), ck)
        p = self.check_params(params, {"bpw": float, "k": int, "m": int, "rank": int, "calib_steps": int})
        m = p.get("m", 8)
        rank = p.get("rank", m)
        if m < 1 or not 1 <= rank <= m:
            raise InvalidInputError("lr2vq needs m >= 1 and 1 <= rank <= m")
        n_params = lossy_preflight(ck, self.name, p.get("bpw"))
        vq = [t for t in ck.tensors if t.alias_of is None and t.dtype in FLOATS and len(t.shape) >= 2
              and t.numel >= MIN_NUMEL and t.shape[-1] % m == 0 and codable(t)]
        raw16, kept_bits = kept_tensors(ck, {t.name for t in vq})
        if not vq:
            raise InvalidInputError(f"no tensor suits lr2vq (matrices of >= {MIN_NUMEL} values whose "
                                    f"last dimension is a multiple of m={m})")
        members: dict[int, list] = {}
        keys = sorted({default_group(t.name) for t in vq})
        for t in vq:
            members.setdefault(keys.index(default_group(t.name)), []).append((t.name, t.shape))
        if "k" in p:
            k = p["k"]
        elif "bpw" in p:  # the largest power of two whose plain code rate fits the budget
            fixed = (kept_bits + sum(16 * t.shape[0] for t in vq)
                     + ARRAY_OVERHEAD_BITS * (2 * len(vq) + 3 * len(members)))
            n_vec = sum(t.numel for t in vq) // m
            def rate(kk: int) -> float:  # bits of the whole file at kk codes, plain code rate
                return fixed + 16 * len(members) * (kk * rank + rank * m + m) + n_vec * math.log2(kk)

            if rate(2) > p["bpw"] * n_params:
                raise InvalidInputError(f"weights/lr2vq: --bpw {p['bpw']} is below its smallest rate here "
                                        f"({rate(2) / n_params:.2f} bpw at k=2, m={m})")
            k = 2
            while 2 * k <= MAX_K and rate(2 * k) <= p["bpw"] * n_params:
                k *= 2
        else:
            raise InvalidInputError("weights/lr2vq needs a rate: --bpw B, or --param k=K")
        if not 2 <= k <= 1 << 15:
            raise InvalidInputError(f"k must be in 2..{1 << 15}")
        weights = {t.name: as_float32(t) for t in vq}
        groups, codes, scales = {}, {}, {}
        for gi, names in members.items():
            book, cs, ss = fit_group([weights[n] for n, _ in names], m, k, rank, seed=gi)
            groups[gi] = book
            for (n, _), c, s in zip(names, cs, ss):
                codes[n], scales[n] = c, s
            if progress is not None:
                progress(sum(weights[n].size for n, _ in names))
        if calib is not None and p.get("calib_steps", 0) > 0:
            groups, scales, raw16 = calibrate(groups, members, codes, scales, raw16, calib, p["calib_steps"])
        arrays: dict[str, ArraySpec] = {}
        for gi, (cb, up, mu) in groups.items():
            for part, a in (("cb", cb), ("up", up), ("mu", mu)):
                arrays[f"vq{gi:03d}_{part}"] = ArraySpec(a, symbols=False)
        group_of = {n: gi for gi, names in members.items() for n, _ in names}
        manifest = []
        for i, t in enumerate(ck.tensors):
            entry = base_entry(t)
            if t.alias_of is None:
                if t.name in codes:
                    c = codes[t.name]
                    entry.update(kind="vq", array=f"q{i:05d}", scales=f"s{i:05d}", group=group_of[t.name], m=m)
                    arrays[entry["array"]] = ArraySpec(c, chunks=(max(1, min(c.shape[0], (1 << 20) // c.shape[1])),
                                                                  c.shape[1]),
                                                       attrs={"tensor": t.name, "raw_bytes": int(t.data.size)})
                    arrays[entry["scales"]] = ArraySpec(scales[t.name], symbols=False)
                else:
                    kept_entry(i, t, entry, raw16, arrays)
            manifest.append(entry)
        recorded = {"k": k, "m": m, "rank": rank, "groups": len(groups),
                    "calib_steps": p.get("calib_steps", 0) if calib is not None else 0}
        if "bpw" in p:
            recorded["bpw_target"] = p["bpw"]
        return manifest, arrays, recorded

    def decode_entry(self, container: Item, entry: dict[str, Any], shape: list[int], numel: int) -> np.ndarray:
        kept = kept_decode(container, entry, shape, numel)
        if kept is not None:
            return kept
        kind = entry.get("kind")
        if kind == "vq":
            gi = int(entry["group"])
            cache = container.__dict__.setdefault("_lr2vq_books", {})
            if gi not in cache:
                parts = [container.read(f"vq{gi:03d}_{p}") for p in ("cb", "up", "mu")]
                cache[gi] = effective_codebook(*parts)
            book = cache[gi]
            codes = container.read(entry["array"]).astype(np.int64)
            s = container.read(entry["scales"]).astype(np.float32)
            if codes.size and (codes.min() < 0 or codes.max() >= book.shape[0]) or s.size != codes.shape[0]:
                raise CorruptDataError(f"{container.path}: tensor {entry['name']!r}: codes do not match its codebook")
            x = book[codes].reshape(codes.shape[0], -1) * s[:, None]
        else:
            raise CorruptDataError(f"{container.path}: tensor {entry['name']!r} has unknown kind {kind!r}")
        if x.size != numel:
            raise CorruptDataError(f"{container.path}: tensor {entry['name']!r} has the wrong size")
        return from_float32(x, entry["dtype"])
