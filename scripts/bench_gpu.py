"""GPU decode kernels (nzip/kernels) against their twins and the memory-bandwidth bound.

    python scripts/bench_gpu.py                # on a CUDA machine: a few minutes on an H200
    python scripts/bench_gpu.py --smoke        # tiny sizes; on a CPU runs under TRITON_INTERPRET=1
    python scripts/bench_gpu.py --host --scale 0.25   # anywhere: the rANS path's host work alone

For each kernel: decoded output in GB/s (median of --repeat timed runs after a warm-up), the
same work done by its twin (torch ops on the same GPU; for rANS the CPU decoder, numba, which has
no GPU twin), and the kernel's fraction of the bandwidth bound: (bytes read + bytes written) /
time against the device's measured copy bandwidth (a 1 GiB device-to-device copy).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import date

import numpy as np

if ("--smoke" in sys.argv or "--host" in sys.argv) and "TRITON_INTERPRET" not in os.environ:
    import torch as _t

    if not _t.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402

from nzip import entropy as E  # noqa: E402
from nzip.kernels import floats, gather, pq_scan, rans  # noqa: E402


def timed(fn, repeat: int, cuda: bool) -> float:
    fn()
    ts = []
    for _ in range(repeat):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def host_only(scale: float, repeat: int) -> None:
    """The host side of a GPU rANS decode, on any machine: parsing the blob and building the launch
    table and device arrays (on the CPU), with the kernel launch stubbed out. Medians of --repeat."""
    from nzip.errors import CorruptDataError

    class _NoLaunch:
        def __getitem__(self, grid):
            return lambda *a, **k: None

    rng = np.random.default_rng(0)
    n = int((1 << 28) * scale)
    sym = np.minimum(rng.geometric(0.25, n) - 1, 255).astype(np.uint8)
    print(f"date {date.today()}, {platform.machine()}, {os.cpu_count()} CPUs: host work of a GPU rANS "
          f"decode, {n} symbols, kernel stubbed\n\n| block | blocks | parse ms | launch prep ms |\n|---:|---:|---:|---:|")
    real = rans._rans_kernel if hasattr(rans, "_rans_kernel") else None
    rans._rans_kernel = _NoLaunch()
    try:
        for block in (4096, 1 << 16):
            blob = E.encode(sym, lanes=32, block=block)
            jobs = rans._parse([blob], None, "bench")

            def prep(jobs=jobs):
                try:
                    rans._launch(jobs, "cpu", False)
                except CorruptDataError:  # the stub never writes the status words
                    pass

            t_parse = timed(lambda b=blob: rans._parse([b], None, "bench"), repeat, False)
            t_prep = timed(prep, repeat, False)
            print(f"| {block} | {jobs[0].p.nblocks} | {t_parse * 1e3:.1f} | {t_prep * 1e3:.1f} |", flush=True)
    finally:
        if real is not None:
            rans._rans_kernel = real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (CI / the interpreter)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--scale", type=float, default=1.0, help="problem sizes times this (e.g. 0.25 on a short lease)")
    ap.add_argument("--host", action="store_true", help="the rANS path's host work only (any machine)")
    args = ap.parse_args()
    if args.host:
        return host_only(args.scale, args.repeat)
    cuda = torch.cuda.is_available()
    dev = "cuda" if cuda else "cpu"
    if not cuda and not args.smoke:
        sys.exit("bench_gpu.py: no CUDA device here; use --smoke to check the script under the interpreter")
    s = 1 / 16384 if args.smoke else args.scale
    rep = 1 if args.smoke else args.repeat
    name = torch.cuda.get_device_name() if cuda else "CPU (Triton interpreter)"
    print(f"date {date.today()}, {name}, torch {torch.__version__}, {platform.machine()}")
    rows = []

    n_copy = int((1 << 30) * s)
    a = torch.empty(n_copy, dtype=torch.uint8, device=dev)
    b = torch.empty_like(a)
    copy_bw = 2 * n_copy / timed(lambda: b.copy_(a), rep, cuda)
    del a, b
    print(f"device copy bandwidth: {copy_bw / 1e9:.0f} GB/s (read + write)")

    def row(kernel, out_bytes, moved_bytes, t_kernel, twin_name, t_twin):
        r = {"kernel": kernel, "GB/s": out_bytes / t_kernel / 1e9, "twin": twin_name,
             "twin GB/s": out_bytes / t_twin / 1e9 if t_twin else None,
             "of bound": moved_bytes / t_kernel / copy_bw}
        rows.append(r)
        tw = f"{r['twin GB/s']:.1f}" if t_twin else "-"
        print(f"| {kernel} | {r['GB/s']:.1f} | {twin_name} | {tw} | {r['of bound']:.2f} |", flush=True)

    print("\n| kernel | decoded GB/s | twin | twin GB/s | of bandwidth bound |\n|---|---:|---|---:|---:|")

    # rANS lane decode: skewed bytes (~3 bits each), blocks of 4096 symbols x 32 lanes
    rng = np.random.default_rng(0)
    n = int((1 << 28) * s)
    sym = np.minimum(rng.geometric(0.25, n) - 1, 255).astype(np.uint8)
    for block in (4096, 1 << 16):
        blob = E.encode(sym, lanes=32, block=block)
        t_k = timed(lambda: rans.decode(blob, dev, kernel=True), rep, cuda)
        t_cpu = timed(lambda: E.decode(blob), rep, False)
        assert torch.equal(rans.decode(blob, dev, kernel=True).cpu(), torch.from_numpy(sym))
        row(f"rANS decode, uint8, block {block} ({len(blob) / n * 8:.2f} bits/sym)", n, n + len(blob),
            t_k, "CPU decoder (numba)", t_cpu)
        # the kernel alone (the blob parsed and its arrays on the device already): what the host
        # side costs is the difference to the row above
        prep = rans._prepare(rans._parse([blob], None, "bench"), dev, False)
        t_run = timed(lambda pr=prep: rans._run(pr), rep, cuda)
        row(f"  rANS kernel alone, block {block}", n, 4 * n + len(blob), t_run, "-", None)
        prep = None  # frees the device arrays before the next size
        del blob

    # float reassembly, bf16 and fp32
    m = int((1 << 28) * s)
    e = torch.randint(100, 130, (m,), device=dev, dtype=torch.int32).to(torch.uint8)
    sm = torch.randint(0, 256, (m,), device=dev, dtype=torch.int32).to(torch.uint8)
    t_k = timed(lambda: floats.join16(e, sm, None, 8, kernel=True), rep, cuda)
    t_t = timed(lambda: floats.join16(e, sm, None, 8, kernel=False), rep, cuda)
    row("float join bf16", 2 * m, 4 * m, t_k, "torch ops", t_t)
    t_k = timed(lambda: floats.join32(e, sm, sm, e, kernel=True), rep, cuda)
    t_t = timed(lambda: floats.join32(e, sm, sm, e, kernel=False), rep, cuda)
    row("float join fp32", 4 * m, 8 * m, t_k, "torch ops", t_t)
    del e, sm

    # codebook gathers
    npq = int((1 << 24) * s)
    codes = torch.randint(0, 256, (npq, 16), device=dev, dtype=torch.int32).to(torch.uint8)
    books = torch.randn(16, 256, 24, device=dev)
    out_b = npq * 16 * 24 * 4
    t_k = timed(lambda: gather.pq(codes, books, kernel=True), rep, cuda)
    t_t = timed(lambda: gather.pq(codes, books, kernel=False), rep, cuda)
    row("PQ gather (16 x 256 x 24, fp32)", out_b, out_b + codes.numel(), t_k, "torch indexing", t_t)
    nr = int((1 << 22) * s)
    rcodes = torch.randint(0, 1024, (nr, 4), device=dev)
    rbooks = torch.randn(4, 1024, 128, device=dev)
    out_b = nr * 128 * 4
    t_k = timed(lambda: gather.rvq(rcodes, rbooks, kernel=True), rep, cuda)
    t_t = timed(lambda: gather.rvq(rcodes, rbooks, kernel=False), rep, cuda)
    row("residual VQ gather (4 stages x 1024 x 128)", out_b, out_b + rcodes.numel() * 8, t_k,
        "torch indexing", t_t)
    del codes, rcodes

    # PQ scan: 64 queries over 4M codes (16 bytes each), top-10
    ns = int((1 << 22) * s)
    scodes = torch.randint(0, 256, (ns, 16), device=dev, dtype=torch.int32).to(torch.uint8)
    lut = torch.randn(64, 16 * 256, device=dev)
    offs = np.arange(16) * 256
    t_k = timed(lambda: pq_scan.topk(scodes, offs, lut, 10, kernel=True), rep, cuda)

    def twin_scan():
        sc = pq_scan.scores_twin(scodes, offs, lut)
        return torch.topk(sc, 10, dim=1)

    t_t = timed(twin_scan, rep, cuda)
    row("PQ scan, 64 queries, top-10 (codes scanned)", ns * 16, ns * 16, t_k, "torch gather+topk", t_t)

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "copy_GBps": copy_bw / 1e9, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
