"""Residual codes chosen for the *angle* rather than the squared error (issue 5).

Search scores unit-norm data by cosine to the reconstruction, so a reconstruction's length is free:
what matters is 1 - cos(x, x_hat), i.e. min_s ||x - s x_hat||^2 (gain-shape), not ||x - x_hat||^2.
This script measures, on the cached MiniLM passages, (a) a beam search that ranks partial codes by
cosine, with the same codebooks, and (b) codebooks refined for the gain-shape error (each vector's
best gain s_i fixed, a weighted least-squares codebook update). Run from the repository root:

    python scripts/research/embeddings/cosine_rq.py --bytes 16 --variants base,cos,cos-refine
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from nzip.codecs.embedding_rq import (BLOCK, _entropy_bits, beam_encode, greedy_stages,  # noqa: E402
                                      refine_books)


def beam_cos(x: np.ndarray, books: np.ndarray, beam: int, mse_stages: int = 0) -> np.ndarray:
    """Beam search keeping the partial codes of largest cos(x, x_hat) (stages below
    ``mse_stages`` ranked by squared error as usual)."""
    M, K, d = books.shape
    n = len(x)
    out = np.empty((n, M), np.int64)
    norms = (books * books).sum(2)
    for s in range(0, n, BLOCK):
        xb = x[s:s + BLOCK].astype(np.float32)
        b = len(xb)
        r = xb[:, None, :].copy()  # residual x - x_hat per path
        dot = np.zeros((b, 1), np.float32)  # x . x_hat
        nn = np.zeros((b, 1), np.float32)  # |x_hat|^2
        err = (xb ** 2).sum(1)[:, None]
        paths = np.zeros((b, 1, 0), np.int64)
        for m in range(M):
            w = r.shape[1]
            rc = (r.reshape(b * w, d) @ books[m].T).reshape(b, w, K)
            xc = (xb @ books[m].T)[:, None, :]  # (b, 1, K)
            new_dot = dot[:, :, None] + xc
            new_nn = nn[:, :, None] + 2 * (xc - rc) + norms[m]
            new_err = err[:, :, None] - 2 * rc + norms[m]
            if m < mse_stages:
                cost = new_err
            else:
                cost = -new_dot / np.sqrt(np.maximum(new_nn, 1e-12))
            flat = cost.reshape(b, w * K)
            keep = min(beam, w * K)
            top = np.argpartition(flat, keep - 1, axis=1)[:, :keep]
            order = np.argsort(np.take_along_axis(flat, top, 1), axis=1, kind="stable")
            top = np.take_along_axis(top, order, 1)
            parent, code = top // K, top % K
            r = np.take_along_axis(r, parent[:, :, None], 1) - books[m][code]
            dot = np.take_along_axis(new_dot.reshape(b, w * K), top, 1)
            nn = np.take_along_axis(new_nn.reshape(b, w * K), top, 1)
            err = np.take_along_axis(new_err.reshape(b, w * K), top, 1)
            paths = np.concatenate([np.take_along_axis(paths, parent[:, :, None], 1), code[:, :, None]], 2)
        out[s:s + b] = paths[:, 0, :]
    return out


def refine_gain(x: np.ndarray, codes: np.ndarray, books: np.ndarray, passes: int = 2) -> np.ndarray:
    """Codebooks for min sum_i ||x_i - s_i x_hat_i||^2 with each s_i at its optimum for the current
    codebooks: the same block coordinate descent as ``refine_books`` on targets x_i / s_i with
    weights s_i^2."""
    M = books.shape[0]
    y = books[np.arange(M)[None, :], codes].sum(1).astype(np.float64)
    s = (x * y).sum(1) / np.maximum((y * y).sum(1), 1e-12)
    s = np.maximum(s, 1e-3)
    # weighted LS with weights s^2 == unweighted LS on rows scaled by s: scale targets and codes' rows
    return _weighted_refine(x / s[:, None], codes, books, s * s, passes)


def _weighted_refine(t, codes, books, wts, passes):
    M, K, d = books.shape
    books = books.copy()
    y = books[np.arange(M)[None, :], codes].sum(1)
    for _ in range(passes):
        for m in range(M):
            part = (t - (y - books[m][codes[:, m]])) * wts[:, None]
            wsum = np.bincount(codes[:, m], weights=wts, minlength=K)
            sums = np.zeros((K, books.shape[2]))
            np.add.at(sums, codes[:, m], part)
            new = np.where(wsum[:, None] > 0, sums / np.maximum(wsum, 1e-12)[:, None], books[m]).astype(np.float32)
            y += new[codes[:, m]] - books[m][codes[:, m]]
            books[m] = new
    return books


def measure(x, books, codes, q, exact, bits):
    h = np.array([_entropy_bits(codes[:, m], books.shape[1]) for m in range(len(books))])
    stages = max(1, int(np.searchsorted(np.cumsum(h), bits, side="right")))
    y = books[np.arange(stages)[None, :], codes[:, :stages]].sum(1).astype(np.float64)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    found = np.argsort(-(q @ y.T.astype(np.float32)), axis=1)[:, :10]
    rec = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)]))
    ang = float((1 - (x * y).sum(1)).mean())
    return stages, h[:stages].sum() / 8, rec, ang


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bytes", type=float, default=16)
    ap.add_argument("--variants", default="base,cos,cos-refine")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--beam", type=int, default=4)
    ap.add_argument("--spare", type=int, default=4, help="stages trained past the greedy budget")
    ap.add_argument("--cache", default="/tmp/cosine_rq")
    args = ap.parse_args()
    z = np.load(ROOT / "data/embeddings/minilm_30000_1000_5000.npz")
    x, q = z["passages"], z["queries"]
    exact = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :10]
    bits = 8 * args.bytes
    cache = Path(args.cache) / f"base_{args.bytes:g}_{args.rounds}_{args.spare}.npy"
    cache.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if cache.exists():
        books = np.load(cache)
    else:  # the codec's training (greedy stages, rounds of beam encoding + refinement), a few spare stages
        rng = np.random.default_rng(0)
        books = greedy_stages(x, bits + 8 * args.spare, 256, 20, rng, 96, progressive=False)
        for _ in range(args.rounds):
            books = refine_books(x, beam_encode(x, books, args.beam), books)
        np.save(cache, books)
    print(f"base books {books.shape} ({time.time() - t0:.0f} s)", flush=True)
    for v in args.variants.split(","):
        t0 = time.time()
        b = books.astype(np.float16).astype(np.float32)
        if v == "base":
            codes = beam_encode(x, b, args.beam)
        elif v.startswith("cos-refine"):
            cb = b
            for _ in range(int(v[10:] or 3)):
                codes = beam_cos(x, cb, args.beam)
                cb = refine_gain(x, codes, cb)
            b = cb.astype(np.float16).astype(np.float32)
            codes = beam_cos(x, b, args.beam)
        elif v.startswith("cosmse"):
            codes = beam_cos(x, b, args.beam, mse_stages=int(v[6:]))
        elif v == "cos":
            codes = beam_cos(x, b, args.beam)
        else:
            raise SystemExit(f"unknown variant {v}")
        stages, by, rec, ang = measure(x, b, codes, q, exact, bits)
        if stages < len(b):  # encode again with just the stages that fit (a beam over them alone)
            b = b[:stages]
            codes = (beam_encode(x, b, args.beam) if v == "base" else
                     beam_cos(x, b, args.beam, mse_stages=int(v[6:]) if v.startswith("cosmse") else 0))
            stages, by, rec, ang = measure(x, b, codes, q, exact, bits)
        print(f"{v}: stages {stages}/{len(b)} bytes {by:.2f} recall@10 {rec:.4f} 1-cos {ang:.5f} "
              f"({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
