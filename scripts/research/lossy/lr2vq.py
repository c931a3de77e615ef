"""weights/lr2vq: low-rank representation vector quantisation of model weights.

After "Learning Low-Rank Representations for Model Compression" (Zhu, Zhou, Zhong 2022, LR^2VQ):
the rows of a weight matrix are cut into subvectors of ``m`` consecutive values; the subvectors are
mapped to a ``rank``-dimensional space (d~ in the paper), clustered there into ``k`` centroids, and
mapped back with a rank x m projection. Per subvector only the centroid index is stored.

Layout of one *group* of tensors (tensors sharing a codebook -- by default the same role in every
layer, e.g. all ``attention.self.query.weight``):

    W[r, j*m:(j+1)*m] = s_r * (C[code[r, j]] @ U + mu)

    C     (k, rank)  float16  codebook in the low-rank space
    U     (rank, m)  float16  up-projection (the "mapping back")
    mu    (m,)       float16  mean subvector
    s_r   (rows, 1)  float16  per-row scale of each tensor (RMS of the row at fit time)
    code  (rows, cols/m)      integer indexes, entropy-coded with nzip's rANS coder (order-0, per tensor)

Encode: rows are divided by their RMS, subvectors of a group pooled, PCA gives the down-projection
and ``mu``, k-means (seeded, Lloyd iterations with random-sample init) clusters the projections,
then ``U`` and ``mu`` are re-fitted by least squares to the assigned centroids (the decoder's real
map back). Optional calibration (:func:`calibrate`) fine-tunes C, U, mu, the row scales and the
float16-kept tensors by distillation (codes frozen) through a ``calib`` object with ``.n`` and
``.loss(params, idx)`` (optionally ``.sample(generator, batch)``).

Hybrid use: the array dict of :func:`quant.fit` / :func:`quant.quantize` (entropy-coded uniform
scalar quantisation) can be merged into an LR^2VQ array dict (``{**vq, **q}``, disjoint tensors;
fit the VQ part with ``include`` restricted to its tensors): :func:`reconstruct` handles both
kinds and :func:`calibrate` tunes the scalar part's row scales jointly with the codebooks.

Where it departs from the paper: no low-rank pre-training of the network and no end-to-end
training on the task loss; the low-rank map is PCA of the trained weights (post-training),
``U`` is a least-squares refit rather than the transpose of the down-projection, the codes are
entropy-coded, codebooks are shared across layers (their cost matters on a 22M-parameter model),
per-row scales are added, and "fine-tuning" is a few hundred steps of distillation with frozen codes.

Reconstruction is deterministic: the effective codebook ``C @ U + mu`` is accumulated in float64
term by term from the float16 values (no BLAS), then cast to float32 and gathered.
"""
from __future__ import annotations

import math
import re
import time

import numpy as np

import quant as Q

SEP = Q.SEP
__all__ = ["fit", "reconstruct", "calibrate", "kmeans", "effective_codebook", "default_group"]


# ------------------------------------------------------------------ grouping

def default_group(name: str) -> str:
    """Same role in every transformer layer share a group: 'layer.3.attention.self.query.weight'
    -> 'layer.*.attention.self.query.weight'; other tensors are their own group."""
    return re.sub(r"layer\.\d+\.", "layer.*.", name)


def _gkey(g: str) -> str:
    return "vq/" + g


# ------------------------------------------------------------------ k-means

def kmeans(x, k: int, iters: int = 20, seed: int = 0, chunk: int = 1 << 13, verbose=False):
    """Lloyd's k-means on rows of ``x`` (torch, float32), init from a seeded random sample.
    Returns (centroids (k, d), assignment (N,) int64). Empty clusters are re-seeded from the
    points with the largest error."""
    import torch
    g = torch.Generator().manual_seed(seed)
    n, d = x.shape
    k = min(k, n)
    c = x[torch.randperm(n, generator=g)[:k]].clone()
    assign = torch.zeros(n, dtype=torch.long)
    for it in range(iters):
        err = torch.empty(n)
        c2 = (c * c).sum(1)
        for i in range(0, n, chunk):
            xb = x[i:i + chunk]
            dist = c2[None, :] - 2 * xb @ c.T
            v, a = dist.min(1)
            assign[i:i + chunk] = a
            err[i:i + chunk] = v + (xb * xb).sum(1)
        sums = torch.zeros(k, d).index_add_(0, assign, x)
        cnt = torch.bincount(assign, minlength=k).float()
        empty = cnt == 0
        c = torch.where(empty[:, None], c, sums / cnt.clamp(min=1)[:, None])
        if empty.any():
            far = torch.topk(err, int(empty.sum())).indices
            c[empty] = x[far]
        if verbose:
            print(f"    kmeans it {it} mse {err.mean().item():.5f}")
    return c, assign


# ------------------------------------------------------------------ fit / reconstruct

def fit(tensors: dict[str, np.ndarray], bpw: float | None = None, *, m: int = 8,
        k: int | dict = 4096, rank: int | dict | None = None, group=default_group,
        include=None, min_numel: int = 4096, keep_rest: bool = True, iters: int = 20, seed: int = 0, calib=None,
        calib_steps: int = 0, calib_kw: dict | None = None,
        verbose: bool = False) -> dict[str, np.ndarray]:
    """LR^2VQ-code ``tensors``. Returns the flat array dict (see module doc).

    ``m``: subvector length; ``k``: codebook size (int, or {group: int}); ``rank``: clustering
    dimensionality d~ (default m, i.e. plain VQ in a PCA-rotated basis; or {group: int}).
    ``bpw``: if given, ``k`` is chosen per group as the largest power of two with log2(k)/m <= bpw
    (an upper bound of the code rate before entropy coding; the real rate is measured by
    :func:`quant.coded_bits`). ``include(name)`` selects VQ tensors (default: ndim >= 2, size >=
    ``min_numel``, last dim divisible by m). Other tensors are stored float16 (``keep_rest``, default) or left out
    (``keep_rest=False``, to merge with another codec's arrays).
    """
    import torch
    names = [n for n, t in tensors.items()
             if (include(n) if include else (np.ndim(t) >= 2 and np.size(t) >= min_numel
                                             and np.shape(t)[-1] % m == 0))]
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(group(n), []).append(n)
    out: dict[str, np.ndarray] = {}
    t0 = time.time()
    for gi, (g, members) in enumerate(sorted(groups.items())):
        kk = k[g] if isinstance(k, dict) else k
        if bpw is not None:
            kk = 2 ** max(1, int(math.floor(bpw * m + 1e-9)))
        rr = (rank[g] if isinstance(rank, dict) else rank) or m
        xs, scales = [], {}
        for n in members:
            w = np.asarray(tensors[n], dtype=np.float32).reshape(np.shape(tensors[n])[0], -1)
            s = np.sqrt(np.mean(w.astype(np.float64) ** 2, axis=1, keepdims=True))
            s = np.maximum(s, 1e-8).astype(np.float16)
            scales[n] = s
            xs.append((w / s.astype(np.float32)).reshape(-1, m))
        x = torch.from_numpy(np.concatenate(xs))
        mu = x.mean(0)
        xc = x - mu
        cov = (xc.T.double() @ xc.double()) / len(xc)
        evals, evecs = torch.linalg.eigh(cov)
        P = evecs[:, torch.argsort(evals, descending=True)[:rr]].float()   # (m, r)
        z = xc @ P
        c, assign = kmeans(z, kk, iters=iters, seed=seed + gi, verbose=verbose)
        # least-squares map back (with mean): [C[a], 1] @ [U; mu] ~= x
        A = torch.cat([c[assign], torch.ones(len(x), 1)], 1).double()
        sol = torch.linalg.lstsq(A.T @ A, A.T @ x.double()).solution.float()
        U, mu2 = sol[:-1], sol[-1]
        key = _gkey(g)
        out[key + SEP + "cb"] = c.numpy().astype(np.float16)
        out[key + SEP + "up"] = U.numpy().astype(np.float16)
        out[key + SEP + "mu"] = mu2.numpy().astype(np.float16)
        off = 0
        for n in members:
            rows = scales[n].shape[0]
            cnt = np.size(tensors[n]) // m
            out[n + SEP + "c." + g] = Q.codes_dtype(
                assign[off:off + cnt].numpy().reshape(rows, -1))
            out[n + SEP + "rs"] = scales[n]
            off += cnt
        if verbose:
            print(f"  group {g}: {len(members)} tensors, {len(x)} vectors, k={kk}, rank={rr} "
                  f"({time.time() - t0:.1f}s)")
    if keep_rest:
        for n, t in tensors.items():
            if n not in names:
                out[n + SEP + "raw"] = np.asarray(t, dtype=np.float32).astype(np.float16)
    if calib is not None and calib_steps > 0:
        out = calibrate(out, calib, steps=calib_steps, verbose=verbose, **(calib_kw or {}))
    return out


def effective_codebook(cb, up, mu) -> np.ndarray:
    """C @ U + mu in float64, accumulated term by term (platform-independent), as float32."""
    cb = np.asarray(cb).astype(np.float64)
    up = np.asarray(up).astype(np.float64)
    acc = np.broadcast_to(np.asarray(mu).astype(np.float64), (cb.shape[0], up.shape[1])).copy()
    for r in range(cb.shape[1]):
        acc += cb[:, r:r + 1] * up[r][None, :]
    return acc.astype(np.float32)


def reconstruct(arrays: dict[str, np.ndarray], shapes: dict[str, tuple] | None = None
                ) -> dict[str, np.ndarray]:
    """Float32 tensors from the array dict (VQ, scalar-quantised and raw entries).

    VQ tensors come back 2-D (rows, cols); pass ``shapes`` to reshape others."""
    books = {}
    out = Q.reconstruct({k: v for k, v in arrays.items()
                         if k.rsplit(SEP, 1)[1] in ("q", "s", "raw")})
    for key, a in arrays.items():
        name, kind = key.rsplit(SEP, 1)
        if kind.startswith("c."):
            g = kind[2:]
            if g not in books:
                gk = _gkey(g)
                books[g] = effective_codebook(arrays[gk + SEP + "cb"], arrays[gk + SEP + "up"],
                                              arrays[gk + SEP + "mu"])
            cbk = books[g]
            codes = np.asarray(a)
            w = cbk[codes.astype(np.int64)].reshape(codes.shape[0], -1)
            w = w * np.asarray(arrays[name + SEP + "rs"]).astype(np.float32)
            out[name] = w
    if shapes:
        out = {k: v.reshape(shapes[k]) if k in shapes else v for k, v in out.items()}
    return out


# ------------------------------------------------------------------ calibration

def calibrate(arrays: dict[str, np.ndarray], calib, *, steps: int = 200, lr: float = 1e-3,
              batch_size: int = 16, train=("cb", "up", "mu", "rs", "s", "raw"), seed: int = 0,
              verbose: bool = False) -> dict[str, np.ndarray]:
    """Distillation fine-tuning with frozen integer codes.

    Trainable (selectable via ``train``): codebooks ``cb``, up-projections ``up``, means ``mu``,
    per-row scales ``rs`` (VQ) and ``s`` (scalar-quantised tensors, as log-multipliers), float16
    tensors ``raw``. The tuned values are stored back as float16.
    """
    import torch
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    P = {}
    for key, a in arrays.items():
        kind = key.rsplit(SEP, 1)[1]
        if kind in ("cb", "up", "mu", "raw"):
            P[key] = torch.tensor(np.asarray(a, dtype=np.float32), requires_grad=kind in train)
        elif kind in ("rs", "s"):
            P[key] = torch.zeros(a.shape, requires_grad=kind in train)   # log multiplier
    base = {k: torch.from_numpy(np.asarray(a, dtype=np.float32)) for k, a in arrays.items()
            if k.rsplit(SEP, 1)[1] in ("rs", "s", "q")}
    codes = {k: torch.from_numpy(np.asarray(a).astype(np.int64)) for k, a in arrays.items()
             if k.rsplit(SEP, 1)[1].startswith("c.")}
    opt = torch.optim.Adam([p for p in P.values() if p.requires_grad], lr=lr)

    def build():
        books, params = {}, {}
        for key, cd in codes.items():
            name, kind = key.rsplit(SEP, 1)
            g = _gkey(kind[2:])
            if g not in books:
                books[g] = P[g + SEP + "cb"] @ P[g + SEP + "up"] + P[g + SEP + "mu"]
            rs = base[name + SEP + "rs"] * torch.exp(P[name + SEP + "rs"])
            params[name] = books[g][cd].reshape(cd.shape[0], -1) * rs
        for key in arrays:
            name, kind = key.rsplit(SEP, 1)
            if kind == "q":
                s = base[name + SEP + "s"] * torch.exp(P[name + SEP + "s"])
                params[name] = base[key] * s
            elif kind == "raw":
                params[name] = P[key]
        return params

    t0 = time.time()
    for step in range(steps):
        idx = (calib.sample(gen, batch_size) if hasattr(calib, "sample")
               else torch.randint(0, calib.n, (batch_size,), generator=gen))
        loss = calib.loss(build(), idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if verbose and (step % 50 == 0 or step == steps - 1):
            print(f"  calib step {step} loss {loss.item():.5f} ({time.time() - t0:.1f}s)",
                  flush=True)
    out = dict(arrays)
    with torch.no_grad():
        for key, p in P.items():
            kind = key.rsplit(SEP, 1)[1]
            if kind in ("rs", "s"):
                out[key] = (base[key] * torch.exp(p)).numpy().astype(np.float16)
            else:
                out[key] = p.numpy().astype(np.float16)
    return out
