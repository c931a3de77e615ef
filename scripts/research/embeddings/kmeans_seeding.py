"""How the residual stages' k-means is seeded (issue 5).

faiss's residual quantiser with 32 fixed 8-bit stages reaches recall@10 0.816 at 32 bytes; the
codec's own 32 stages (``--param stages=32``) cost only 19.3 entropy-coded bytes but reach 0.716,
and at 32 coded bytes (~55 stages) 0.796: its stages carry ~4.8 bits each against faiss's ~8, and
buy less recall per byte. One suspect: ``kmeans`` re-seeds an empty cluster at the worst-coded
point, so on residual data codewords drift to outliers (rare codes: cheap in bits, little gain).
Variants of the stage k-means, the rest of the codec's training unchanged:

  base    random rows, empty clusters re-seeded at the farthest points (the codec today)
  split   random rows, an empty cluster takes half of the largest cluster (faiss's way)
  pp      k-means++ seeding, then as ``split``
  pd      progressive dimensions (faiss's default for its residual quantiser; now the codec's
          ``kmeans_progressive``): k-means in the residuals' first 2, 3, 6, ... principal
          components, each step starting from the last one's centroids, up to all 384

    python scripts/research/embeddings/kmeans_seeding.py --bytes 16 --variant split [--rounds 0]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
import nzip.codecs.embedding_rq as RQ  # noqa: E402
from nzip.codecs.embedding_pq import _means, _nearest  # noqa: E402

BEAM = 4  # the codec's beam when the notes' numbers were measured


def kmeans_split(x, k, iters, rng, init="rows"):
    if init == "pp":  # k-means++ on a sample (D^2 seeding)
        s = x[rng.choice(len(x), size=min(len(x), 8192), replace=False)]
        c = [s[rng.integers(len(s))]]
        d = ((s - c[0]) ** 2).sum(1)
        for _ in range(1, k):
            c.append(s[rng.choice(len(s), p=d / d.sum())])
            d = np.minimum(d, ((s - c[-1]) ** 2).sum(1))
        c = np.stack(c).astype(np.float32)
    else:
        c = x[rng.choice(len(x), size=k, replace=False)].copy()
    for _ in range(iters):
        a = _nearest(x, c)
        c, cnt = _means(x, a, c)
        RQ.split_empty(c, cnt)
    return c


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bytes", type=float, default=16)
    ap.add_argument("--variant", default="split")
    ap.add_argument("--rounds", type=int, default=5)  # the codec's then (its notes' numbers)
    args = ap.parse_args()
    if args.variant == "split":
        RQ.kmeans = lambda x, k, iters, rng: kmeans_split(x, k, iters, rng)
    elif args.variant == "pp":
        RQ.kmeans = lambda x, k, iters, rng: kmeans_split(x, k, iters, rng, "pp")
    elif args.variant not in ("base", "pd"):  # pd: the codec's kmeans_progressive (its default)
        raise SystemExit(f"unknown variant {args.variant}")
    z = np.load(ROOT / "data/embeddings/minilm_30000_1000_5000.npz")
    x, q = z["passages"], z["queries"]
    exact = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :10]
    t0 = time.time()
    rng = np.random.default_rng(0)
    books = RQ.train_rq(x, 8 * args.bytes, 256, RQ.ITERS, args.rounds, BEAM, rng, 4 * int(np.ceil(args.bytes)),
                        progressive=args.variant == "pd")
    books = books.astype(np.float16).astype(np.float32)
    codes = RQ.beam_encode(x, books, BEAM)
    h = np.array([RQ._entropy_bits(codes[:, m], 256) for m in range(len(books))])
    y = books[np.arange(len(books))[None, :], codes].sum(1).astype(np.float64)
    mse = float(((x - y) ** 2).sum(1).mean())
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    found = np.argsort(-(q @ y.T.astype(np.float32)), axis=1)[:, :10]
    rec = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)]))
    small = [int((np.bincount(codes[:, m], minlength=256) < 10).sum()) for m in range(len(books))]
    print(f"{args.variant} rounds {args.rounds}: stages {len(books)} bytes {h.sum() / 8:.2f} recall@10 {rec:.4f} "
          f"mse {mse:.5f} ({time.time() - t0:.0f} s)\n  bits per stage {np.round(h, 2).tolist()}\n"
          f"  codewords used < 10 times per stage {small}", flush=True)


if __name__ == "__main__":
    main()
