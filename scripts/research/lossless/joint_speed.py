"""Research (issue 3): decode speed of the joint layout (exponent + top mantissa bits as one
symbol, mode=best's default since session 11) against the two-field layout it replaced, on the
same tensors of all-MiniLM-L6-v2 (bf16 and fp32): every tensor encoded both ways (the two-field
layout by switching the joint one off), then `decode_tensor` over all tensors, interleaved,
medians. Bit-exactness checked.

    python scripts/research/lossless/joint_speed.py [--rounds 9] [--threads 2]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import numba
    import torch
    from safetensors.torch import load_file

    from nzip.codecs import weights_lossless as W
    sys.path.insert(0, str(ROOT / "scripts"))
    from minilm import model_dir

    numba.set_num_threads(args.threads)
    sd = load_file(str(model_dir() / "model.safetensors"))
    put_joint = W._put_joint
    for dtype, tdt in (("BF16", torch.bfloat16), ("F32", torch.float32)):
        tensors = []
        for t in sd.values():
            raw = t.to(tdt).contiguous().view(torch.uint8).numpy().reshape(-1).copy()
            tensors.append((raw, tuple(t.shape), t.numel()))
        blobs = {}
        for name, joint in (("joint", True), ("two fields", False)):
            W._put_joint = put_joint if joint else (lambda *a: False)
            blobs[name] = [W.encode_tensor(dtype, raw, "best", shape) for raw, shape, _ in tensors]
        W._put_joint = put_joint
        total = sum(raw.size for raw, _, _ in tensors)
        ts = {k: [] for k in blobs}
        for k, bl in blobs.items():  # warm up and check
            for (raw, shape, n), b in zip(tensors, bl):
                assert np.array_equal(W.decode_tensor(b, dtype, n, "best", shape=shape), raw)
        for _ in range(args.rounds):
            for k, bl in blobs.items():
                t0 = time.perf_counter()
                for (raw, shape, n), b in zip(tensors, bl):
                    W.decode_tensor(b, dtype, n, "best", shape=shape)
                ts[k].append(time.perf_counter() - t0)
        for k in blobs:
            size = sum(len(b) for b in blobs[k])
            print(f"| {dtype} | {k} | {total / size:.4f} | {total / np.median(ts[k]) / 1e6:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
