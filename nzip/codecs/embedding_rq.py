"""``embedding/rq``: residual quantisation with beam-search encoding, per-stage entropy coding and a
lookup-table search.

Residual quantisation (Juang & Gray, 1982; the beam-search encoder and codebook refinement follow
Liu et al., "Improved Residual Vector Quantization", 2015, and faiss's ResidualQuantizer): stage
``m`` quantises what stages ``0..m-1`` left over with a full-dimension codebook of ``k`` vectors,
so a vector is the *sum* of one codeword per stage. ``--bytes B`` is a budget of *coded* bytes per
vector: stages of 256 codewords are added while their codes' entropy fits it (~16 stages of ~7.9
bits at 16 bytes on sentence embeddings), and the coder's real size has the last word. Unit-norm data are scored by cosine to the reconstruction (``normalize``, on by default for
them): the length of a reconstruction is quantisation noise.

Each stage's k-means grows over the principal components of what is left (faiss's
"progressive dimension" training; plain k-means from random rows leaves most codewords of the
later stages nearly unused, see :func:`kmeans_progressive`). Where this departs from faiss's:
stages are added while their entropy fits the budget, then ``refine`` rounds of
(beam-search encoding, least-squares update of every codebook given the others: block coordinate
descent on the reconstruction error). Codes are stored one stage per zarr chunk, so each stage
gets its own entropy table (the first stages' codes are nearly uniform, later ones skewed). Search
is exact for inner products without decoding: ``<q, sum_m C_m[i_m]> = sum_m <q, C_m[i_m]>``, a
per-query table of ``B x 256`` dot products scanned like PQ's (``nzip.search``); faiss's residual
index decodes every vector instead. Inner-product metric only (unit-norm sentence embeddings);
L2 would need each vector's norm.

With training pairs (``--param queries=Q.npy --param positives=IDS.npy``) it also learns JPQ's
query side: a linear map applied to queries, trained with a ranking loss on the fixed residual
codes (``fit_query_map``) and stored with the index.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .._jit import nb
from ..errors import CorruptDataError, InvalidInputError
from ..formats.container import ArraySpec, Item
from ..formats.embedding import as_matrix, check_matrix
from ..registry import Encoded, register
from .embedding_pq import (CHUNK_ROWS, _means, _nearest, _PQBase, _rotate, check_counts, check_pairs, fit_query_map,
                           training_sample,
                           inverse_norms, is_unit_norm, kmeans, take_pairs)

# beam width: 64 from the table beam search (recall@10 at 32 bytes, two rounds: beam 4 0.8405,
# 16 0.8458, 32 0.8462, 64 0.8483; scripts/research/embeddings/NOTES.md); 8 where the tables would
# not fit (over LUT_MAX_CODEWORDS codewords: the residual-keeping search, slower per path)
BEAM = 64
BEAM_LARGE = 8
ROUNDS = 2  # refinement rounds (beam search + codebook refit): at 32 bytes rounds 2, 4, 6 measured the same
ITERS = 20
PD_STEPS = 10  # progressive-dimension k-means: dimension steps, and iterations at each but the last
PD_STEP_ITERS = 10
BLOCK = 2048  # vectors per beam-search batch
LUT_MAX_CODEWORDS = 12288  # the table beam search keeps (stages x k)^2 float32 codeword products (<= 600 MB)


class RQIndex:
    """Stage codes (n x M), stage codebooks (M x K x d float32), optional query map; the same
    interface as :class:`~nzip.codecs.embedding_pq.PQIndex` for :mod:`nzip.search`."""

    metric = "ip"
    rotation = None

    def __init__(self, codes: np.ndarray, books: np.ndarray, query_map: np.ndarray | None = None) -> None:
        self.codes, self.books, self.query_map = codes, books, query_map
        self.scale: np.ndarray | None = None

    def normalise(self) -> None:
        """Cosine scores: 1 / |reconstruction| per vector (the stages are not orthogonal, so
        from the reconstruction itself)."""
        y = self.reconstruct().astype(np.float64)
        self.scale = inverse_norms((y * y).sum(1))

    @property
    def n(self) -> int:
        return self.codes.shape[0]

    @property
    def dim(self) -> int:
        return int(self.books.shape[2])

    def reconstruct(self, device: str = "cpu") -> np.ndarray:
        """Sum of the stages' codewords in stage order, float32 (the GPU gather adds in the same
        order, so both give the same bits)."""
        from ..kernels import use_kernel

        if use_kernel(device):
            import torch

            from ..kernels import gather

            codes = torch.from_numpy(np.ascontiguousarray(self.codes)).to(device)
            return gather.rvq(codes, torch.from_numpy(self.books).to(device)).cpu().numpy()
        y = self.books[0][self.codes[:, 0]].copy()
        for m in range(1, self.books.shape[0]):
            y += self.books[m][self.codes[:, m]]
        return y

    def tables(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = _rotate(queries, self.query_map)
        M, K, d = self.books.shape
        lut = (q @ self.books.reshape(M * K, d).T).astype(np.float32)
        return lut, np.arange(M, dtype=np.int64) * K


@nb.njit(parallel=True, cache=True, nogil=True)
def _beam_lut(xc, xn, norms, cross, beam, out):
    """Beam search from tables (faiss's "beam LUT"): the error of a partial code plus codeword k of
    stage m is err + ||c_mk||^2 - 2 (<x, c_mk> - sum_{i<m} <c_i, c_mk>), with <x, c> (``xc``) and
    the codewords' products (``cross``) precomputed, so no residual vectors are kept. The
    ``beam`` cheapest extensions of the live paths survive each stage (ties: the first found)."""
    n = xc.shape[0]
    M, K = norms.shape
    for v in nb.prange(n):
        codes = np.zeros((beam, M), np.int64)
        nxt = np.zeros((beam, M), np.int64)
        err = np.empty(beam, np.float32)
        kc = np.empty(beam, np.float32)
        kp = np.empty(beam, np.int64)
        kk = np.empty(beam, np.int64)
        acc = np.empty(K, np.float32)
        err[0] = xn[v]
        live = 1
        for m in range(M):
            kept = 0
            worst = 0
            for p in range(live):
                for k in range(K):
                    acc[k] = xc[v, m * K + k]
                for i in range(m):
                    row = i * K + codes[p, i]
                    for k in range(K):
                        acc[k] -= cross[row, m * K + k]
                e0 = err[p]
                for k in range(K):
                    c = e0 + norms[m, k] - np.float32(2) * acc[k]
                    if kept < beam:
                        kc[kept] = c
                        kp[kept] = p
                        kk[kept] = k
                        kept += 1
                        if kept == beam:
                            worst = 0
                            for t in range(1, beam):
                                if kc[t] > kc[worst]:
                                    worst = t
                    elif c < kc[worst]:
                        kc[worst] = c
                        kp[worst] = p
                        kk[worst] = k
                        worst = 0
                        for t in range(1, beam):
                            if kc[t] > kc[worst]:
                                worst = t
            for j in range(kept):
                for i in range(m):
                    nxt[j, i] = codes[kp[j], i]
                nxt[j, m] = kk[j]
                err[j] = kc[j]
            codes, nxt = nxt, codes
            live = kept
        best = 0
        for p in range(1, live):
            if err[p] < err[best]:
                best = p
        for i in range(M):
            out[v, i] = codes[best, i]


def beam_encode(x: np.ndarray, books: np.ndarray, beam: int = BEAM) -> np.ndarray:
    """Codes (n x M) minimising ||x - sum_m C_m[i_m]||^2 by beam search: ``beam`` partial
    encodings per vector survive each stage (beam 1 is the greedy encoder). From tables of
    codeword products (:func:`_beam_lut`, both cores) where they fit in memory, else
    :func:`beam_encode_np`."""
    M, K, d = books.shape
    if M * K > LUT_MAX_CODEWORDS or beam > 256:
        return beam_encode_np(x, books, beam)
    flat = np.ascontiguousarray(books.reshape(M * K, d), np.float32)
    cross = flat @ flat.T
    norms = np.ascontiguousarray(np.diagonal(cross).reshape(M, K))
    out = np.empty((len(x), M), np.int64)
    for s in range(0, len(x), BLOCK):
        xb = np.ascontiguousarray(x[s:s + BLOCK], np.float32)
        _beam_lut(xb @ flat.T, (xb * xb).sum(1), norms, cross, beam, out[s:s + BLOCK])
    return out


def beam_encode_np(x: np.ndarray, books: np.ndarray, beam: int = BEAM_LARGE) -> np.ndarray:
    """:func:`beam_encode` with the residuals kept per path (numpy; any number of codewords)."""
    M, K, d = books.shape
    n = len(x)
    out = np.empty((n, M), np.int64)
    norms = (books * books).sum(2)  # (M, K)
    for s in range(0, n, BLOCK):
        r = x[s:s + BLOCK].astype(np.float32)[:, None, :]  # (b, 1, d) residuals of the live paths
        b = len(r)
        err = (r[:, :, :] ** 2).sum(2)  # (b, 1)
        paths = np.zeros((b, 1, 0), np.int64)
        for m in range(M):
            w = r.shape[1]
            # ||r - c||^2 = ||r||^2 - 2 r.c + ||c||^2 for every live path and codeword
            cand = err[:, :, None] - 2 * (r.reshape(b * w, d) @ books[m].T).reshape(b, w, K) + norms[m]
            flat = cand.reshape(b, w * K)
            keep = min(beam, w * K)
            top = np.argpartition(flat, keep - 1, axis=1)[:, :keep]
            order = np.argsort(np.take_along_axis(flat, top, 1), axis=1, kind="stable")
            top = np.take_along_axis(top, order, 1)
            parent, code = top // K, top % K
            r = np.take_along_axis(r, parent[:, :, None], 1) - books[m][code]
            err = np.take_along_axis(flat, top, 1)
            paths = np.concatenate([np.take_along_axis(paths, parent[:, :, None], 1), code[:, :, None]], 2)
        out[s:s + b] = paths[:, 0, :]
    return out


def refine_books(x: np.ndarray, codes: np.ndarray, books: np.ndarray, passes: int = 2) -> np.ndarray:
    """Block coordinate descent on ||x - sum_m C_m[codes_m]||^2: each codebook in turn becomes the
    per-code mean of what the other stages leave (unused codewords stay)."""
    from scipy import sparse

    M, K, d = books.shape
    n = len(x)
    books = books.copy()
    y = books[np.arange(M)[None, :], codes].sum(1)  # (n, d) current reconstruction
    for _ in range(passes):
        for m in range(M):
            part = x - (y - books[m][codes[:, m]])
            cnt = np.bincount(codes[:, m], minlength=K)
            onehot = sparse.csr_matrix((np.ones(n, np.float32), (codes[:, m], np.arange(n))), shape=(K, n))
            sums = np.asarray(onehot @ part, dtype=np.float64)
            new = np.where(cnt[:, None] > 0, sums / np.maximum(cnt, 1)[:, None], books[m]).astype(np.float32)
            y += new[codes[:, m]] - books[m][codes[:, m]]
            books[m] = new
    return books


def split_empty(c: np.ndarray, cnt: np.ndarray) -> None:
    """In place: every empty cluster takes half of the largest one (its centroid nudged apart)."""
    for e in np.flatnonzero(cnt == 0):
        big = int(np.argmax(cnt))
        eps = np.float32(1e-3 * (np.abs(c[big]).mean() + 1e-12))
        c[e], c[big] = c[big] + eps, c[big] - eps
        cnt[e] = cnt[big] = cnt[big] / 2


def kmeans_progressive(x: np.ndarray, k: int, iters: int, rng: np.random.Generator,
                       steps: int = PD_STEPS, step_iters: int = PD_STEP_ITERS) -> np.ndarray:
    """k-means grown over the principal components (as faiss trains its residual quantiser): first
    in the data's top 2 components, then 3, 6, ... (geometric steps) up to all of them, each step
    starting from the last one's centroids, ``iters`` Lloyd iterations at full dimension; an empty
    cluster takes half of the largest.

    On residuals, plain k-means from random rows leaves most codewords with a handful of points
    (high-dimensional residuals are nearly equidistant from every seed): at 16 bytes, ~230 of 256
    codewords of every stage past the third coded < 10 vectors each. Grown from low dimensions the
    clusters stay balanced (every stage's codes carry ~7.9 bits) and each stage buys more recall:
    0.706 against 0.660 at 16 bytes before refinement (scripts/research/embeddings/NOTES.md)."""
    mu = x.mean(0)
    xc = (x - mu).astype(np.float32)
    _, V = np.linalg.eigh(xc.T.astype(np.float64) @ xc)
    V = np.ascontiguousarray(V[:, ::-1]).astype(np.float32)  # principal directions, largest first
    y = xc @ V
    d = x.shape[1]
    dims = sorted({max(1, min(d, int(round(d ** ((i + 1) / steps))))) for i in range(steps)} | {d})
    c = None
    for di in dims:
        yi = np.ascontiguousarray(y[:, :di])
        if c is None:
            ci = yi[rng.choice(len(yi), size=k, replace=False)].copy()
        else:
            ci = np.zeros((k, di), np.float32)
            ci[:, :c.shape[1]] = c
        for _ in range(iters if di == d else step_iters):
            a = _nearest(yi, ci)
            ci, cnt = _means(yi, a, ci)
            split_empty(ci, cnt)
        c = ci
    return (c @ V.T + mu).astype(np.float32)


def _entropy_bits(a: np.ndarray, k: int) -> float:
    cnt = np.bincount(a, minlength=k)
    p = cnt[cnt > 0] / len(a)
    return float(-(p * np.log2(p)).sum())


def greedy_stages(x: np.ndarray, bits: float, k: int, iters: int, rng: np.random.Generator,
                  max_stages: int, progressive: bool = True) -> np.ndarray:
    """Stage-by-stage k-means on what the earlier stages leave, adding stages while the codes'
    entropy so far stays within ``bits`` per vector (later stages' codes are skewed, so a byte
    budget buys more than one stage per byte); (stages, k, d)."""
    r = x.astype(np.float32).copy()
    books, spent = [], 0.0
    while len(books) < max_stages:
        c = kmeans_progressive(r, k, iters, rng) if progressive else kmeans(r, k, iters, rng)
        a = ((r @ c.T) * -2 + (c ** 2).sum(1)).argmin(1)
        h = _entropy_bits(a, k)
        if books and spent + h > bits:
            break
        books.append(c)
        spent += h
        r -= c[a]
    return np.stack(books)


def fit_stages(x: np.ndarray, books: np.ndarray, codes: np.ndarray, budget: float,
               beam: int) -> tuple[np.ndarray, np.ndarray]:
    """The coder decides: the longest prefix of stages whose coded bytes fit ``budget`` (at least
    one), plus the next stage cut down to its most used codewords where a cut version still fits:
    balanced stages cost ~8 bits each, so a whole stage often misses the budget by a fraction of
    a byte, and half its codewords (<= 7 bits) still buy recall. The dropped codewords are zeros
    that no code points at; the codes are encoded again with the cut stage. Returns (books, codes)."""
    M, k, _ = books.shape
    sizes = np.cumsum(_stage_bytes(codes, k))
    stages = max(1, int(np.searchsorted(sizes, budget, side="right")))
    room = budget - sizes[stages - 1]
    if stages >= M or room * 8 < len(x) * 2:  # no next stage, or not even 2 bits a vector left
        return books[:stages], codes[:, :stages]
    use = np.bincount(codes[:, stages], minlength=k)
    order = np.argsort(-use, kind="stable")
    width = 1 << min(int(np.log2(k)) - 1, int(room * 8 / len(x)))
    while width >= 4:
        b = books[:stages + 1].copy()
        far = np.ones(k, bool)
        far[order[:width]] = False
        b[stages][far] = 1e4  # never the nearest: the beam search cannot pick them
        c = beam_encode(x, b, beam)
        if not far[c[:, stages]].any() and _stage_bytes(c, k).sum() <= budget:
            b[stages][far] = 0
            return b, c
        width //= 2
    return books[:stages], codes[:, :stages]


def train_rq(x: np.ndarray, bits: float, k: int, iters: int, rounds: int, beam: int,
             rng: np.random.Generator, max_stages: int, progressive: bool = True) -> np.ndarray:
    """:func:`greedy_stages`, then ``rounds`` of (beam encoding, codebook refinement)."""
    books = greedy_stages(x, bits, k, iters, rng, max_stages, progressive)
    for _ in range(rounds):
        codes = beam_encode(x, books, beam)
        books = refine_books(x, codes, books)
    return books


@register
class EmbeddingRQ(_PQBase):
    name = "embedding/rq"
    description = "embeddings: residual quantisation (beam search), per-stage entropy coding, LUT search"

    def extra_params(self, params):
        return take_pairs(params)

    def encode(self, item: Any, progress=None, **params: Any) -> Encoded:
        extra = self.extra_params(params)
        p = self.check_params(params, {"bytes": float, "k": int, "iters": int, "train": int, "seed": int,
                                       "rounds": int, "beam": int, "metric": str, "normalize": int,
                                       "stages": int, "progressive": int, "polish": int})
        check_counts(p)
        src = as_matrix(item)
        x = check_matrix(src)
        n, d = x.shape
        if "bytes" not in p:
            raise InvalidInputError(f"{self.name} needs a size: --bytes B (stages of 256 codewords)")
        B = p["bytes"]
        if not 0 < B <= 2 * d:
            raise InvalidInputError(f"--bytes must be in (0, {2 * d}] for {d}-d vectors, got {B:g}")
        if p.get("metric", "ip") != "ip":
            raise InvalidInputError("embedding/rq scores inner products (metric=ip); use embedding/opq for l2")
        if n < 2:
            raise InvalidInputError(f"{self.name} needs at least 2 vectors to train its codebooks, got {n}")
        k = p.get("k", 256)
        if "k" not in p:
            k = min(k, n)  # (as embedding/pq: small sets get fewer codewords)
        if not 2 <= k <= 65536:
            raise InvalidInputError(f"k (codewords per stage) must be in 2..65536, got {k}")
        if k > n:
            raise InvalidInputError(f"{n} vectors are fewer than the k={k} codewords per stage; pass "
                                    f"--param k={max(2, n)} or fewer")
        # (stages ~ one per 8 bits of budget for k=256: the table beam search where it fits)
        beam = p.get("beam", BEAM if max(1, round(8 * B / np.log2(k))) * k <= LUT_MAX_CODEWORDS else BEAM_LARGE)
        rng, xt = training_sample(x, p, k, "codewords per stage")
        max_stages = p.get("stages", 4 * int(np.ceil(B)))
        progressive = bool(p.get("progressive", 1))
        books = train_rq(xt, 8 * B, k, p.get("iters", ITERS), p.get("rounds", ROUNDS), beam, rng, max_stages,
                         progressive)
        books = books.astype(np.float16).astype(np.float32)  # the stored precision, before encoding
        codes = beam_encode(x, books, beam)
        books, codes = fit_stages(x, books, codes, B * n, beam)
        first = float(_stage_bytes(codes[:, :1], k)[0]) / n
        if first > B:  # fit_stages keeps one stage whatever it costs
            raise InvalidInputError(f"--bytes {B:g} is below one residual stage ({first:.2f} bytes per vector "
                                    f"at k={k}): pass a larger --bytes or a smaller --param k")
        if p.get("polish", 1):  # codebooks refit to the final codes: the same codes and bytes, less error
            books = refine_books(x, codes, books).astype(np.float16).astype(np.float32)
        stages = len(books)
        normalize = bool(p.get("normalize", int(is_unit_norm(x))))
        if progress is not None:
            progress(x.size)
        dt = np.uint8 if k <= 256 else np.uint16
        arrays = {
            # one stage per chunk: every stage gets its own entropy table
            "codes_by_stage": ArraySpec(np.ascontiguousarray(codes.T.astype(dt)),
                                        chunks=(1, min(max(n, 1), CHUNK_ROWS))),
            "codebooks": ArraySpec(books.astype(np.float16), chunks=books.shape, symbols=False),
        }
        params_out = {"bytes": B, "stages": stages, "k": k, "beam": beam, "metric": "ip",
                      "train": len(xt), "rounds": p.get("rounds", ROUNDS), "normalize": int(normalize),
                      "progressive": int(progressive), "polish": int(bool(p.get("polish", 1)))}
        if "queries" in extra:  # JPQ's query side on the residual codes (see embedding/jpq)
            q, pos = check_pairs(extra["queries"], extra["positives"], n, d)
            index = RQIndex(codes, books)
            if normalize:
                index.normalise()
            W = fit_query_map(q, pos, index, "ip", int(extra.get("epochs", 4)), int(extra.get("negatives", 64)),
                              float(extra.get("lr", 2e-3)))
            arrays["query_map"] = ArraySpec(W.astype(np.float16), chunks=W.shape, symbols=False)
            params_out["adapter"] = {"queries": int(len(q)), "epochs": int(extra.get("epochs", 4))}
        source = {"modality": "embedding", "shape": [n, d], "dtype": src.dtype.name}
        return Encoded(arrays=arrays, params=params_out, source=source)


def load_rq_index(container: Item) -> RQIndex:
    src, prm = container.source, container.params
    try:
        n, d = (int(v) for v in src["shape"])
        stages, k = int(prm.get("stages", prm["bytes"])), int(prm["k"])
    except (KeyError, TypeError, ValueError):
        raise CorruptDataError(f"{container.path}: embedding parameters are missing or malformed") from None
    codes = container.read("codes_by_stage")
    books = container.read("codebooks")
    if codes.shape != (stages, n) or books.shape != (stages, k, d) or books.dtype != np.float16:
        raise CorruptDataError(f"{container.path}: codes {list(codes.shape)} / codebooks "
                               f"{list(books.shape)} do not match {stages} stages of {k} x {d}")
    if codes.size and int(codes.max()) >= k:
        raise CorruptDataError(f"{container.path}: a code points past its stage's codewords")
    qmap = None
    if "query_map" in container.array_names():
        qmap = container.read("query_map").astype(np.float32)
    index = RQIndex(np.ascontiguousarray(codes.T), books.astype(np.float32), qmap)
    if prm.get("normalize"):
        index.normalise()
    return index


def _stage_bytes(codes: np.ndarray, k: int) -> np.ndarray:
    """What each stage's codes will cost in the container: its chunks through nzip.rans, plus
    each chunk's crc32c."""
    from ..formats.rans_chunk import encode_chunk

    dt = np.uint8 if k <= 256 else np.uint16
    return np.array([sum(len(encode_chunk(np.ascontiguousarray(codes[s:s + CHUNK_ROWS, m].astype(dt)))) + 4
                         for s in range(0, len(codes), CHUNK_ROWS)) for m in range(codes.shape[1])])
