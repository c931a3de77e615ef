"""Search speed of the residual index (issue 5: "search at least as fast as faiss PQ on the same
threads"), timed apart from training so that the rounds can interleave.

The residual index is a real `embedding/rq` container of the passages at B bytes, trained with
quick settings (--train-params, default beam=4 rounds=0 polish=0: the same stage count and shape as
the defaults, whose training takes 10-20 minutes) and cached beside the passages. It is searched
with nzip's own path (`Index.search`: per-query tables, then the C scan), also with the C scan's
early exit off (the scan's cost then depends only on the index's shape; the exit's gain depends on
the later stages' tables being small, as in trained residual codebooks), and with the numba scan.
faiss's IndexPQ with B sub-quantisers of 8 bits is trained on the same passages; all answer the
same queries, k=10, rounds interleaved, medians.

    python scripts/bench_search.py [--bytes 16,32,48] [--threads 1,2] [--rounds 7]
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
    ap.add_argument("--bytes", default="16,32,48")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--cache", default=str(ROOT / "data/embeddings/minilm_30000_1000_5000.npz"),
                    help="passages and queries (scripts/bench_embeddings.py builds it)")
    ap.add_argument("--train-params", default="beam=4,rounds=0,polish=0",
                    help="embedding/rq parameters of the searched index")
    args = ap.parse_args()
    import faiss
    import numba

    import nzip
    search = importlib.import_module("nzip.search")

    z = np.load(args.cache)
    x, q = z["passages"], z["queries"]
    n, d = x.shape
    tp = {k: int(v) for k, v in (kv.split("=") for kv in args.train_params.split(",") if kv)}
    print(f"date {datetime.date.today()}, {platform.machine()}, {os.cpu_count()} cores; {n} passages x {d}, "
          f"{len(q)} queries, k=10; C scan {'on' if search.c_scan else 'absent'}; index: embedding/rq "
          f"{args.train_params}")
    print("\n| bytes | stages | threads | nzip embedding/rq q/s | C scan, early exit off | numba scan | "
          "faiss IndexPQ q/s | nzip / faiss | rows scored in full |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    c_topk = search._c_topk
    for B in (int(b) for b in args.bytes.split(",")):
        path = Path(args.cache).with_name(f"search-rq{B}-{args.train_params.replace(',', '-')}.nz")
        if not path.exists():
            nzip.encode(x, path, codec="embedding/rq", bytes=B, **tp)
        index = nzip.open_index(path)
        m = index.pq.codes.shape[1]
        pq = faiss.IndexPQ(d, B, 8, faiss.METRIC_INNER_PRODUCT)
        pq.train(x)
        pq.add(x)
        full = []

        def counted(*a, **kw):
            full.append(c_topk(*a, **kw))
            return full[-1]
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

            def no_exit():
                search._c_topk = lambda *a, **kw: c_topk(*a, **kw, prune_at=m)
                try:
                    return index.search(q, 10)
                finally:
                    search._c_topk = c_topk
            runs = {"nzip": lambda: index.search(q, 10), "off": no_exit, "numba": numba_scan,
                    "faiss": lambda: pq.search(q, 10)}
            for f in runs.values():
                f()
            search._c_topk = counted
            want = index.search(q, 10)
            search._c_topk = c_topk
            assert all(np.array_equal(a, b) for a, b in zip(want, no_exit())), "the early exit changed results"
            ts = {k: [] for k in runs}
            for _ in range(args.rounds):
                for k, f in runs.items():
                    t0 = time.perf_counter()
                    f()
                    ts[k].append(time.perf_counter() - t0)
            qps = {k: len(q) / float(np.median(v)) for k, v in ts.items()}
            print(f"| {B} | {m} | {t} | {qps['nzip']:,.0f} | {qps['off']:,.0f} | {qps['numba']:,.0f} | "
                  f"{qps['faiss']:,.0f} | {qps['nzip'] / qps['faiss']:.2f} | "
                  f"{full[-1] / (len(q) * n):.1%} |", flush=True)


if __name__ == "__main__":
    main()
