"""Restoring lost indices of image/vqgan grids (the paper's "transformer to predict lost indices").

When part of an index grid is lost (a damaged tile stream, indices dropped in transit), the rest
still says a lot about it: neighbouring indices of a photo are strongly related. A small
bidirectional transformer reads the grid with the lost positions blanked and predicts, for each
of them, a vector in the codebook's 8-d space; the restored index is the level's codeword with the
largest dot product with it. One network serves every level, because it predicts in the shared code
space and the level's codebook only enters at the last step.

Restoration is iterative, as in MaskGIT: each round predicts every still-missing position and
keeps the most confident share of them (a cosine schedule), so later rounds see the earlier
answers. Large grids run in windows (``WINDOW`` indices with a ``CONTEXT`` margin), so memory stays
flat for any image size.

The network is trained by ``scripts/train_vqgan.py restore`` on the training pool only and ships as
``nzip/pretrained/vqgan-f16-restore.safetensors`` (see the manifest). It is not part of the codec's
model hash: restoring is a decoder-side choice and never changes what a container holds.
"""
from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InvalidInputError

RESTORE_NAME = "vqgan-f16-restore"
DEFAULT_CONFIG = {"code_dim": 8, "width": 128, "layers": 4, "heads": 4, "gain": 32.0}
WINDOW = 16  # indices restored per window side (windows with their context match the training crops)
CONTEXT = 8  # indices of context around a window
ROUNDS = 4


def _pos2d(h: int, w: int, c: int, device) -> torch.Tensor:
    """2-D sinusoidal position codes (c channels: half for rows, half for columns), (h*w, c)."""
    q = c // 4
    freq = torch.exp(torch.arange(q, device=device, dtype=torch.float32) * (-math.log(100.0) / q))
    ys = torch.arange(h, device=device, dtype=torch.float32)[:, None] * freq
    xs = torch.arange(w, device=device, dtype=torch.float32)[:, None] * freq
    row = torch.cat([ys.sin(), ys.cos()], 1)[:, None, :].expand(h, w, 2 * q)
    col = torch.cat([xs.sin(), xs.cos()], 1)[None, :, :].expand(h, w, 2 * q)
    return torch.cat([row, col], 2).reshape(h * w, 4 * q)


class IndexRestorer(nn.Module):
    """(codes (N, d, h, w) with lost positions anywhere, lost (N, h, w) bool) -> a vector
    (N, h, w, d) in the code space predicted for every position."""

    def __init__(self, config: dict | None = None) -> None:
        super().__init__()
        self.config = dict(DEFAULT_CONFIG if config is None else config)
        c = self.config
        self.stem = nn.Conv2d(c["code_dim"] + 1, c["width"], 3, padding=1)
        layer = nn.TransformerEncoderLayer(c["width"], c["heads"], 4 * c["width"], dropout=0.0,
                                           batch_first=True, norm_first=True, activation="gelu")
        self.body = nn.TransformerEncoder(layer, c["layers"], enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c["width"])
        self.head = nn.Linear(c["width"], c["code_dim"])
        # logits = gain * <prediction, codeword>: codewords are unit vectors packed so densely (4096
        # on the 7-sphere, neighbours at cosine ~0.9) that telling them apart needs logits ~30x the
        # cosine; a learnt gain starting there (with a zero head, so training starts from uniform
        # guesses) spares the head thousands of steps of growing into it
        self.log_gain = nn.Parameter(torch.tensor(math.log(float(c.get("gain", 1.0)))))
        if c.get("gain", 1.0) != 1.0:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, codes: torch.Tensor, lost: torch.Tensor) -> torch.Tensor:
        n, d, h, w = codes.shape
        keep = (~lost)[:, None].to(codes.dtype)
        x = self.stem(torch.cat([codes * keep, 1 - keep], 1))
        t = x.flatten(2).transpose(1, 2) + _pos2d(h, w, x.shape[1], x.device).to(x.dtype)
        return self.head(self.norm(self.body(t))).float().view(n, h, w, d)

    def logits(self, pred: torch.Tensor, book: torch.Tensor) -> torch.Tensor:
        """Scores of every codeword: the dot product with the prediction (whose length is the
        network's confidence), times the learnt gain."""
        return self.log_gain.exp() * (pred @ book.T)


_RESTORER: IndexRestorer | None = None
_LOCK = threading.Lock()


def load_restorer(folder: Path | None = None) -> IndexRestorer:
    """The shipped restoration network (loaded once per process)."""
    global _RESTORER
    from safetensors import safe_open

    from .image_vqgan import PRETRAINED, ModelMissingError

    with _LOCK:
        if _RESTORER is not None and folder is None:
            return _RESTORER
        f = (PRETRAINED if folder is None else Path(folder)) / f"{RESTORE_NAME}.safetensors"
        if not f.is_file():
            raise ModelMissingError(f"image/vqgan: {f} is missing; train it with "
                                    "`scripts/train_vqgan.py restore` or reinstall nzip")
        with safe_open(str(f), "pt") as fh:
            net = IndexRestorer(json.loads(fh.metadata()["config"]))
            net.load_state_dict({k: fh.get_tensor(k).float() for k in fh.keys()})
        net.eval()
        if folder is None:
            _RESTORER = net
        return net


def nearest_fill(grid: np.ndarray, lost: np.ndarray) -> np.ndarray:
    """Baseline: every lost index copies the nearest kept one (city-block distance, ties by scan
    order); a grid with nothing kept is returned as it is."""
    from scipy import ndimage

    if not lost.any() or lost.all():
        return grid.copy()
    _, (iy, ix) = ndimage.distance_transform_cdt(lost, metric="taxicab", return_indices=True)
    return grid[iy, ix]


def _windows(h: int, w: int):
    for y in range(0, h, WINDOW):
        for x in range(0, w, WINDOW):
            yield y, min(h, y + WINDOW), x, min(w, x + WINDOW)


@torch.no_grad()
def restore(grid: np.ndarray, lost: np.ndarray, book: torch.Tensor, net: IndexRestorer | None = None,
            rounds: int = ROUNDS, mmse: bool = True) -> np.ndarray:
    """The grid (h, w) with its ``lost`` positions (bool mask) filled by the restoration network,
    for the codebook ``book`` (K, d) the grid indexes. Kept positions are returned unchanged.
    ``mmse`` picks the codeword nearest the predicted distribution's mean code vector (fewer bad
    guesses in the picture), else the most likely codeword (more exact indices)."""
    grid = np.asarray(grid)
    lost = np.asarray(lost, dtype=bool)
    if grid.shape != lost.shape or grid.ndim != 2:
        raise InvalidInputError(f"restore: grid {grid.shape} and mask {lost.shape} must be the same 2-D shape")
    out = np.where(lost, 0, grid).astype(np.int64)
    if out.size and (out.min() < 0 or out.max() >= book.shape[0]):
        raise InvalidInputError(f"restore: kept indices must lie in 0..{book.shape[0] - 1} (mark unknown ones lost)")
    if not lost.any():
        return out
    if lost.all():  # nothing to go on: the most central codeword is as good a guess as any
        return np.full_like(out, int(book.sum(0).matmul(book.T).argmax()))
    net = load_restorer() if net is None else net
    book = book.float()
    todo = lost.copy()
    total = int(todo.sum())
    h, w = out.shape
    for r in range(rounds):
        # the share of the originally lost positions still missing after this round (cosine schedule)
        left = int(math.floor(total * math.cos(math.pi / 2 * (r + 1) / rounds)))
        pred_idx = np.zeros_like(out)
        conf = np.full(out.shape, -np.inf, np.float32)
        for y0, y1, x0, x1 in _windows(h, w):
            if not todo[y0:y1, x0:x1].any():
                continue
            a0, a1, b0, b1 = max(0, y0 - CONTEXT), min(h, y1 + CONTEXT), max(0, x0 - CONTEXT), min(w, x1 + CONTEXT)
            g = torch.from_numpy(out[a0:a1, b0:b1])
            m = torch.from_numpy(todo[a0:a1, b0:b1])
            codes = book[g].permute(2, 0, 1)[None]
            prob = net.logits(net(codes, m[None])[0], book).softmax(-1)
            p = prob.max(-1).values
            if mmse:  # the codeword nearest the expected code vector: a wrong guess stays a near one
                k = ((prob @ book) @ book.T).argmax(-1)
            else:
                k = prob.argmax(-1)
            sl = (slice(y0 - a0, y1 - a0), slice(x0 - b0, x1 - b0))
            pred_idx[y0:y1, x0:x1] = k[sl].numpy()
            conf[y0:y1, x0:x1] = p[sl].numpy()
        conf[~todo] = -np.inf
        n_fill = int(todo.sum()) - left if r < rounds - 1 else int(todo.sum())
        if n_fill <= 0:
            continue
        order = np.argsort(-conf, axis=None, kind="stable")[:n_fill]
        ys, xs = np.unravel_index(order, out.shape)
        out[ys, xs] = pred_idx[ys, xs]
        todo[ys, xs] = False
    return out


def exported_metadata(net: IndexRestorer, extra: dict[str, Any]) -> dict[str, str]:
    return {"config": json.dumps(net.config), **{k: json.dumps(v) for k, v in extra.items()}}
