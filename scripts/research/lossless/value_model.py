"""Research (issue 3): could a value model across weights reach the 1.55x bf16 target?

The field contexts stop at ~1.535x on all-MiniLM-L6-v2 in bf16 before paying for their tables
(BENCHMARKS.md, "What the bf16 fields hold"); 1.55x needs 10.32 bits per weight. What is left is a
prediction of a weight's value from other weights. This measures the most promising case, the word
embedding matrix (30522 x 384, half of the model): each row predicted by the column means plus a
rank-k fit (truncated SVD of the centred matrix), the fit's factors stored in bf16.

For a row of roughly Gaussian values, coding each value against a prediction whose residual has
standard deviation s_r instead of the row's own s saves about log2(s / s_r) bits per value (the
float's bin widths do not change). That saving, summed over the matrix, is set against the
factors' cost: their bf16 bytes as nzip weights/lossless codes them (mode=best), which is what a
decoder would have to read first. Printed in bytes, beside what the target needs.

    python scripts/research/lossless/value_model.py [--ranks 0,1,4,16,64]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bits (round to nearest even), as uint8 bytes."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return r.view(np.uint8).reshape(-1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks", default="0,1,4,16,64")
    args = ap.parse_args()
    from safetensors.numpy import load_file

    from bench_weights import minilm_file
    from nzip.codecs.weights_lossless import encode_tensor

    sd = load_file(str(minilm_file()))
    emb = next(v for k, v in sd.items() if k.endswith("word_embeddings.weight")).astype(np.float32)
    emb = bf16(emb).view(np.uint16).astype(np.uint32) << 16  # the bf16 checkpoint's values
    emb = emb.view(np.float32).reshape(-1, 384)
    total_params = sum(v.size for v in sd.values())
    need = total_params * 2 / 1.55  # bytes of the whole bf16 file at the target
    have = total_params * 2 / 1.5209  # at the measured ratio (BENCHMARKS.md)
    print(f"date {time.strftime('%Y-%m-%d')}; word embeddings {emb.shape}, model {total_params:,} parameters")
    print(f"bytes to save for 1.55x (from 1.5209x): {have - need:,.0f}\n")
    print("| prediction | saving (bytes, Gaussian estimate) | factors' cost (bytes, coded) | net (bytes) |")
    print("|---|---:|---:|---:|")
    rms = np.sqrt((emb.astype(np.float64) ** 2).mean(1))
    mu = emb.mean(0)
    c = emb - mu
    u, s, vt = np.linalg.svd(c.astype(np.float64), full_matrices=False)
    mu_cost = len(encode_tensor("BF16", bf16(mu), "best", [384]))
    for k in (int(x) for x in args.ranks.split(",")):
        resid = c - (u[:, :k] * s[:k]) @ vt[:k] if k else c
        gain_bits = float(np.sum(np.log2(rms / resid.std(1)))) * emb.shape[1]
        cost = mu_cost
        if k:
            left, right = (u[:, :k] * s[:k]).astype(np.float32), vt[:k].astype(np.float32)
            cost += len(encode_tensor("BF16", bf16(left), "best", list(left.shape)))
            cost += len(encode_tensor("BF16", bf16(right), "best", list(right.shape)))
        name = "column means" if k == 0 else f"column means + rank {k}"
        print(f"| {name} | {gain_bits / 8:,.0f} | {cost:,} | {gain_bits / 8 - cost:,.0f} |")


if __name__ == "__main__":
    main()
