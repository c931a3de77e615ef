"""Which causal context model codes image/vqgan's indices best? (research, issue 4)

Index maps of the training pool (scripts/prepare_images.py) are split by image: tables are counted
on 80 % of the images and the code length is measured on the other 20 % (never on the lomiri dev
set). Each design maps the already-decoded neighbours to a context; tables are the context counts
mixed with order-0 (the same smoothing as nzip.entropy.grid.GridModel.from_counts), ideal code
lengths in bits per index.

    python scripts/research/vqgan_prior.py --work out/vqgan [--model finetune]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

import train_vqgan as T  # noqa: E402


def neighbours(m: np.ndarray, cls: np.ndarray, C: int):
    c = cls[m]
    pad = np.full((m.shape[0] + 1, m.shape[1] + 2), C, np.int64)
    pad[1:, 1:-1] = c
    left, up = pad[1:, :-2], pad[:-1, 1:-1]
    upleft, upright = pad[:-1, :-2], pad[:-1, 2:]
    return left, up, upleft, upright


def bits(train, test, ctx_fn, nctx, K, smoothing):
    counts = np.zeros((nctx, K))
    for m in train:
        np.add.at(counts, (ctx_fn(m).ravel(), m.ravel()), 1)
    p0 = (counts.sum(0) + 0.5) / (counts.sum() + 0.5 * K)
    p = counts + smoothing * K * p0 + 1e-3
    p /= p.sum(1, keepdims=True)
    total = n = 0
    for m in test:
        total += -np.log2(p[ctx_fn(m).ravel(), m.ravel()]).sum()
        n += m.size
    return total / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=str(ROOT / "out/vqgan"))
    ap.add_argument("--model", default="main")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    work = Path(a.work)
    model = T.load_model(work / f"{a.model}.safetensors")
    lv = load_file(str(work / "levels.safetensors"))
    files = sorted(Path(ROOT / "data/images/train").glob("*.png"))
    rng = np.random.default_rng(0)
    test_files = set(rng.choice(len(files), len(files) // 5, replace=False).tolist())
    # latents per image (three scales), tagged by image for the split
    import tempfile

    zs, which = [], []
    for i, f in enumerate(files):
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / f.name).symlink_to(f)
            for z in T.latent_maps(model, Path(d)):
                zs.append(z)
                which.append(i in test_files)
    books = {model.codebook.shape[0]: model.codebook, **{k: lv[f"codebook_{k}"] for k in T.LEVELS}}
    for K, book in sorted(books.items(), reverse=True):
        maps = [model.nearest(z[None], book)[0].numpy().astype(np.int64) for z in zs]
        train = [m for m, t in zip(maps, which) if not t]
        test = [m for m, t in zip(maps, which) if t]
        rows = [("uniform", np.log2(K))]
        rows.append(("order-0", bits(train, test, lambda m: np.zeros_like(m), 1, K, 0.0)))
        for C in (8, 16, 32):
            cb = lv.get(f"codebook_{C}")
            if cb is None:
                cb = torch.from_numpy(T.weighted_kmeans(model.codebook.numpy().astype(np.float64),
                                                        lv["usage"].numpy().astype(np.float64), C, 30, 0))
            cls = model.nearest(book.T[None, :, :, None], cb)[0, :, 0].numpy()
            for sm in (0.25, 1.0):
                def lu(m, cls=cls, C=C):
                    l, u, _, _ = neighbours(m, cls, C)
                    return l * (C + 1) + u
                rows.append((f"left+up C={C} s={sm}", bits(train, test, lu, (C + 1) ** 2, K, sm)))
            if C <= 16:
                def luul(m, cls=cls, C=C):
                    l, u, ul, ur = neighbours(m, cls, C)
                    return (l * (C + 1) + u) * (C + 1) + ur
                rows.append((f"left+up+upright C={C}", bits(train, test, luul, (C + 1) ** 3, K, 1.0)))
        print(f"\nlevel {K}: bits per index on held-out training-pool images ({len(test)} maps)")
        for name, b in rows:
            print(f"  {name:28s} {b:.3f}")


if __name__ == "__main__":
    main()
