"""Codebook gathers: VQ indices, residual VQ (sum of stages) and PQ codes -> float vectors.

Copies are exact; residual VQ adds its stages in float32 in stage order (0, 1, 2, ...) on both
sides, so kernel and twin agree bit for bit.
"""
from __future__ import annotations

import torch

from ..errors import InvalidInputError
from . import on_device, triton_available, use_kernel

BN, BD = 64, 32

if triton_available():
    import triton
    import triton.language as tl

    @triton.jit
    def _rvq_kernel(codes_ptr, cb_ptr, out_ptr, n, stages, k, d, BN: tl.constexpr, BD: tl.constexpr):
        rows = tl.program_id(0).to(tl.int64) * BN + tl.arange(0, BN)
        cols = tl.program_id(1) * BD + tl.arange(0, BD)
        rm = rows < n
        m = rm[:, None] & (cols[None, :] < d)
        acc = tl.zeros((BN, BD), dtype=tl.float32)
        for s in range(stages):
            c = tl.load(codes_ptr + rows * stages + s, mask=rm, other=0).to(tl.int64)
            v = tl.load(cb_ptr + (s * k + c)[:, None] * d + cols[None, :], mask=m, other=0.0)
            acc = acc + v
        tl.store(out_ptr + rows[:, None] * d + cols[None, :], acc, mask=m)

    @triton.jit
    def _pq_kernel(codes_ptr, cb_ptr, out_ptr, n, m_sub, k, ds, BN: tl.constexpr, BD: tl.constexpr):
        rows = tl.program_id(0).to(tl.int64) * BN + tl.arange(0, BN)
        j = tl.program_id(1)
        cols = tl.arange(0, BD)
        rm = rows < n
        msk = rm[:, None] & (cols[None, :] < ds)
        c = tl.load(codes_ptr + rows * m_sub + j, mask=rm, other=0).to(tl.int64)
        v = tl.load(cb_ptr + (j * k + c)[:, None] * ds + cols[None, :], mask=msk, other=0.0)
        tl.store(out_ptr + rows[:, None] * (m_sub * ds) + j * ds + cols[None, :], v, mask=msk)


def _check(codes: torch.Tensor, cb: torch.Tensor, what: str) -> None:
    if codes.ndim != 2 or cb.ndim != 3 or codes.shape[1] != cb.shape[0]:
        raise InvalidInputError(f"{what}: codes {list(codes.shape)} do not fit codebooks {list(cb.shape)}")
    if codes.dtype in (torch.uint16, torch.uint32):  # torch has no min/max for these: widen to look
        codes = codes.to(torch.int64)
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= cb.shape[1]):
        raise InvalidInputError(f"{what}: a code lies outside 0..{cb.shape[1] - 1}")


def rvq_twin(codes: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    codes = codes.long()
    acc = codebooks[0][codes[:, 0]].float().clone()
    for s in range(1, codebooks.shape[0]):
        acc = acc + codebooks[s][codes[:, s]].float()
    return acc


def pq_twin(codes: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    codes = codes.long()
    m = codebooks.shape[0]
    return torch.cat([codebooks[j][codes[:, j]] for j in range(m)], dim=1)


def rvq(codes, codebooks, *, kernel: bool | None = None) -> torch.Tensor:
    """(n, stages) codes, (stages, K, d) float32 codebooks -> (n, d): sum of the stages' vectors."""
    _check(codes, codebooks, "residual VQ")
    if not use_kernel(codes.device, kernel):
        return rvq_twin(codes, codebooks)
    n, stages = codes.shape
    _, k, d = codebooks.shape
    out = torch.empty((n, d), dtype=torch.float32, device=codes.device)
    if n:
        with on_device(out.device):
            _rvq_kernel[(triton.cdiv(n, BN), triton.cdiv(d, BD))](
                codes.contiguous(), codebooks.float().contiguous(), out, n, stages, k, d, BN=BN, BD=BD)
    return out


def vq(indices, codebook, *, kernel: bool | None = None) -> torch.Tensor:
    """(...) indices, (K, d) codebook -> (..., d)."""
    shape = tuple(indices.shape)
    out = rvq(indices.reshape(-1, 1), codebook[None], kernel=kernel)
    return out.reshape(*shape, codebook.shape[-1])


def pq(codes, codebooks, *, kernel: bool | None = None) -> torch.Tensor:
    """(n, M) codes, (M, K, ds) codebooks -> (n, M * ds): sub-vectors side by side (any dtype)."""
    _check(codes, codebooks, "product quantiser")
    if not use_kernel(codes.device, kernel):
        return pq_twin(codes, codebooks)
    n, m = codes.shape
    _, k, ds = codebooks.shape
    out = torch.empty((n, m * ds), dtype=codebooks.dtype, device=codes.device)
    if n and ds:
        bd = max(16, triton.next_power_of_2(ds))
        with on_device(out.device):
            _pq_kernel[(triton.cdiv(n, BN), m)](codes.contiguous(), codebooks.contiguous(), out, n, m, k, ds,
                                                BN=BN, BD=bd)
    return out
