"""What a shell user waits for: `nzip decode model.nz model.safetensors` as a fresh process
(interpreter start, imports, decode, write; bytecode cached, as after a pip install), beside
`zstd -d` of the same checkpoint compressed with `zstd -3`, on all-MiniLM-L6-v2 (fp32 and its bf16
cast). Each command runs --repeat times, interleaved; medians of wall seconds. Records where the
time goes for nzip: the import of nzip alone, also as fresh processes. ``--against DIR``: also the
decode by another revision's checkout in DIR (its C extensions built in place, e.g. a worktree of
scripts/research/lossless/load_vs_rev.py), of the file it encodes itself.

    python scripts/bench_cli.py [--repeat 5] [--workdir DIR] [--against DIR]
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_weights import minilm_files


# as an installed package runs: its bytecode cached (pip compiles it on install; a shell that sets
# PYTHONDONTWRITEBYTECODE, as this project's machine does, would time the compiler instead)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def wall(cmd: list[str], clean: Path | None = None) -> float:
    if clean is not None:
        clean.unlink(missing_ok=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=ENV)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workdir", default="/tmp/nzip-bench-cli")
    ap.add_argument("--against", default=None, help="another revision's checkout (extensions built)")
    args = ap.parse_args()
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)  # (python -c puts the current folder first on sys.path: not a checkout's nzip/)
    nzip_cli = str(Path(sys.executable).parent / "nzip")
    zstd = shutil.which("zstd")
    src32, src16 = minilm_files(work)
    print(f"date {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}, zstd CLI {'found' if zstd else 'absent'}\n")
    print("| model | command | wall s (median) |\n|---|---|---:|")
    for name, src in (("bf16", src16), ("fp32", src32)):
        nz, back = work / f"{name}.nz", work / f"{name}.back.safetensors"
        subprocess.run([nzip_cli, "encode", str(src), str(nz), "--force"], check=True, capture_output=True)
        cmds = {"nzip decode model.nz model.safetensors": ([nzip_cli, "decode", str(nz), str(back)], back),
                "nzip info model.nz": ([nzip_cli, "info", str(nz)], None),
                "python -c 'import nzip'": ([sys.executable, "-c", "import nzip"], None)}
        if args.against:
            old = [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv.pop(1)); "
                   "from nzip.cli import main; sys.argv[0] = 'nzip'; sys.exit(main())", str(Path(args.against).resolve())]
            onz, oback = work / f"{name}.against.nz", work / f"{name}.against.safetensors"
            subprocess.run(old + ["encode", str(src), str(onz), "--force"], check=True, capture_output=True)
            cmds["nzip decode, by the --against revision"] = (old + ["decode", str(onz), str(oback)], oback)
            cmds["nzip info, by the --against revision"] = (old + ["info", str(onz)], None)
        if zstd:
            zst, zback = work / f"{name}.zst", work / f"{name}.zback"
            subprocess.run([zstd, "-3", "-q", "-f", str(src), "-o", str(zst)], check=True)
            cmds["zstd -d (compressed with -3)"] = ([zstd, "-d", "-q", "-f", str(zst), "-o", str(zback)], None)
        times = {k: [] for k in cmds}
        for cmd, out in cmds.values():  # (a first run writes the bytecode caches)
            wall(cmd, out)
        for _ in range(args.repeat):
            for k, (cmd, out) in cmds.items():
                times[k].append(wall(cmd, out))
        assert back.read_bytes() == src.read_bytes(), "nzip decode is not bit-exact"
        for k, v in times.items():
            print(f"| {name} | {k} | {np.median(v):.2f} |")


if __name__ == "__main__":
    main()
