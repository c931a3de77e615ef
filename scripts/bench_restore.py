"""image/vqgan lost-index restoration on the dev set (issue 4's stretch goal).

    python scripts/bench_restore.py [--levels 256,1024] [--rates 0.1,0.2] [--rdo X] [--manifest]

Dev set: the 14 photographs of data/images/test/ (768x512, from scripts/prepare_images.py; the
restorer is trained on the training pool only). For each photo and level, the index grid is
encoded once (with the codec's default rate weight unless ``--rdo`` says otherwise); then a share of its indices is lost, at random positions (seeded), or as one lost
16x16-index tile (a damaged stream of ``--param tile=256``), and the grid is rebuilt three ways:

* ``nzip restore``: the restoration transformer (nzip.codecs.vqgan_restore, 4 rounds);
* ``nearest kept``: every lost index copies the nearest kept one (a cheap baseline);
* ``intact``: nothing lost (the reference the others approach).

Reported per row: the share of lost indices rebuilt exactly, and PSNR / MS-SSIM of the decoded
image against the original photo (means over the 14 photos).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nzip.codecs.image_vqgan import DEFAULT_RDO, image_indices, indices_image, load_model  # noqa: E402
from nzip.codecs.vqgan_restore import load_restorer, nearest_fill, restore  # noqa: E402
from nzip.metrics import ms_ssim, psnr  # noqa: E402


def lost_masks(shape, rates, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {f"{r:.0%} at random": rng.random(shape) < r for r in rates}
    h, w = shape
    m = np.zeros(shape, bool)
    y, x = rng.integers(0, h - 16 + 1), rng.integers(0, w - 16 + 1)
    m[y:y + 16, x:x + 16] = True
    out[f"one 16x16 tile ({m.mean():.0%})"] = m
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, default=ROOT / "data/images/test")
    ap.add_argument("--levels", default="256,1024")
    ap.add_argument("--rates", default="0.1,0.2")
    ap.add_argument("--limit", type=int, default=0, help="use the first N photos (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rdo", type=float, default=DEFAULT_RDO,
                    help="the grids' rate weight (default: the codec's; 0: nearest codes, as before session 16)")
    ap.add_argument("--restorer", type=Path, help="a folder holding another vqgan-f16-restore.safetensors")
    ap.add_argument("--manifest", action="store_true", help="write the means into nzip/pretrained/manifest.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    files = sorted(a.images.glob("*.png"))[: a.limit or None]
    if not files:
        raise SystemExit(f"no photos in {a.images}: run scripts/prepare_images.py first")
    levels = [int(v) for v in a.levels.split(",")]
    rates = [float(v) for v in a.rates.split(",")]
    model, net = load_model(), load_restorer(a.restorer)
    print(f"date {date.today()}, {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{len(files)} photos, levels {levels}, rdo {a.rdo:g}")
    rows: dict[tuple, list] = {}
    t0 = time.perf_counter()
    for k, f in enumerate(files):
        img = np.asarray(Image.open(f).convert("RGB"))
        for level in levels:
            grid = image_indices(model, img, level, rdo=a.rdo)
            book = model.books[level]
            px = indices_image(model, grid, level)
            rows.setdefault((level, "nothing lost", "intact"), []).append((1.0, psnr(img, px), ms_ssim(img, px)))
            for what, lost in lost_masks(grid.shape, rates, seed=k).items():
                for how, fill in (("nzip restore", lambda g, m: restore(g, m, book, net)),
                                  ("nearest kept", nearest_fill)):
                    g = fill(np.where(lost, -1, grid), lost)
                    px = indices_image(model, g, level)
                    acc = float((g[lost] == grid[lost]).mean())
                    rows.setdefault((level, what, how), []).append((acc, psnr(img, px), ms_ssim(img, px)))
        print(f"{k + 1}/{len(files)} photos ({time.perf_counter() - t0:.0f} s)", flush=True)
    print()
    print("| level | lost | rebuilt by | exact indices | PSNR dB | MS-SSIM |")
    print("|---:|---|---|---:|---:|---:|")
    means = {}
    for (level, what, how), v in rows.items():
        m = np.mean(np.array(v), axis=0)
        means[f"level={level}, {what}, {how}"] = {"exact": round(float(m[0]), 4), "psnr_db": round(float(m[1]), 2),
                                                  "ms_ssim": round(float(m[2]), 4)}
        print(f"| {level} | {what} | {how} | {m[0]:.3f} | {m[1]:.2f} | {m[2]:.4f} |")
    if a.manifest:
        path = ROOT / "nzip/pretrained/manifest.json"
        entries = json.loads(path.read_text())
        entries["vqgan-f16-restore.safetensors"]["quality"] = {
            "measured": f"scripts/bench_restore.py, {date.today()}",
            "data": f"dev set: {len(files)} lomiri wallpaper photos, 768x512 (never trained on)",
            "grids": f"rdo={a.rdo:g}", **means}
        path.write_text(json.dumps(entries, indent=1) + "\n")


if __name__ == "__main__":
    main()
