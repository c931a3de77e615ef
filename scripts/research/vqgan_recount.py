"""Counting image/vqgan's prior tables on the grids the codec sends (research, issue 4).

The shipped context tables were counted on the nearest codes of the training maps, but the codec
sends rate-weighted grids (``--param rdo``, default ``DEFAULT_RDO``), whose statistics differ: a
rate weight favours codes the tables already call cheap. Counting the sent grids instead
(train_vqgan.py ``prior --rdo X --rounds N``, i.e. ``rdo_recount``) is entropy-constrained VQ's
alternation with the codebook fixed. Does it pay on images it did not count?

Training-pool latents (the shipped network, three scales) are split by image as in vqgan_mix.py:
tables are counted on 80 % of the images, then on the other 20 % (full scale) each table set
chooses its grids the codec's way and reports bits per index (adaptive mix, ideal code length),
mean cosine of the chosen codes, and the objective -cosine + rdo * bits, at several rate weights.
The lomiri dev set is not read.

    python scripts/research/vqgan_recount.py [--rdo 0.005] [--rounds 2] [--eval-rdo 0,0.005,0.01,0.02]
"""
from __future__ import annotations

import argparse
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


def pool_latents(model, folder: Path, cache: Path) -> dict[str, np.ndarray]:
    """`{image}_{scale}` -> latents (dim, h, w) of the codec's own encoder pass, cached."""
    if cache.exists():
        return dict(np.load(cache))
    out = {}
    files = T.pool_files(folder)
    t0 = time.perf_counter()
    for fi, s, a in T.scaled_images(files, SCALES):
        out[f"{fi}_{s}"] = V.tile_latents(model, a, max(a.shape[:2]))[0].numpy().astype(np.float32)
        print(f"\rlatents {fi + 1}/{len(files)} ({time.perf_counter() - t0:.0f} s)", end="", flush=True)
    print()
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


def held_out(model, gm: GridModel, sims, rdo: float) -> tuple[float, float]:
    """(bits per index, mean cosine) of the grids the codec would choose under `gm` at `rdo`."""
    bits = cos = n = 0.0
    for sim in sims:
        g = gm.choose(sim, rdo, V.MIX)
        bits += gm.bits(g, V.MIX)
        cos += float(np.take_along_axis(sim, g[..., None].astype(np.int64), 2).sum())
        n += g.size
    return bits / n, cos / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, default=ROOT / "out/vqgan_recount_latents.npz")
    ap.add_argument("--rdo", type=float, default=V.DEFAULT_RDO, help="rate weight the tables are counted at")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--eval-rdo", default="0,0.005,0.0075,0.01,0.02")
    ap.add_argument("--levels", default="")
    ap.add_argument("--smoothing", type=float, default=0.5)
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = V.load_model()
    lat = pool_latents(model, ROOT / "data/images/train", args.cache)
    nimg = 1 + max(int(k.split("_")[0]) for k in lat)
    held = set(np.random.default_rng(0).choice(nimg, nimg // 5, replace=False).tolist())
    train = [torch.from_numpy(v.astype(np.float32)) for k, v in lat.items() if int(k.split("_")[0]) not in held]
    test = [torch.from_numpy(v.astype(np.float32)) for k, v in lat.items()
            if int(k.split("_")[0]) in held and k.endswith("_1.0")]
    print(f"{nimg} pool images: counted on {len(train)} maps, measured on {len(test)} held-out maps "
          f"({sum(z.shape[1] * z.shape[2] for z in test)} indices)")
    evals = [float(v) for v in args.eval_rdo.split(",")]
    levels = [int(v) for v in args.levels.split(",")] if args.levels else model.levels
    for L in levels:
        book, cls = model.books[L], model.priors[L].classes
        sims = [(z.permute(1, 2, 0) @ book.T).numpy() for z in test]
        counts = T.context_counts([model.net.nearest(z[None], book)[0].numpy() for z in train], cls, L)
        sets = [("nearest", counts)]
        for r in range(args.rounds):
            counts = T.rdo_recount(train, book, counts, cls, args.rdo, 1, args.smoothing, f"level {L}")
            sets.append((f"rdo {args.rdo:g} x{r + 1}", counts))
        print(f"level {L}: held-out bits/index, mean cosine, -cos + rdo*bits")
        for name, c in sets:
            gm = GridModel.from_counts(c, cls, 16, smoothing=args.smoothing)
            cells = []
            for e in evals:
                b, cs = held_out(model, gm, sims, e)
                cells.append(f"rdo {e:g}: {b:.3f} b {cs:.4f} J {-cs + e * b:.5f}")
            print(f"  {name:14s} " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
