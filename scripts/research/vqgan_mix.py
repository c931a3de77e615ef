"""Tuning image/vqgan's adaptive mixing of the index prior (research, issue 4).

``nzip.entropy.grid`` can rebuild each symbol's table from the fixed context table plus the codes
of the four decoded neighbours (mass ``mn``, weights ``a``) and the codes seen so far in the tile
(mass ``mh``). Which masses? Index maps of the training pool (scripts/prepare_images.py, three
scales, the shipped network) are split by image: the fixed tables are recounted on 80 % of the
images (the codec's smoothing) and the ideal code length is measured on the other 20 % at full
scale. The lomiri dev set is only reported, with the shipped tables, never tuned on.

    python scripts/research/vqgan_mix.py [--cache out/vqgan_mix_maps.npz]
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import train_vqgan as T  # noqa: E402

from nzip.codecs import image_vqgan as V  # noqa: E402
from nzip.entropy.grid import GridModel  # noqa: E402

SCALES = (1.0, 0.7, 0.5)


def maps(model, folder: Path, scales) -> dict[str, np.ndarray]:
    out = {}
    for fi, s, a in T.scaled_images(sorted(folder.glob("*.png")), scales):
        lat = V.tile_latents(model, a, max(a.shape[:2]))
        for L in model.levels:
            out[f"{fi}_{s}_{L}"] = V.choose_codes(model, lat[0], L, 0.0).astype(np.int16)
    return out


def mean_bits(grids, gm: GridModel, mix) -> float:
    return sum(gm.bits(g, mix) for g in grids) / sum(g.size for g in grids)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, default=ROOT / "out/vqgan_mix_maps.npz")
    ap.add_argument("--mn", default="0,3000,6000,9000,12000")
    ap.add_argument("--mh", default="0,8000,11000,14000,18000,24000")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = V.load_model()
    if not args.cache.exists():
        args.cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.cache, **maps(model, ROOT / "data/images/train", SCALES))
        np.savez_compressed(args.cache.with_suffix(".dev.npz"), **maps(model, ROOT / "data/images/test", (1.0,)))
    tm, dv = np.load(args.cache), np.load(args.cache.with_suffix(".dev.npz"))
    nimg = 1 + max(int(k.split("_")[0]) for k in tm)
    held = set(np.random.default_rng(0).choice(nimg, nimg // 5, replace=False).tolist())
    grid_mn = [int(v) for v in args.mn.split(",")]
    grid_mh = [int(v) for v in args.mh.split(",")]
    for L in model.levels:
        pr = model.priors[L]
        assert pr.C == T.CTX_CLASSES  # the contexts context_counts forms
        train = [tm[k].astype(np.int64) for k in tm if k.endswith(f"_{L}") and int(k.split("_")[0]) not in held]
        test = [tm[k].astype(np.int64) for k in tm if k.endswith(f"_{L}") and int(k.split("_")[0]) in held
                and "_1.0_" in k]
        counts = T.context_counts(train, pr.classes, L)
        gm = GridModel.from_counts(counts, pr.classes, 16, smoothing=0.5)
        fixed = mean_bits(test, gm, None)
        res = sorted((mean_bits(test, gm, (mn, mh, 4, 3, 1, 1)), mn, mh)
                     for mn, mh in itertools.product(grid_mn, grid_mh) if mn + mh)
        print(f"level {L}: held-out training maps ({len(test)}), bits per index: fixed tables {fixed:.3f}")
        for b, mn, mh in res[:3]:
            print(f"  mix ({mn}, {mh}, 4, 3, 1, 1): {b:.3f}")
        _, mn, mh = res[0]
        for a in [(1, 1, 1, 1), (6, 4, 1, 1), (3, 3, 1, 2)]:
            print(f"  mix ({mn}, {mh}, {a}): {mean_bits(test, gm, (mn, mh) + a):.3f}")
        dev = [dv[k].astype(np.int64) for k in dv if k.endswith(f"_{L}")]
        print(f"  dev set (shipped tables): fixed {mean_bits(dev, pr, None):.3f}, codec's mix {V.MIX}: "
              f"{mean_bits(dev, pr, V.MIX):.3f}; {repeats(dev)}", flush=True)
    g = np.ascontiguousarray(np.tile(dv[next(k for k in dv if k.endswith(f"_{model.levels[0]}"))], (2, 2))[:64, :64])
    pr = model.priors[model.levels[0]]
    blob = pr.encode(g, V.MIX)  # compiles
    t0 = time.perf_counter()
    for _ in range(5):
        pr.encode(g, V.MIX)
    t1 = time.perf_counter()
    for _ in range(5):
        pr.decode(blob, g.shape, mix=V.MIX)
    t2 = time.perf_counter()
    print(f"one 64x64-index tile (1024x1024 pixels) at {model.levels[0]} codes: encode {(t1 - t0) / 5 * 1e3:.1f} ms, "
          f"decode {(t2 - t1) / 5 * 1e3:.1f} ms")


def repeats(grids) -> str:
    """Share of indices equal to one of their four decoded neighbours' / seen earlier in the grid."""
    nb = seen = n = 0
    for g in grids:
        h, w = g.shape
        p = np.full((h + 1, w + 2), -1, np.int64)
        p[1:, 1:-1] = g
        near = (g == p[1:, :-2]) | (g == p[:-1, 1:-1]) | (g == p[:-1, :-2]) | (g == p[:-1, 2:])
        nb += int(near.sum())
        flat = g.ravel()
        _, first = np.unique(flat, return_index=True)
        seen += flat.size - first.size
        n += flat.size
    return f"{nb / n:.1%} of indices equal a decoded neighbour's, {seen / n:.1%} were seen before in the grid"


if __name__ == "__main__":
    main()
