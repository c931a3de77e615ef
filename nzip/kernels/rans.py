"""rANS lane decode on the GPU: many static or context blobs of the shared entropy layer in one
launch, straight into torch tensors on the device.

One program decodes ``ROWS`` blocks side by side as a (ROWS, 32) tile: row r is a block, column
l its lane l (blocks with fewer lanes mask the rest). A step decodes one group of ``lanes``
symbols per block: every lane's table lookup at once, then the renormalisation hands out the next
16-bit words to the lanes that fell below 2**16 by an exclusive prefix sum over the lanes, which is
exactly the order the CPU decoder reads them in (``nzip/entropy/lanes.py``). All arithmetic is
uint32, as on the CPU, so the symbols are bit-identical.

The twin is the CPU decoder itself (``nzip.entropy.decode`` / ``decode_context``, numba).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..entropy import coder as C
from ..errors import InvalidInputError
from . import on_device, triton_available, use_kernel

ROWS = 16  # blocks per program

if triton_available():
    import triton
    import triton.language as tl

    @triton.jit
    def _rans_kernel(words_ptr, states_ptr, out_ptr, ctx_ptr, sym_ptr, pack_ptr,
                     b_wstart, b_wend, b_state, b_out, b_n, b_lanes, b_prec, b_table, b_ctx,
                     p_steps, status_ptr, nblocks,
                     ROWS: tl.constexpr, HAS_CTX: tl.constexpr):
        pid = tl.program_id(0)
        rows = pid * ROWS + tl.arange(0, ROWS)
        rmask = rows < nblocks
        lane = tl.arange(0, 32)
        wstart = tl.load(b_wstart + rows, mask=rmask, other=0)
        wend = tl.load(b_wend + rows, mask=rmask, other=0)
        sbase = tl.load(b_state + rows, mask=rmask, other=0)
        obase = tl.load(b_out + rows, mask=rmask, other=0)
        n = tl.load(b_n + rows, mask=rmask, other=0)
        nl = tl.load(b_lanes + rows, mask=rmask, other=1)
        prec = tl.load(b_prec + rows, mask=rmask, other=1).to(tl.uint32)
        tbase = tl.load(b_table + rows, mask=rmask, other=0)
        cbase = tl.load(b_ctx + rows, mask=rmask, other=0)
        lmask = (lane[None, :] < nl[:, None]) & rmask[:, None]
        x = tl.load(states_ptr + sbase[:, None] + lane[None, :], mask=lmask, other=65536)
        x = x.to(tl.uint32, bitcast=True)
        smask = (tl.full((ROWS,), 1, tl.uint32) << prec) - 1
        ptr = wstart
        j = tl.zeros((ROWS,), dtype=tl.int64)
        steps = tl.load(p_steps + pid)
        for _ in range(steps):
            pos = j[:, None] + lane[None, :]
            active = lmask & (pos < n[:, None])
            slot = (x & smask[:, None]).to(tl.int64)
            if HAS_CTX:
                c = tl.load(ctx_ptr + cbase[:, None] + pos, mask=active, other=0).to(tl.int64)
                slot = slot | (c << prec[:, None].to(tl.int64))
            idx = tbase[:, None] + slot
            sym = tl.load(sym_ptr + idx, mask=active, other=0)
            pk = tl.load(pack_ptr + idx, mask=active, other=0).to(tl.uint32, bitcast=True)
            xn = (pk >> 16) * (x >> prec[:, None]) + (pk & 0xFFFF)
            x = tl.where(active, xn, x)
            tl.store(out_ptr + obase[:, None] + pos, sym.to(out_ptr.dtype.element_ty), mask=active)
            need = active & (x < 65536)
            needi = need.to(tl.int64)
            before = tl.cumsum(needi, axis=1) - needi
            wpos = ptr[:, None] + before
            w = tl.load(words_ptr + wpos, mask=need & (wpos < wend[:, None]), other=0)
            w = (w.to(tl.int32) & 0xFFFF).to(tl.uint32)
            x = tl.where(need, (x << 16) | w, x)
            ptr += tl.sum(needi, axis=1)
            j += nl.to(tl.int64)
        bad_state = tl.sum((lmask & (x != 65536)).to(tl.int32), axis=1) > 0
        # the CPU decoder's codes (entropy.lanes): -2 words do not match (ERR_OVERRUN), -3 final states (ERR_STATE)
        status = tl.where(ptr != wend, -2, tl.where(bad_state, -3, 0))
        tl.store(status_ptr + rows, status.to(tl.int32), mask=rmask)


@dataclass
class _Job:
    p: C.LaneStreams
    ctx: np.ndarray | torch.Tensor | None


def _parse(blobs, contexts, what) -> list[_Job]:
    jobs = []
    for i, blob in enumerate(blobs):
        name = f"{what} {i}" if len(blobs) > 1 else what
        cx = None if contexts is None else contexts[i]
        if cx is None:
            jobs.append(_Job(C.parse(blob, what=name), None))
        else:
            jobs.append(_Job(C.parse_context(blob, int(cx.numel() if torch.is_tensor(cx) else np.size(cx)),
                                             what=name), cx))
    return jobs


def _twin(job: _Job, device) -> torch.Tensor:
    cx = None
    if job.p.kind == C.CONTEXT:
        cx = job.ctx.cpu().numpy() if torch.is_tensor(job.ctx) else np.asarray(job.ctx)
        cx = np.ascontiguousarray(cx.reshape(-1))
    return torch.from_numpy(np.ascontiguousarray(job.p.decode(cx))).to(device)


def _finish_on_device(p: C.LaneStreams, sym: torch.Tensor) -> torch.Tensor:
    """Decoded symbols (int32 on the device) -> the blob's values, as p.finish does on the CPU
    (parse has checked that they fit the dtype)."""
    if p.kind == C.CONTEXT:
        return sym.to(torch.int32) if p.nalpha > 256 else sym.to(torch.uint8)
    if p.dtype == np.bool_:
        return (sym + p.offset).to(torch.bool)
    tdt = _TORCH.get(np.dtype(p.dtype))
    v = sym.to(torch.int64) + p.offset
    return v.to(tdt) if tdt is not None else v


_TORCH = {np.dtype(np.int8): torch.int8, np.dtype(np.uint8): torch.uint8,
          np.dtype(np.int16): torch.int16, np.dtype(np.int32): torch.int32,
          np.dtype(np.int64): torch.int64, np.dtype(np.uint16): torch.uint16,
          np.dtype(np.uint32): torch.uint32, np.dtype(np.uint64): torch.uint64}


def _run_kernel(jobs: list[_Job], device) -> list[torch.Tensor]:
    coded = [j for j in jobs if j.p.kind in (C.STATIC, C.CONTEXT)]
    results: dict[int, torch.Tensor] = {}
    for kind_ctx in (False, True):
        group = [j for j in coded if (j.p.kind == C.CONTEXT) == kind_ctx]
        if group:
            for j, t in zip(group, _launch(group, device, kind_ctx)):
                results[id(j)] = t
    out = []
    for j in jobs:
        p = j.p
        if p.kind == C.EMPTY:
            out.append(torch.empty(0, dtype=_TORCH.get(np.dtype(p.dtype), torch.bool), device=device))
        elif p.kind == C.CONSTANT:
            out.append(torch.full((p.n,), p.constant, dtype=_TORCH.get(np.dtype(p.dtype), torch.bool),
                                  device=device))
        else:
            out.append(_finish_on_device(p, results[id(j)]))
    return out


@dataclass
class _Prepared:
    """One launch, ready: the kernel's arguments on the device, its grid, output and status."""
    args: tuple
    grid: int
    out: torch.Tensor
    status: torch.Tensor
    has_ctx: bool


def _prepare(group: list[_Job], device, has_ctx: bool) -> _Prepared:
    """Host work of a launch: the per-block table (numpy runs, one host-to-device copy) and the
    blobs' words, states and decode tables on the device."""
    nb = sum(j.p.nblocks for j in group)
    # rows: word start, word end, state base, output base, symbols, lanes, precision, table base,
    # context base (one host-to-device copy for all nine)
    table = np.zeros((9, nb), np.int64)
    words, states, syms, packs, ctxs = [], [], [], [], []
    wofs = sofs = oofs = tofs = cofs = 0
    b = 0
    for j in group:
        p = j.p
        k = np.arange(p.nblocks, dtype=np.int64)
        t = table[:, b:b + p.nblocks]
        t[0] = wofs + p.woff[:-1]
        t[1] = wofs + p.woff[1:]
        t[2] = sofs + k * p.lanes
        t[3] = oofs + k * p.block
        t[4] = np.minimum(p.block, p.n - k * p.block)
        t[5], t[6], t[7], t[8] = p.lanes, p.prec, tofs, cofs + k * p.block
        b += p.nblocks
        words.append(p.words[: int(p.woff[-1])])
        states.append(p.states.astype(np.uint32).view(np.int32))
        syms.append(p.slot_sym.astype(np.int32))
        packs.append(p.slot_pack.view(np.int32))
        wofs += int(p.woff[-1])
        sofs += p.states.size
        oofs += p.n
        tofs += p.slot_sym.size
        if has_ctx:
            cx = j.ctx if torch.is_tensor(j.ctx) else torch.from_numpy(
                np.ascontiguousarray(j.ctx).astype(np.int32, copy=False))
            cx = cx.reshape(-1).to(device=device, dtype=torch.int32)
            if cx.numel() and (int(cx.min()) < 0 or int(cx.max()) >= p.nctx):
                raise InvalidInputError(f"contexts must be integers in 0..{p.nctx - 1}")
            ctxs.append(cx.to(device=device, dtype=torch.int32))
            cofs += p.n
    steps = -(-table[4] // table[5])
    nprog = -(-nb // ROWS)
    psteps = np.zeros(nprog * ROWS, np.int64)
    psteps[:nb] = steps
    psteps = psteps.reshape(nprog, ROWS).max(1)

    def dev(a):
        a = np.ascontiguousarray(a)
        if not a.flags.writeable:  # a view of the blob's bytes (one blob): read only, never written
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                return torch.from_numpy(a).to(device)
        return torch.from_numpy(a).to(device)

    def cat(parts):  # one part (a single blob): no copy
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    wcat = cat(words) if wofs else np.zeros(1, np.uint16)
    t_words = dev(wcat.view(np.int16))
    out = torch.empty(max(oofs, 1), dtype=torch.int32, device=device)
    ctx = torch.cat(ctxs) if has_ctx else torch.zeros(1, dtype=torch.int32, device=device)
    status = torch.empty(nb, dtype=torch.int32, device=device)
    tb = dev(table)
    args = (t_words, dev(cat(states)), out, ctx, dev(cat(syms)), dev(cat(packs)),
            *(tb[r] for r in range(9)), dev(psteps), status, nb)
    return _Prepared(args, nprog, out, status, has_ctx)


def _run(pr: _Prepared) -> np.ndarray:
    """The kernel itself; returns the blocks' status words (on the host)."""
    with on_device(pr.status.device):
        _rans_kernel[(pr.grid,)](*pr.args, ROWS=ROWS, HAS_CTX=pr.has_ctx)
    return pr.status.cpu().numpy()


def _launch(group: list[_Job], device, has_ctx: bool) -> list[torch.Tensor]:
    pr = _prepare(group, device, has_ctx)
    st = _run(pr)
    results, b, o = [], 0, 0
    for j in group:
        C._raise_status(st[b:b + j.p.nblocks].astype(np.int64), j.p.what)
        b += j.p.nblocks
        results.append(pr.out[o:o + j.p.n])
        o += j.p.n
    return results


def decode_blobs(blobs, device="cpu", contexts=None, *, kernel: bool | None = None,
                 what: str = "entropy blob", limits=None) -> list[torch.Tensor]:
    """Decode static blobs (``contexts[i] is None``) and context blobs (``contexts[i]`` the
    per-symbol contexts) into 1-D torch tensors on ``device``: one kernel launch per kind on a CUDA
    device, the CPU decoder otherwise. Context blobs come back as uint8 (alphabets <= 256) or
    int32; static blobs in their own dtype. ``limits[i]``: the most symbols blob i may declare
    (a forged count is refused before anything is allocated)."""
    blobs = list(blobs)
    if contexts is not None and len(contexts) != len(blobs):
        raise InvalidInputError(f"{len(blobs)} blobs but {len(contexts)} context arrays")
    jobs = _parse(blobs, contexts, what)
    if limits is not None:
        from ..errors import CorruptDataError

        for i, (job, most) in enumerate(zip(jobs, limits)):
            if job.p.n > most:
                name = f"{what} {i}" if len(jobs) > 1 else what
                raise CorruptDataError(f"{name} declares {job.p.n} symbols, more than the {most} expected")
    if use_kernel(device, kernel):
        return _run_kernel(jobs, device)
    return [_finish_twin(_twin(j, device), j.p) for j in jobs]


def _finish_twin(t: torch.Tensor, p: C.LaneStreams) -> torch.Tensor:
    if p.kind == C.CONTEXT:
        return t.to(torch.int32) if p.nalpha > 256 else t
    return t


def decode(blob, device="cpu", contexts=None, *, kernel: bool | None = None,
           what: str = "entropy blob") -> torch.Tensor:
    """One blob: :func:`decode_blobs` of a list of one."""
    return decode_blobs([blob], device, None if contexts is None else [contexts], kernel=kernel,
                        what=what)[0]


__all__ = ["decode_blobs", "decode"]
