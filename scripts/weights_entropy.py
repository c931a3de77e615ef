"""How far can context modelling take weights/lossless on all-MiniLM-L6-v2 (bf16)? Empirical
conditional entropies of the float fields under the contexts nzip uses and others it could.

    python scripts/weights_entropy.py

Each line is H(field | context) in bits per weight over the whole checkpoint (matrices of at
least 65,536 weights get the 2-D contexts; the rest keep their order-0 / exponent-only figure), the
ideal size a coder with that model reaches before side information. The bf16 ratio they imply is
16 / (exponent bits + sign/mantissa bits). Contexts:

* ``scale``: nzip's row+column scale context of the exponent (16 classes; what mode=best codes);
* ``row`` / ``col``: the exact row or column index (an upper bound for any per-row/column model:
  it ignores the cost of describing 30k row tables);
* ``left`` / ``up``: the neighbouring weight's exponent (serial contexts; nzip avoids them so the
  lane decoder stays parallel);
* the sign/mantissa byte given its exponent (mode=best), also with the scale class, with the left
  neighbour's exponent, and the sign alone given its column.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from minilm import model_dir  # noqa: E402

from nzip.codecs.weights_lossless import _scale_contexts, _scale_offsets  # noqa: E402


def entropy_bits(x: np.ndarray) -> float:
    """Total empirical entropy (bits) of the values of x."""
    c = np.unique(x.ravel(), return_counts=True)[1]
    p = c / x.size
    return float(-(p * np.log2(p)).sum() * x.size)


def cond_bits(x: np.ndarray, ctx: np.ndarray) -> float:
    """Total H(x | ctx) in bits: H(ctx, x) - H(ctx)."""
    return entropy_bits(ctx.astype(np.int64) * 65536 + x.astype(np.int64)) - entropy_bits(ctx)


def main() -> None:
    from safetensors.numpy import load_file

    sd = load_file(str(model_dir() / "model.safetensors"))
    acc: dict[str, float] = {}
    total = 0

    def add(k: str, v: float) -> None:
        acc[k] = acc.get(k, 0.0) + v

    for _, w in sorted(sd.items()):
        t = torch.from_numpy(w).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
        n = t.size
        total += n
        e = ((t >> 7) & 0xFF).astype(np.int64)
        sm = (((t >> 15) << 7) | (t & 0x7F)).astype(np.int64)
        s = (t >> 15).astype(np.int64)
        add("exponent, order 0", entropy_bits(e))
        add("sign+mantissa, order 0", entropy_bits(sm))
        add("sign+mantissa | exponent (mode=best)", cond_bits(sm, e))
        add("sign, order 0", entropy_bits(s))
        if w.ndim == 2 and n >= 65536:
            r, c = w.shape
            a, b = _scale_offsets(e.ravel().astype(np.uint8), r, c)
            scale = _scale_contexts(a, b).reshape(r, c).astype(np.int64)
            rows = np.broadcast_to(np.arange(r)[:, None], (r, c))
            cols = np.broadcast_to(np.arange(c)[None, :], (r, c))
            left = np.concatenate([np.zeros((r, 1), np.int64), e[:, :-1]], 1)
            up = np.concatenate([np.zeros((1, c), np.int64), e[:-1]], 0)
            add("exponent | scale (mode=best)", cond_bits(e, scale))
            add("exponent | row", cond_bits(e, rows))
            add("exponent | col", cond_bits(e, cols))
            add("exponent | left", cond_bits(e, left))
            add("exponent | up", cond_bits(e, up))
            add("exponent | scale, left", cond_bits(e, scale * 256 + left))
            add("sign+mantissa | exponent, scale", cond_bits(sm, e * 16 + scale))
            add("sign+mantissa | exponent, left", cond_bits(sm, e * 256 + left))
            add("sign | col", cond_bits(s, cols))
        else:
            h0, hs = entropy_bits(e), cond_bits(sm, e)
            for k in ("exponent | scale (mode=best)", "exponent | row", "exponent | col", "exponent | left",
                      "exponent | up", "exponent | scale, left"):
                add(k, h0)
            for k in ("sign+mantissa | exponent, scale", "sign+mantissa | exponent, left"):
                add(k, hs)
            add("sign | col", entropy_bits(s))
    print(f"all-MiniLM-L6-v2 as bf16: {total:,} weights; bits per weight")
    print("| field given context | bits/weight |")
    print("|---|---:|")
    for k, v in acc.items():
        print(f"| {k} | {v / total:.4f} |")
    b = {k: v / total for k, v in acc.items()}
    combos = {
        "order 0 (both fields)": b["exponent, order 0"] + b["sign+mantissa, order 0"],
        "mode=best's contexts": b["exponent | scale (mode=best)"] + b["sign+mantissa | exponent (mode=best)"],
        "best of the above, together": min(b[k] for k in b if k.startswith("exponent |"))
        + min(b[k] for k in b if k.startswith("sign+mantissa |")),
    }
    print()
    print("| model | bits/weight | ideal bf16 ratio |")
    print("|---|---:|---:|")
    for k, v in combos.items():
        print(f"| {k} | {v:.3f} | {16 / v:.4f} |")


if __name__ == "__main__":
    main()
