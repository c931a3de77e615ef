"""Entropy-layer benchmark: nzip's lane rANS beside constriction, compressai's rANS and zstd.

Two cases, all coders in one run on the same symbols:
  A. 16M symbols from a skewed 256-symbol categorical (Dirichlet(0.3) probabilities), one table.
  B. 4M symbols with per-symbol Gaussian scales (64-scale grid, compressai's), indexed tables.

Size is reported over the empirical cross-entropy (A: the data's own order-0 entropy; B: the exact
discretised Gaussians the data was drawn from), headers counted. Speeds are medians of --repeat runs,
in million symbols per second; nzip uses every core numba sees, the others one thread (their
libraries have no multi-threaded decode). Prints a markdown table.

    python scripts/bench_entropy.py [--n-cat 16000000] [--n-gauss 4000000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np


def timed(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def paired_speedup(fast, slow, repeat):
    """Median over ``repeat`` back-to-back pairs of slow time / fast time: on a shared, noisy
    machine a pair sees the same load, so the ratio is steadier than a ratio of two medians."""
    ratios = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fast()
        t1 = time.perf_counter()
        slow()
        ratios.append((time.perf_counter() - t1) / (t1 - t0))
    return statistics.median(ratios)


def row(name, nbytes, ideal, n, t_enc, t_dec, ok):
    return (f"| {name} | {nbytes:,} | {100 * (nbytes / ideal - 1):+.3f} % | "
            f"{n / t_enc / 1e6:.1f} | {n / t_dec / 1e6:.1f} | {'yes' if ok else 'NO'} |")


def case_categorical(n, repeat, seed=0):
    import constriction
    import zstandard
    from compressai import ans

    from nzip import entropy as E

    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(256, 0.3))
    x = rng.choice(256, size=n, p=p).astype(np.uint8)
    counts = np.bincount(x, minlength=256)
    ideal = E.empirical_entropy_bits(counts) / 8
    rows = []

    E.decode(E.encode(x[:100_000]))  # compile
    blob, te = timed(lambda: E.encode(x), repeat)
    out, td = timed(lambda: E.decode(blob), repeat)
    rows.append(row("nzip lane rANS (2 threads)", len(blob), ideal, n, te, td, np.array_equal(out, x)))
    nzip_dec = n / td

    x32 = x.astype(np.int32)
    model = constriction.stream.model.Categorical(counts / n, perfect=False)

    def c_stack():
        enc = constriction.stream.stack.AnsCoder()
        enc.encode_reverse(x32, model)
        return enc.get_compressed()

    comp, te = timed(c_stack, repeat)
    out, td = timed(lambda: constriction.stream.stack.AnsCoder(comp).decode(model, n), repeat)
    rows.append(row("constriction ANS stack", comp.nbytes, ideal, n, te, td, np.array_equal(out, x32)))
    const_dec = n / td
    stack_comp = comp

    def c_queue():
        enc = constriction.stream.queue.RangeEncoder()
        enc.encode(x32, model)
        return enc.get_compressed()

    comp, te = timed(c_queue, repeat)
    out, td = timed(lambda: constriction.stream.queue.RangeDecoder(comp).decode(model, n), repeat)
    rows.append(row("constriction range queue", comp.nbytes, ideal, n, te, td, np.array_equal(out, x32)))
    const_dec = max(const_dec, n / td)

    freqs = E.quantize_counts(counts, 16)
    cdf = [0, *np.cumsum(freqs).tolist()]
    # compressai's escape convention needs one more symbol (the overflow) in the table
    cdf_c = [0, *np.cumsum(np.append(freqs[:-1], [freqs[-1] - 1, 1])).tolist()]
    assert cdf_c[-1] == cdf[-1]
    sym_l, idx_l = x32.tolist(), [0] * n
    encoder, decoder = ans.RansEncoder(), ans.RansDecoder()
    comp, te = timed(lambda: encoder.encode_with_indexes(sym_l, idx_l, [cdf_c], [len(cdf_c)], [0]), repeat)
    out, td = timed(lambda: decoder.decode_with_indexes(comp, idx_l, [cdf_c], [len(cdf_c)], [0]), repeat)
    rows.append(row("compressai rANS", len(comp), ideal, n, te, td, np.array_equal(np.array(out), x32)))

    for level in (3, 19):
        cctx, dctx = zstandard.ZstdCompressor(level=level), zstandard.ZstdDecompressor()
        raw = x.tobytes()
        comp, te = timed(lambda: cctx.compress(raw), 1 if level > 9 else repeat)
        out, td = timed(lambda: dctx.decompress(comp), repeat)
        rows.append(row(f"zstd -{level}", len(comp), ideal, n, te, td, out == raw))
    paired = paired_speedup(lambda: E.decode(blob),
                            lambda: constriction.stream.stack.AnsCoder(stack_comp).decode(model, n),
                            repeat)
    return rows, nzip_dec / const_dec, paired


def case_gaussian(n, repeat, seed=1):
    import constriction
    from compressai import ans
    from scipy.stats import norm

    from nzip import entropy as E

    rng = np.random.default_rng(seed)
    tables = E.IndexedTables.gaussian()
    grid = E.default_scale_grid()
    idx = rng.integers(0, 48, n).astype(np.int32)  # scales 0.11 .. ~34
    s = grid[idx]
    v = np.rint(rng.normal(size=n) * s).astype(np.int32)
    pv = norm.cdf((v + 0.5) / s) - norm.cdf((v - 0.5) / s)
    ideal = float(-np.log2(pv).sum() / 8)
    rows = []

    E.decode_indexed(E.encode_indexed(v[:100_000], idx[:100_000], tables), idx[:100_000], tables)
    blob, te = timed(lambda: E.encode_indexed(v, idx, tables), repeat)
    out, td = timed(lambda: E.decode_indexed(blob, idx, tables), repeat)
    rows.append(row("nzip lane rANS, indexed (2 threads)", len(blob), ideal, n, te, td,
                    np.array_equal(out, v)))
    nzip_dec = n / td

    model = constriction.stream.model.QuantizedGaussian(-2048, 2048)
    means, stds = np.zeros(n), s.astype(np.float64)

    def c_stack():
        enc = constriction.stream.stack.AnsCoder()
        enc.encode_reverse(v, model, means, stds)
        return enc.get_compressed()

    comp, te = timed(c_stack, repeat)
    out, td = timed(lambda: constriction.stream.stack.AnsCoder(comp).decode(model, means, stds), repeat)
    rows.append(row("constriction ANS stack", comp.nbytes, ideal, n, te, td, np.array_equal(out, v)))
    const_dec = n / td
    stack_comp = comp

    def c_queue():
        enc = constriction.stream.queue.RangeEncoder()
        enc.encode(v, model, means, stds)
        return enc.get_compressed()

    comp, te = timed(c_queue, repeat)
    out, td = timed(lambda: constriction.stream.queue.RangeDecoder(comp).decode(model, means, stds), repeat)
    rows.append(row("constriction range queue", comp.nbytes, ideal, n, te, td, np.array_equal(out, v)))
    const_dec = max(const_dec, n / td)

    t16 = E.IndexedTables.gaussian(precision=16)  # compressai's coder is fixed at 16 bits
    cdfs = [t16.cdfs[k, : t16.lengths[k] + 1].tolist() for k in range(t16.num_tables)]
    lengths = (t16.lengths + 1).tolist()
    offsets = t16.offsets.tolist()
    sym_l = v.tolist()  # compressai subtracts the offsets itself
    idx_l = idx.tolist()
    encoder, decoder = ans.RansEncoder(), ans.RansDecoder()
    comp, te = timed(lambda: encoder.encode_with_indexes(sym_l, idx_l, cdfs, lengths, offsets), repeat)
    out, td = timed(lambda: decoder.decode_with_indexes(comp, idx_l, cdfs, lengths, offsets), repeat)
    ok = np.array_equal(np.array(out), v)
    rows.append(row("compressai rANS (same grid, 16-bit)", len(comp), ideal, n, te, td, ok))

    import zstandard
    raw = v.astype(np.int16).tobytes()
    cctx, dctx = zstandard.ZstdCompressor(level=19), zstandard.ZstdDecompressor()
    comp, te = timed(lambda: cctx.compress(raw), 1)
    out, td = timed(lambda: dctx.decompress(comp), repeat)
    rows.append(row("zstd -19 (int16 bytes)", len(comp), ideal, n, te, td, out == raw))
    paired = paired_speedup(
        lambda: E.decode_indexed(blob, idx, tables),
        lambda: constriction.stream.stack.AnsCoder(stack_comp).decode(model, means, stds), repeat)
    return rows, nzip_dec / const_dec, paired


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-cat", type=int, default=16_000_000)
    ap.add_argument("--n-gauss", type=int, default=4_000_000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    import numba

    head = "| coder | bytes | over cross-entropy | encode Msym/s | decode Msym/s | round trip |\n|---|---:|---:|---:|---:|:-:|"
    print(f"date {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, numba threads {numba.get_num_threads()}, python {sys.version.split()[0]}")
    rows, speedup, paired = case_categorical(args.n_cat, args.repeat)
    print(f"\nA. {args.n_cat:,} symbols, skewed 256-symbol categorical\n\n{head}")
    print("\n".join(rows))
    print(f"\nnzip decode / best constriction decode: {speedup:.1f}x (medians); "
          f"{paired:.1f}x (median of {args.repeat} back-to-back pairs with the ANS stack)")
    rows, speedup, paired = case_gaussian(args.n_gauss, args.repeat)
    print(f"\nB. {args.n_gauss:,} symbols, per-symbol Gaussian scales (indexed tables)\n\n{head}")
    print("\n".join(rows))
    print(f"\nnzip decode / best constriction decode: {speedup:.1f}x (medians); "
          f"{paired:.1f}x (median of {args.repeat} back-to-back pairs with the ANS stack)")


if __name__ == "__main__":
    main()
