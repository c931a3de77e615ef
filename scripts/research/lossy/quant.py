"""weights/quant: entropy-coded uniform scalar quantisation of model weights (DeepCABAC-like).

What it implements
------------------
Every weight tensor with at least ``min_numel`` elements and ndim >= 2 is quantised as

    q = round(W / s_row)          (integer codes, shape of W; rows = first axis)
    W_hat = float32(q) * float32(s_row)

with one float16 scale per row. The codes of each tensor are coded with nzip's order-0 rANS coder
(`nzip.entropy.encode`, table built from the tensor's own counts and carried in the blob). Small
tensors and 1-D tensors (LayerNorm, biases) are kept as float16. The step of tensor t is
``c * base_t``; ``base_t`` is the tensor's standard deviation, or ``1/sqrt(F_t)`` when a sensitivity
``F_t`` (mean diagonal Fisher of the model outputs, :func:`fisher_sensitivity`) is given -- the
rate-distortion optimal step allocation for additive uniform noise (F_t * step_t**2 equal for all
tensors). ``row_power`` in [0, 1] lets the per-row step follow the row's RMS (1: equal SNR per row,
0: one step for the whole tensor -- the MSE-optimal choice, and DeepCABAC's). A bisection on the
global ``c`` meets a target bits-per-weight computed over *all* parameters, side information
included; the final size is the real coded size.

Optional rate-distortion optimised quantisation (``rdoq > 0``): each value may move one step towards
zero when ``(u - q)**2 + rdoq * bits(q)`` is lower (``u`` = W/s, ``bits`` from the tensor's current
code histogram, two passes). 0.1155 is the high-rate slope of an entropy-coded uniform quantiser.

Optional calibration (:func:`calibrate`): with the integer codes frozen, the per-row scales and the
float16-kept tensors are fine-tuned by distillation through a ``calib`` object
(``.n``, ``.loss(params, idx)``) and stored again as float16.

Where it departs from DeepCABAC: order-0 tables per tensor instead of CABAC's context-adaptive
binary models; RDOQ is a two-candidate greedy on a static table; per-row float16 scales.

Reconstruction is deterministic: integers times float16 scales, computed in float32.
"""
from __future__ import annotations

import math
import time

import numpy as np

SEP = "::"
__all__ = ["fit", "quantize", "reconstruct", "coded_bits", "n_params", "select",
           "fisher_sensitivity", "calibrate", "rtn"]


# ------------------------------------------------------------------ sizes

def _entropy():
    from nzip import entropy as E
    return E


def codes_dtype(q: np.ndarray) -> np.ndarray:
    lo, hi = int(q.min()), int(q.max())
    for dt in (np.int8, np.int16, np.int32):
        if np.iinfo(dt).min <= lo and hi <= np.iinfo(dt).max:
            return q.astype(dt)
    return q.astype(np.int64)


def coded_bits(arrays: dict[str, np.ndarray], detail: bool = False):
    """Real size in bits: integer arrays through nzip's rANS coder, float arrays as their raw bytes.

    Shapes/names (the container's metadata) are not counted. With ``detail`` also a per-key dict.
    """
    E = _entropy()
    per = {}
    for k, a in arrays.items():
        a = np.asarray(a)
        if a.dtype.kind in "iub":
            per[k] = 8 * len(E.encode(a.reshape(-1)))
        else:
            per[k] = 8 * a.nbytes
    total = int(sum(per.values()))
    return (total, per) if detail else total


def _est_bits(q: np.ndarray) -> float:
    """Empirical order-0 entropy plus a rough table cost (12 bits per used symbol, 64 header)."""
    q = q.reshape(-1)
    lo = int(q.min())
    counts = np.bincount(q.astype(np.int64) - lo)
    used = counts[counts > 0].astype(np.float64)
    n = used.sum()
    return float(-np.sum(used * np.log2(used / n))) + 12 * len(used) + 64


def n_params(tensors: dict[str, np.ndarray]) -> int:
    return int(sum(np.asarray(t).size for t in tensors.values()))


# ------------------------------------------------------------------ core

def _rows(w: np.ndarray) -> np.ndarray:
    return w.reshape(w.shape[0], -1)


def _quantize_tensor(w: np.ndarray, step: float, row_power: float, rdoq: float):
    w2 = _rows(w).astype(np.float32)
    if row_power:
        rms = np.sqrt(np.mean(w2.astype(np.float64) ** 2, axis=1)) + 1e-12
        rel = (rms / np.sqrt(np.mean(rms ** 2))) ** row_power
    else:
        rel = np.ones(w2.shape[0])
    s = (step * rel).astype(np.float16)
    s = np.where(s == 0, np.float16(np.finfo(np.float16).tiny), s)  # guard underflow
    s32 = s.astype(np.float32)[:, None]
    u = w2 / s32
    q = np.rint(u)
    if rdoq > 0:
        q = _rdoq(u, q, rdoq)
    q = codes_dtype(q.astype(np.int64)).reshape(w.shape)
    return q, s.reshape(-1, *([1] * (w.ndim - 1)))


def _rdoq(u: np.ndarray, q: np.ndarray, lam: float, passes: int = 2) -> np.ndarray:
    q = q.astype(np.int64)
    for _ in range(passes):
        lo = int(q.min())
        counts = np.bincount((q - lo).ravel()).astype(np.float64)  # q is int64 here
        bits = -np.log2(np.maximum(counts, 0.5) / counts.sum())
        q1 = q - np.sign(q)
        j0 = (u - q) ** 2 + lam * bits[q - lo]
        j1 = (u - q1) ** 2 + lam * bits[q1 - lo]
        q = np.where(j1 < j0, q1, q)
    return q


def select(tensors: dict[str, np.ndarray], min_numel: int = 4096) -> list[str]:
    """Names of the tensors that get quantised (ndim >= 2 and at least ``min_numel`` elements)."""
    return [k for k, t in tensors.items() if np.ndim(t) >= 2 and np.size(t) >= min_numel]


def quantize(tensors: dict[str, np.ndarray], c: float, *, sens: dict[str, float] | None = None,
             row_power: float = 0.0, rdoq: float = 0.0, min_numel: int = 4096,
             rel_step: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Quantise at global step factor ``c`` (see module doc). Returns the flat array dict."""
    names = select(tensors, min_numel)
    base = _base_steps(tensors, names, sens)
    out = {}
    for k, t in tensors.items():
        t = np.asarray(t, dtype=np.float32)
        if k in names:
            step = c * base[k] * (rel_step.get(k, 1.0) if rel_step else 1.0)
            q, s = _quantize_tensor(t, step, row_power, rdoq)
            out[k + SEP + "q"] = q
            out[k + SEP + "s"] = s
        else:
            out[k + SEP + "raw"] = t.astype(np.float16)
    return out


def _base_steps(tensors, names, sens, floor: float = 1e-3):
    if sens is None:
        return {k: float(np.std(tensors[k])) for k in names}
    # a floor (relative to the median sensitivity) keeps unused tensors (zero Fisher) finite
    fl = floor * float(np.median([sens[k] for k in names]))
    inv = {k: 1.0 / math.sqrt(max(sens[k], fl)) for k in names}
    # normalise so that c keeps the meaning "step in units of std" on (geometric) average
    g = np.exp(np.mean([math.log(inv[k] / np.std(tensors[k])) for k in names]))
    return {k: inv[k] / g for k in names}


def reconstruct(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Float32 tensors from the array dict of :func:`fit`/:func:`quantize` (deterministic)."""
    out = {}
    for key, a in arrays.items():
        name, kind = key.rsplit(SEP, 1)
        if kind == "raw":
            out[name] = np.asarray(a).astype(np.float32)
        elif kind == "q":
            s = np.asarray(arrays[name + SEP + "s"]).astype(np.float32)
            out[name] = np.asarray(a).astype(np.float32) * s
    return out


def fit(tensors: dict[str, np.ndarray], bpw: float, *, sens: dict[str, float] | None = None,
        row_power: float = 0.0, rdoq: float = 0.0, min_numel: int = 4096,
        rel_step: dict[str, float] | None = None, calib=None, calib_steps: int = 0,
        tol: float = 0.005, verbose: bool = False) -> dict[str, np.ndarray]:
    """Quantise ``tensors`` so that the real coded size is <= ``bpw`` bits per parameter.

    ``bpw`` counts every parameter of ``tensors`` and every stored bit (codes, scales, raw tensors).
    Bisection on the global step factor with an entropy estimate, then corrected with the real coded
    size until it fits. ``sens``: per-tensor sensitivities (:func:`fisher_sensitivity`) for the
    step allocation; ``row_power``/``rdoq``: see the module doc; ``rel_step``: optional manual
    {name: multiplier} on a tensor's step. ``calib`` (with ``calib_steps`` > 0) fine-tunes scales
    and raw tensors afterwards (:func:`calibrate`); that does not change the size.
    """
    n = n_params(tensors)
    target = bpw * n
    kw = dict(sens=sens, row_power=row_power, rdoq=rdoq, min_numel=min_numel, rel_step=rel_step)

    def est(c):
        a = quantize(tensors, c, **kw)
        bits = sum(_est_bits(v) if v.dtype.kind in "iu" else 8 * v.nbytes for v in a.values())
        return bits, a

    goal = target  # target for the estimate; corrected by the ratio real/estimate
    for _ in range(4):
        lo, hi = -14.0, 4.0  # log2 c
        while hi - lo > 2e-3:
            mid = 0.5 * (lo + hi)
            if est(2 ** mid)[0] > goal:
                lo = mid
            else:
                hi = mid
        arrays = quantize(tensors, 2 ** hi, **kw)
        real = coded_bits(arrays)
        if verbose:
            print(f"  c={2 ** hi:.4g} real bpw {real / n:.4f} (target {bpw})")
        if target * (1 - tol) <= real <= target:
            break
        goal *= target / real
    while real > target:   # never exceed the budget
        hi += 0.005
        arrays = quantize(tensors, 2 ** hi, **kw)
        real = coded_bits(arrays)
    if calib is not None and calib_steps > 0:
        arrays = calibrate(arrays, calib, steps=calib_steps, verbose=verbose)
    return arrays


# ------------------------------------------------------------------ calibration helpers

def fisher_sensitivity(tensors: dict[str, np.ndarray], calib, names=None, batches: int = 8,
                       batch_size: int = 32, probes: int = 1, seed: int = 0) -> dict[str, float]:
    """Mean diagonal Fisher of the model outputs per tensor: E[(d(v . f(x)) / dw)^2], v ~ N(0, I).

    ``calib.outputs(params, idx)`` must return a tensor (or tuple of tensors) of model outputs; a
    random projection of them is back-propagated (Hutchinson-style estimate of diag(J^T J)).
    """
    import torch
    g = torch.Generator().manual_seed(seed)
    names = names if names is not None else select(tensors)
    params = {k: torch.tensor(np.asarray(tensors[k], dtype=np.float32), requires_grad=True)
              for k in names}
    acc = {k: 0.0 for k in names}
    perm = torch.randperm(calib.n, generator=g)
    count = 0
    for b in range(batches):
        idx = perm[(b * batch_size) % calib.n:][:batch_size]
        for _ in range(probes):
            outs = calib.outputs(params, idx)
            outs = outs if isinstance(outs, (tuple, list)) else (outs,)
            tot = sum((o * torch.randn(o.shape, generator=g)).sum() for o in outs)
            grads = torch.autograd.grad(tot, [params[k] for k in names], allow_unused=True)
            for k, gr in zip(names, grads):
                if gr is not None:
                    acc[k] += float((gr.double() ** 2).mean())
            count += 1
    return {k: v / count for k, v in acc.items()}


def calibrate(arrays: dict[str, np.ndarray], calib, *, steps: int = 200, lr: float = 1e-3,
              batch_size: int = 16, train_raw: bool = True, seed: int = 0,
              verbose: bool = False) -> dict[str, np.ndarray]:
    """Fine-tune per-row scales (and float16-kept tensors) by distillation; codes stay fixed.

    Scales are learned as log-multipliers (positive by construction), stored again as float16.
    """
    import torch
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    names = [k.rsplit(SEP, 1)[0] for k in arrays if k.endswith(SEP + "q")]
    raws = [k.rsplit(SEP, 1)[0] for k in arrays if k.endswith(SEP + "raw")]
    q = {k: torch.from_numpy(arrays[k + SEP + "q"].astype(np.float32)) for k in names}
    s0 = {k: torch.from_numpy(arrays[k + SEP + "s"].astype(np.float32)) for k in names}
    logm = {k: torch.zeros_like(s0[k], requires_grad=True) for k in names}
    raw = {k: torch.tensor(arrays[k + SEP + "raw"].astype(np.float32), requires_grad=True)
           for k in raws}
    opt_params = list(logm.values()) + (list(raw.values()) if train_raw else [])
    opt = torch.optim.Adam(opt_params, lr=lr)
    t0 = time.time()
    for step in range(steps):
        idx = (calib.sample(g, batch_size) if hasattr(calib, "sample")
               else torch.randint(0, calib.n, (batch_size,), generator=g))
        params = {k: q[k] * (s0[k] * torch.exp(logm[k])) for k in names}
        params.update(raw if train_raw else {})
        loss = calib.loss(params, idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if verbose and (step % 50 == 0 or step == steps - 1):
            print(f"  calib step {step} loss {loss.item():.5f} ({time.time() - t0:.1f}s)")
    out = dict(arrays)
    with torch.no_grad():
        for k in names:
            out[k + SEP + "s"] = (s0[k] * torch.exp(logm[k])).numpy().astype(np.float16)
        if train_raw:
            for k in raws:
                out[k + SEP + "raw"] = raw[k].numpy().astype(np.float16)
    return out


# ------------------------------------------------------------------ baselines

def rtn(tensors: dict[str, np.ndarray], bits: int = 4, group: int | None = 128,
        min_numel: int = 4096) -> tuple[dict[str, np.ndarray], float]:
    """Round-to-nearest symmetric baseline (no entropy coding): int ``bits`` codes, one float16
    absmax scale per ``group`` consecutive inputs of a row (``group=None``: per row). Returns the
    reconstruction and its bits per weight (codes at ``bits`` each, scales 16 bits, rest fp16)."""
    out, total = {}, 0
    qmax = 2 ** (bits - 1) - 1
    for k, t in tensors.items():
        t = np.asarray(t, dtype=np.float32)
        if t.ndim >= 2 and t.size >= min_numel:
            w = t.reshape(t.shape[0], -1)
            gs = w.shape[1] if group is None else group
            wg = w.reshape(w.shape[0], -1, gs)
            s = (np.abs(wg).max(-1, keepdims=True) / qmax).astype(np.float16).astype(np.float32)
            s = np.where(s == 0, 1.0, s)
            qq = np.clip(np.rint(wg / s), -qmax - 1, qmax)
            out[k] = (qq * s).reshape(t.shape).astype(np.float32)
            total += bits * t.size + 16 * s.size
        else:
            out[k] = t.astype(np.float16).astype(np.float32)
            total += 16 * t.size
    return out, total / n_params(tensors)
