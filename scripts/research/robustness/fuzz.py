"""Research (bad input): damaged inputs must decode or raise an NzipError, never crash or escape
as another exception. Two campaigns, each for --seconds:

  blobs: entropy blobs (static, context), image/vqgan index grids (fixed and adaptive prior) and
         weights/lossless tensor streams with random byte flips, cuts and insertions, through the
         decoders (the C parse and decode paths first);
  files: weights, array and image/vqgan .nz files with a flipped byte or a cut, through nzip.info,
         nzip.weights.tensors and nzip.decode.

Prints how many decoded, how many were refused with an NzipError, and every other exception by
type and the nzip line it came from.

    python scripts/research/robustness/fuzz.py [--seed 1] [--seconds 60] [--campaign blobs,files]
"""
from __future__ import annotations

import argparse
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np


def where(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/nzip/" in f.filename]
    return f"{type(exc).__name__} at {frames[-1].filename.split('/nzip/')[-1]}:{frames[-1].lineno}" if frames \
        else type(exc).__name__


def run(cases, mutate, seconds: float, rng) -> None:
    from nzip.errors import NzipError

    ok = refused = 0
    other: dict[str, int] = {}
    t0 = time.time()
    while time.time() - t0 < seconds:
        check, data = cases[int(rng.integers(len(cases)))]
        try:
            check(mutate(bytearray(data)))
            ok += 1
        except NzipError:
            refused += 1
        except Exception as exc:  # noqa: BLE001 - what this looks for
            other[where(exc)] = other.get(where(exc), 0) + 1
    print(f"decoded {ok}, refused {refused}, other {sum(other.values())}")
    for k, v in sorted(other.items(), key=lambda kv: -kv[1]):
        print(f"  {v} {k}")


def blobs(rng, seconds: float) -> None:
    import torch

    from nzip import entropy as E
    from nzip.codecs.weights_lossless import decode_tensor, encode_tensor
    from nzip.entropy import coder

    cases = []
    for dt, lo, hi in (("uint8", 0, 200), ("int16", -40, 30), ("bool", 0, 2), ("uint16", 0, 3000)):
        for n in (5, 384, 3000, 20000, 70000):
            v = np.clip(np.rint(rng.normal((lo + hi) / 2, (hi - lo) / 6, n)), lo, hi - 1).astype(dt)
            cases.append((lambda b: E.decode(b, max_symbols=100000), E.encode(v)))
    for nctx, n in ((3, 2000), (17, 50000)):
        ctx = rng.integers(0, nctx, n).astype(np.uint8)
        sym = np.clip(rng.normal(100 + ctx * 3, 4 + ctx), 0, 255).astype(np.uint8)
        cases.append((lambda b, c=ctx, m=n: coder.parse_context(b, m).decode(c), E.encode_context(sym, ctx, nctx)))
    from nzip.codecs import image_vqgan as V

    prior = V.load_model().priors[256]
    grid = np.repeat(rng.integers(0, 256, (20, 10)), 3, axis=1)  # runs, as in real index maps
    for mix in (None, V.MIX):
        cases.append((lambda b, m=mix: prior.decode(b, grid.shape, mix=m), prior.encode(grid, mix)))
    w = torch.randn(300, 257) * 0.03
    for dt, td in (("BF16", torch.bfloat16), ("F32", torch.float32), ("F16", torch.float16)):
        raw = w.to(td).contiguous().view(torch.uint8).numpy().reshape(-1).copy()
        for mode in ("best", "fast"):
            cases.append((lambda b, d=dt, m=mode: decode_tensor(b, d, 300 * 257, m, shape=[300, 257]),
                          encode_tensor(dt, raw, mode, [300, 257])))

    def mutate(b: bytearray) -> bytes:
        for _ in range(int(rng.integers(1, 4))):
            r = rng.random()
            if r < 0.6:
                i = int(rng.integers(0, min(len(b), 200) if rng.random() < 0.7 else len(b)))
                b[i] ^= int(rng.integers(1, 256))
            elif r < 0.8:
                b = b[:int(rng.integers(0, len(b)))]
            else:
                i = int(rng.integers(0, len(b) + 1))
                b[i:i] = bytes(rng.integers(0, 256, int(rng.integers(1, 9))).astype(np.uint8))
            b = b or bytearray(b"\0")
        return bytes(b)

    run(cases, mutate, seconds, rng)


def files(rng, seconds: float) -> None:
    from safetensors.numpy import save_file

    import nzip
    import nzip.weights

    d = Path(tempfile.mkdtemp(prefix="nzip-fuzz-"))
    save_file({"w": rng.normal(0, 0.02, (200, 130)).astype(np.float32), "b": np.zeros(130, np.float32),
               "i": np.arange(50)}, str(d / "m.safetensors"))
    nzip.encode(d / "m.safetensors", d / "m.nz")
    np.save(d / "a.npy", rng.integers(-50, 50, (300, 40)).astype(np.int16))
    nzip.encode(d / "a.npy", d / "a.nz", chunk=3000)
    img = np.clip(rng.normal(128, 40, (96, 128, 3)), 0, 255).astype(np.uint8)
    nzip.encode(img, d / "i.nz", codec="image/vqgan", tile=64)

    def check(data: bytes, weights: bool) -> None:
        p = d / "x.nz"
        p.write_bytes(data)
        out = d / {True: "out.safetensors", False: "out.npy", None: "out.png"}[weights]
        out.unlink(missing_ok=True)
        nzip.info(p)
        if weights:
            nzip.weights.tensors(p)
        nzip.decode(p, out)

    cases = [(lambda b: check(b, True), (d / "m.nz").read_bytes()),
             (lambda b: check(b, False), (d / "a.nz").read_bytes()),
             (lambda b: check(b, None), (d / "i.nz").read_bytes())]

    def mutate(b: bytearray) -> bytes:
        if rng.random() < 0.85:
            i = int(rng.integers(0, len(b)))
            b[i] ^= int(rng.integers(1, 256))
        else:
            b = b[:int(rng.integers(1, len(b)))]
        return bytes(b)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (zarr warns about each node it cannot read)
        run(cases, mutate, seconds, rng)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--campaign", default="blobs,files")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    for c in args.campaign.split(","):
        print(f"{c}:")
        {"blobs": blobs, "files": files}[c](rng, args.seconds)


if __name__ == "__main__":
    main()
