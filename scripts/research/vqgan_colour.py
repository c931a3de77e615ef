"""Would a per-image colour correction sent beside the indices pay (research, issue 4)?

At 0.035 bpp a few bytes of side information are affordable (a 768x512 file holds ~1,700 bytes).
The cheapest kind is a global colour fix the encoder fits after decoding: per channel a gain and an
offset (6 numbers), or a full 3x4 colour matrix (12 numbers), least squares against the original.
This measures the best such fix (unquantised, so an upper bound on what it could buy) on images the
codec decodes at one level: MS-SSIM and PSNR before and after.

Run on the 13 training-pool crops the encoder's settings were tuned on (out/vqgan_tune_images,
made by vqgan_ecvq.py), not on the lomiri dev set.

    python scripts/research/vqgan_colour.py [--images out/vqgan_tune_images] [--level 512]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import nzip  # noqa: E402
from nzip.metrics import ms_ssim, psnr  # noqa: E402


def fit(decoded: np.ndarray, original: np.ndarray, full: bool) -> np.ndarray:
    """The decoded image after the least-squares colour fix (per-channel affine, or a 3x4 matrix)."""
    y = decoded.reshape(-1, 3).astype(np.float64)
    x = original.reshape(-1, 3).astype(np.float64)
    ones = np.ones((len(y), 1))
    if full:
        a = np.concatenate([y, ones], 1)
        m, *_ = np.linalg.lstsq(a, x, rcond=None)
        z = a @ m
    else:
        z = np.empty_like(y)
        for c in range(3):
            a = np.concatenate([y[:, c:c + 1], ones], 1)
            sol, *_ = np.linalg.lstsq(a, x[:, c], rcond=None)
            z[:, c] = a @ sol
    return np.clip(np.rint(z), 0, 255).astype(np.uint8).reshape(decoded.shape)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, default=ROOT / "out/vqgan_tune_images")
    ap.add_argument("--level", type=int, default=512)
    args = ap.parse_args()
    files = sorted(args.images.glob("*.png"))
    if not files:
        sys.exit(f"no PNGs in {args.images} (scripts/research/vqgan_ecvq.py makes them)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        nz = Path(tmp) / "a.nz"
        for f in files:
            x = np.asarray(Image.open(f).convert("RGB"))
            nzip.encode(f, nz, codec="image/vqgan", overwrite=True, level=args.level)
            y = np.asarray(nzip.decode(nz))
            fixes = [y, fit(y, x, False), fit(y, x, True)]
            rows.append([ms_ssim(x, v) for v in fixes] + [psnr(x, v) for v in fixes])
            print(f"{f.name:40s} " + " ".join(f"{v:.4f}" for v in rows[-1]), flush=True)
    m = np.mean(rows, 0)
    print(f"level {args.level}, {len(rows)} images, mean MS-SSIM: none {m[0]:.4f}, per-channel affine "
          f"{m[1]:.4f}, 3x4 matrix {m[2]:.4f}; PSNR: {m[3]:.2f} / {m[4]:.2f} / {m[5]:.2f} dB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
