"""``embedding/pq``, ``embedding/opq`` and ``embedding/jpq``: product quantisation of embedding
matrices, with search on the compressed codes (:mod:`nzip.search`).

Product quantisation (Jégou, Douze & Schmid, 2011) cuts each vector into ``m`` sub-vectors and
replaces each by the nearest of 256 centroids: one byte per sub-vector (the default, ``m = bytes``).
The bytes are nearly uniform (7.95 of 8 bits on sentence embeddings), so entropy coding them saves
almost nothing. ``--param entropy=1`` trains the sub-quantisers as entropy-constrained VQ (Chou,
Lookabaugh & Gray, 1989) instead: a sub-vector goes to the centroid that minimises squared error +
lambda * (its code length), with more centroids than the rate alone allows (``k=1024``); the codes
come out skewed, the shared entropy layer turns the skew into bytes, one lambda for every sub-space
spends the bits where they lower the error most, and bisection sets it so that the coded codes fit
``--bytes`` (fractional sizes allowed). It lowers the mean squared error (by ~25 % on Gaussian data)
but, measured on MiniLM passages (BENCHMARKS.md), it does not buy recall and lowers the known item's
MRR: it spends the error unevenly, and the unusual vectors a query looks for get the coarse cells.
So it is not the default.

``embedding/opq`` adds OPQ's learned rotation (Ge, He, Ke & Sun, 2013): from a random rotation,
alternating PQ training and orthogonal Procrustes (``rounds``, 20 by default).

Stored: the codes (uint8/uint16, one column per sub-space, centroids of each sub-space sorted by
frequency so that all columns share one skewed table per chunk of rows), the centroids (float16) and
the rotation (float16, opq). Decoding gathers centroids (exact) and rotates back (a float64 product
rounded to float32). Training fits on at most ``train`` vectors (65,536 by default); every vector is
then coded with the final centroids.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import CorruptDataError, InvalidInputError
from ..formats.container import ArraySpec, Item
from ..formats.embedding import (
    as_matrix,
    check_matrix,
    read_embeddings,
    write_embeddings,
)
from ..registry import Codec, Encoded, register

CHUNK_ROWS = 1 << 16
TOP = 24  # candidate centroids kept per sub-vector while the rate is tuned: the nearest ones
POPULAR = 8  # and the most used ones


# ------------------------------------------------------------------------------------------------
# the index: what a decoder and the search need
# ------------------------------------------------------------------------------------------------


class PQIndex:
    """Codes (n x m), per-sub-space centroids (k_j x d_j), an optional rotation, the metric."""

    def __init__(self, codes: np.ndarray, books: list[np.ndarray], splits: np.ndarray,
                 rotation: np.ndarray | None, metric: str, query_map: np.ndarray | None = None) -> None:
        self.codes, self.books, self.splits = codes, books, splits
        self.rotation, self.metric, self.query_map = rotation, metric, query_map
        self.scale: np.ndarray | None = None  # 1 / |reconstruction| per vector: cosine scores

    def normalise(self) -> None:
        """Score by cosine to the reconstruction (unit-norm data: the direction is what was coded;
        the reconstructed length is quantisation noise). Sub-spaces are orthogonal, so the squared
        norm is a sum of per-centroid squared norms."""
        sq = np.zeros(self.n, np.float64)
        for j, book in enumerate(self.books):
            sq += (book.astype(np.float64) ** 2).sum(1)[self.codes[:, j]]
        self.scale = inverse_norms(sq)

    @property
    def n(self) -> int:
        return self.codes.shape[0]

    @property
    def dim(self) -> int:
        return int(self.splits[-1])

    def reconstruct(self, device: str = "cpu") -> np.ndarray:
        from ..kernels import use_kernel

        if use_kernel(device) and len({len(b) for b in self.books}) == 1 and len(set(np.diff(self.splits))) == 1:
            return self._reconstruct_device(device)
        y = np.empty((self.n, self.dim), np.float32)
        for j, book in enumerate(self.books):
            y[:, self.splits[j]:self.splits[j + 1]] = book[self.codes[:, j]]
        return _rotate(y, None if self.rotation is None else self.rotation.T)

    def _reconstruct_device(self, device) -> np.ndarray:
        """The PQ gather kernel on the device (sub-spaces of equal width and size), then the
        rotation back there (a float64 matmul rounded to float32, as on the CPU; a GPU's
        summation order may still move the last bit)."""
        import torch

        from ..kernels import gather

        codes = torch.from_numpy(np.ascontiguousarray(self.codes)).to(device)
        books = torch.from_numpy(np.stack(self.books)).to(device)
        y = gather.pq(codes, books)
        if self.rotation is not None:  # as _rotate: a float64 product rounded to float32
            y = (y.double() @ torch.from_numpy(self.rotation.T.astype(np.float64)).to(device)).float()
        return y.cpu().numpy()

    def tables(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Asymmetric-distance lookup tables of rotated queries: (q, sum k_j) float32 scores
        (inner product, or minus the squared distance for l2: higher is better) and each
        sub-space's offset into them."""
        q = _rotate(_rotate(queries, self.query_map), self.rotation)  # (jpq's query adapter first)
        offs = np.zeros(len(self.books) + 1, np.int64)
        offs[1:] = np.cumsum([len(b) for b in self.books])
        lut = np.empty((q.shape[0], int(offs[-1])), np.float32)
        for j, book in enumerate(self.books):
            sub = q[:, self.splits[j]:self.splits[j + 1]]
            part = sub @ book.T
            if self.metric == "l2":
                part = 2 * part - (book * book).sum(1)[None, :] - (sub * sub).sum(1)[:, None]
            lut[:, offs[j]:offs[j + 1]] = part
        return lut, offs[:-1]


# ------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------


def inverse_norms(sq: np.ndarray) -> np.ndarray:
    return (1.0 / np.sqrt(np.maximum(sq, 1e-30))).astype(np.float32)


def _rotate(x: np.ndarray, R: np.ndarray | None) -> np.ndarray:
    """x @ R as a float64 product rounded to float32 (x itself, as float32, when R is None)."""
    if R is None:
        return np.asarray(x, np.float32)
    return (np.asarray(x, np.float64) @ R.astype(np.float64)).astype(np.float32)


def _splits(d: int, m: int) -> np.ndarray:
    return np.round(np.linspace(0, d, m + 1)).astype(np.int64)


def _candidates(x: np.ndarray, c: np.ndarray, top: int, block: int = 4096):
    """For every row of x: the ``top`` nearest centroids (indices, squared distances)."""
    top = min(top, len(c))
    cc = (c * c).sum(1)
    xx = (x * x).sum(1)
    idx = np.empty((len(x), top), np.int32)
    dist = np.empty((len(x), top), np.float32)
    for s in range(0, len(x), block):
        d = x[s:s + block] @ c.T
        d *= -2
        d += cc
        if top < len(c):
            part = np.argpartition(d, top - 1, axis=1)[:, :top]
        else:
            part = np.broadcast_to(np.arange(len(c)), d.shape)
        idx[s:s + block] = part
        dist[s:s + block] = np.take_along_axis(d, part, 1) + xx[s:s + block, None]
    return idx, np.maximum(dist, 0)


def _rate_candidates(x: np.ndarray, c: np.ndarray, lens: np.ndarray):
    """The ``TOP`` nearest centroids plus the ``POPULAR`` cheapest ones (so that a large lambda
    can always reach a low rate), with squared distances."""
    idx, dist = _candidates(x, c, TOP)
    pop = np.argsort(lens, kind="stable")[:POPULAR].astype(np.int32)
    dp = (x * x).sum(1)[:, None] - 2 * (x @ c[pop].T) + (c[pop] * c[pop]).sum(1)[None, :]
    return (np.concatenate([idx, np.broadcast_to(pop, (len(x), len(pop)))], 1),
            np.concatenate([dist, np.maximum(dp, 0).astype(np.float32)], 1))


def _nearest(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    return _candidates(x, c, 1)[0][:, 0]


def _means(x: np.ndarray, a: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k = len(c)
    cnt = np.bincount(a, minlength=k).astype(np.float64)
    s = np.stack([np.bincount(a, weights=x[:, j], minlength=k) for j in range(x.shape[1])], 1)
    new = np.where(cnt[:, None] > 0, s / np.maximum(cnt, 1)[:, None], c)
    return new.astype(np.float32), cnt


def kmeans(x: np.ndarray, k: int, iters: int, rng: np.random.Generator) -> np.ndarray:
    """Lloyd's k-means from k distinct random rows (empty clusters re-seeded at far points)."""
    c = x[rng.choice(len(x), size=k, replace=False)].copy()
    for _ in range(iters):
        a = _nearest(x, c)
        c, cnt = _means(x, a, c)
        empty = np.flatnonzero(cnt == 0)
        if len(empty):
            err = ((x - c[a]) ** 2).sum(1)
            c[empty] = x[np.argsort(-err)[: len(empty)]]
    return c


def _lengths(cnt: np.ndarray) -> np.ndarray:
    """Ideal code lengths (bits) of a count vector; unused centroids can never be chosen."""
    n = cnt.sum()
    out = np.full(len(cnt), 1e9, np.float32)
    used = cnt > 0
    out[used] = np.log2(n / cnt[used])
    return out


def _entropy_bits(cnt: np.ndarray) -> float:
    p = cnt[cnt > 0] / cnt.sum()
    return float(-(cnt[cnt > 0] * np.log2(p)).sum())


def _choose(cands, lens, lam):
    """Per sub-space: the candidate minimising distortion + lam * length, and the coded bits."""
    codes, bits = [], 0.0
    for (idx, dist), ln in zip(cands, lens):
        cost = dist + lam * ln[idx]
        a = idx[np.arange(len(idx)), cost.argmin(1)]
        codes.append(a)
        bits += _entropy_bits(np.bincount(a, minlength=len(ln)))
    return codes, bits


def _fit_lambda(cands, lens, target_bits: float) -> float:
    """The smallest lambda whose codes' entropy fits ``target_bits`` (bisection in log space)."""
    if _choose(cands, lens, 0.0)[1] <= target_bits:
        return 0.0
    lo, hi = 0.0, 1e-4
    while _choose(cands, lens, hi)[1] > target_bits:
        lo, hi = hi, hi * 4
        if hi > 1e6:
            return hi
    for _ in range(18):
        mid = math.sqrt(lo * hi) if lo > 0 else hi / 4
        if _choose(cands, lens, mid)[1] > target_bits:
            lo = mid
        else:
            hi = mid
        if lo > 0 and hi / lo < 1.002:
            break
    return hi


def _subvectors(x: np.ndarray, splits: np.ndarray) -> list[np.ndarray]:
    return [np.ascontiguousarray(x[:, splits[j]:splits[j + 1]]) for j in range(len(splits) - 1)]


def train_pq(x: np.ndarray, m: int, k: int, iters: int, rng) -> list[np.ndarray]:
    return [kmeans(s, k, iters, rng) for s in _subvectors(x, _splits(x.shape[1], m))]


def train_ecvq(x: np.ndarray, books: list[np.ndarray], bits_per_vector: float, iters: int):
    """Entropy-constrained refinement of k-means books at ``bits_per_vector`` (codes' entropy)."""
    subs = _subvectors(x, _splits(x.shape[1], len(books)))
    lens = [_lengths(np.bincount(_nearest(s, b), minlength=len(b)).astype(np.float64))
            for s, b in zip(subs, books)]
    target = bits_per_vector * len(x)
    lam = 0.0
    for _ in range(iters):
        cands = [_rate_candidates(s, b, ln) for s, b, ln in zip(subs, books, lens)]
        lam = _fit_lambda(cands, lens, target)
        codes, _ = _choose(cands, lens, lam)
        new_books, new_lens = [], []
        for s, b, a in zip(subs, books, codes):
            c, cnt = _means(s, a, b)
            new_books.append(c)
            new_lens.append(_lengths(cnt))
        books, lens = new_books, new_lens
    return books, lens, lam


def train_opq(x: np.ndarray, m: int, k: int, outer: int, rng) -> tuple[np.ndarray, list[np.ndarray]]:
    """Rotation R (x @ R is quantised) and k-means books, by alternating PQ and Procrustes from a
    random rotation (on MiniLM embeddings a PCA start with eigenvalue allocation converged slower:
    after 8 rounds 0.418 against 0.362 squared error; both reach 0.333 after 24)."""
    R = np.linalg.qr(rng.normal(size=(x.shape[1], x.shape[1])))[0]
    splits = _splits(x.shape[1], m)
    books = None
    for it in range(outer):
        xr = _rotate(x, R)
        subs = _subvectors(xr, splits)
        if books is None:
            books = [kmeans(s, k, 6, rng) for s in subs]
        else:  # warm start: a few Lloyd steps on the rotated data
            for j, s in enumerate(subs):
                for _ in range(2):
                    books[j], _ = _means(s, _nearest(s, books[j]), books[j])
        y = np.empty_like(xr)
        for j, s in enumerate(subs):
            y[:, splits[j]:splits[j + 1]] = books[j][_nearest(s, books[j])]
        u, _, vt = np.linalg.svd(x.T.astype(np.float64) @ y.astype(np.float64))
        R = u @ vt
    # the books were fitted to the previous rotation: refit them to the final one
    subs = _subvectors(_rotate(x, R), splits)
    for j, s in enumerate(subs):
        for _ in range(8):
            books[j], _ = _means(s, _nearest(s, books[j]), books[j])
    return R, books


# ------------------------------------------------------------------------------------------------
# the codecs
# ------------------------------------------------------------------------------------------------


def _sort_books(books, codes):
    """Centroids of each sub-space by decreasing use (unused ones dropped), codes remapped."""
    out_b, out_c = [], []
    for b, a in zip(books, codes):
        cnt = np.bincount(a, minlength=len(b))
        order = np.argsort(-cnt, kind="stable")
        order = order[cnt[order] > 0]
        remap = np.zeros(len(b), np.int64)
        remap[order] = np.arange(len(order))
        out_b.append(b[order].astype(np.float16))
        out_c.append(remap[a])
    return out_b, out_c


def _code_array(codes: list[np.ndarray]) -> np.ndarray:
    a = np.stack(codes, 1)
    return a.astype(np.uint8 if a.max(initial=0) < 256 else np.uint16)


class _PQBase(Codec):
    modality = "embedding"
    version = 1
    suffixes = ()
    out_suffixes = (".npy", ".safetensors")
    rotate = False
    read_params = {"tensor": str}  # which matrix of a safetensors file

    def read(self, path: str, tensor: str | None = None) -> np.ndarray:
        return read_embeddings(path, tensor)

    def write(self, item: np.ndarray, path: str, overwrite: bool = False) -> None:
        write_embeddings(item, path, overwrite)

    def encode(self, item: Any, progress=None, **params: Any) -> Encoded:
        extra = self.extra_params(params)
        p = self.check_params(params, {"bytes": float, "m": int, "k": int, "entropy": int, "iters": int,
                                       "train": int, "metric": str, "seed": int, "rounds": int,
                                       "normalize": int})
        check_counts(p)
        src = as_matrix(item)
        x = check_matrix(src)
        n, d = x.shape
        if "bytes" not in p:
            raise InvalidInputError(f"{self.name} needs a size: --bytes B (coded bytes per vector)")
        B = p["bytes"]
        if not math.isfinite(B):
            raise InvalidInputError(f"--bytes must be a finite number of bytes per vector, got {B}")
        entropy = bool(p.get("entropy", 0))
        if not entropy and B != int(B):
            raise InvalidInputError("fixed-rate PQ takes a whole number of --bytes (entropy=1 takes any)")
        if B <= 0 or B * 8 > 16 * d:
            raise InvalidInputError(f"--bytes must be in (0, {2 * d}] for {d}-d vectors, got {B:g}")
        m = p.get("m", max(1, int(round(B))) if entropy or B >= 1 else 1)
        if "m" not in p and m > d:
            how = (f"pass --param m={min(d, -(-int(B) // 2))} --param k=65536 (two bytes per sub-space; "
                   f"--bytes then takes an even number)" if n >= 65536 else
                   f"two bytes per sub-space (k=65536) need at least 65536 vectors, these are {n}: use --bytes {d} or less")
            raise InvalidInputError(f"--bytes {B:g} is over one byte per dimension of these {d}-d vectors: {how}")
        if not 1 <= m <= d:
            raise InvalidInputError(f"m (sub-spaces) must be in 1..{d}, got {m}")
        if "m" in p and not entropy and "k" not in p and m != B:  # k=256: one byte per sub-space
            raise InvalidInputError(f"--bytes {B:g} and --param m={m} disagree (m sub-spaces of 256 centroids "
                                    f"take m bytes): pass one of them, or k as well")
        if n < 2:
            raise InvalidInputError(f"{self.name} needs at least 2 vectors to train its codebooks, got {n}")
        k = p.get("k", 1024 if entropy else 256)
        if "k" not in p:
            k = min(k, n)
        if not 2 <= k <= 65536:
            raise InvalidInputError(f"k (centroids per sub-space) must be in 2..65536, got {k}")
        if k > n:
            raise InvalidInputError(f"{n} vectors are fewer than the k={k} centroids per sub-space; "
                                    f"pass --param k={max(2, n)} or fewer")
        unit = is_unit_norm(x)
        metric = p.get("metric", "ip" if unit else "l2")
        if metric not in ("ip", "l2"):
            raise InvalidInputError(f"metric must be ip or l2, got {metric!r}")
        normalize = bool(p.get("normalize", int(unit and metric == "ip")))
        if normalize and metric != "ip":
            raise InvalidInputError("normalize=1 scores cosines: it needs metric=ip")
        rng, xt = training_sample(x, p, k, "centroids per sub-space")
        iters = p.get("iters", 8)
        if self.rotate:
            R, books = train_opq(xt, m, k, max(1, p.get("rounds", 20)), rng)
        else:
            R, books = None, train_pq(xt, m, k, 12, rng)
        splits = _splits(d, m)
        xr = _rotate(x, R)
        subs = _subvectors(xr, splits)
        lam = 0.0
        if entropy:
            xtr = _rotate(xt, R)
            books, lens, lam = train_ecvq(xtr, books, 8 * B, iters)
            cands = [_rate_candidates(s, b, ln) for s, b, ln in zip(subs, books, lens)]
            target = 8 * B * n
            for _ in range(6):  # the coder's real size decides: tighten until it fits
                lam = _fit_lambda(cands, lens, target)
                codes, _ = _choose(cands, lens, lam)
                books_s, codes_s = _sort_books(books, codes)
                arr = _code_array(codes_s)
                real = 8 * _coded_bytes(arr)
                if real <= 8 * B * n:
                    break
                target *= (8 * B * n) / real * 0.999
        else:
            codes = [_nearest(s, b) for s, b in zip(subs, books)]
            books_s, codes_s = _sort_books(books, codes)
            arr = _code_array(codes_s)
        extra["normalize"] = normalize
        books_s, qmap, recorded = self.fine_tune(x, arr, books_s, splits, R, metric, extra)
        if progress is not None:
            progress(x.size)
        flat = np.concatenate([b.reshape(-1) for b in books_s])
        arrays = {
            "codes": ArraySpec(arr, chunks=(min(n, CHUNK_ROWS), m)),
            "centroids": ArraySpec(flat, chunks=(max(1, flat.size),), symbols=False),
        }
        if R is not None:
            arrays["rotation"] = ArraySpec(R.astype(np.float16), chunks=R.shape, symbols=False)
        if qmap is not None:
            arrays["query_map"] = ArraySpec(qmap.astype(np.float16), chunks=qmap.shape, symbols=False)
        params_out = {"bytes": B, "m": m, "k": k, "entropy": int(entropy), "metric": metric,
                      "normalize": int(normalize),
                      "sizes": [len(b) for b in books_s], "lambda": float(lam), "train": len(xt),
                      **recorded}
        source = {"modality": "embedding", "shape": [n, d], "dtype": src.dtype.name}
        return Encoded(arrays=arrays, params=params_out, source=source)

    def extra_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Take the subclass's own parameters out of ``params`` (jpq: its training pairs)."""
        return {}

    def fine_tune(self, x, codes, books, splits, rotation, metric, extra):
        """(books, query map or None, params to record) once the codes are fixed."""
        return books, None, {}

    def decode(self, container: Item, progress=None, device: str = "cpu") -> np.ndarray:
        index = load_index(container)
        out = index.reconstruct(device)
        if progress is not None:
            progress(out.size)
        return out.astype(container.source.get("dtype", "float32"), copy=False)


def _coded_bytes(arr: np.ndarray) -> int:
    """What the container's codes array will cost: its chunks through the nzip.rans codec."""
    from ..formats.rans_chunk import encode_chunk

    return sum(len(encode_chunk(np.ascontiguousarray(arr[s:s + CHUNK_ROWS])))
               for s in range(0, len(arr), CHUNK_ROWS))


def load_index(container: Item) -> PQIndex:
    """The decoded codes, centroids, rotation and query map of an embedding container."""
    if container.codec == "embedding/rq":
        from .embedding_rq import load_rq_index

        return load_rq_index(container)
    src, prm = container.source, container.params
    try:
        n, d = (int(v) for v in src["shape"])
        m, sizes, metric = int(prm["m"]), [int(s) for s in prm["sizes"]], prm["metric"]
    except (KeyError, TypeError, ValueError):
        raise CorruptDataError(f"{container.path}: embedding parameters are missing or malformed") from None
    splits = _splits(d, m)
    codes = container.read("codes")
    if codes.shape != (n, m) or len(sizes) != m:
        raise CorruptDataError(f"{container.path}: codes of shape {list(codes.shape)}, expected {[n, m]}")
    flat = container.read("centroids")
    widths = np.diff(splits)
    if flat.size != sum(s * w for s, w in zip(sizes, widths)) or flat.dtype != np.float16:
        raise CorruptDataError(f"{container.path}: the centroids do not match the recorded sizes")
    books, o = [], 0
    for s, w in zip(sizes, widths):
        books.append(flat[o:o + s * w].reshape(s, w).astype(np.float32))
        o += s * w
    if codes.size and (codes.max(0) >= np.array(sizes)).any():
        raise CorruptDataError(f"{container.path}: a code points past its sub-space's centroids")
    rotation = None
    if "rotation" in container.array_names():
        rotation = container.read("rotation").astype(np.float32)
        if rotation.shape != (d, d):
            raise CorruptDataError(f"{container.path}: rotation of shape {list(rotation.shape)}")
    qmap = None
    if "query_map" in container.array_names():
        qmap = container.read("query_map").astype(np.float32)
        if qmap.shape != (d, d):
            raise CorruptDataError(f"{container.path}: query map of shape {list(qmap.shape)}")
    index = PQIndex(codes, books, splits, rotation, metric, qmap)
    if prm.get("normalize"):
        index.normalise()
    return index


@register
class EmbeddingPQ(_PQBase):
    name = "embedding/pq"
    description = "embedding matrices: product quantisation (optionally entropy-constrained), searchable"


@register
class EmbeddingOPQ(_PQBase):
    name = "embedding/opq"
    rotate = True
    description = "embedding matrices: product quantisation after a learned rotation (OPQ)"


@register
class EmbeddingJPQ(_PQBase):
    """After "Jointly Optimizing Query Encoder and Product Quantization to Improve Retrieval
    Performance" (Zhan et al., 2021): OPQ codes are fixed, then the centroids (and, with
    ``adapter=1``, a linear map applied to queries, stored with the index) are trained with a ranking
    loss: each training query's positive passage against the hardest passages of the current index
    and the other positives of its batch, all scored on the *reconstructed* passages exactly as the
    search scores them. Training pairs: ``queries`` (q x d float embeddings) and ``positives`` (q
    passage ids), as arrays in Python or .npy paths on the command line. Departure from the paper:
    the query encoder itself is not trained (nzip sees embeddings, not the model); the adapter
    stands in for it. Centroid training is off by default (``centroids=1`` turns it on, with
    ``recon`` weighting a reconstruction term that keeps them quantisers of every passage): on
    held-out passages it lowered MRR in our tests, because it lifts the passages that have training
    queries above those that do not; the adapter, one map shared by all queries, did not."""

    name = "embedding/jpq"
    rotate = True
    description = "embedding matrices: OPQ codes with a query adapter trained for ranking (JPQ)"

    def extra_params(self, params):
        out = take_pairs(params, ("adapter", "centroids", "recon"))
        if "queries" not in out:
            raise InvalidInputError(f"{self.name} needs training pairs: --param queries=Q.npy "
                                    "--param positives=IDS.npy (one positive passage id per query)")
        return out

    def fine_tune(self, x, codes, books, splits, rotation, metric, extra):
        q, pos = check_pairs(extra["queries"], extra["positives"], *x.shape)
        epochs = int(extra.get("epochs", 4))
        adapter = bool(int(extra.get("adapter", 1)))
        new_books, qmap = jpq_train(q, pos, codes, [b.astype(np.float32) for b in books], splits, rotation,
                                    metric, epochs=epochs, adapter=adapter,
                                    negatives=int(extra.get("negatives", 64)), lr=float(extra.get("lr", 2e-3)),
                                    x=x, recon_weight=float(extra.get("recon", 1.0)),
                                    centroids=bool(int(extra.get("centroids", 0))),
                                    normalize=bool(extra.get("normalize", False)))
        return [b.astype(np.float16) for b in new_books], qmap, {
            "jpq": {"queries": int(len(q)), "epochs": epochs, "adapter": int(adapter)}}


def jpq_train(q, pos, codes, books, splits, rotation, metric, epochs=4, adapter=True, negatives=64,
              lr=2e-3, batch=256, seed=0, x=None, recon_weight=0.0, centroids=True, normalize=False):
    """Centroids (and a query map) trained with a softmax ranking loss over each query's positive,
    its hardest ``negatives`` passages under the current index (refreshed every epoch) and the
    batch's other positives. With the centroids fixed this is :func:`fit_query_map`."""
    import torch

    if not centroids:
        if not adapter:
            return books, None
        index = PQIndex(codes, books, splits, rotation, metric)
        if normalize:
            index.normalise()
        return books, fit_query_map(q, pos, index, metric, epochs, negatives, lr, batch, seed)
    g = torch.Generator().manual_seed(seed)
    d = q.shape[1]
    m = len(books)
    R = torch.eye(d, dtype=torch.float32) if rotation is None else torch.from_numpy(rotation.astype(np.float32))
    C = [torch.nn.Parameter(torch.from_numpy(b.copy())) for b in books]
    W = torch.nn.Parameter(torch.eye(d)) if adapter else None
    trainable = C + ([W] if adapter else [])
    opt = torch.optim.Adam(trainable, lr=lr)
    xr = None
    if x is not None and recon_weight > 0:  # keep the centroids good quantisers of every passage
        xr = torch.from_numpy(x) @ R
        x_scale = float((xr * xr).sum(1).mean())
    codes_t = torch.from_numpy(codes.astype(np.int64))
    qt = torch.from_numpy(q)
    post = torch.from_numpy(pos.astype(np.int64))

    def recon(ids):
        return torch.cat([C[j][codes_t[ids, j]] for j in range(m)], -1)  # rotated space

    def qmap(qb):
        return (qb @ W if adapter else qb) @ R

    for _ in range(epochs):
        with torch.no_grad():  # hard negatives from the current index
            index = PQIndex(codes, [c.detach().numpy() for c in C], splits, None, metric)
            lut, offs = index.tables(qmap(qt).numpy())
            hard_t, width = _hard_negatives(codes, offs, lut, pos, negatives)
        order = torch.randperm(len(q), generator=g)
        for s in range(0, len(q), batch):
            b = order[s:s + batch]
            ids = _candidate_ids(post[b], hard_t[b])
            loss = _rank_loss(qmap(qt[b]), recon(ids), ids, post[b], width, metric)
            if xr is not None:
                pb = torch.randint(len(xr), (4 * batch,), generator=g)
                loss = loss + recon_weight * ((recon(pb) - xr[pb]) ** 2).sum(1).mean() / x_scale
            opt.zero_grad()
            loss.backward()
            opt.step()
    return [c.detach().numpy() for c in C], (W.detach().numpy() if adapter else None)


def _hard_negatives(codes, offs, lut, pos, negatives, scale=None):
    """Each query's best ``negatives`` passages under the current tables, its positive left out."""
    import torch

    from ..search import adc_topk

    hard, _ = adc_topk(codes, offs, lut, min(len(codes), negatives + 1), scale)
    keep = hard != pos[:, None]
    width = min(negatives, int(keep.sum(1).min()))
    return torch.from_numpy(np.stack([row[k][:width] for row, k in zip(hard, keep)])), width


def _candidate_ids(pos_b, hard_b):
    """Columns of a batch's ranking problem: the positive, its hard negatives, the batch's positives."""
    import torch

    return torch.cat([pos_b[:, None], hard_b, pos_b[None, :].expand(len(pos_b), -1)], 1)


def _rank_loss(qr, p, ids, pos_b, width, metric):
    """Softmax cross-entropy of the positive (column 0) against the hard negatives and the batch's
    other positives (in-batch columns equal to the row's positive are masked), scored as the
    search scores: inner product, or minus the squared distance."""
    import torch

    s = (qr[:, None, :] * p).sum(-1)
    if metric == "l2":
        s = 2 * s - (p * p).sum(-1) - (qr * qr).sum(-1, keepdim=True)
    logits = s / (0.05 if metric == "ip" else 1.0)
    mask = torch.zeros_like(logits, dtype=torch.bool)
    mask[:, 1 + width:] = ids[:, 1 + width:] == pos_b[:, None]
    logits = logits.masked_fill(mask, -1e9)
    return torch.nn.functional.cross_entropy(logits, torch.zeros(len(qr), dtype=torch.int64))


# the query adapter's training knobs: type, smallest value, largest value, smallest value excluded
_KNOBS = {"epochs": (int, 0, None, False), "negatives": (int, 1, None, False), "lr": (float, 0.0, None, True),
          "adapter": (int, 0, 1, False), "centroids": (int, 0, 1, False), "recon": (float, 0.0, None, False)}


def training_sample(x: np.ndarray, p: dict[str, Any], k: int, what: str) -> tuple[np.random.Generator, np.ndarray]:
    """The generator seeded by ``seed`` and the rows codebooks train on (``train`` of them, at
    least ``k``)."""
    n = len(x)
    rng = np.random.default_rng(p.get("seed", 0))
    train_n = min(n, p.get("train", 65536))
    if train_n < k:
        raise InvalidInputError(f"train={train_n} vectors cannot fit k={k} {what}; pass --param train={k} or more")
    return rng, (x[np.sort(rng.choice(n, size=train_n, replace=False))] if train_n < n else x)


def check_counts(p: dict[str, Any]) -> None:
    """Counts among the checked params must be >= 1 (seed >= 0): numpy raised on 0 or -5."""
    for name, v in p.items():
        lo = 0 if name == "seed" else 1
        if name in ("seed", "train", "stages", "iters", "rounds", "beam") and v < lo:
            raise InvalidInputError(f"parameter {name}={v} must be >= {lo}")


def _knob(name: str, v: Any) -> Any:
    kind, lo, hi, open_lo = _KNOBS[name]
    try:
        if kind is int and isinstance(v, float) and not v.is_integer():
            raise ValueError(v)  # int(1.5) would silently truncate
        x = kind(v)
        ok = math.isfinite(x) and (x > lo if open_lo else x >= lo) and (hi is None or x <= hi)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        rng = f"{lo}..{hi}" if hi is not None else f"{'>' if open_lo else '>='} {lo}"
        raise InvalidInputError(f"parameter {name}={v!r} must be {'an int' if kind is int else 'a number'} {rng}")
    return x


def take_pairs(params: dict[str, Any], more: tuple[str, ...] = ()) -> dict[str, Any]:
    """Pop the query-adapter parameters (training pairs as arrays or .npy paths, and the training
    knobs) out of ``params``; both halves of a pair or neither."""
    out = {k: params.pop(k) for k in ("queries", "positives", "epochs", "negatives", "lr", *more)
           if k in params and params[k] is not None}
    for k, v in list(out.items()):  # the training knobs: typed and in range, like check_params
        if k in _KNOBS:
            out[k] = _knob(k, v)
    if ("queries" in out) != ("positives" in out):
        raise InvalidInputError("a query adapter needs both --param queries=Q.npy and "
                                "--param positives=IDS.npy")
    for k in ("queries", "positives"):
        if isinstance(out.get(k), str):
            from ..formats.array import read_npy

            out[k] = read_npy(out[k])
    return out


def is_unit_norm(x: np.ndarray) -> bool:
    return bool(np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-3))


def check_pairs(q, pos, n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated training pairs: queries (q x d) and one positive passage id per query."""
    q = check_matrix(q, "training queries")
    pos = np.asarray(pos).reshape(-1)
    if q.shape[1] != d:
        raise InvalidInputError(f"training queries are {q.shape[1]}-d; the vectors are {d}-d")
    if pos.dtype.kind not in "iu" or len(pos) != len(q):
        raise InvalidInputError(f"positives must be {len(q)} integer passage ids, one per query")
    if len(pos) and (pos.min() < 0 or pos.max() >= n):
        raise InvalidInputError(f"a positive id is outside 0..{n - 1}")
    return q, pos


def fit_query_map(q, pos, index, metric: str, epochs: int = 4, negatives: int = 64, lr: float = 2e-3,
                  batch: int = 256, seed: int = 0) -> np.ndarray:
    """JPQ's query side alone, for any index with fixed codes (PQ, OPQ, RQ): a linear map W applied
    to queries before the search, trained with :func:`_rank_loss` against the index's own
    reconstructions, hard negatives re-mined with the current W every epoch."""
    import torch

    g = torch.Generator().manual_seed(seed)
    xhat = np.ascontiguousarray(index.reconstruct(), np.float32)
    if index.scale is not None:  # the search scores cosines: so does the loss
        xhat = xhat * index.scale[:, None]
    xhat = torch.from_numpy(xhat)
    W = torch.nn.Parameter(torch.eye(q.shape[1]))
    opt = torch.optim.Adam([W], lr=lr)
    qt, post = torch.from_numpy(q), torch.from_numpy(pos.astype(np.int64))
    for _ in range(epochs):
        index.query_map = W.detach().numpy().copy()
        lut, offs = index.tables(q)
        hard_t, width = _hard_negatives(index.codes, offs, lut, pos, negatives, index.scale)
        order = torch.randperm(len(q), generator=g)
        for s in range(0, len(q), batch):
            b = order[s:s + batch]
            ids = _candidate_ids(post[b], hard_t[b])
            loss = _rank_loss(qt[b] @ W, xhat[ids], ids, post[b], width, metric)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return W.detach().numpy()
