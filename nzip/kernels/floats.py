"""Float reassembly for weights: entropy-decoded exponent fields plus the sign/top-mantissa byte
(and fp16's 3 / fp32's 16 low mantissa bits) -> the raw bits of bf16 / fp16 / fp32 tensors.

Integer bit arithmetic only, so kernel and twin agree exactly. Outputs are int16 / int32 tensors
holding the float's bits; ``.view(torch.bfloat16)`` etc. gives the tensor.
"""
from __future__ import annotations

import torch

from . import on_device, triton_available, use_kernel

BLOCK = 1024

if triton_available():
    import triton
    import triton.language as tl

    @triton.jit
    def _join16_kernel(e_ptr, sm_ptr, lo_ptr, out_ptr, n, SHIFT: tl.constexpr, HAS_LO: tl.constexpr,
                       BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        e = tl.load(e_ptr + offs, mask=m, other=0).to(tl.uint32)
        sm = tl.load(sm_ptr + offs, mask=m, other=0).to(tl.uint32)
        v = ((sm & 0x80) << 8) | (e << SHIFT)
        if HAS_LO:
            v = v | ((sm & 0x7F) << 3) | tl.load(lo_ptr + offs, mask=m, other=0).to(tl.uint32)
        else:
            v = v | (sm & 0x7F)
        tl.store(out_ptr + offs, v.to(tl.int16), mask=m)

    @triton.jit
    def _join32_kernel(e_ptr, sm_ptr, b1_ptr, b0_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        e = tl.load(e_ptr + offs, mask=m, other=0).to(tl.uint32)
        sm = tl.load(sm_ptr + offs, mask=m, other=0).to(tl.uint32)
        b1 = tl.load(b1_ptr + offs, mask=m, other=0).to(tl.uint32)
        b0 = tl.load(b0_ptr + offs, mask=m, other=0).to(tl.uint32)
        v = ((sm & 0x80) << 24) | (e << 23) | ((sm & 0x7F) << 16) | (b1 << 8) | b0
        tl.store(out_ptr + offs, v.to(tl.int32, bitcast=True), mask=m)


def _u8(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).to(torch.uint8).contiguous()


def join16_twin(e, sm, lo, ebits: int) -> torch.Tensor:
    e, sm = e.reshape(-1).to(torch.int32), sm.reshape(-1).to(torch.int32)
    v = ((sm & 0x80) << 8) | (e << (15 - ebits))
    v = v | (((sm & 0x7F) << 3) | lo.reshape(-1).to(torch.int32) if lo is not None else (sm & 0x7F))
    return torch.where(v >= 1 << 15, v - (1 << 16), v).to(torch.int16)


def join32_twin(e, sm, b1, b0) -> torch.Tensor:
    e, sm = e.reshape(-1).to(torch.int64), sm.reshape(-1).to(torch.int64)
    v = (((sm & 0x80) << 24) | (e << 23) | ((sm & 0x7F) << 16) | (b1.reshape(-1).to(torch.int64) << 8)
         | b0.reshape(-1).to(torch.int64))
    return torch.where(v >= 1 << 31, v - (1 << 32), v).to(torch.int32)


def join16(e, sm, lo=None, ebits: int = 8, *, kernel: bool | None = None) -> torch.Tensor:
    """bf16 (ebits 8, no lo) / fp16 (ebits 5, lo = 3 low mantissa bits) bits as int16."""
    if not use_kernel(e.device, kernel):
        return join16_twin(e, sm, lo, ebits)
    n = e.numel()
    out = torch.empty(n, dtype=torch.int16, device=e.device)
    if n:
        lo_t = _u8(lo) if lo is not None else out
        with on_device(out.device):
            _join16_kernel[(triton.cdiv(n, BLOCK),)](_u8(e), _u8(sm), lo_t, out, n, SHIFT=15 - ebits,
                                                     HAS_LO=lo is not None, BLOCK=BLOCK)
    return out


def join32(e, sm, b1, b0, *, kernel: bool | None = None) -> torch.Tensor:
    """fp32 bits as int32 from exponent, sign/mantissa byte and the two low mantissa bytes."""
    if not use_kernel(e.device, kernel):
        return join32_twin(e, sm, b1, b0)
    n = e.numel()
    out = torch.empty(n, dtype=torch.int32, device=e.device)
    if n:
        with on_device(out.device):
            _join32_kernel[(triton.cdiv(n, BLOCK),)](_u8(e), _u8(sm), _u8(b1), _u8(b0), out, n, BLOCK=BLOCK)
    return out
