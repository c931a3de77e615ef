"""Residual quantisation trained for the *score* error rather than the squared error (issue 5).

A query q changes a passage's score by q . (x_hat - x); over the query distribution its mean square
is e^T S_q e with S_q the queries' (uncentred) second moment, so the error that ranking feels is a
weighted one. Queries are not known at encode time, but here they come from the same distribution
as the passages, so S = X^T X / n of the data itself stands in for S_q. Train the codec's residual
quantiser on x' = x S^(a/2) and map the codebooks back (books S^(-a/2)): the reconstruction is
still a sum of codewords in the original space, so search is unchanged. ``a = 0`` is the codec.

    python scripts/research/embeddings/weighted_rq.py --bytes 16 --alpha 0.5
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from nzip.codecs.embedding_rq import ITERS, _entropy_bits, beam_encode, train_rq  # noqa: E402

BEAM, ROUNDS = 4, 5  # the codec's defaults when the notes' numbers were measured


def weight_maps(x: np.ndarray, alpha: float, eps: float) -> tuple[np.ndarray, np.ndarray]:
    S = (x.T.astype(np.float64) @ x) / len(x)
    lam, V = np.linalg.eigh(S)
    lam = np.maximum(lam, 0) + eps * lam.mean()
    return ((V * lam ** (alpha / 2)) @ V.T).astype(np.float32), ((V * lam ** (-alpha / 2)) @ V.T).astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bytes", type=float, default=16)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--eps", type=float, default=0.01, help="eigenvalue floor, a fraction of the mean")
    args = ap.parse_args()
    z = np.load(ROOT / "data/embeddings/minilm_30000_1000_5000.npz")
    x, q = z["passages"], z["queries"]
    exact = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :10]
    t0 = time.time()
    T, Ti = weight_maps(x, args.alpha, args.eps)
    xw = x @ T
    rng = np.random.default_rng(0)
    books = train_rq(xw, 8 * args.bytes, 256, ITERS, ROUNDS, BEAM, rng, 4 * int(np.ceil(args.bytes)),
                     progressive=False)  # the training these notes measured
    books = (books @ Ti).astype(np.float16).astype(np.float32)  # stored in the original space
    codes = beam_encode(xw, (books @ T), BEAM)  # encode in the weighted space, with the stored books
    h = np.array([_entropy_bits(codes[:, m], 256) for m in range(len(books))])
    y = books[np.arange(len(books))[None, :], codes].sum(1).astype(np.float64)
    for norm in (True, False):
        yy = y / np.linalg.norm(y, axis=1, keepdims=True) if norm else y
        found = np.argsort(-(q @ yy.T.astype(np.float32)), axis=1)[:, :10]
        rec = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)]))
        print(f"alpha {args.alpha} eps {args.eps} normalise {int(norm)}: stages {len(books)} "
              f"bytes {h.sum() / 8:.2f} recall@10 {rec:.4f} mse {((x - y) ** 2).sum(1).mean():.5f} "
              f"({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
