"""``nzip demo``: encode and decode the bundled sample array, print sizes, ratio and timing."""
from __future__ import annotations

import os
import tempfile
import time
from importlib.resources import files

import numpy as np

from . import api


def run(keep: str | None = None) -> None:
    sample = str(files("nzip") / "samples" / "jacksboro_dem.npy")
    a = np.load(sample, allow_pickle=False)
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = keep or tmp
        nz = os.path.join(out_dir, "jacksboro_dem.nz")
        back = os.path.join(tmp, "decoded.npy")
        print(f"sample   {sample}: {a.dtype} {list(a.shape)}, {a.nbytes:,} bytes "
              "(USGS elevation model, metres)")
        rep = api.encode(sample, nz, overwrite=True, predict="med")  # a raster: JPEG-LS's predictor
        print(f"encode   {rep.codec} (predict=med): {rep.raw_bytes:,} -> {rep.stored_bytes:,} bytes, "
              f"ratio {rep.ratio:.3f}, {rep.seconds * 1e3:.1f} ms")
        t0 = time.perf_counter()
        api.decode(nz, back)
        dt = time.perf_counter() - t0
        ok = np.array_equal(np.load(back), a)
        print(f"decode   {dt * 1e3:.1f} ms, bit-exact: {ok}")
        try:
            import zstandard

            z = len(zstandard.ZstdCompressor(level=19).compress(a.tobytes()))
            print(f"anchor   zstd -19 on the raw bytes: {z:,} bytes, ratio {a.nbytes / z:.3f}")
        except ImportError:
            pass
        if keep:
            print(f"kept     {nz}")
        if not ok:
            raise SystemExit("demo: round trip failed")
