"""Image fidelity metrics: PSNR and MS-SSIM of two uint8 RGB images (HxWx3, data range 255).

``ms_ssim`` uses the ``pytorch_msssim`` package (imported on first use) with its standard five
scales and weights; images with a side of 160 pixels or less get fewer scales, the leading
weights renormalised to sum to one, so small images still get a score.
"""
from __future__ import annotations

import math

import numpy as np

_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_WIN = 11  # pytorch_msssim's default Gaussian window


def _check(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected HxWx3 images, got shape {a.shape}")
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {a.dtype} and {b.dtype}")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB over all pixels and channels (peak 255); ``inf`` for identical images."""
    _check(a, b)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(255.0 ** 2 / mse)


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM (data range 255, float32) over the three channels, averaged; 1.0 for identical images."""
    _check(a, b)
    import torch

    x = torch.from_numpy(np.array(a, dtype=np.float32)).permute(2, 0, 1)[None]
    y = torch.from_numpy(np.array(b, dtype=np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        return float(ms_ssim_torch(x, y, data_range=255))


def ms_ssim_torch(x, y, data_range: float = 1.0):
    """MS-SSIM of two (N, 3, H, W) float tensors, averaged over the batch, differentiable (the encoder
    of image/vqgan climbs it); the same scales, weights and fallback for small images as ``ms_ssim``."""
    import pytorch_msssim
    import torch

    side = min(x.shape[-2:])
    # scale k (0-based) has side ~ side / 2**k and must still hold the window: side > (win-1) * 2**k
    scales = 0
    while scales < len(_MS_SSIM_WEIGHTS) and side > (_WIN - 1) * 2 ** scales:
        scales += 1
    if scales == 0:
        raise ValueError(f"image of {x.shape[-1]}x{x.shape[-2]} is too small for MS-SSIM (sides must exceed {_WIN - 1})")
    if scales == len(_MS_SSIM_WEIGHTS):
        return pytorch_msssim.ms_ssim(x, y, data_range=data_range, size_average=True)
    # pytorch_msssim.ms_ssim asserts a side > 160 whatever the weights, so the shorter pyramid
    # is run here with its single-scale routine (the same steps as its ms_ssim loop)
    from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim

    w = torch.tensor(_MS_SSIM_WEIGHTS[:scales], dtype=x.dtype, device=x.device)
    w = w / w.sum()
    win = _fspecial_gauss_1d(_WIN, 1.5).repeat(x.shape[1], 1, 1, 1).to(x.device, x.dtype)
    factors = []
    for i in range(scales):
        s, cs = _ssim(x, y, data_range=data_range, win=win, size_average=False)
        if i < scales - 1:
            factors.append(torch.relu(cs))
            pad = [d % 2 for d in x.shape[2:]]
            x = torch.nn.functional.avg_pool2d(x, kernel_size=2, padding=pad)
            y = torch.nn.functional.avg_pool2d(y, kernel_size=2, padding=pad)
    factors.append(torch.relu(s))
    val = torch.prod(torch.stack(factors, dim=0) ** w.view(-1, 1, 1), dim=0)
    return val.mean()
