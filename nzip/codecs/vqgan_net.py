"""The network of image/vqgan: a small VQ autoencoder with 16x downsampling, sized for CPUs.

After "Extreme Image Compression using Fine-tuned VQGANs" (Mao et al., 2023), which takes a
pretrained VQGAN (f16, 16384 codes) and k-means-clusters its codebook into smaller ones. No
pretrained VQGAN can be downloaded here, so nzip trains its own (scripts/train_vqgan.py) and departs
from the paper where a 2-core CPU forces it:

- Pixel (un)shuffle at both ends instead of full-resolution convolutions; plain residual blocks
  (no normalisation layers, no attention); about 9M parameters in all.
- Codes are looked up in a low-dimensional, l2-normalised space (cosine similarity, as in
  ViT-VQGAN's factorised codes), which keeps a 4096-entry codebook in use when trained from scratch.
- No adversarial loss: the training objective is MS-SSIM plus MSE (the benchmark's metric is
  MS-SSIM), so reconstructions at these rates are smooth rather than hallucinated.

The decoder is shared by every codebook level: after the main training the codebook is clustered
(k-means, weighted by how often each code is used) into the smaller levels, and the decoder (and
encoder) are fine-tuned with a level drawn at random for each batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DOWNSAMPLE = 16


class ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(c, c, 3, padding=1)
        self.b = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(F.silu(self.a(F.silu(x))))


class Encoder(nn.Module):
    def __init__(self, ch: tuple[int, ...], dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.PixelUnshuffle(2), nn.Conv2d(12, ch[0], 3, padding=1), ResBlock(ch[0])]
        for a, b in zip(ch[:-1], ch[1:]):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), ResBlock(b)]
        layers += [ResBlock(ch[-1]), nn.SiLU(), nn.Conv2d(ch[-1], dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    def __init__(self, ch: tuple[int, ...], dim: int, blocks: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(dim, ch[0], 3, padding=1), ResBlock(ch[0]), ResBlock(ch[0])]
        for a, b in zip(ch[:-1], ch[1:]):
            layers += [nn.Conv2d(a, 4 * b, 3, padding=1), nn.PixelShuffle(2)]
            layers += [ResBlock(b) for _ in range(blocks)]
        layers += [nn.SiLU(), nn.Conv2d(ch[-1], 12, 3, padding=1), nn.PixelShuffle(2)]
        self.net = nn.Sequential(*layers)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return self.net(q)


DEFAULT_CONFIG = {"enc": [48, 96, 128, 192], "dec": [256, 160, 112, 64], "blocks": 2, "dim": 8, "codes": 4096}


class VQAutoencoder(nn.Module):
    """Images in [0, 1] (N, 3, H, W), H and W multiples of 16 -> an index grid (N, H/16, W/16)."""

    def __init__(self, config: dict | None = None) -> None:
        super().__init__()
        self.config = dict(DEFAULT_CONFIG if config is None else config)
        c = self.config
        self.encoder = Encoder(tuple(c["enc"]), c["dim"])
        self.decoder = Decoder(tuple(c["dec"]), c["dim"], c["blocks"])
        self.register_buffer("codebook", F.normalize(torch.randn(c["codes"], c["dim"]), dim=1))

    def latents(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder output, l2-normalised along channels: (N, dim, h, w)."""
        return F.normalize(self.encoder(x * 2 - 1).float(), dim=1)

    @staticmethod
    def nearest(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code (largest cosine) for each position of z (N, dim, h, w)."""
        n, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        out = torch.empty(flat.shape[0], dtype=torch.long, device=z.device)
        step = 16384
        for i in range(0, flat.shape[0], step):
            out[i:i + step] = (flat[i:i + step] @ codebook.T).argmax(1)
        return out.view(n, h, w)

    def embed(self, idx: torch.Tensor, codebook: torch.Tensor | None = None) -> torch.Tensor:
        from ..kernels import gather, use_kernel

        cb = self.codebook if codebook is None else codebook
        if use_kernel(idx.device) and not torch.is_grad_enabled():  # decode: the VQ gather kernel
            return gather.vq(idx, cb.float(), kernel=True).permute(0, 3, 1, 2).contiguous(
                memory_format=torch.channels_last)
        return cb[idx].permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)  # (N, C, H, W) view, NHWC memory

    def decode_codes(self, q: torch.Tensor) -> torch.Tensor:
        return (self.decoder(q).float() + 1) / 2

    def encode_indices(self, x: torch.Tensor, codebook: torch.Tensor | None = None) -> torch.Tensor:
        return self.nearest(self.latents(x), self.codebook if codebook is None else codebook)

    def decode_indices(self, idx: torch.Tensor, codebook: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode_codes(self.embed(idx, codebook)).clamp(0, 1)
