"""``image/vqgan``: extreme-rate images as a grid of VQ indices, after "Extreme Image Compression
using Fine-tuned VQGANs" (Mao et al., 2023).

An image becomes one index per 16x16 pixels. The rate is chosen by the codebook *level*: the
4096-code codebook of nzip's autoencoder and its k-means clusterings into 1024, 512, 256 and 64 codes
(the decoder is fine-tuned to serve all of them). Where the paper codes indices with a fixed length
(log2(K) bits), nzip codes them with a learned prior: integer context tables (the classes of the
left and upper neighbours pick the table) mixed adaptively with the codes of the four decoded
neighbours and the codes seen so far in the tile (``MIX``; codec version 2, version-1 files with the
fixed tables alone still decode), through ``nzip.entropy.grid``, so decoding the indices is exact on
every machine; only the pixels come out of a float network.

The encoder need not send each latent's nearest code: ``--param rdo=X`` (default ``DEFAULT_RDO``)
picks, in the prior's raster order, the code maximising cosine - X * (its bits under the adaptive
table the decoder will use there), a cheaper code wherever one is nearly as close.

Any image size: the image is padded to a multiple of 16 (edge replicated) and cut into tiles of
``tile`` pixels (default 1024); each tile's indices are an independent stream, so a region decodes
from its own tiles (:func:`decode_region`). The network runs tile by tile with a margin, so large
images need little memory and show no seams.

``--param level=K`` picks a level; ``--bpp X`` (or ``--param bpp=X``) picks the first setting of
``_budget_ladder`` whose whole .nz file fits X bits per pixel: the largest level with the default
rate weight, then with the ``BUDGET_RDO`` ones, then the next level down, and at the smallest level ever
larger rate weights. With ``--param best=1`` it instead takes each level's first fitting rate
weight (``BEST_RDO``), decodes them all and keeps the highest MS-SSIM (about one decode per level;
+0.004 MS-SSIM at 0.035 bpp on training-pool crops). The network and tables are trained by scripts/train_vqgan.py
and shipped in nzip/pretrained/ (see its manifest.json); containers name them by hash.
"""
from __future__ import annotations

import hashlib
import json
import math
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..entropy.grid import GridModel
from ..errors import CorruptDataError, InvalidInputError, NzipError
from ..formats.container import ArraySpec, Item, nz_size
from ..formats.image import IMAGE_SUFFIXES, image_suffix, read_image, write_image
from ..registry import Codec, Encoded, register

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"
MODEL_NAME = "vqgan-f16"
F = 16  # pixels per index along each side
DEFAULT_LEVEL = 256
DEFAULT_TILE = 1024
MARGIN = 4  # indices of context around a tile when the network runs tile by tile
DEFAULT_REFINE = 0  # encoder search steps per tile (--param refine=N)
REFINE_LR = 0.002  # Adam's step on the l2-normalised latents (dev photos: 0.05 overshoots, 0.002-0.003 climbs)
# Adaptive mixing of the index prior (nzip.entropy.grid): 6000/65536 of each table spread over the
# four decoded neighbours' codes (weights 4:3:1:1 for left, up, up-left, up-right) and 14000/65536
# over the codes seen so far in the tile. Tuned on held-out training-pool maps
# (scripts/research/vqgan_mix.py); written into each file's params, so retuning never breaks old files.
MIX = (6000, 14000, 4, 3, 1, 1)
DEFAULT_RDO = 0.005  # rate weight of the index choice (--param rdo=X): cosine - rdo * bits
BUDGET_RDO = (0.0075, 0.01)  # under --bpp each level also tries these rate weights before the next level down
BUDGET_RDO_LAST = (0.02, 0.04, 0.08, 0.16, 0.32)  # ... and the smallest level these, before giving up
# --param best=1: every level tries these (after the user's) until one fits; the fits are decoded
BEST_RDO = (0.0075, 0.01, 0.015, 0.02, 0.04, 0.08, 0.16, 0.32)


def _budget_ladder(levels: list[int], rdo: float):
    """(level, rdo) settings --bpp tries, best first: each level (largest first) with the user's
    rate weight, then with the larger BUDGET_RDO ones; the smallest level then with ever larger
    weights. Chosen on training-pool crops (scripts/research/vqgan_ecvq.py --tune): the 0.0075 rung
    adds 0.0003-0.0007 MS-SSIM at budgets 0.03-0.045 over 0.005/0.01 alone; an oracle that decodes
    every setting is 0.005 above either."""
    for level in levels:
        yield level, rdo
        for r in BUDGET_RDO:
            if r > rdo:
                yield level, r
    for r in BUDGET_RDO_LAST:
        if r > max(rdo, *BUDGET_RDO):
            yield levels[-1], r


class ModelMissingError(NzipError):
    """The shipped network of a learned codec is not installed."""

    exit_code = 7


@dataclass
class _Model:
    net: Any
    books: dict[int, Any]  # level -> codebook (torch float32)
    priors: dict[int, GridModel]
    sha: str  # first 16 hex digits of sha256 over the weight files

    @property
    def levels(self) -> list[int]:
        return sorted(self.books, reverse=True)


_MODEL: _Model | None = None
_MODEL_LOCK = threading.Lock()


def load_model(folder: Path | None = None) -> _Model:
    """The shipped network, codebook levels and prior tables (loaded once per process)."""
    global _MODEL
    with _MODEL_LOCK:
        if _MODEL is not None and folder is None:
            return _MODEL
        import torch
        from safetensors import safe_open
        from safetensors.numpy import load_file as load_np

        from .vqgan_net import VQAutoencoder

        folder = PRETRAINED if folder is None else Path(folder)
        net_file, prior_file = folder / f"{MODEL_NAME}.safetensors", folder / f"{MODEL_NAME}-prior.safetensors"
        for f in (net_file, prior_file):
            if not f.is_file():
                raise ModelMissingError(f"image/vqgan: {f} is missing; train it with scripts/train_vqgan.py "
                                        "or reinstall nzip")
        h = hashlib.sha256()
        for f in (net_file, prior_file):
            h.update(f.read_bytes())
        with safe_open(str(net_file), "pt") as fh:
            meta = fh.metadata()
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        net = VQAutoencoder(json.loads(meta["config"]))
        sd = {k: v.float() for k, v in tensors.items() if k.startswith(("encoder.", "decoder.")) or k == "codebook"}
        net.load_state_dict(sd)
        net.eval()
        net.to(memory_format=torch.channels_last)  # oneDNN's faster convolution layout (~1.25x on CPU)
        net.requires_grad_(False)  # never trained here; the encoder's search differentiates its input only
        books = {int(net.codebook.shape[0]): net.codebook}
        for k, v in tensors.items():
            if k.startswith("codebook_") and int(k.split("_")[1]) in json.loads(meta["levels"]):
                books[int(k.split("_")[1])] = v.float()
        prior = load_np(str(prior_file))
        priors = {}
        for k in books:
            priors[k] = GridModel(prior[f"freqs_{k}"].astype(np.int64), prior[f"classes_{k}"],
                                  int(prior["precision"][0]))
        model = _Model(net, books, priors, h.hexdigest()[:16])
        if folder == PRETRAINED:
            _MODEL = model
        return model


def _tiles(h: int, w: int, tile: int):
    """(y0, y1, x0, x1) in index units for each tile, raster order."""
    t = tile // F
    for y in range(0, h, t):
        for x in range(0, w, t):
            yield y, min(h, y + t), x, min(w, x + t)


def _pad(img: np.ndarray) -> np.ndarray:
    H, W = img.shape[:2]
    ph, pw = -H % F, -W % F
    if ph or pw:
        img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="edge")
    return img


def _run_tiled(fn, grid_h: int, grid_w: int, tile: int, margin: int, only: set[int] | None = None):
    """Call fn(y0, y1, x0, x1) on each tile (those numbered in ``only``, raster order, if given)
    grown by ``margin`` indices; yield the crops to keep."""
    for i, (y0, y1, x0, x1) in enumerate(_tiles(grid_h, grid_w, tile)):
        if only is not None and i not in only:
            continue
        a0, a1 = max(0, y0 - margin), min(grid_h, y1 + margin)
        b0, b1 = max(0, x0 - margin), min(grid_w, x1 + margin)
        yield (y0, y1, x0, x1), fn(a0, a1, b0, b1), (y0 - a0, x0 - b0)


def tile_latents(model: _Model, img: np.ndarray, tile: int = DEFAULT_TILE) -> list:
    """The encoder's latents (dim, h, w) of each tile's own indices (computed with the margin the
    decoder sees, then cropped), in tile order: one pass of the network serves every level."""
    import torch

    img = _pad(img)
    gh, gw = img.shape[0] // F, img.shape[1] // F
    x = torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1)[None]
    with torch.no_grad():
        def enc(a0, a1, b0, b1):
            return model.net.latents(x[:, :, a0 * F:a1 * F, b0 * F:b1 * F].float() / 255)[0]

        return [z[:, dy:dy + y1 - y0, dx:dx + x1 - x0]
                for (y0, y1, x0, x1), z, (dy, dx) in _run_tiled(enc, gh, gw, tile, MARGIN)]


def choose_codes(model: _Model, z, level: int, rdo: float) -> np.ndarray:
    """Index grid (h, w) of latents z (dim, h, w): the nearest codes (``rdo = 0``) or, with a rate
    weight, each position's code maximising cosine - rdo * (its bits under the adaptive prior)."""
    book = model.books[level]
    if rdo == 0:
        return model.net.nearest(z[None], book)[0].numpy().astype(np.int32)
    sim = (z.permute(1, 2, 0) @ book.T).numpy()
    return model.priors[level].choose(sim, rdo, MIX)


def image_indices(model: _Model, img: np.ndarray, level: int, tile: int = DEFAULT_TILE, rdo: float = 0.0,
                  latents: list | None = None) -> np.ndarray:
    """The index grid (H/16, W/16) of a uint8 RGB image at a codebook level (``rdo``: the rate weight
    of :func:`choose_codes`; ``latents``: :func:`tile_latents` of the image, if already computed)."""
    gh, gw = -(-img.shape[0] // F), -(-img.shape[1] // F)
    lat = tile_latents(model, img, tile) if latents is None else latents
    out = np.empty((gh, gw), np.int32)
    for (y0, y1, x0, x1), z in zip(_tiles(gh, gw, tile), lat):
        out[y0:y1, x0:x1] = choose_codes(model, z, level, rdo)
    return out


def _bf16_fast() -> bool:
    """Whether this CPU runs bfloat16 convolutions natively (AVX-512 BF16 or AMX): the encoder's
    search then runs the decoder in bfloat16 autocast, ~1.8x faster per step on a 2-core AVX-512 BF16
    host with the same gains (training-pool crops); elsewhere bfloat16 is emulated, so float32."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def refine_indices(model: _Model, img: np.ndarray, grid: np.ndarray, level: int, tile: int, steps: int,
                   bar=None, rdo: float = 0.0, bf16: bool | None = None) -> list[list[np.ndarray]]:
    """Encoder-side search for indices that decode closer to the image than the nearest codes do.

    The decoder is fixed, so the encoder may pick any grid: per tile (grown by the network's margin,
    as decoding sees it) the continuous latents are moved by Adam on 1 - MS-SSIM of the decoded
    tile, each step snapping them to their codes (nearest, or rate-weighted with ``rdo``) and passing
    the gradient straight through. The decoder runs in bfloat16 autocast where the CPU has it
    (``bf16=None``: :func:`_bf16_fast`); only the choice of grid depends on it, never the decoding.
    Returns, per tile, the grids that improved on all before them (the first is ``grid``'s own,
    the last the best), so a rate budget can step back to a cheaper one."""
    import torch

    from ..metrics import ms_ssim_torch

    img = _pad(img)
    gh, gw = grid.shape
    net, book = model.net, model.books[level]
    x = torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1)[None]
    found: list[list[np.ndarray]] = []
    bf16 = _bf16_fast() if bf16 is None else bf16

    def search(a0, a1, b0, b1):
        part = x[:, :, a0 * F:a1 * F, b0 * F:b1 * F].float() / 255
        with torch.no_grad():
            u = net.latents(part)
        u.requires_grad_(True)
        opt = torch.optim.Adam([u], lr=REFINE_LR)
        best, grids = math.inf, []
        for step in range(steps + 1):
            with torch.enable_grad():
                un = torch.nn.functional.normalize(u, dim=1)
                idx = (net.nearest(un.detach(), book) if rdo == 0 else
                       torch.from_numpy(choose_codes(model, un.detach()[0], level, rdo)).long()[None])
                q = book[idx].permute(0, 3, 1, 2)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    y = net.decode_codes(un + (q - un).detach())
                y = y.float().clamp(0, 1)
                loss = 1 - ms_ssim_torch(y, part)
                if step == 0 or loss.item() < best:  # step 0: the nearest codes themselves
                    best = loss.item()
                    grids.append(idx[0].numpy().astype(np.int32))
                if step == steps:
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if bar is not None:
                bar.update(1)
        return grids

    for (y0, y1, x0, x1), grids, (dy, dx) in _run_tiled(search, gh, gw, tile, MARGIN):
        core = [g[dy:dy + y1 - y0, dx:dx + x1 - x0] for g in grids]
        if not np.array_equal(core[0], grid[y0:y1, x0:x1]):  # the same crops as image_indices: same codes,
            core.insert(0, grid[y0:y1, x0:x1])  # but the fallback must be the grid's own if ever not
        found.append(core)
    return found


def indices_image(model: _Model, grid: np.ndarray, level: int, tile: int = DEFAULT_TILE,
                  device: str = "cpu", done=None, only: set[int] | None = None) -> np.ndarray:
    """uint8 RGB pixels (16 * grid shape) from an index grid; ``done(y0, y1, x0, x1)`` (optional)
    is called with each tile's index box once its pixels are in place (a progress bar). ``only``:
    the tiles to decode (raster numbers; the rest of the picture stays 0), each computed exactly as
    in the whole decode, so they need the grid's indices within MARGIN around them."""
    import torch

    gh, gw = grid.shape
    out = np.empty((gh * F, gw * F, 3), np.uint8)
    dev = torch.device(device)
    net = model.net.to(dev)
    book = model.books[level].to(dev)
    g = torch.from_numpy(np.ascontiguousarray(grid, dtype=np.int64)).to(dev)
    with torch.no_grad():
        def dec(a0, a1, b0, b1):
            y = net.decode_indices(g[None, a0:a1, b0:b1], book)[0]
            return (y * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()

        for (y0, y1, x0, x1), px, (dy, dx) in _run_tiled(dec, gh, gw, tile, MARGIN, only):
            out[y0 * F:y1 * F, x0 * F:x1 * F] = px[dy * F:(dy + y1 - y0) * F, dx * F:(dx + x1 - x0) * F]
            if done is not None:
                done(y0, y1, x0, x1)
    return out


@contextmanager
def _steps(progress, total: int, desc: str):
    """The encode's progress bar over one of its long loops (None when the caller gave no progress
    object with ``steps``), closed however the loop ends."""
    bar = progress.steps(total, desc) if hasattr(progress, "steps") else None
    try:
        yield bar
    finally:
        if bar is not None:
            bar.close()


@register
class ImageVQGAN(Codec):
    name = "image/vqgan"
    modality = "image"
    version = 2  # 2: adaptive mixing of the index prior (params "mix"); version 1 files decode too
    suffixes = ()  # images have no default codec yet: pass --codec image/vqgan
    reads = IMAGE_SUFFIXES
    description = "extreme-rate images: VQ index grid (16x), k-means codebook levels, learned index prior"
    restores = True

    def read(self, path: str) -> np.ndarray:
        return read_image(path)

    def write(self, item: np.ndarray, path: str, overwrite: bool = False) -> None:
        write_image(item, path, overwrite)

    def encode(self, item: Any, progress=None, **params: Any) -> Encoded:
        p = self.check_params(params, {"level": int, "bpp": float, "tile": int, "refine": int, "rdo": float,
                                       "best": int})
        img = np.asarray(item)
        if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3)):
            raise InvalidInputError(f"image/vqgan codes uint8 (H, W) or (H, W, 3) images, not {img.dtype} "
                                    f"{list(img.shape)}")
        if min(img.shape[:2]) < 1:
            raise InvalidInputError("image/vqgan: the image is empty")
        grey = img.ndim == 2 or img.shape[2] == 1
        rgb = np.repeat(img.reshape(*img.shape[:2], 1), 3, axis=2) if grey else img
        tile = p.get("tile", DEFAULT_TILE)
        if tile < F or tile % F:
            raise InvalidInputError(f"tile must be a positive multiple of {F} pixels, got {tile}")
        if "level" in p and "bpp" in p:
            raise InvalidInputError("pass either level or bpp, not both")
        refine = p.get("refine", DEFAULT_REFINE)
        if refine < 0:
            raise InvalidInputError(f"refine must be 0 (off) or a number of search steps, got {refine}")
        rdo = p.get("rdo", DEFAULT_RDO)
        if not 0 <= rdo < math.inf:
            raise InvalidInputError(f"rdo must be a rate weight >= 0 (0: nearest codes), got {rdo}")
        best = p.get("best", 0)
        if best not in (0, 1):
            raise InvalidInputError(f"best must be 0 (the first setting that fits) or 1 (decode and compare), got {best}")
        if best and "bpp" not in p:
            raise InvalidInputError("best=1 compares the settings that fit a --bpp budget: pass bpp too")
        model = load_model()
        H, W = img.shape[:2]
        gh, gw = -(-H // F), -(-W // F)
        tiles = list(_tiles(gh, gw, tile))
        src = {"modality": "image", "shape": list(img.shape), "dtype": "uint8"}
        lat = tile_latents(model, rgb, tile)
        budget = None
        if "bpp" in p:
            if not p["bpp"] > 0:
                raise InvalidInputError(f"bpp must be positive, got {p['bpp']}")
            budget = p["bpp"] * H * W / 8  # bytes of the whole .nz file

            def attempt(level: int, weight: float):
                grid = image_indices(model, rgb, level, tile, weight, lat)
                enc = self._encoded(model, self._streams(model, grid, level, tiles), level, tile, src)
                return grid, enc, self._size(enc, src) <= budget

            picked = self._best_fit(model, rgb, attempt, rdo, tile, progress) if best else None
            if picked is not None:
                level, weight, grid, enc = picked
            else:
                for level, weight in _budget_ladder(model.levels, rdo):  # the first setting whose file fits
                    grid, enc, fits = attempt(level, weight)
                    if fits:
                        break
                else:
                    warnings.warn(f"image/vqgan: {p['bpp']} bpp is below the smallest level ({level} codes) "
                                  f"for this image, even with rdo={weight:g}; using that", stacklevel=3)
                    budget = None
            rdo = weight  # refine snaps its codes with the same rate weight
        else:
            level = p.get("level", DEFAULT_LEVEL)
            if level not in model.books:
                raise InvalidInputError(f"level must be one of {', '.join(map(str, model.levels))}, got {level}")
            grid = image_indices(model, rgb, level, tile, rdo, lat)
            enc = None if refine else self._encoded(model, self._streams(model, grid, level, tiles), level, tile, src)
        if refine:
            with _steps(progress, refine * len(tiles), "refine indices") as bar:
                found = refine_indices(model, rgb, grid, level, tile, refine, bar, rdo)
            enc = self._refined(model, found, level, tile, src, budget)
        if progress is not None:
            progress(img.size)
        return enc

    @staticmethod
    def _best_fit(model: _Model, rgb: np.ndarray, attempt, rdo: float, tile: int, progress):
        """``best=1``: each level's first fitting rate weight (the user's, then ``BEST_RDO``), all
        decoded, the highest MS-SSIM kept: (level, rdo, grid, encoded), or None if nothing fits."""
        from ..metrics import ms_ssim, psnr

        H, W = rgb.shape[:2]
        fits = []
        for level in model.levels:
            for weight in (rdo, *(r for r in BEST_RDO if r > rdo)):
                grid, enc, ok = attempt(level, weight)
                if ok:
                    fits.append((level, weight, grid, enc))
                    break
        if len(fits) < 2:
            return fits[0] if fits else None
        score = ms_ssim if min(H, W) > 10 else psnr  # MS-SSIM needs sides over its window
        scored = []
        with _steps(progress, len(fits), "compare levels") as bar:
            for f in fits:
                scored.append(score(rgb, indices_image(model, f[2], f[0], tile)[:H, :W]))
                if bar is not None:
                    bar.update(1)
        return fits[int(np.argmax(scored))]

    def _refined(self, model: _Model, found, level: int, tile: int, src, budget: float | None) -> Encoded:
        """The best grid of each tile; under a byte budget, the tile whose stream grew most steps back
        to its previous grid until the file fits (the start fits, so this ends)."""
        pick = [len(c) - 1 for c in found]
        coded: dict[tuple[int, int], bytes] = {}

        def stream(t: int, k: int) -> bytes:
            if (t, k) not in coded:
                coded[t, k] = model.priors[level].encode(found[t][k], MIX)
            return coded[t, k]

        while True:
            enc = self._encoded(model, [stream(t, k) for t, k in enumerate(pick)], level, tile, src)
            if budget is None or self._size(enc, src) <= budget or not any(pick):
                return enc
            t = max((t for t in range(len(pick)) if pick[t]),
                    key=lambda t: len(stream(t, pick[t])) - len(stream(t, 0)))
            pick[t] -= 1

    def _size(self, enc: Encoded, src) -> int:
        attrs = {"codec": self.name, "codec_version": self.version, "params": enc.params, "source": src}
        return nz_size(attrs, enc.arrays)

    def _streams(self, model: _Model, grid: np.ndarray, level: int, tiles) -> list[bytes]:
        return [model.priors[level].encode(grid[y0:y1, x0:x1], MIX) for y0, y1, x0, x1 in tiles]

    def _encoded(self, model: _Model, streams: list[bytes], level: int, tile: int, src) -> Encoded:
        blob = np.frombuffer(b"".join(streams), np.uint8)
        return Encoded(
            arrays={"codes": ArraySpec(blob, symbols=False, inline=True)},
            params={"level": level, "tile": tile, "model": MODEL_NAME, "model_sha256": model.sha,
                    "streams": [len(s) for s in streams], "mix": list(MIX)},
            source=src,
        )

    def decode(self, container: Item, progress=None, device: str = "cpu", restore: bool = False) -> np.ndarray:
        grid, level, tile = read_indices(container, restore=restore)
        model = _checked_model(container)
        shape = tuple(container.source["shape"])
        per_px = math.prod(shape[2:])

        def done(y0, y1, x0, x1):  # the tile's share of the item's elements (padding excluded)
            if progress is not None:
                progress((min(y1 * F, shape[0]) - y0 * F) * (min(x1 * F, shape[1]) - x0 * F) * per_px)

        out = indices_image(model, grid, level, tile, device, done)[: shape[0], : shape[1]]
        return _as_source(out, shape)

    def check_output(self, container: Item, path: str) -> None:
        image_suffix(path)


def _as_source(rgb: np.ndarray, shape) -> np.ndarray:
    """Decoded RGB pixels in the source's layout: grey (H, W) or (H, W, 1) by BT.601 luma."""
    if len(shape) == 2 or shape[2] == 1:
        grey = np.rint(rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
        return grey.clip(0, 255).astype(np.uint8).reshape(*rgb.shape[:2], *shape[2:])
    return rgb


def _checked_model(container: Item) -> _Model:
    model = load_model()
    prm = container.params
    if prm.get("model") != MODEL_NAME or prm.get("model_sha256") != model.sha:
        raise CorruptDataError(
            f"{container.path}: made with model {prm.get('model')} {prm.get('model_sha256')}, but this nzip "
            f"ships {MODEL_NAME} {model.sha}; decode it with the nzip version that wrote it")
    return model


def read_indices(container: Item, tiles_wanted: set[int] | None = None,
                 restore: bool = False) -> tuple[np.ndarray, int, int]:
    """The index grid of an image container (tiles not wanted stay -1), its level and tile size.
    ``restore``: a tile whose stream does not decode is rebuilt from the others by the
    restoration network (nzip.codecs.vqgan_restore), with a warning, instead of failing."""
    prm, src = container.params, container.source
    model = _checked_model(container)
    level, tile, lengths, shape = prm.get("level"), prm.get("tile"), prm.get("streams"), src.get("shape")
    if (type(level) is not int or type(tile) is not int or tile < F or tile % F or not isinstance(lengths, list)
            or not all(type(v) is int and v >= 0 for v in lengths) or not isinstance(shape, list)
            or len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3)) or min(shape[:2]) < 1):
        raise CorruptDataError(f"{container.path}: malformed image/vqgan parameters (level, tile, streams or shape)")
    if level not in model.priors:
        raise CorruptDataError(f"{container.path}: unknown codebook level {level}")
    H, W = shape[:2]
    gh, gw = -(-H // F), -(-W // F)
    tiles = list(_tiles(gh, gw, tile))
    mix = model.priors[level].check_mix(prm.get("mix"), str(container.path))  # absent: version 1, fixed tables
    if len(lengths) != len(tiles):
        raise CorruptDataError(f"{container.path}: {len(lengths)} index streams for {len(tiles)} tiles")
    blob = container.read_blob("codes", verify=not restore)  # restore: each tile's stream is checked alone
    if sum(lengths) != len(blob):
        raise CorruptDataError(f"{container.path}: index streams hold {len(blob)} bytes, expected {sum(lengths)}")
    grid = np.full((gh, gw), -1, np.int32)
    lost = np.zeros((gh, gw), bool)
    bad = []
    pos = 0
    for t, ((y0, y1, x0, x1), n) in enumerate(zip(tiles, lengths)):
        if tiles_wanted is None or t in tiles_wanted:
            try:
                grid[y0:y1, x0:x1] = model.priors[level].decode(blob[pos:pos + n], (y1 - y0, x1 - x0),
                                                                what=f"{container.path}: tile {t}", mix=mix)
            except CorruptDataError:
                if not restore:
                    raise
                lost[y0:y1, x0:x1] = True
                bad.append(t)
        pos += n
    if bad:
        from .vqgan_restore import restore as restore_grid

        if lost.all():
            raise CorruptDataError(f"{container.path}: every index tile is damaged; nothing to restore from")
        warnings.warn(f"image/vqgan: {container.path}: tile{'s' if len(bad) > 1 else ''} "
                      f"{', '.join(map(str, bad))} damaged; {int(lost.sum())} of {lost.size} indices restored",
                      stacklevel=3)
        grid = restore_grid(grid, lost, model.books[level]).astype(np.int32)
    return grid, level, tile


def decode_region(path: str, box: tuple[int, int, int, int], device: str = "cpu") -> np.ndarray:
    """Pixels of the region (left, top, right, bottom) of an image container, decoding only the
    tiles it touches, each exactly as the whole decode does (the indices of their neighbours within
    the network's margin are read too): the same pixels as ``nzip.decode`` gives there."""
    from ..formats.container import open_item

    left, top, right, bottom = (int(v) for v in box)
    with open_item(path) as it:
        if it.codec != ImageVQGAN.name:
            raise InvalidInputError(f"{path} holds {it.codec}, not an image/vqgan image")
        H, W = it.source["shape"][:2]
        if not (0 <= left < right <= W and 0 <= top < bottom <= H):
            raise InvalidInputError(f"region {box} is not inside the {W}x{H} image")
        tile = int(it.params["tile"])
        gh, gw = -(-H // F), -(-W // F)
        t = tile // F
        cols = -(-gw // t)

        def tiles_over(y0, y1, x0, x1):  # raster numbers of the tiles over index rows/columns [y0, y1) x [x0, x1)
            y0, y1, x0, x1 = max(0, y0), min(gh, y1), max(0, x0), min(gw, x1)
            return {ty * cols + tx for ty in range(y0 // t, (y1 - 1) // t + 1) for tx in range(x0 // t, (x1 - 1) // t + 1)}

        touched = tiles_over(top // F, -(-bottom // F), left // F, -(-right // F))
        ty0, tx0 = min(touched) // cols, min(touched) % cols
        ty1, tx1 = max(touched) // cols + 1, max(touched) % cols + 1  # touched tiles form a rectangle
        grid, level, _ = read_indices(it, tiles_over(ty0 * t - MARGIN, ty1 * t + MARGIN, tx0 * t - MARGIN,
                                                     tx1 * t + MARGIN))
        model = _checked_model(it)
        px = indices_image(model, grid, level, tile, device, only=touched)
        return _as_source(px[top:bottom, left:right], it.source["shape"])

