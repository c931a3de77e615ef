"""The C lane decoder (nzip/entropy/_lanes_c.c) against the numba kernels it replaces, and zipnn.

Three levels, every reader timed once per round in turn, medians over rounds (the host is noisy:
read the ratios):
  1. the kernel alone: a context blob of 12M byte symbols (16 contexts, precision 12, 32 lanes);
  2. ``decode_tensor`` over every tensor of all-MiniLM-L6-v2 (bf16 and fp32), mode=best;
  3. ``nzip.weights.load`` of the whole model (mode=best and fast; mode=best also with the fused
     float decode turned off) beside zipnn's per-tensor decompression (2 threads), the issue's
     anchor.

    pip install -e ".[bench]"
    python scripts/bench_lanes_c.py --rounds 7
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def rounds(readers: dict, n: int) -> dict:
    """{name: median seconds}, each reader timed once per round after one warm-up call."""
    for f in readers.values():
        f()
    ts = {k: [] for k in readers}
    for _ in range(n):
        for k, f in readers.items():
            t0 = time.perf_counter()
            f()
            ts[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in ts.items()}


def with_c(flag: bool, f):
    from nzip.entropy import lanes_c as LC

    simd = LC.simd

    def run():
        LC.simd = simd and flag
        try:
            return f()
        finally:
            LC.simd = simd
    return run


def unfused(f):
    """f with weights/lossless's fused float decodes turned off (the C decoder, then the join)."""
    from nzip.entropy import coder as EC

    joinable, jointable = EC.LaneStreams.joinable, EC.LaneStreams.jointable

    def run():
        EC.LaneStreams.joinable = EC.LaneStreams.jointable = lambda *a: False
        try:
            return f()
        finally:
            EC.LaneStreams.joinable, EC.LaneStreams.jointable = joinable, jointable
    return run


def two_fields(f):
    """f (an encode) with weights/lossless's joint layout turned off: session 10's layout."""
    from nzip.codecs import weights_lossless as W

    put_joint = W._put_joint

    def run():
        W._put_joint = lambda *a: False
        try:
            return f()
        finally:
            W._put_joint = put_joint
    return run


def kernel_rows(n_rounds: int) -> list[str]:
    from nzip.entropy import coder as C
    from nzip.entropy import lanes as K
    from nzip.entropy import lanes_c as LC

    rng = np.random.default_rng(0)
    n = 12_000_000
    sym = np.minimum(rng.geometric(0.08, n), 255).astype(np.uint8)
    cx = rng.integers(0, 16, n).astype(np.uint8)
    ls = C.parse_context(C.encode_context(sym, cx, 16, lanes=32, max_precision=12), n)
    table, out, st = ls.packed(), np.empty(n, np.uint8), np.empty(ls.nblocks, np.int64)
    args = (ls.words, ls.woff, ls.states, out, cx, ls.block, ls.lanes, ls.prec, table, st)
    t = rounds({"numba": lambda: K.decode_blocks_packed(*args),
                "C (AVX2)": lambda: LC.decode_blocks_packed(*args),
                "C (scalar)": lambda: LC.decode_blocks_packed(*args, force_scalar=True)}, n_rounds)
    assert np.array_equal(out, sym)
    return [f"| {k} | {n / v / 1e9:.2f} Gsym/s | {t['numba'] / v:.2f} |" for k, v in t.items()]


def tensor_rows(path: Path, n_rounds: int) -> list[str]:
    import torch
    from safetensors.numpy import load_file

    from nzip.codecs import weights_lossless as W

    sd = load_file(str(path))
    rows = []
    for dt, width in (("BF16", 2), ("F32", 4)):
        jobs = []
        for a in sd.values():
            if dt == "BF16":
                a = torch.from_numpy(a.copy()).to(torch.bfloat16).view(torch.uint16).numpy()
            raw = np.ascontiguousarray(a).view(np.uint8).reshape(-1)
            jobs.append((raw, a.shape, W.encode_tensor(dt, raw, "best", shape=a.shape)))
        total = sum(r.size for r, _, _ in jobs)

        def all_tensors():
            return [W.decode_tensor(b, dt, r.size // width, "best", shape=s) for r, s, b in jobs]
        assert all(np.array_equal(o, r) for o, (r, _, _) in zip(all_tensors(), jobs))
        t = rounds({"numba": with_c(False, all_tensors), "C": with_c(True, all_tensors)}, n_rounds)
        rows.append(f"| {dt.lower()} | {total / t['numba'] / 1e6:.0f} | {total / t['C'] / 1e6:.0f} | "
                    f"{t['numba'] / t['C']:.2f} |")
    return rows


def load_rows(work: Path, n_rounds: int) -> list[str]:
    from safetensors.torch import load_file
    from zipnn import ZipNN

    import nzip
    from bench_weights import minilm_files

    src, bf16 = minilm_files(work)
    rows, sizes = [], {}
    for label, path in (("bf16", bf16), ("fp32", src)):
        raw = path.stat().st_size
        readers = {}
        for mode in ("best", "fast"):
            dst = work / f"{label}.{mode}.nz"
            nzip.encode(path, dst, overwrite=True, mode=mode)
            readers[f"nzip mode={mode}, numba"] = with_c(False, lambda d=dst: nzip.weights.load(d))
            readers[f"nzip mode={mode}, C"] = with_c(True, lambda d=dst: nzip.weights.load(d))
            if mode == "best":
                readers[f"nzip mode={mode}, C, fused float decode off"] = unfused(
                    with_c(True, lambda d=dst: nzip.weights.load(d)))
                two = work / f"{label}.best-two-fields.nz"
                two_fields(lambda: nzip.encode(path, two, overwrite=True, mode="best"))()
                readers["nzip mode=best, C, two-field layout (no joint symbols)"] = with_c(
                    True, lambda d=two: nzip.weights.load(d))
                sizes[label] = (raw / dst.stat().st_size, raw / two.stat().st_size)
        sd = load_file(str(path))
        z = ZipNN(input_format="torch", threads=2)
        blobs = {k: bytes(z.compress(v.clone())) for k, v in sd.items() if v.is_floating_point()}
        readers["zipnn (2 threads)"] = lambda: {k: z.decompress(b) for k, b in blobs.items()}
        t = rounds(readers, n_rounds)
        for k, v in t.items():
            rows.append(f"| {label} | {k} | {raw / v / 1e6:.0f} | {t['zipnn (2 threads)'] / v:.2f} |")
    rows += [f"\nratio (whole .nz), mode=best: {k} {a:.4f} joint layout, {b:.4f} two-field layout"
             for k, (a, b) in sizes.items()]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "nzip-bench-lanes-c"))
    args = ap.parse_args()
    import numba

    from bench_weights import minilm_file
    from nzip.entropy import lanes_c as LC

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    print(f"date {datetime.date.today()}, {platform.machine()}, {os.cpu_count()} cores, numba threads "
          f"{numba.get_num_threads()}, C extension {['built, no AVX2', 'AVX2', 'AVX2 and AVX-512'][LC.level] if LC.available else 'absent'}")
    print("\n| kernel | rate | / numba |\n|---|---:|---:|")
    print("\n".join(kernel_rows(args.rounds)))
    print("\n| dtype | decode_tensor numba MB/s | C MB/s | C / numba |\n|---|---:|---:|---:|")
    print("\n".join(tensor_rows(minilm_file(), args.rounds)))
    print("\n| model | reader | MB/s | / zipnn |\n|---|---|---:|---:|")
    print("\n".join(load_rows(work, args.rounds)))


if __name__ == "__main__":
    main()
