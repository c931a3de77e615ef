"""How much would context modelling of the residual stages' codes save? Trains embedding/rq's
residual quantiser (the product's own functions) on the cached MiniLM passages, then measures the
bits per vector of its stage codes under: one static table per stage (what the container does),
and one table per context, the context being the previous stage's code, a 16-way bucket of it, or
a 16-way bucket of the first stage's code. Conditional tables are costed honestly by two-fold
cross-fitting (tables counted on one half, code lengths measured on the other, add-1/2 smoothing),
which stands in for the tables' storage cost. Run from the repository root:

    python scripts/research/embeddings/stage_contexts.py --bytes 16
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
from nzip.codecs.embedding_rq import ITERS, _entropy_bits, beam_encode, train_rq  # noqa: E402

BEAM, ROUNDS = 4, 5  # the codec's defaults when the notes' numbers were measured


def cond_bits(sym: np.ndarray, ctx: np.ndarray, k: int, nctx: int) -> float:
    """Cross-fitted bits per symbol of ``sym`` given ``ctx`` (two folds, add-1/2 counts)."""
    n = len(sym)
    half = np.arange(n) % 2 == 0
    total = 0.0
    for fit, use in ((half, ~half), (~half, half)):
        cnt = np.zeros((nctx, k)) + 0.5
        np.add.at(cnt, (ctx[fit], sym[fit]), 1)
        p = cnt / cnt.sum(1, keepdims=True)
        total += -np.log2(p[ctx[use], sym[use]]).sum()
    return total / n


def buckets(book: np.ndarray, rng) -> np.ndarray:
    """code -> one of 16 groups of its stage's codewords (k-means on the codewords)."""
    c = kmeans(book, 16, 20, rng)
    return ((book @ c.T) * -2 + (c ** 2).sum(1)).argmin(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bytes", type=float, default=16)
    ap.add_argument("--extra", type=int, default=6, help="stages trained past the budget")
    args = ap.parse_args()
    z = np.load(ROOT / "data/embeddings/minilm_30000_1000_5000.npz")
    x = z["passages"]
    rng = np.random.default_rng(0)
    t0 = time.time()
    bits = 8 * args.bytes
    books = train_rq(x, bits + 8 * args.extra * 0.5, 256, ITERS, ROUNDS, BEAM, rng, 4 * int(args.bytes) + args.extra,
                     progressive=False)
    books = books.astype(np.float16).astype(np.float32)
    codes = beam_encode(x, books, BEAM)
    M = books.shape[0]
    print(f"trained {M} stages in {time.time() - t0:.0f} s", flush=True)
    groups = [buckets(books[m], rng) for m in range(M)]
    rows = {"static": [], "prev code": [], "prev bucket": [], "first bucket": [], "prev+first bucket": []}
    for m in range(M):
        s = codes[:, m]
        rows["static"].append(_entropy_bits(s, 256))
        if m == 0:
            for k in list(rows)[1:]:
                rows[k].append(rows["static"][0])
            continue
        rows["prev code"].append(cond_bits(s, codes[:, m - 1], 256, 256))
        rows["prev bucket"].append(cond_bits(s, groups[m - 1][codes[:, m - 1]], 256, 16))
        g0 = groups[0][codes[:, 0]]
        rows["first bucket"].append(cond_bits(s, g0, 256, 16))
        rows["prev+first bucket"].append(cond_bits(s, groups[m - 1][codes[:, m - 1]] * 16 + g0, 256, 256))
    for name, h in rows.items():
        c = np.cumsum(h)
        fit = int(np.searchsorted(c, bits, side="right"))
        print(f"{name:>18}: stages within {args.bytes:g} B: {fit:2d}; bits of the first 26 stages "
              f"{c[min(25, M - 1)]:.1f}; per stage {' '.join(f'{v:.2f}' for v in h[:8])} ...", flush=True)


if __name__ == "__main__":
    main()
