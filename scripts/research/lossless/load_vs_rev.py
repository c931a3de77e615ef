"""Research (issue 3): ``nzip.weights.load`` speed of this checkout against an earlier revision, on
the same checkpoint, each in its own warm worker process, timed in turn round by round (the host
is noisy: medians of interleaved rounds, read the ratio).

The earlier revision is checked out with ``git worktree`` under the work folder and its C
extensions built in place; each side encodes the checkpoint itself (so each decodes the layout it
writes), checks the restored bytes against the original once, then loads it on request
(``--encode``: encodes the checkpoint again on request instead).

    python scripts/research/lossless/load_vs_rev.py --rev ad549d9 [--rounds 15] [--mode best] [--encode]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]

WORKER = r"""
import json, sys, time
import torch
import nzip, nzip.weights
from safetensors.torch import load_file
src, dst, mode, what = sys.argv[1:5]
nzip.encode(src, dst, overwrite=True, mode=mode)
want = load_file(src)
got = nzip.weights.load(dst)
assert all(torch.equal(got[k].view(torch.uint8), v.view(torch.uint8)) for k, v in want.items()), "not bit-exact"
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    t = time.perf_counter()
    if what == "encode":
        nzip.encode(src, dst + ".again.nz", overwrite=True, mode=mode)
    else:
        nzip.weights.load(dst)
    print(json.dumps({"s": time.perf_counter() - t}), flush=True)
"""


def checkout(rev: str, work: Path) -> Path:
    sha = subprocess.run(["git", "rev-parse", rev], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    tree = work / f"rev-{sha[:10]}"
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), sha], cwd=ROOT, check=True,
                       capture_output=True)
        subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=tree, check=True,
                       capture_output=True)
    return tree


def start(tree: Path, src: Path, dst: Path, mode: str, what: str = "load") -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(tree))
    p = subprocess.Popen([sys.executable, "-c", WORKER, str(src), str(dst), mode, what], cwd=tree, env=env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if json.loads(p.stdout.readline()).get("ready") is not True:
        raise SystemExit(f"worker for {tree} did not start")
    return p


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rev", required=True, help="the earlier revision (a commit, tag or branch)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--mode", default="best")
    ap.add_argument("--dtypes", default="bf16,fp32")
    ap.add_argument("--encode", action="store_true", help="time nzip.encode of the checkpoint instead")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "nzip-load-vs-rev"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_weights import minilm_files

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    old = checkout(args.rev, work)
    src32, src16 = minilm_files(work)
    srcs = {"fp32": src32, "bf16": src16}
    for dt in args.dtypes.split(","):
        src = srcs[dt]
        what = "encode" if args.encode else "load"
        sides = {"this checkout": start(ROOT, src, work / f"{dt}.new.nz", args.mode, what),
                 f"rev {args.rev}": start(old, src, work / f"{dt}.old.nz", args.mode, what)}
        times: dict[str, list[float]] = {k: [] for k in sides}
        for _ in range(args.rounds + 1):  # the first round is a warm-up
            for k, p in sides.items():
                p.stdin.write("go\n")
                p.stdin.flush()
                times[k].append(json.loads(p.stdout.readline())["s"])
        for p in sides.values():
            p.stdin.close()
            p.wait()
        med = {k: float(np.median(v[1:])) for k, v in times.items()}
        raw = src.stat().st_size
        base = med[f"rev {args.rev}"]
        for k, v in med.items():
            print(f"| {dt} | mode={args.mode} | {what} | {k} | {raw / v / 1e6:.0f} MB/s | {base / v:.2f} |")


if __name__ == "__main__":
    main()
