"""Search speed of the residual index (issue 5: "search at least as fast as faiss PQ on the same
threads"), timed apart from training so that the rounds can interleave.

The scan's cost does not depend on what the codebooks hold, only on their shape, so the residual
index here has the shape of `embedding/rq` at B bytes (B stages of 256 codewords of d floats, codes
drawn at random, cosine scale on) and is searched with nzip's own path (`Index.search`: per-query
tables, then the C or numba scan). faiss's IndexPQ with B sub-quantisers of 8 bits is trained on
the same passages; both answer the same queries, k=10, rounds interleaved, medians.

    python scripts/bench_search.py [--bytes 16,32] [--threads 1,2] [--rounds 7]
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bytes", default="16,32")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--cache", default=str(ROOT / "data/embeddings/minilm_30000_1000_5000.npz"),
                    help="passages and queries (scripts/bench_embeddings.py builds it)")
    args = ap.parse_args()
    import faiss
    import numba

    from nzip.codecs.embedding_rq import RQIndex
    search = importlib.import_module("nzip.search")

    z = np.load(args.cache)
    x, q = z["passages"], z["queries"]
    n, d = x.shape
    print(f"date {datetime.date.today()}, {platform.machine()}, {os.cpu_count()} cores; {n} passages x {d}, "
          f"{len(q)} queries, k=10; C scan {'on' if search.c_scan else 'absent'}")
    print("\n| bytes | threads | nzip embedding/rq q/s | nzip, numba scan q/s | faiss IndexPQ q/s | nzip / faiss |")
    print("|---:|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for B in (int(b) for b in args.bytes.split(",")):
        books = (rng.normal(size=(B, 256, d)) / np.sqrt(d * B)).astype(np.float32)
        index = search.Index.__new__(search.Index)  # an index without a container: the same search
        index.path, index.device, index._codes_dev, index._codes_t, index._kernel = "bench", "cpu", None, None, False
        index.pq = RQIndex(rng.integers(0, 256, size=(n, B)).astype(np.uint8), books)
        index.pq.normalise()
        pq = faiss.IndexPQ(d, B, 8, faiss.METRIC_INNER_PRODUCT)
        pq.train(x)
        pq.add(x)
        for t in (int(v) for v in args.threads.split(",")):
            numba.set_num_threads(t)
            faiss.omp_set_num_threads(t)
            c_scan = search.c_scan

            def numba_scan():
                search.c_scan = False
                try:
                    return index.search(q, 10)
                finally:
                    search.c_scan = c_scan
            runs = {"nzip": lambda: index.search(q, 10), "numba": numba_scan, "faiss": lambda: pq.search(q, 10)}
            for f in runs.values():
                f()
            ts = {k: [] for k in runs}
            for _ in range(args.rounds):
                for k, f in runs.items():
                    t0 = time.perf_counter()
                    f()
                    ts[k].append(time.perf_counter() - t0)
            qps = {k: len(q) / float(np.median(v)) for k, v in ts.items()}
            print(f"| {B} | {t} | {qps['nzip']:,.0f} | {qps['numba']:,.0f} | {qps['faiss']:,.0f} | "
                  f"{qps['nzip'] / qps['faiss']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
