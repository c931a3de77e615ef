"""PQ asymmetric-distance scan: per-query lookup tables summed over a store's codes, top-k.

The kernel scores a (queries x codes) tile: ``sum_j lut[q, offs[j] + codes[n, j]]`` added in
float32 in column order (as the CPU scan, ``nzip.search.adc_topk``, does), and writes each score
with its id as one int64 sort key: the float's bits mapped to an order-preserving integer in the
high half, ``2**32 - 1 - id`` in the low half. ``torch.topk`` over the keys then yields the CPU
scan's exact ranking, ties to the lower id. The store is scanned in slices so the key buffer stays
bounded; the running top-k merges with each slice's.
"""
from __future__ import annotations

import numpy as np
import torch

from . import on_device, triton_available, use_kernel

BQ, BN = 16, 128
SLICE_KEYS = 1 << 25  # keys per slice (256 MiB of int64)

if triton_available():
    import triton
    import triton.language as tl

    @triton.jit
    def _scan_kernel(codes_ptr, offs_ptr, lut_ptr, scale_ptr, keys_ptr, nq, n, n0, width, m, lut_w,
                     BQ: tl.constexpr, BN: tl.constexpr, SCALED: tl.constexpr):
        qs = tl.program_id(1) * BQ + tl.arange(0, BQ)
        rows = n0 + tl.program_id(0).to(tl.int64) * BN + tl.arange(0, BN)
        qm = qs < nq
        rm = rows < n
        msk = qm[:, None] & rm[None, :]
        acc = tl.zeros((BQ, BN), dtype=tl.float32)
        for j in range(m):
            c = tl.load(codes_ptr + rows * m + j, mask=rm, other=0).to(tl.int64)
            o = tl.load(offs_ptr + j)
            acc = acc + tl.load(lut_ptr + qs[:, None].to(tl.int64) * lut_w + o + c[None, :], mask=msk,
                                other=0.0)
        if SCALED:
            acc = acc * tl.load(scale_ptr + rows, mask=rm, other=0.0)[None, :]
        bits = (acc + 0.0).to(tl.int32, bitcast=True)  # + 0.0: -0.0 ranks as +0.0, as on the CPU
        key = tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF).to(tl.int64)
        key = (key << 32) | (4294967295 - rows)
        tl.store(keys_ptr + qs[:, None].to(tl.int64) * width + (rows - n0)[None, :], key,
                 mask=msk & (rows < n0 + width)[None, :])


def _decode_keys(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ids = 4294967295 - (keys & 0xFFFFFFFF)
    s = (keys >> 32).to(torch.int32)
    bits = torch.where(s >= 0, s, s ^ 0x7FFFFFFF)
    return ids, bits.view(torch.float32)


def scores_twin(codes: torch.Tensor, offs, lut: torch.Tensor, scale=None) -> torch.Tensor:
    """(q, n) float32 scores summed in column order (torch; the reference of the kernel's tile)."""
    acc = torch.zeros((lut.shape[0], codes.shape[0]), dtype=torch.float32, device=lut.device)
    for j in range(codes.shape[1]):
        acc = acc + lut[:, int(offs[j]) + codes[:, j].long()]
    return acc if scale is None else acc * scale[None, :]


def topk(codes: torch.Tensor, offs, lut: torch.Tensor, k: int, *, kernel: bool | None = None,
         scale: torch.Tensor | None = None):
    """(ids int64, scores float32), each (q, k), of the k best codes per query; ties to the lower
    id. ``codes`` (n, M) on the device, ``lut`` (q, L) float32, ``offs`` (M,) offsets into a row
    of ``lut``; ``scale`` (n,) multiplies each sum (cosine scores). Without a kernel: the CPU scan
    of ``nzip.search``."""
    if not use_kernel(codes.device, kernel):
        from ..search import adc_topk

        ids, sc = adc_topk(codes.cpu().numpy(), np.asarray(offs), lut.cpu().numpy(), k,
                           None if scale is None else scale.cpu().numpy())
        return torch.from_numpy(ids).to(codes.device), torch.from_numpy(sc).to(codes.device)
    dev = codes.device
    nq, lut_w = lut.shape
    n, m = codes.shape
    k = min(k, n)
    codes = codes.contiguous()
    lut = lut.to(torch.float32).contiguous()
    offs_t = torch.as_tensor(np.asarray(offs, dtype=np.int64), device=dev)
    width = max(BN, min(n, SLICE_KEYS // max(nq, 1)) // BN * BN)
    best = torch.empty((nq, 0), dtype=torch.int64, device=dev)
    for n0 in range(0, n, width):
        w = min(width, n - n0)
        keys = torch.empty((nq, w), dtype=torch.int64, device=dev)
        grid = (triton.cdiv(w, BN), triton.cdiv(nq, BQ))
        sc = lut if scale is None else scale.to(torch.float32).contiguous()
        with on_device(keys.device):
            _scan_kernel[grid](codes, offs_t, lut, sc, keys, nq, n, n0, w, m, lut_w, BQ=BQ, BN=BN,
                               SCALED=scale is not None)
        cand = torch.cat([best, keys], dim=1)
        best = torch.topk(cand, min(k, cand.shape[1]), dim=1, sorted=True).values
    ids, scores = _decode_keys(best)
    return ids, scores.contiguous()
