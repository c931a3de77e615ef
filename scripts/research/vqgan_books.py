"""Learned level codebooks for image/vqgan (research, issue 4).

The smaller levels' codebooks are k-means clusterings of the 4096 codes (train_vqgan.py ``levels``);
the decoder was then fine-tuned to them, but the codes themselves never see the decoder's loss.
Here one level's codes alone are moved by Adam on the training loss (1 - MS-SSIM + 4 MSE) through
the frozen encoder and decoder (nearest-code assignment, l2-normalised codes), on random crops of the
training pool. Reported: the network alone (no entropy coding) at that level on 768x512 crops of
training-pool photos (vqgan_ecvq.py ``--tune``'s crops; the lomiri dev set is not read), k-means
codes against learned ones, and the learned codes' usage. Nothing here is shipped.

    python scripts/research/vqgan_books.py [--level 512] [--minutes 10] [--batch 8] [--crop 128]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "scripts/research"))

import train_vqgan as T  # noqa: E402
from vqgan_ecvq import tune_images  # noqa: E402

from nzip.codecs import image_vqgan as V  # noqa: E402
from nzip.metrics import ms_ssim  # noqa: E402


@torch.no_grad()
def network_alone(model, book: torch.Tensor, images: list[np.ndarray]) -> float:
    out = []
    for img in images:
        x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255
        out.append(ms_ssim(img, T.decode_nearest(model.net, model.net.latents(x), book)))
    return float(np.mean(out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--level", type=int, default=512)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = V.load_model()
    net = model.net
    tune = [np.asarray(Image.open(p).convert("RGB"))
            for p in sorted(tune_images(ROOT / "out/vqgan_tune_images").glob("*.png"))]
    start = model.books[args.level].clone()
    base = network_alone(model, start, tune)
    print(f"level {args.level}, k-means codes: network alone {base:.4f} MS-SSIM on {len(tune)} training-pool crops")
    book = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([book], lr=args.lr)
    data = T.Crops(ROOT / "data/images/train", args.crop, 1)
    t0, step, hist = time.time(), 0, []
    while time.time() - t0 < args.minutes * 60:
        x = data.batch(args.batch)
        with torch.no_grad():
            z = net.latents(x)
        cb = F.normalize(book, dim=1)
        idx = net.nearest(z, cb.detach())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = net.decode_codes(cb[idx].permute(0, 3, 1, 2).contiguous())
        y = y.float()
        loss = T.ms_ssim_loss(y, x) + 4.0 * F.mse_loss(y, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        hist.append(float(loss.detach()))
        step += 1
        if step % 200 == 0:
            print(f"step {step} ({time.time() - t0:.0f} s): loss {np.mean(hist[-200:]):.4f}", flush=True)
    learned = F.normalize(book.detach(), dim=1)
    moved = float((1 - (learned * start).sum(1)).mean())
    after = network_alone(model, learned, tune)
    print(f"after {step} steps: network alone {after:.4f} (k-means {base:.4f}, {after - base:+.4f}); "
          f"mean 1 - cosine moved {moved:.4f}")


if __name__ == "__main__":
    main()
