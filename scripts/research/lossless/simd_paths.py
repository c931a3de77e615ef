"""Research (issue 3): the C decoder's SIMD paths side by side on all-MiniLM-L6-v2's matrices:
the joint decode of every matrix of >= 32K weights (bf16; fp32 with its low bytes joined in) and
the order-0 exponent field of mode=fast, each decoded on one thread by the widest path here
(AVX-512 where the CPU has it), by AVX2 and by the scalar code (``force_scalar`` 0, 2, 1),
interleaved, medians; every path's output checked against the widest's.

    python scripts/research/lossless/simd_paths.py [--rounds 9]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
PATHS = {"widest": 0, "AVX2": 2, "scalar": 1}


def joint_jobs(sd, dtype):
    """(n, {path: decode()}) for the joint streams of every large matrix, as weights.load reads them."""
    import torch

    from nzip.codecs import weights_lossless as W
    from nzip.entropy import coder as EC
    from nzip.entropy import lanes_c as LC
    from nzip.entropy._varint import Reader

    jobs = []
    for t in sd.values():
        if t.ndim != 2 or t.numel() < LC.MIN_SYMBOLS or not t.is_floating_point():
            continue
        t = t.to(torch.bfloat16 if dtype == "BF16" else torch.float32).contiguous()
        raw = t.view(torch.uint8).numpy().reshape(-1)
        shape, n = list(t.shape), t.numel()
        r = Reader(W.encode_tensor(dtype, raw, "best", shape))
        r.byte()
        if r.byte() != W.JOINT:
            continue
        base, a, b, data, _, planes = W._get_joint_parts(r, n, shape)
        lows = W._get_lo32(r, n, shape) if dtype == "F32" else None
        p = EC.parse_context(data, n)
        scale = (a, b, W.SCALE_CONTEXTS // 2, W.SCALE_CONTEXTS - 1)
        out = np.empty(n, np.uint32 if lows else np.uint16)

        def run(fs, p=p, scale=scale, base=base, planes=planes, out=out, lows=lows):
            st, lost = np.empty(p.nblocks, np.int64), np.zeros(p.nblocks, np.int64)
            LC.decode_joint(p.words, p.woff, p.states, out, scale, base, 7, 0, planes, p.block, p.lanes, p.prec,
                            p.packed(), st, lost, force_scalar=fs, lows=lows)
            assert (st == 0).all()
            return out

        jobs.append((n, run))
    return jobs


def fast_jobs(sd):
    """The mode=fast exponent field (a static blob) of every large bf16 matrix."""
    import torch

    from nzip.codecs import weights_lossless as W
    from nzip.entropy import coder as EC
    from nzip.entropy import lanes_c as LC
    from nzip.entropy._varint import Reader

    jobs = []
    for t in sd.values():
        if t.ndim != 2 or t.numel() < LC.MIN_SYMBOLS or not t.is_floating_point():
            continue
        raw = t.to(torch.bfloat16).contiguous().view(torch.uint8).numpy().reshape(-1)
        r = Reader(W.encode_tensor("BF16", raw, "fast", list(t.shape)))
        r.byte(), r.byte(), r.byte()
        p = EC.parse(r.take(r.uvarint(len(r.data))))
        out = np.empty(p.n, np.uint8)

        def run(fs, p=p, out=out):
            st = np.empty(p.nblocks, np.int64)
            if p.packable:
                LC.decode_blocks_packed(p.words, p.woff, p.states, out, None, p.block, p.lanes, p.prec, p.packed(),
                                        st, force_scalar=fs)
            else:
                LC.decode_blocks(p.words, p.woff, p.states, out, None, p.block, p.lanes, p.prec, p.slot_sym,
                                 p.slot_pack, st, force_scalar=fs)
            assert (st == 0).all()
            return out

        jobs.append((p.n, run))
    return jobs


def measure(name, jobs, rounds):
    n = sum(k for k, _ in jobs)
    ref = [run(0).copy() for _, run in jobs]
    for fs in PATHS.values():
        assert all(np.array_equal(run(fs), want) for (_, run), want in zip(jobs, ref)), "paths differ"
    times = {k: [] for k in PATHS}
    for _ in range(rounds):
        for k, fs in PATHS.items():
            t0 = time.perf_counter()
            for _, run in jobs:
                run(fs)
            times[k].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    return [f"| {name} | {k} | {n / v / 1e9:.2f} | {med['AVX2'] / v:.2f} |" for k, v in med.items()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    import platform

    import numba
    from safetensors.torch import load_file

    from nzip.entropy import lanes_c as LC
    sys.path.insert(0, str(ROOT / "scripts"))
    from minilm import model_dir

    numba.set_num_threads(1)
    sd = load_file(str(model_dir() / "model.safetensors"))
    print(f"date {time.strftime('%Y-%m-%d')}, {platform.machine()}, one thread, widest path here: "
          f"{['scalar', 'AVX2', 'AVX-512'][LC.level]}\n")
    print("| decode | path | Gsym/s | / AVX2 |\n|---|---|---:|---:|")
    for row in [*measure("joint, bf16 matrices", joint_jobs(sd, "BF16"), args.rounds),
                *measure("joint + low bytes, fp32 matrices", joint_jobs(sd, "F32"), args.rounds),
                *measure("mode=fast exponents (static), bf16", fast_jobs(sd), args.rounds)]:
        print(row)


if __name__ == "__main__":
    main()
