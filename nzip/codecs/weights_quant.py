"""``weights/quant``: entropy-coded uniform scalar quantisation of checkpoints at a chosen bpw.

The idea of NNCodec's DeepCABAC with nzip's coder: every float matrix (ndim >= 2, >= 4096
elements) becomes integer codes ``q = round(W / s_row)`` with one float16 step per row, and the
codes are entropy coded per chunk (zarr codec ``nzip.rans``, a table per chunk). Reconstruction
is ``float32(q) * float32(s_row)``, cast back to the tensor's dtype: integers times stored
floats, the same on every machine. Small and 1-D float tensors (LayerNorm, biases) are kept as
float16; integer tensors losslessly.

Rate: ``bpw`` is total container bits / parameters (everything counted). The step of tensor t
is ``c * base_t`` and a bisection on the global factor ``c`` meets the budget with the real coded
sizes. ``base_t`` is the tensor's standard deviation, or, when a calibration object is given,
``1 / sqrt(F_t)`` with ``F_t`` the mean diagonal Fisher information of the model's outputs with
respect to tensor t: equal ``F_t * step_t**2`` is the rate-distortion optimum for additive
uniform noise, and it matters (on all-MiniLM-L6-v2 at 3 bpw: mean cosine 0.894 with std steps,
0.975 with Fisher steps). ``allocation=separable`` also shapes the steps inside each matrix,
``s_r * t_c`` from the Fisher information's row and column marginals (clipped to 4x either way;
column factors stored as float16): better at 5 bpw (0.9988 vs 0.9986), worse at 3 (0.971 vs 0.974)
on MiniLM, so not the default. With ``calib_steps`` > 0 the row steps and the float16 tensors are
then fine-tuned by distillation against the original model (codes fixed).

Where it departs from DeepCABAC: order-0 tables per chunk instead of context-adaptive binary
arithmetic coding, one step per row, no rate-distortion optimised quantisation.

Calibration: ``calib=`` an object as described in :mod:`nzip.calib` (Python API), or on the
command line ``--param calib=sentences.txt`` for a sentence-transformers model (the checkpoint's
folder must hold the model's configuration).
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from .. import entropy as E
from ..errors import CorruptDataError, InvalidInputError
from ..formats.checkpoint import Checkpoint, TensorRecord
from ..formats.container import ArraySpec, Item
from ..registry import register
from .weights_lossless import CheckpointCodec, base_entry, lossless_array, lossless_bytes

FLOATS = ("F32", "BF16", "F16", "F64")
MIN_NUMEL = 4096
CHUNK = 1 << 20  # elements per code chunk
ARRAY_OVERHEAD_BITS = 8 * 600  # container bytes per stored array (zarr.json, zip entry, chunk headers), with margin


def side_file_bits(ck: Checkpoint) -> int:
    """Bits the container spends on what is not a tensor: headers, gaps, a folder's other files."""
    import zlib

    blobs = [*ck.headers.values(), *ck.files.values(), *(g for gs in ck.gaps.values() for _, g in gs)]
    return sum(8 * len(zlib.compress(b, 9)) for b in blobs)


def as_float32(t: TensorRecord) -> np.ndarray:
    """The tensor's values as float32 (bf16 widened exactly)."""
    if t.dtype == "F32":
        return t.data.view("<f4").reshape(t.shape)
    if t.dtype == "F16":
        return t.data.view("<f2").astype(np.float32).reshape(t.shape)
    if t.dtype == "F64":
        return t.data.view("<f8").astype(np.float32).reshape(t.shape)
    if t.dtype == "BF16":
        return (t.data.view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(t.shape)
    raise InvalidInputError(f"{t.name}: {t.dtype} is not a float dtype")


def from_float32(x: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values to the raw bytes of ``dtype`` (bf16 by round-to-nearest-even, as torch)."""
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    if dtype == "F32":
        return x.view(np.uint8)
    if dtype == "F16":
        return x.astype("<f2").view(np.uint8)
    if dtype == "F64":
        return x.astype("<f8").view(np.uint8)
    if dtype == "BF16":
        u = x.view(np.uint32).astype(np.uint64)
        rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
        nan = np.isnan(x)
        out = rounded.astype(np.uint16)
        out[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)  # keep NaNs NaN
        return out.view(np.uint8)
    raise InvalidInputError(f"{dtype} is not a float dtype")


def _codes_dtype(q: np.ndarray) -> np.ndarray:
    lo, hi = int(q.min()), int(q.max())
    for dt in (np.int8, np.int16, np.int32):
        if np.iinfo(dt).min <= lo and hi <= np.iinfo(dt).max:
            return q.astype(dt)
    raise InvalidInputError("quantisation step too small for int32 codes")


def quantize_tensor(w: np.ndarray, step: float, rel_rows=None, cols=None):
    """(int codes shaped like w, float16 steps per row, float16 column factors or None).

    The step of element (r, c) is ``s_r * t_c``: ``rel_rows`` scales the rows' steps, ``cols``
    gives the column factors (Fisher-weighted steps); both default to 1."""
    w2 = w.reshape(w.shape[0], -1).astype(np.float32)
    s = np.full(w2.shape[0], step, dtype=np.float64) * (1.0 if rel_rows is None else rel_rows)
    s = s.astype(np.float16)
    s = np.where(s == 0, np.float16(np.finfo(np.float16).tiny), s)
    t = None if cols is None else cols.astype(np.float16)
    d = s.astype(np.float32)[:, None] * (1.0 if t is None else t.astype(np.float32)[None, :])
    q = np.rint(w2 / d)
    return _codes_dtype(q.astype(np.int64)).reshape(w.shape), s, t


def reconstruct_tensor(q: np.ndarray, s: np.ndarray, t: np.ndarray | None = None) -> np.ndarray:
    x = q.reshape(q.shape[0], -1).astype(np.float32) * s.astype(np.float32)[:, None]
    if t is not None:
        x = x * t.astype(np.float32)[None, :]
    return x.reshape(q.shape)


def gptq_codes(w: np.ndarray, s: np.ndarray, t: np.ndarray | None, H: np.ndarray, damp: float = 0.01,
               block: int = 128) -> np.ndarray:
    """Codes on the same grid (step s_r * t_c) chosen column by column with error feedback, after
    GPTQ (Frantar et al., 2023): each column's rounding error is spread over the columns not yet
    rounded, weighted by the inverse Gram matrix ``H`` of the layer's inputs, so the layer's
    *outputs* on the calibration data move least. Decoding is unchanged (codes times steps)."""
    import torch

    W = torch.from_numpy(w.reshape(w.shape[0], -1).astype(np.float64)).clone()
    n = W.shape[1]
    grid = torch.from_numpy(s.astype(np.float64))[:, None].expand(-1, n).clone()
    if t is not None:
        grid = grid * torch.from_numpy(t.astype(np.float64))[None, :]
    H = torch.from_numpy(np.asarray(H, np.float64)).clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    H += damp * torch.mean(torch.diag(H)) * torch.eye(n, dtype=torch.float64)
    try:
        Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    except RuntimeError:  # not positive definite even with damping: plain rounding
        return np.rint(w.reshape(W.shape) / grid.numpy()).astype(np.int64).reshape(w.shape)
    Q = torch.zeros_like(W)
    for i1 in range(0, n, block):
        i2 = min(n, i1 + block)
        W1 = W[:, i1:i2].clone()
        E1 = torch.zeros_like(W1)
        Hi = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = W1[:, i]
            g = grid[:, i1 + i]
            q = torch.round(col / g)
            Q[:, i1 + i] = q
            err = (col - q * g) / Hi[i, i]
            W1[:, i:] -= err[:, None] * Hi[i, i:][None, :]
            E1[:, i] = err
        W[:, i2:] -= E1 @ Hinv[i1:i2, i2:]
    return Q.numpy().astype(np.int64).reshape(w.shape)


def apply_gptq(codes: dict, weights: dict[str, np.ndarray], grams: dict[str, np.ndarray]) -> dict:
    """Re-round every tensor that has a Gram matrix (same steps); the others keep their codes."""
    out = dict(codes)
    for k, H in grams.items():
        if k in codes:
            _, s, t = codes[k]
            out[k] = (_codes_dtype(gptq_codes(weights[k], s, t, H)), s, t)
    return out


def _side_bits(s: np.ndarray, t: np.ndarray | None) -> int:
    """The float16 row steps (and column factors) stored beside a tensor's codes."""
    return 16 * s.size + (16 * t.size if t is not None else 0)


def codes_bits(codes: dict) -> int:
    """The coded size of every tensor's codes and steps."""
    return sum(_real_bits(q) + _side_bits(s, t) for q, s, t in codes.values())


def _est_bits(q: np.ndarray) -> float:
    """Order-0 entropy plus a table cost estimate (12 bits per used symbol, 64 header)."""
    counts = np.bincount((q.reshape(-1).astype(np.int64) - int(q.min())))
    used = counts[counts > 0].astype(np.float64)
    return float(-np.sum(used * np.log2(used / used.sum()))) + 12 * len(used) + 64


def _real_bits(q: np.ndarray) -> int:
    flat = q.reshape(-1)
    return sum(8 * len(E.encode(flat[i : i + CHUNK])) for i in range(0, flat.size, CHUNK))


def fisher_sensitivity(weights: dict[str, np.ndarray], calib, batches: int = 8, batch_size: int = 32,
                       seed: int = 0) -> dict[str, float]:
    """Mean diagonal Fisher of the model outputs per tensor, E[(d(v . f(x)) / dw)^2] with v ~ N(0, I)
    (a Hutchinson-style estimate of diag(J^T J))."""
    import torch

    g = torch.Generator().manual_seed(seed)
    params = {k: torch.tensor(np.asarray(v, dtype=np.float32), requires_grad=True) for k, v in weights.items()}
    acc = dict.fromkeys(weights, 0.0)
    rows = {k: np.zeros(np.shape(v)[0]) for k, v in weights.items()}
    cols = {k: np.zeros(int(np.prod(np.shape(v)[1:]))) for k, v in weights.items()}
    perm = torch.randperm(calib.n, generator=g)
    for b in range(batches):
        idx = perm[(b * batch_size) % calib.n :][:batch_size]
        outs = calib.outputs(params, idx)
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        total = sum((o * torch.randn(o.shape, generator=g)).sum() for o in outs)
        grads = torch.autograd.grad(total, list(params.values()), allow_unused=True)
        for k, gr in zip(params, grads):
            if gr is not None:
                g2 = (gr.double() ** 2).reshape(gr.shape[0], -1)
                acc[k] += float(g2.mean())
                rows[k] += g2.mean(1).numpy()
                cols[k] += g2.mean(0).numpy()
    return {k: (v / batches, rows[k] / batches, cols[k] / batches) for k, v in acc.items()}


def _relative_steps(f: np.ndarray, clip: float = 4.0) -> np.ndarray:
    """Step factors ~ F**-1/2 around the median, clipped to [1/clip, clip]; zero-Fisher entries
    (embedding rows of tokens the calibration never saw) keep factor 1."""
    pos = f > 0
    if not pos.any():
        return np.ones_like(f)
    med = float(np.median(f[pos]))
    rel = np.ones_like(f)
    rel[pos] = np.clip((f[pos] / med) ** -0.5, 1 / clip, clip)
    return rel


def _base_steps(weights: dict[str, np.ndarray], sens: dict[str, float] | None) -> dict[str, float]:
    if sens is None:
        return {k: float(np.std(w)) or 1e-8 for k, w in weights.items()}
    mean_f = {k: v[0] for k, v in sens.items()}
    floor = 1e-3 * float(np.median(list(mean_f.values())))  # unused tensors (zero Fisher) stay finite
    inv = {k: 1.0 / math.sqrt(max(mean_f[k], floor, 1e-30)) for k in weights}
    g = math.exp(np.mean([math.log(inv[k] / (float(np.std(w)) or 1e-8)) for k, w in weights.items()]))
    return {k: v / g for k, v in inv.items()}  # c keeps the meaning "step in stds" on average


def fit(weights: dict[str, np.ndarray], budget_bits: float, sens=None, progress=None,
        separable: bool = False):
    """Codes and steps for every tensor whose total coded size fits ``budget_bits``."""
    base = _base_steps(weights, sens)
    rel = {}
    if sens is not None and separable:
        for k in weights:
            r, c = _relative_steps(sens[k][1]), _relative_steps(sens[k][2])
            c = c / np.exp(np.mean(np.log(c)))  # columns carry shape only; rows carry the level
            rel[k] = (r, c)

    def quantize_all(c):
        return {k: quantize_tensor(w, c * base[k], *rel.get(k, (None, None))) for k, w in weights.items()}

    def est(c):
        return sum(_est_bits(q) + _side_bits(s, t) for q, s, t in quantize_all(c).values())

    goal = budget_bits
    for _ in range(4):
        lo, hi = -16.0, 6.0  # log2 c
        while hi - lo > 2e-3:
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if est(2**mid) > goal else (lo, mid)
        out = quantize_all(2**hi)
        real = codes_bits(out)
        if real <= budget_bits and real >= 0.997 * budget_bits:
            break
        goal *= budget_bits / max(real, 1)
    while real > budget_bits:  # never over the budget
        hi += 0.005
        out = quantize_all(2**hi)
        real = codes_bits(out)
    if progress is not None:
        progress(sum(w.size for w in weights.values()))
    return out


def calibrate(codes: dict[str, tuple[np.ndarray, np.ndarray]], raw16: dict[str, np.ndarray], calib,
              steps: int = 200, lr: float = 1e-3, batch_size: int = 16, seed: int = 0):
    """Fine-tune the row steps (as log-multipliers) and the float16 tensors by distillation."""
    import torch

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    q = {k: torch.from_numpy(c.astype(np.float32).reshape(c.shape[0], -1)) for k, (c, _, _) in codes.items()}
    s0 = {k: torch.from_numpy(s.astype(np.float32))[:, None] for k, (_, s, _) in codes.items()}
    t0 = {k: (torch.from_numpy(t.astype(np.float32))[None, :] if t is not None else torch.ones(1, 1))
          for k, (_, _, t) in codes.items()}
    logm = {k: torch.zeros_like(s0[k], requires_grad=True) for k in codes}
    raw = {k: torch.tensor(v.astype(np.float32), requires_grad=True) for k, v in raw16.items()}
    opt = torch.optim.Adam([*logm.values(), *raw.values()], lr=lr)
    for _ in range(steps):
        idx = torch.randint(0, calib.n, (batch_size,), generator=g)
        params = {k: (q[k] * (s0[k] * torch.exp(logm[k])) * t0[k]).reshape(codes[k][0].shape) for k in codes}
        params.update(raw)
        loss = calib.loss(params, idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        new_codes = {k: (c, (s0[k] * torch.exp(logm[k])).reshape(-1).numpy().astype(np.float16), t)
                     for k, (c, _, t) in codes.items()}
        new_raw = {k: v.numpy().astype(np.float16) for k, v in raw.items()}
    return new_codes, new_raw


def resolve_calib(calib, ck: Checkpoint):
    """A calibration object as given, or (CLI) one built from a text file of sentences for the
    sentence-transformers model in the checkpoint's folder."""
    if not isinstance(calib, str):
        return calib
    from pathlib import Path

    from ..calib import from_text_file

    return from_text_file(Path(ck.path) if Path(ck.path).is_dir() else Path(ck.path).parent, calib)


F16_MAX = 60000.0  # under float16's 65504: steps, scales and kept values stay finite
F16_MIN_NORMAL = float(np.finfo(np.float16).tiny)  # 2**-14


def lossy_preflight(ck: Checkpoint, codec: str, bpw: float | None) -> int:
    """Checks every lossy weights codec makes before coding; the checkpoint's parameter count."""
    if bpw is not None and not (math.isfinite(bpw) and bpw > 0):
        raise InvalidInputError(f"{codec}: --bpw must be a positive number of bits per weight, got {bpw}")
    n_params = sum(t.numel for t in ck.tensors if t.alias_of is None)
    if n_params == 0:
        raise InvalidInputError(f"{codec}: the checkpoint holds no tensor values to code")
    seen: dict[str, str] = {}
    for t in ck.tensors:
        if t.name in seen and seen[t.name] != t.file:
            raise InvalidInputError(f"{codec}: files {seen[t.name]} and {t.file} both hold a tensor named "
                                    f"{t.name!r}; encode each sub-model on its own, or use weights/lossless")
        seen.setdefault(t.name, t.file)
    return n_params


def codable(t: TensorRecord) -> bool:
    """Whether a float tensor's values suit float16 side data: finite, at most F16_MAX, and not all
    below float16's normal range (such tensors are kept losslessly instead of coming back as
    inf, NaN or zeros)."""
    v = np.abs(as_float32(t))
    if not v.size:
        return True
    top = float(v.max())
    return bool(np.isfinite(top)) and top <= F16_MAX and (top == 0 or top >= F16_MIN_NORMAL)


def kept_tensors(ck: Checkpoint, coded: set[str]):
    """What a lossy weights codec keeps around its coded matrices: float tensors as float16 (those
    float16 cannot hold, see :func:`codable`, losslessly), the rest losslessly, and the container
    bits all of that takes (headers and files included)."""
    floats = [t for t in ck.tensors if t.alias_of is None and t.dtype in FLOATS and t.name not in coded]
    raw16 = {t.name: as_float32(t).astype(np.float16) for t in floats if codable(t)}
    others = [t for t in ck.tensors if t.alias_of is None and t.name not in raw16 and t.name not in coded]
    bits = (16 * sum(v.size for v in raw16.values()) + sum(8 * lossless_array(t).data.size for t in others)
            + side_file_bits(ck) + ARRAY_OVERHEAD_BITS * (len(raw16) + len(others) + 2 + len(ck.files)))
    return raw16, bits


def kept_entry(i: int, t: TensorRecord, entry: dict[str, Any], raw16, arrays) -> None:
    """Manifest entry and array of a tensor :func:`kept_tensors` kept."""
    if t.name in raw16:
        entry.update(kind="f16", array=f"r{i:05d}")
        arrays[entry["array"]] = ArraySpec(raw16[t.name].reshape(-1), symbols=False,
                                           attrs={"tensor": t.name, "raw_bytes": int(t.data.size)})
    else:
        entry.update(kind="lossless", array=f"t{i:05d}")
        arrays[entry["array"]] = lossless_array(t)


def kept_decode(container: Item, entry: dict[str, Any], shape, numel: int):
    """Raw bytes of a kept tensor, or None when the entry is the codec's own kind."""
    if entry.get("kind") == "lossless":
        return lossless_bytes(container, entry, shape, numel, "best")
    if entry.get("kind") == "f16":
        return from_float32(container.read(entry["array"]).astype(np.float32), entry["dtype"])
    return None


@register
class WeightsQuant(CheckpointCodec):
    name = "weights/quant"
    version = 1
    suffixes = ()  # lossy: only on request
    description = "lossy checkpoints: per-row uniform quantisation at a target bpw, codes entropy coded"

    def encode_tensors(self, ck: Checkpoint, params: dict[str, Any], progress=None):
        calib = resolve_calib(params.pop("calib", None), ck)
        p = self.check_params(params, {"bpw": float, "calib_steps": int, "allocation": str, "rounding": str})
        allocation = p.get("allocation", "tensor")
        if allocation not in ("tensor", "separable"):
            raise InvalidInputError(f"allocation must be tensor or separable, got {allocation!r}")
        rounding = p.get("rounding", "gptq" if calib is not None and hasattr(calib, "linear_inputs") else "nearest")
        if rounding not in ("nearest", "gptq"):
            raise InvalidInputError(f"rounding must be nearest or gptq, got {rounding!r}")
        if rounding == "gptq" and not hasattr(calib, "linear_inputs"):
            raise InvalidInputError("rounding=gptq needs calibration data with linear_inputs (e.g. calib=sentences.txt)")
        if "bpw" not in p:
            raise InvalidInputError("weights/quant needs a rate: --bpw B (bits per weight, all included)")
        bpw = p["bpw"]
        n_params = lossy_preflight(ck, self.name, bpw)
        quantised = [t for t in ck.tensors if t.alias_of is None and t.dtype in FLOATS
                     and len(t.shape) >= 2 and t.numel >= MIN_NUMEL and codable(t)]
        if not quantised:
            raise InvalidInputError(f"weights/quant: no float matrix of >= {MIN_NUMEL} finite values to "
                                    "quantise here (use weights/lossless)")
        raw16, kept_bits = kept_tensors(ck, {t.name for t in quantised})
        fixed_bits = kept_bits + ARRAY_OVERHEAD_BITS * 3 * len(quantised)
        budget = bpw * n_params * 0.998 - fixed_bits  # 0.2 %: chunk headers and checksums of the codes
        if budget <= 0:
            raise InvalidInputError(f"--bpw {bpw} leaves no room for the quantised tensors (the kept "
                                    f"tensors and the container alone take {fixed_bits / n_params:.2f} bpw)")
        weights = {t.name: as_float32(t) for t in quantised}
        sens = fisher_sensitivity(weights, calib) if calib is not None else None
        codes = fit(weights, budget, sens, progress, separable=allocation == "separable")
        if rounding == "gptq":  # error feedback moves codes; refit the steps until the bits fit
            grams = calib.linear_inputs(list(weights))
            goal = budget
            for _ in range(6):
                codes = apply_gptq(codes, weights, grams)
                real = codes_bits(codes)
                if real <= budget:
                    break
                goal *= (budget / real) ** 1.5 * 0.998  # error feedback inflates the codes' entropy
                codes = fit(weights, goal, sens, None, separable=allocation == "separable")
            else:  # error feedback never fitted the budget: plain rounding, which does
                codes = fit(weights, budget, sens, None, separable=allocation == "separable")
                rounding = "nearest"
                warnings.warn(f"weights/quant: GPTQ rounding did not fit {bpw} bpw; used nearest rounding")
        if calib is not None and p.get("calib_steps", 0) > 0:
            codes, raw16 = calibrate(codes, raw16, calib, steps=p["calib_steps"])
        arrays: dict[str, ArraySpec] = {}
        manifest = []
        for i, t in enumerate(ck.tensors):
            entry = base_entry(t)
            if t.alias_of is None:
                if t.name in codes:
                    q, s, cf = codes[t.name]
                    rows = max(1, CHUNK // max(1, q.size // q.shape[0]))
                    entry.update(kind="q", array=f"q{i:05d}", steps=f"s{i:05d}")
                    arrays[entry["array"]] = ArraySpec(q, chunks=(min(rows, q.shape[0]), *q.shape[1:]),
                                                       attrs={"tensor": t.name, "raw_bytes": int(t.data.size)})
                    arrays[entry["steps"]] = ArraySpec(s, symbols=False)
                    if cf is not None:
                        entry["col_steps"] = f"c{i:05d}"
                        arrays[entry["col_steps"]] = ArraySpec(cf, symbols=False)
                else:
                    kept_entry(i, t, entry, raw16, arrays)
            manifest.append(entry)
        recorded = {"bpw_target": bpw, "steps": "fisher" if sens else "std", "rounding": rounding,
                    "allocation": allocation if sens else "tensor",
                    "calib_steps": p.get("calib_steps", 0) if calib is not None else 0}
        return manifest, arrays, recorded

    def decode_entry(self, container: Item, entry: dict[str, Any], shape: list[int], numel: int) -> np.ndarray:
        kept = kept_decode(container, entry, shape, numel)
        if kept is not None:
            return kept
        kind = entry.get("kind")
        if kind == "q":
            q = container.read(entry["array"])
            s = container.read(entry["steps"])
            cf = container.read(entry["col_steps"]) if entry.get("col_steps") else None
            if q.shape[0] != s.size or (cf is not None and cf.size * q.shape[0] != q.size):
                raise CorruptDataError(f"{container.path}: tensor {entry['name']!r}: steps do not match codes")
            x = reconstruct_tensor(q, s, cf)
        else:
            raise CorruptDataError(f"{container.path}: tensor {entry['name']!r} has unknown kind {kind!r}")
        if x.size != numel:
            raise CorruptDataError(f"{container.path}: tensor {entry['name']!r} has the wrong size")
        return from_float32(x, entry["dtype"])
