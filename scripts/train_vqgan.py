"""Train image/vqgan's autoencoder, its k-means codebook levels and its index prior (issue 4).

Data: the training pool made by scripts/prepare_images.py (data/images/train: opencv-doc photos,
scikit-image colour photos, forensics-samples photos and video frames). The 14 lomiri test photos
are never read here. Random crops at several scales (a window of 128..512 pixels resized to the
crop size), random flips.

Needs ``pip install -e ".[train]"`` (pytorch-msssim; scikit-image and PyAV for the data script).
Phases (each resumable; the state lives in --work, default out/vqgan):

    python scripts/train_vqgan.py main --steps 6000        # autoencoder + 4096-code EMA codebook
    python scripts/train_vqgan.py levels                   # k-means codebooks 1024/512/256/64 (+16 ctx)
    python scripts/train_vqgan.py finetune --steps 2000    # shared decoder, a random level per batch
                                                           #   (--decoder-only: the encoder stays, so
                                                           #   the prior and restorer stay valid)
    python scripts/train_vqgan.py prior                    # context tables of the index prior (of the
                                                           #   grids sent at --rdo, --rounds 2)
    python scripts/train_vqgan.py export                   # nzip/pretrained/vqgan-f16.safetensors
    python scripts/train_vqgan.py eval --model main        # network alone per level, on the dev set
    python scripts/train_vqgan.py restore --steps 3000     # lost-index restorer (from the shipped model)

Training runs in bfloat16 autocast (CPUs with AMX run it ~8x faster than float32); the exported
weights are float16. `main` and `finetune` save every --save-every steps and on Ctrl-C, and resume
where they stopped. `--init PATH` starts a phase from an exported model (when out/ was lost).

On a GPU (`--device cuda`, the default where one is) the training pool lives on the device and
crops are cut and resized there (bicubic, antialiased). `--minutes M` ends main / finetune /
restore after M minutes (or --steps, whichever comes first), with the learning rate on a cosine
over that time; scripts/device_vqgan.sh runs every phase that way on a lent GPU. The pool may be
PNG or JPEG files (the device run carries it as JPEG q95 4:4:4 to fit its transfer limit).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nzip.codecs.image_vqgan import DEFAULT_RDO  # noqa: E402
from nzip.codecs.vqgan_net import VQAutoencoder  # noqa: E402

LEVELS = [1024, 512, 256, 64]
CTX_CLASSES = 16  # the coarse clustering whose classes of the left and upper neighbours form contexts


# ---------------------------------------------------------------- data
def pool_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.png")) + sorted(folder.glob("*.jpg"))
    if not files:
        sys.exit(f"no training images in {folder}: run scripts/prepare_images.py first")
    if any("lomiri" in f.name or "_by_" in f.name for f in files):
        sys.exit("the training folder holds a lomiri test photo; refusing to train on it")
    return files


class Crops:
    """Random square windows (crop..4*crop pixels, at most the image's short side) resized to the
    crop size, random horizontal flips. On a GPU the images live on the device."""

    def __init__(self, folder: Path, size: int, seed: int, device: torch.device | None = None) -> None:
        self.images = [Image.open(f).convert("RGB") for f in pool_files(folder)]
        for im in self.images:
            im.load()
        self.device = device = torch.device("cpu") if device is None else device
        if device.type != "cpu":
            self.images = [torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).to(device) for im in self.images]
        self.size = size
        self.rng = np.random.default_rng(seed)

    def _window(self, w: int, h: int) -> tuple[int, int, int]:
        side = min(w, h)
        lo = min(self.size, side)
        win = int(self.rng.uniform(lo, min(side, 4 * self.size)))
        return int(self.rng.integers(0, w - win + 1)), int(self.rng.integers(0, h - win + 1)), win

    def batch(self, n: int) -> torch.Tensor:
        s = self.size
        if self.device.type != "cpu":
            out = torch.empty((n, 3, s, s), device=self.device)
            for i in range(n):
                im = self.images[self.rng.integers(len(self.images))]
                x, y, win = self._window(im.shape[2], im.shape[1])
                crop = im[None, :, y:y + win, x:x + win].float().div_(255)
                if win != s:
                    crop = F.interpolate(crop, size=(s, s), mode="bicubic", antialias=True, align_corners=False)
                out[i] = crop[0].flip(2) if self.rng.random() < 0.5 else crop[0]
            return out.clamp_(0, 1).contiguous(memory_format=torch.channels_last)
        out = np.empty((n, s, s, 3), np.uint8)
        for i in range(n):
            im = self.images[self.rng.integers(len(self.images))]
            x, y, win = self._window(im.width, im.height)
            crop = im.resize((s, s), Image.BICUBIC, box=(x, y, x + win, y + win))
            a = np.asarray(crop)
            if self.rng.random() < 0.5:
                a = a[:, ::-1]
            out[i] = a
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255).contiguous(
            memory_format=torch.channels_last)


class Budget:
    """Ends a phase at --steps or after --minutes (whichever first); progress in [0, 1] for the
    learning-rate schedule (by time when --minutes is given, else by steps)."""

    def __init__(self, args, start_step: int) -> None:
        self.steps, self.start = args.steps, start_step
        self.seconds = args.minutes * 60 if args.minutes else None
        self.t0 = time.time()

    def progress(self, step: int) -> float:
        if self.seconds:
            return min(1.0, max((time.time() - self.t0) / self.seconds,
                                (step - self.start) / max(1, self.steps - self.start)))
        return min(1.0, step / max(1, self.steps))

    def done(self, step: int) -> bool:
        return step >= self.steps or (self.seconds is not None and time.time() - self.t0 >= self.seconds)

    @staticmethod
    def cosine(p: float, floor: float = 0.05) -> float:
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))


def device_of(args) -> torch.device:
    if args.device:
        return torch.device(args.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------- state
def save_state(work: Path, phase: str, model: VQAutoencoder, opt, step: int, extra: dict) -> None:
    work.mkdir(parents=True, exist_ok=True)
    tmp = work / f"{phase}.tmp"
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp) + ".model",
              metadata={"config": json.dumps(model.config)})
    torch.save({"opt": opt.state_dict(), "extra": {k: v.cpu() for k, v in extra.items() if torch.is_tensor(v)}},
               str(tmp) + ".opt")
    (work / f"{phase}.json").with_suffix(".json.tmp").write_text(
        json.dumps({"step": step, **{k: v for k, v in extra.items() if not torch.is_tensor(v)}}))
    Path(str(tmp) + ".model").replace(work / f"{phase}.safetensors")
    Path(str(tmp) + ".opt").replace(work / f"{phase}.opt")
    (work / f"{phase}.json.tmp").replace(work / f"{phase}.json")


def load_model(path: Path) -> VQAutoencoder:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        config = json.loads(f.metadata()["config"])
    model = VQAutoencoder(config)
    sd = {k: v.float() for k, v in load_file(str(path)).items()}
    model.load_state_dict(sd, strict=False)  # exports carry extra tensors (levels, prior)
    return model


# ---------------------------------------------------------------- losses
def ms_ssim_loss(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    from pytorch_msssim import ms_ssim

    return 1 - ms_ssim(y.float(), x.float(), data_range=1.0, win_size=7)


def psnr(y: torch.Tensor, x: torch.Tensor) -> float:
    return float(-10 * torch.log10(F.mse_loss(y.detach().float().clamp(0, 1), x).clamp_min(1e-10)))


def train(args, phase: str) -> None:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    dev = device_of(args)
    torch.backends.cudnn.benchmark = True
    work = Path(args.work)
    ck = work / f"{phase}.safetensors"
    step, extra = 0, {}
    if ck.exists():
        model = load_model(ck)
        meta = json.loads((work / f"{phase}.json").read_text())
        step = meta.pop("step")
        extra.update(meta)
        saved = torch.load(work / f"{phase}.opt", weights_only=True, map_location=dev)
        extra.update(saved["extra"])
    elif phase == "finetune":
        src = Path(args.init) if args.init else work / "main.safetensors"
        model = load_model(src)
    else:
        model = load_model(Path(args.init)) if args.init else VQAutoencoder()
    model.train()
    model.to(dev, memory_format=torch.channels_last)
    frozen = phase == "finetune" and args.decoder_only
    if frozen:  # the encoder and codebooks stay: the grids, prior tables and restorer remain valid
        model.encoder.requires_grad_(False)
    params = list(model.decoder.parameters()) + ([] if frozen else list(model.encoder.parameters()))
    lr = args.lr if args.lr else (3e-4 if phase == "main" else 1e-4)
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.99))
    budget = Budget(args, step)
    if ck.exists():
        opt.load_state_dict(saved["opt"])
        for g in opt.param_groups:
            g["lr"] = lr

    K, d = model.codebook.shape
    if phase == "main":
        ema_n = extra.get("ema_n", torch.ones(K)).to(dev)
        ema_s = extra.get("ema_s", model.codebook.clone()).to(dev)
    else:
        levels = load_file(str(work / "levels.safetensors"))
        books = [model.codebook] + [levels[f"codebook_{k}"].to(dev) for k in LEVELS]

    data = Crops(Path(args.data), args.crop, args.seed + step, dev)
    from collections import deque

    recent: deque = deque(maxlen=50)
    bar = tqdm(total=args.steps, initial=min(step, args.steps), desc=phase, dynamic_ncols=True)
    t_save = time.time()
    hist: dict[str, list[float]] = {"loss": [], "psnr": [], "msssim": []}
    try:
        while not budget.done(step):
            if args.minutes:  # a cosine over the time budget, after 100 warm-up steps
                for g in opt.param_groups:
                    g["lr"] = lr * min(1.0, (step - budget.start + 1) / 100) * Budget.cosine(budget.progress(step))
            x = data.batch(args.batch)
            with torch.autocast(dev.type, dtype=torch.bfloat16), torch.set_grad_enabled(not frozen):
                z = model.latents(x)
            if phase == "main":
                book = model.codebook
            else:
                book = books[step % len(books)]
            idx = model.nearest(z.detach(), book)
            q = book[idx].permute(0, 3, 1, 2)
            commit = F.mse_loss(z, q.detach()) * d
            q_st = z + (q - z).detach()
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                y = model.decode_codes(q_st.contiguous(memory_format=torch.channels_last))
            l_ms = ms_ssim_loss(y, x)
            l_mse = F.mse_loss(y.float(), x)
            loss = l_ms + args.mse_weight * l_mse + 0.25 * commit
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            if phase == "main":
                with torch.no_grad():
                    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, d)
                    onehot_n = torch.bincount(idx.reshape(-1), minlength=K).float()
                    sums = torch.zeros(K, d, device=dev).index_add_(0, idx.reshape(-1), flat)
                    ema_n.mul_(args.decay).add_(onehot_n, alpha=1 - args.decay)
                    ema_s.mul_(args.decay).add_(sums, alpha=1 - args.decay)
                    model.codebook.copy_(F.normalize(ema_s / ema_n.clamp_min(1e-6)[:, None], dim=1))
                    recent.append(idx.reshape(-1))
                    if step % 10 == 0:  # restart dead codes at the worst-quantised latents of this batch
                        dead = (ema_n < args.dead).nonzero().reshape(-1)
                        if len(dead):
                            err = 1 - (flat * model.codebook[idx.reshape(-1)]).sum(1)
                            order = torch.argsort(err, descending=True)
                            pick = flat[order[torch.randint(min(len(flat), 4 * len(dead) + 1), (len(dead),),
                                                            device=dev)]]
                            new = F.normalize(pick + 0.02 * torch.randn_like(pick), dim=1)
                            model.codebook[dead] = new
                            ema_s[dead] = new * args.dead * 3
                            ema_n[dead] = args.dead * 3
                extra.update(ema_n=ema_n, ema_s=ema_s)
            step += 1
            hist["loss"].append(float(loss.detach()))
            hist["psnr"].append(psnr(y, x))
            hist["msssim"].append(1 - float(l_ms))
            if step % 10 == 0:
                post = {k: f"{np.mean(v[-50:]):.4f}" for k, v in hist.items()}
                if phase == "main":  # codes actually chosen over the last 50 batches
                    post["used"] = int(torch.cat(list(recent)).unique().numel())
                bar.set_postfix(post)
            bar.update(1)
            if step % args.save_every == 0 or time.time() - t_save > 600:
                save_state(work, phase, model, opt, step, extra)
                t_save = time.time()
                with open(work / f"{phase}.log", "a") as f:
                    f.write(json.dumps({"step": step, **{k: float(np.mean(v[-100:])) for k, v in hist.items()}}) + "\n")
    except KeyboardInterrupt:
        print("interrupted; saving", file=sys.stderr)
    finally:
        bar.close()
        save_state(work, phase, model, opt, step, extra)


# ---------------------------------------------------------------- levels: k-means of the codebook
def weighted_kmeans(x: np.ndarray, w: np.ndarray, k: int, iters: int, seed: int) -> np.ndarray:
    """k-means++ seeded, usage-weighted k-means of unit vectors; centroids renormalised (cosine)."""
    rng = np.random.default_rng(seed)
    w = w + 1e-3 * w.mean()
    cent = [x[rng.choice(len(x), p=w / w.sum())]]
    d2 = ((x - cent[0]) ** 2).sum(1)
    for _ in range(1, k):
        p = w * d2
        cent.append(x[rng.choice(len(x), p=p / p.sum())])
        d2 = np.minimum(d2, ((x - cent[-1]) ** 2).sum(1))
    c = np.stack(cent)
    for _ in range(iters):
        a = (x @ c.T).argmax(1)
        s = np.zeros_like(c)
        np.add.at(s, a, x * w[:, None])
        n = np.bincount(a, weights=w, minlength=k)
        empty = n <= 0
        c = np.where(empty[:, None], c, s / np.maximum(n, 1e-12)[:, None])
        c /= np.linalg.norm(c, axis=1, keepdims=True)
    return c.astype(np.float32)


def scaled_images(files, scales):
    """(image number, scale, uint8 RGB array) for each image file at each scale: resized (Lanczos)
    to sides that are multiples of 16, skipping sizes under 64 pixels."""
    for fi, f in enumerate(files):
        im = Image.open(f).convert("RGB")
        for s in scales:
            w, h = int(im.width * s) // 16 * 16, int(im.height * s) // 16 * 16
            if w < 64 or h < 64:
                continue
            yield fi, s, np.ascontiguousarray(np.asarray(im.resize((w, h), Image.LANCZOS)))


@torch.no_grad()
def latent_maps(model: VQAutoencoder, folder: Path, scales=(1.0, 0.7, 0.5),
                device: torch.device | None = None) -> list[torch.Tensor]:
    """Encoder outputs (dim, h, w, on the CPU) of every training image at a few scales (usage and the
    prior); the encoder runs on `device` and the model is left on the CPU."""
    device = torch.device("cpu") if device is None else device
    model.eval()
    model.to(device)
    out = []
    for _, _, a in scaled_images(tqdm(pool_files(folder), desc="latents"), scales):
        x = torch.from_numpy(a).permute(2, 0, 1)[None].float().to(device) / 255
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out.append(model.latents(x)[0].float().cpu())
    model.to("cpu")
    return out


def levels(args) -> None:
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    model = load_model(work / "main.safetensors")
    K = model.codebook.shape[0]
    maps = [model.nearest(z[None], model.codebook)[0].numpy()
            for z in latent_maps(model, Path(args.data), device=device_of(args))]
    usage = np.bincount(np.concatenate([m.ravel() for m in maps]), minlength=K).astype(np.float64)
    cb = model.codebook.numpy().astype(np.float64)
    out = {"usage": torch.from_numpy(usage.astype(np.float32))}
    for k in LEVELS + [CTX_CLASSES]:
        print(f"k-means {K} -> {k}")
        out[f"codebook_{k}"] = torch.from_numpy(weighted_kmeans(cb, usage, k, 30, args.seed))
    save_file(out, str(work / "levels.safetensors"))
    print(f"codes used on the training pool: {(usage > 0).sum()} of {K}")


# ---------------------------------------------------------------- prior: context tables
def context_counts(maps, cls: np.ndarray, k: int) -> np.ndarray:
    """Counts ((C+1)**2, k) of each index given the classes of its left and upper neighbours
    (class C: outside the image), the prior's contexts (nzip.entropy.grid)."""
    C = CTX_CLASSES
    counts = np.zeros(((C + 1) ** 2, k), np.int64)
    for m in maps:
        c = cls[m]
        left = np.full_like(c, C)
        left[:, 1:] = c[:, :-1]
        up = np.full_like(c, C)
        up[1:] = c[:-1]
        np.add.at(counts, (left * (C + 1) + up, m), 1)
    return counts


def rdo_recount(zs, book: torch.Tensor, counts: np.ndarray, cls: np.ndarray, rdo: float, rounds: int,
                smoothing: float, desc: str = "recount") -> np.ndarray:
    """Counts of the grids the codec sends rather than of the nearest codes: `rounds` times, choose
    every map's grid with rate weight `rdo` under the adaptive prior built from the current counts
    (image_vqgan.choose_codes: cosine - rdo * bits, the codec's MIX), then count those grids. Each
    round lowers the mean of -cosine + rdo * bits on the maps it counts (entropy-constrained VQ's
    alternation, with the codebook fixed)."""
    from nzip.codecs.image_vqgan import MIX
    from nzip.entropy.grid import GridModel

    for r in range(rounds):
        gm = GridModel.from_counts(counts, cls, 16, smoothing=smoothing)
        grids = [gm.choose((z.permute(1, 2, 0) @ book.T).numpy(), rdo, MIX)
                 for z in tqdm(zs, desc=f"{desc} round {r + 1}/{rounds}", leave=False)]
        counts = context_counts(grids, cls, counts.shape[1])
    return counts


def prior(args) -> None:
    """Counts of each level's index given the coarse classes of its left and upper neighbours:
    of the nearest codes, then (--rounds N) of the grids chosen with rate weight --rdo."""
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    src = work / ("finetune.safetensors" if (work / "finetune.safetensors").exists() else "main.safetensors")
    model = load_model(src)
    lv = load_file(str(work / "levels.safetensors"))
    zs = latent_maps(model, Path(args.data), device=device_of(args))
    ctx_book = lv[f"codebook_{CTX_CLASSES}"]
    out = {}
    for k in [model.codebook.shape[0]] + LEVELS:
        book = model.codebook if k == model.codebook.shape[0] else lv[f"codebook_{k}"]
        cls = model.nearest(book.T[None, :, :, None], ctx_book)[0, :, 0].numpy()  # class of each code
        counts = context_counts([model.nearest(z[None], book)[0].numpy() for z in zs], cls, k)
        if args.rounds:
            counts = rdo_recount(zs, book, counts, cls, DEFAULT_RDO if args.rdo is None else args.rdo,
                                 args.rounds, args.smoothing, f"level {k}")
        out[f"prior_counts_{k}"] = torch.from_numpy(counts.astype(np.int32))
        out[f"code_class_{k}"] = torch.from_numpy(cls.astype(np.int32))
        n = counts.sum()
        p0 = counts.sum(0) / n
        h0 = -(p0[p0 > 0] * np.log2(p0[p0 > 0])).sum()
        print(f"level {k}: {n} indices, order-0 entropy {h0:.2f} bits (uniform {math.log2(k):.2f})")
    save_file(out, str(work / "prior.safetensors"))


@torch.no_grad()
def decode_nearest(model: VQAutoencoder, z: torch.Tensor, book: torch.Tensor) -> np.ndarray:
    """The network alone: latents z (1, dim, h, w) snapped to their nearest codes of `book` and
    decoded, as uint8 RGB (16h, 16w, 3)."""
    y = model.decode_indices(model.nearest(z, book), book)
    return (y[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


@torch.no_grad()
def evaluate(args) -> None:
    """PSNR / MS-SSIM of the network alone at every level (no entropy coding) on --images: shows
    what fine-tuning for the k-means levels buys. Reporting only; nothing here trains."""
    from nzip.metrics import ms_ssim, psnr as psnr_u8

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    model = load_model(work / f"{args.model}.safetensors")
    model.eval()
    lv = load_file(str(work / "levels.safetensors"))
    books = {model.codebook.shape[0]: model.codebook, **{k: lv[f"codebook_{k}"] for k in LEVELS}}
    files = sorted(Path(args.images).glob("*.png"))
    res: dict[int, list[tuple[float, float]]] = {k: [] for k in books}
    for f in tqdm(files, desc=f"eval {args.model}"):
        a = np.asarray(Image.open(f).convert("RGB"))
        h, w = a.shape[0] // 16 * 16, a.shape[1] // 16 * 16
        a = np.ascontiguousarray(a[:h, :w])
        x = torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float() / 255
        z = model.latents(x)
        for k, book in books.items():
            b = decode_nearest(model, z, book)
            res[k].append((psnr_u8(a, b), ms_ssim(a, b)))
    print(f"{args.model} ({json.loads((work / f'{args.model}.json').read_text())['step']} steps) on {len(files)} images")
    for k in sorted(res, reverse=True):
        v = np.array(res[k])
        print(f"  level {k:5d}: PSNR {v[:, 0].mean():.2f} dB  MS-SSIM {v[:, 1].mean():.4f}")


def export(args) -> None:
    """The network (float16; codebooks float32) and the prior's integer tables, for nzip/pretrained."""
    from safetensors.numpy import save_file as save_np

    from nzip.entropy.grid import GridModel

    work = Path(args.work)
    src = work / ("finetune.safetensors" if (work / "finetune.safetensors").exists() else "main.safetensors")
    model = load_model(src)
    tensors = {k: v.half().contiguous() for k, v in model.state_dict().items() if k != "codebook"}
    tensors["codebook"] = model.codebook.float().contiguous()
    lv = load_file(str(work / "levels.safetensors"))
    for k in LEVELS:
        tensors[f"codebook_{k}"] = lv[f"codebook_{k}"].float().contiguous()
    trained = {p: json.loads((work / f"{p}.json").read_text())["step"]
               for p in ("main", "finetune") if (work / f"{p}.json").exists()}
    meta = {"config": json.dumps(model.config), "levels": json.dumps(LEVELS), "trained": json.dumps(trained)}
    pr = load_file(str(work / "prior.safetensors"))
    prior = {"precision": np.array([16], np.int32)}
    for k in [model.codebook.shape[0]] + LEVELS:
        counts = pr[f"prior_counts_{k}"].numpy()
        cls = pr[f"code_class_{k}"].numpy()
        gm = GridModel.from_counts(counts, cls, 16, smoothing=args.smoothing)
        prior[f"freqs_{k}"] = gm.freqs.astype(np.uint16)
        prior[f"classes_{k}"] = cls.astype(np.uint8)
        n = counts.sum()
        print(f"level {k}: prior {(counts * (16 - np.log2(gm.freqs))).sum() / n:.3f} bits/index on the "
              f"training maps (uniform {math.log2(k):.2f})")
    dst = Path(args.out)
    dst.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for path, write in ((dst, lambda t: save_file(tensors, str(t), metadata=meta)),
                        (dst.with_name(dst.stem + "-prior.safetensors"), lambda t: save_np(prior, str(t)))):
        tmp = path.with_suffix(".tmp")
        write(tmp)
        tmp.replace(path)
        written.append(path)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    manifest_update(dst.parent / "manifest.json", written, trained)


def _lost_mask(rng: np.random.Generator, n: int, h: int, w: int) -> torch.Tensor:
    """Training masks: scattered losses at a random rate (5-60 %), or one to three lost rectangles
    (a damaged tile), per sample."""
    out = np.zeros((n, h, w), bool)
    for i in range(n):
        if rng.random() < 0.7:
            out[i] = rng.random((h, w)) < rng.uniform(0.05, 0.6)
        else:
            for _ in range(rng.integers(1, 4)):
                bh, bw = rng.integers(2, max(3, h // 2)), rng.integers(2, max(3, w // 2))
                y, x = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
                out[i, y:y + bh, x:x + bw] = True
        if out[i].all():
            out[i, 0, 0] = False
    return torch.from_numpy(out)


def restore_phase(args) -> None:
    """Train the lost-index restorer (nzip/codecs/vqgan_restore.py) on index grids of the training
    pool at every level, from the shipped (exported) autoencoder; resumable; exports when done."""
    from nzip.codecs.image_vqgan import load_model as load_codec
    from nzip.codecs.vqgan_restore import CONTEXT as CONTEXT_R
    from nzip.codecs.vqgan_restore import DEFAULT_CONFIG as DEFAULT_RESTORE
    from nzip.codecs.vqgan_restore import WINDOW as WINDOW_R
    from nzip.codecs.vqgan_restore import RESTORE_NAME, IndexRestorer, exported_metadata

    torch.set_num_threads(args.threads)
    dev = device_of(args)
    work = Path(args.work) / "restore"
    work.mkdir(parents=True, exist_ok=True)
    codec = load_codec()
    cache = work / "latents.pt"
    if cache.exists():
        maps = torch.load(cache, weights_only=True)
    else:
        with torch.no_grad():
            maps = latent_maps(codec.net, Path(args.data), device=dev)
        torch.save(maps, cache)
    maps = [m for m in maps if min(m.shape[1:]) >= 16]
    books = {k: v.float().to(dev) for k, v in codec.books.items()}
    levels_ = sorted(books)
    net = IndexRestorer({**DEFAULT_RESTORE, "gain": args.gain}).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr or 1e-3, weight_decay=0.01)
    step = 0
    if (work / "state.json").exists():
        net.load_state_dict(load_file(str(work / "state.safetensors")))
        opt.load_state_dict(torch.load(work / "state.opt", weights_only=True, map_location=dev))
        step = json.loads((work / "state.json").read_text())["step"]
    print(f"restore: {len(maps)} latent maps, levels {levels_}, {sum(p.numel() for p in net.parameters())} "
          f"parameters, from step {step}")

    def save() -> None:
        save_file({k: v.cpu().contiguous() for k, v in net.state_dict().items()}, str(work / "state.tmp"))
        torch.save(opt.state_dict(), work / "state.opt.tmp")
        (work / "state.tmp").replace(work / "state.safetensors")
        (work / "state.opt.tmp").replace(work / "state.opt")
        (work / "state.json").write_text(json.dumps({"step": step}))

    bar = tqdm(total=args.steps, initial=step, desc="restore")
    ema_loss = ema_acc = None
    budget = Budget(args, step)
    try:
        while not budget.done(step):
            rng = np.random.default_rng([args.seed, step])
            lr = (args.lr or 1e-3) * min(1.0, (step + 1) / 200) * Budget.cosine(budget.progress(step), 0.0)
            for g in opt.param_groups:
                g["lr"] = lr
            side = int(rng.integers(12, 2 * CONTEXT_R + WINDOW_R + 1))
            crops = []
            for _ in range(args.batch):
                m = maps[rng.integers(len(maps))]
                hh, ww = min(side, m.shape[1]), min(side, m.shape[2])
                y, x = rng.integers(0, m.shape[1] - hh + 1), rng.integers(0, m.shape[2] - ww + 1)
                c = m[:, y:y + side, x:x + side]
                if c.shape[1:] != (side, side):  # a map smaller than the side: pad by reflection
                    c = F.pad(c[None], (0, side - c.shape[2], 0, side - c.shape[1]), mode="replicate")[0]
                crops.append(c.flip(2) if rng.random() < 0.5 else c)
            z = torch.stack(crops).to(dev)
            level = levels_[rng.integers(len(levels_))]
            idx = VQAutoencoder.nearest(z, books[level])
            lost = _lost_mask(rng, len(crops), side, side).to(dev)
            codes = books[level][idx].permute(0, 3, 1, 2)
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                pred = net(codes, lost)
            logits = net.logits(pred[lost], books[level])
            loss = F.cross_entropy(logits, idx[lost])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            step += 1
            acc = (logits.argmax(1) == idx[lost]).float().mean().item()
            ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
            ema_acc = acc if ema_acc is None else 0.98 * ema_acc + 0.02 * acc
            bar.update(1)
            bar.set_postfix(loss=f"{ema_loss:.3f}", acc=f"{ema_acc:.3f}", lr=f"{lr:.1e}")
            if step % args.save_every == 0:
                save()
    except KeyboardInterrupt:
        print("interrupted: saving")
    save()
    bar.close()
    if not budget.done(step):
        return
    dst = Path(args.out).with_name(f"{RESTORE_NAME}.safetensors")
    tmp = dst.with_suffix(".tmp")
    save_file({k: v.float().cpu().contiguous() for k, v in net.state_dict().items()}, str(tmp),
              metadata=exported_metadata(net, {"steps": step, "train_accuracy_ema": round(ema_acc or 0, 4)}))
    tmp.replace(dst)
    print(f"wrote {dst} ({dst.stat().st_size / 1e6:.2f} MB)")
    manifest_update(dst.parent / "manifest.json", [dst], step, codec="image/vqgan (lost-index restoration)",
                    data="index grids of the scripts/prepare_images.py training pool at every level, encoded by "
                         "the shipped vqgan-f16 (no lomiri wallpaper)",
                    command=f"scripts/train_vqgan.py restore --steps {step} --batch {args.batch} "
                            f"--threads {args.threads} --gain {args.gain:g} --device {dev.type}"
                            + (f" --minutes {args.minutes:g}" if args.minutes else ""))


POOL = ("scripts/prepare_images.py training pool: opencv-doc photos, scikit-image colour photos, "
        "forensics-samples-files photos, frames of cockatoo.mp4, cityCC0.mpg, the forensics phone "
        "video, tree.avi and vtest.avi (no lomiri wallpaper)")


def manifest_update(manifest: Path, files: list[Path], trained, *, codec: str = "image/vqgan", data: str = POOL,
                    command: str = "scripts/train_vqgan.py main; levels; finetune; prior; export") -> None:
    """One line per shipped file: sha256, bytes, data, command; quality is filled by
    scripts/bench_image.py / bench_restore.py --manifest (measured on the dev set, which training
    never reads)."""
    import hashlib

    entries = json.loads(manifest.read_text()) if manifest.exists() else {}
    for f in files:
        entries[f.name] = {
            "sha256": hashlib.sha256(f.read_bytes()).hexdigest(), "bytes": f.stat().st_size,
            "codec": codec, "data": data, "command": command,
            "steps": trained,
            "quality": entries.get(f.name, {}).get("quality", "not measured yet"),
        }
    manifest.write_text(json.dumps(entries, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("phase", choices=["main", "levels", "finetune", "prior", "export", "eval", "restore"])
    ap.add_argument("--data", default=str(ROOT / "data/images/train"))
    ap.add_argument("--work", default=str(ROOT / "out/vqgan"))
    ap.add_argument("--out", default=str(ROOT / "nzip/pretrained/vqgan-f16.safetensors"))
    ap.add_argument("--init", help="start from this exported model")
    ap.add_argument("--model", default="finetune", help="eval: which checkpoint (main or finetune)")
    ap.add_argument("--images", default=str(ROOT / "data/images/test"), help="eval: a folder of PNGs")
    ap.add_argument("--steps", type=int, default=6000, help="train until this step count")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--mse-weight", type=float, default=4.0)
    ap.add_argument("--decay", type=float, default=0.97)
    ap.add_argument("--dead", type=float, default=0.02, help="EMA usage below which a code is restarted")
    ap.add_argument("--save-every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gain", type=float, default=32.0, help="restore: initial logit gain (1: none, plain head)")
    ap.add_argument("--smoothing", type=float, default=0.5, help="prior: order-0 pseudo-counts per symbol")
    ap.add_argument("--rdo", type=float,
                    help="prior: count the grids the codec sends at this rate weight (default: its DEFAULT_RDO)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="prior: rounds of choosing grids with --rdo and recounting (0: nearest codes' counts)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", help="cpu or cuda (default: cuda where there is one)")
    ap.add_argument("--decoder-only", action="store_true",
                    help="finetune: train the decoder alone (the encoder, codebooks, prior and restorer stay valid)")
    ap.add_argument("--minutes", type=float, help="main/finetune/restore: stop after this long (cosine lr over it)")
    a = ap.parse_args(argv)
    if a.phase in ("main", "finetune"):
        train(a, a.phase)
    else:
        {"levels": levels, "prior": prior, "export": export, "eval": evaluate, "restore": restore_phase}[a.phase](a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
