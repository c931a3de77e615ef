"""Residual-quantiser training variants measured on the cached MiniLM passages (recall@10 against
exact search, cosine scoring of the reconstruction), at a coded budget measured as the stages'
empirical code entropy. Run from the repository root:

    python scripts/research/embeddings/rq_variants.py --bytes 16 --variants base,rd0.5,rd1,rd2
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from nzip.codecs.embedding_pq import kmeans  # noqa: E402
from nzip.codecs.embedding_rq import BLOCK, _entropy_bits, greedy_stages, refine_books  # noqa: E402


def lengths(codes_m: np.ndarray, k: int) -> np.ndarray:
    cnt = np.bincount(codes_m, minlength=k).astype(np.float64) + 0.5
    return np.log2(cnt.sum() / cnt).astype(np.float32)


def beam_rd(x, books, beam, lens=None, lam=0.0):
    """beam_encode with cost = squared error + lam * sum of code lengths (bits)."""
    M, K, d = books.shape
    n = len(x)
    out = np.empty((n, M), np.int64)
    norms = (books * books).sum(2)
    for s in range(0, n, BLOCK):
        r = x[s:s + BLOCK].astype(np.float32)[:, None, :]
        b = len(r)
        err = (r ** 2).sum(2)
        cost = err.copy()
        paths = np.zeros((b, 1, 0), np.int64)
        for m in range(M):
            w = r.shape[1]
            e = err[:, :, None] - 2 * (r.reshape(b * w, d) @ books[m].T).reshape(b, w, K) + norms[m]
            c = e - err[:, :, None] + cost[:, :, None]
            if lens is not None and lam:
                c = c + lam * lens[m]
            flat = c.reshape(b, w * K)
            keep = min(beam, w * K)
            top = np.argpartition(flat, keep - 1, axis=1)[:, :keep]
            order = np.argsort(np.take_along_axis(flat, top, 1), axis=1, kind="stable")
            top = np.take_along_axis(top, order, 1)
            parent, code = top // K, top % K
            r = np.take_along_axis(r, parent[:, :, None], 1) - books[m][code]
            err = np.take_along_axis(e.reshape(b, w * K), top, 1)
            cost = np.take_along_axis(flat, top, 1)
            paths = np.concatenate([np.take_along_axis(paths, parent[:, :, None], 1), code[:, :, None]], 2)
        out[s:s + b] = paths[:, 0, :]
    return out


def recall(x, books_list, codes, q, exact):
    y = books_list[0][codes[:, 0]].astype(np.float64)
    for m in range(1, len(books_list)):
        y += books_list[m][codes[:, m]]
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    found = np.argsort(-(q @ y.T.astype(np.float32)), axis=1)[:, :10]
    mse = float(((x - y) ** 2).sum(1).mean())
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)])), mse


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bytes", type=float, default=16)
    ap.add_argument("--variants", default="base")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--beam", type=int, default=4)
    args = ap.parse_args()
    z = np.load(ROOT / "data/embeddings/minilm_30000_1000_5000.npz")
    x, q = z["passages"], z["queries"]
    exact = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :10]
    bits = 8 * args.bytes
    for v in args.variants.split(","):
        t0 = time.time()
        rng = np.random.default_rng(0)
        mu = float(v[2:]) if v.startswith("rd") else 0.0
        extra = 8 if mu else 0  # room for the stages that cheaper codes buy
        books = greedy_stages(x, bits, 256, args.iters, rng, 64 + extra, progressive=False)
        if extra:  # add stages past the greedy budget: RD encoding will make codes cheaper
            r = x - books[np.arange(len(books))[None, :], beam_rd(x, books, 1)].sum(1)
            more = []
            for _ in range(extra):
                c = kmeans(r, 256, args.iters, rng)
                a = ((r @ c.T) * -2 + (c ** 2).sum(1)).argmin(1)
                more.append(c)
                r -= c[a]
            books = np.concatenate([books, np.stack(more)])
        lens = None
        for _ in range(args.rounds):
            if mu:
                plain = beam_rd(x, books, args.beam)  # distortion only: sets lambda's scale
                if lens is None:  # first round: code lengths from the plain encoding
                    lens = np.stack([lengths(plain[:, m], 256) for m in range(len(books))])
                y = books[np.arange(len(books))[None, :], plain].sum(1)
                D = float(((x - y) ** 2).sum(1).mean())
                lam = mu * 2 * np.log(2) * D / x.shape[1]
                codes = beam_rd(x, books, args.beam, lens, lam)
                lens = np.stack([lengths(codes[:, m], 256) for m in range(len(books))])
            else:
                codes = beam_rd(x, books, args.beam)
            books = refine_books(x, codes, books)
        books = books.astype(np.float16).astype(np.float32)
        codes = beam_rd(x, books, args.beam, lens, lam if mu else 0.0)
        h = np.array([_entropy_bits(codes[:, m], 256) for m in range(len(books))])
        stages = max(1, int(np.searchsorted(np.cumsum(h), bits, side="right")))
        rec, mse = recall(x, list(books[:stages]), codes[:, :stages], q, exact)
        print(f"{v}: stages {stages}/{len(books)} bytes {h[:stages].sum() / 8:.2f} recall@10 {rec:.4f} "
              f"mse {mse:.5f} ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
